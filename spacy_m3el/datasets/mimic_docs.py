"""Turning MIMIC mention records into spaCy Docs and DocBins.

Every kept mention record becomes one Doc whose single entity carries the gold
QID as ``kb_id_`` and whose ``doc._.image`` is the mention image; skipped
records are counted in the split's :class:`SplitReport`.
"""

import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import unquote

from spacy.language import Language
from spacy.tokens import Doc, DocBin

from ..images import set_image
from .mimic_files import DatasetError, _is_nil
from .mimic_images import _image_value, resolve_mention_image
from .mimic_report import SplitReport

DEFAULT_LABEL = "ENT"
MAX_EXAMPLES = 5
# resolve_mention_image status -> SplitReport counter.
IMAGE_STATUS_COUNTS = {
    "found": "image_found",
    "missing": "image_missing",
    "empty_path": "image_empty_path",
    "unsafe": "unsafe_image_path",
}


def find_mention(mention: str, sentence: str) -> Optional[Tuple[int, int]]:
    """Character offsets of a mention in a sentence: exact match, then case-insensitive.

    mention (str): The (unquoted) mention.
    sentence (str): The sentence.
    RETURNS (Optional[Tuple[int, int]]): Start and end offsets, or None.
    """
    start = sentence.find(mention)
    if start >= 0:
        return start, start + len(mention)
    match = re.search(re.escape(mention), sentence, flags=re.IGNORECASE)
    return match.span() if match else None


def _split_tokens_at(doc: Doc, cuts: Iterable[int]) -> Doc:
    """Re-tokenize so that every offset in ``cuts`` is a token boundary."""
    cuts = sorted(set(cuts))
    words: List[str] = []
    spaces: List[bool] = []
    for token in doc:
        start, end = token.idx, token.idx + len(token.text)
        inner = [cut - start for cut in cuts if start < cut < end]
        pieces = [token.text[a:b] for a, b in zip([0] + inner, inner + [len(token.text)])]
        words.extend(pieces)
        spaces.extend([False] * (len(pieces) - 1) + [bool(token.whitespace_)])
    return Doc(doc.vocab, words=words, spaces=spaces)


def make_entity_doc(
    nlp: Language, text: str, start: int, end: int, label: str, kb_id: str
) -> Tuple[Doc, bool]:
    """Tokenize ``text`` and set ``text[start:end]`` as its single entity.

    Tokens are split where needed so that the entity covers exactly the mention
    (e.g. "Orvane" in "Orvanese"). Such docs no longer match ``nlp.make_doc(text)``,
    so a corpus reader that re-tokenizes will find the entity misaligned.

    nlp (Language): Supplies the tokenizer.
    text (str): The doc text.
    start (int): Start offset of the mention.
    end (int): End offset of the mention.
    label (str): The entity label.
    kb_id (str): The gold KB ID.
    RETURNS (Tuple[Doc, bool]): The doc, and whether tokens had to be split.
    """
    doc = nlp.make_doc(text)
    split = doc.char_span(start, end) is None
    if split:
        doc = _split_tokens_at(doc, (start, end))
    doc.ents = [doc.char_span(start, end, label=label, kb_id=kb_id)]
    return doc, split


def _require_str(
    record: Dict[str, Any], key: str, path: Path, index: int, default: Optional[str] = None
) -> str:
    value = record.get(key)
    if value is None:
        value = default
    if not isinstance(value, str):
        raise DatasetError(f"{path}: record {index} has {key!r} = {value!r}; expected a string.")
    return value


def _increment(counts: SplitReport, name: str) -> None:
    setattr(counts, name, getattr(counts, name) + 1)


def mention_doc(
    nlp: Language,
    record: Dict[str, Any],
    qid: str,
    image_folder: Optional[Path],
    embed_images: bool,
    counts: SplitReport,
    *,
    path: Path,
    index: int,
) -> Optional[Doc]:
    """Build the Doc of one mention record and count what happened to it.

    nlp (Language): Supplies the tokenizer.
    record (Dict[str, Any]): The mention record.
    qid (str): Its gold QID, known to be in the KB.
    image_folder (Optional[Path]): The mention image folder.
    embed_images (bool): Store image bytes instead of the path.
    counts (SplitReport): Updated in place.
    path (Path): The split file, for error messages.
    index (int): The record's position in the file, for error messages.
    RETURNS (Optional[Doc]): The doc, or None if the record is skipped (and counted).
    RAISES (DatasetError): If ``mentions`` or ``sentence`` is not a string.
    """
    mention = unquote(_require_str(record, "mentions", path, index)).strip()
    sentence = _require_str(record, "sentence", path, index, default="")
    if not mention:
        counts.empty_mention += 1
        return None
    offsets = find_mention(mention, sentence)
    if offsets is None:
        counts.mention_not_in_sentence += 1
        sentence = f"{mention} : {sentence}"
        offsets = (0, len(mention))
    record_type = record.get("type")
    label = (
        record_type.strip()
        if isinstance(record_type, str) and record_type.strip()
        else DEFAULT_LABEL
    )
    doc, split = make_entity_doc(nlp, sentence, offsets[0], offsets[1], label, qid)
    counts.mention_token_split += split
    status, image_path = resolve_mention_image(record.get("imgPath"), image_folder)
    if image_path is not None:
        set_image(doc, _image_value(image_path, embed_images))
    _increment(counts, IMAGE_STATUS_COUNTS[status])
    counts.kept += 1
    return doc


def split_docs(
    nlp: Language,
    records: Sequence[Dict[str, Any]],
    kb_ids: Iterable[str],
    image_folder: Optional[Path],
    counts: SplitReport,
    *,
    path: Path,
    embed_images: bool = False,
    limit: int = 0,
) -> List[Doc]:
    """Turn the mention records of one split into Docs, counting skipped records.

    nlp (Language): Supplies the tokenizer.
    records (Sequence[Dict[str, Any]]): The mention records.
    kb_ids (Iterable[str]): The QIDs in the KB.
    image_folder (Optional[Path]): The mention image folder.
    counts (SplitReport): Updated in place.
    path (Path): The split file, for error messages.
    embed_images (bool): Store image bytes instead of paths.
    limit (int): Use only the first ``limit`` records (0: all).
    RETURNS (List[Doc]): One doc per kept record.
    """
    known = set(kb_ids)
    counts.records = len(records)
    if limit > 0 and len(records) > limit:
        counts.skipped_by_limit = len(records) - limit
        records = records[:limit]
    docs = []
    for index, record in enumerate(records):
        answer = record.get("answer")
        if _is_nil(answer):
            counts.nil += 1
            continue
        qid = answer.strip() if isinstance(answer, str) else ""
        if qid not in known:
            counts.gold_missing_from_kb += 1
            example = qid or repr(answer)
            if (
                len(counts.gold_missing_examples) < MAX_EXAMPLES
                and example not in counts.gold_missing_examples
            ):
                counts.gold_missing_examples.append(example)
            continue
        doc = mention_doc(
            nlp, record, qid, image_folder, embed_images, counts, path=path, index=index
        )
        if doc is not None:
            docs.append(doc)
    return docs


def write_docbin(docs: Iterable[Doc], path: Path) -> None:
    """Write docs to a ``.spacy`` file, keeping ``user_data`` (the images)."""
    doc_bin = DocBin(store_user_data=True)
    for doc in docs:
        doc_bin.add(doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc_bin.to_disk(path)
