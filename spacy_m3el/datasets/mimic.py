"""Prepare MIMIC-format MEL datasets (WikiMEL, RichpediaMEL, WikiDiverse) for spaCy.

The layout and fields follow the MIMIC / M3EL releases::

    <dataset_dir>/
      kb_entity.json      list of {id, type, entity_name, desc|attr, image_list[, qid]}
      qid2id.json         {"Q42": 1234, ...} (one line)
      kb_image/           entity images named as in image_list
      mention_image/      mention images <basename(imgPath)> with ".jpg" forced
      <PREFIX>_{train,dev,test}.json   lists of {id, mentions, sentence, imgPath, answer, entities}

Every mention record becomes one Doc whose single entity carries the gold QID
as ``kb_id_`` and whose ``doc._.image`` is the mention image. Every record is
either kept or counted under a named reason in the :class:`PreparationReport`.
"""

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union
from urllib.parse import unquote

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin

from ..images import set_image
from ..kb import ImageRef, MultimodalKB

SPLITS = ("train", "dev", "test")
# Split-file prefixes per dataset, in order of preference.
DATASET_PREFIXES: Dict[str, Tuple[str, ...]] = {
    "wikimel": ("WIKIMEL",),
    "richpediamel": ("RichpediaMEL",),
    # M3EL ships WikiDiverse_*.json (with "desc") to replace MIMIC's wiki_diverse_*.json.
    "wikidiverse": ("WikiDiverse", "wiki_diverse"),
    "demo": ("DEMO",),
}
KB_FILE = "kb_entity.json"
QID2ID_FILE = "qid2id.json"
KB_IMAGE_DIR = "kb_image"
MENTION_IMAGE_DIRS = ("mention_image", "mention_images")
DEFAULT_LABEL = "ENT"
REPORT_FILE = "report.json"
MAX_EXAMPLES = 5
# resolve_mention_image status -> SplitReport counter.
IMAGE_STATUS_COUNTS = {
    "found": "image_found",
    "missing": "image_missing",
    "empty_path": "image_empty_path",
    "unsafe": "unsafe_image_path",
}


class DatasetError(ValueError):
    """A dataset folder or file that cannot be prepared (a user error)."""


# Report ---------------------------------------------------------------------


@dataclass
class SplitReport:
    """What happened to the mention records of one split.

    ``records == kept + nil + gold_missing_from_kb + empty_mention + skipped_by_limit``
    and, over the kept docs, ``image_found + image_missing + image_empty_path +
    unsafe_image_path == kept``.
    """

    file: str = ""
    records: int = 0
    kept: int = 0
    nil: int = 0
    gold_missing_from_kb: int = 0
    empty_mention: int = 0
    skipped_by_limit: int = 0
    image_found: int = 0
    image_missing: int = 0
    image_empty_path: int = 0
    unsafe_image_path: int = 0
    mention_not_in_sentence: int = 0
    mention_token_split: int = 0
    gold_missing_examples: List[str] = field(default_factory=list)


SPLIT_COUNT_FIELDS = tuple(f.name for f in fields(SplitReport) if f.type is int)


@dataclass
class KBReport:
    """What happened to the entity records of ``kb_entity.json``."""

    records: int = 0
    entities: int = 0
    entities_without_images: int = 0
    images: int = 0
    kb_images_missing: int = 0
    kb_unsafe_image_paths: int = 0
    duplicate_qids: int = 0
    no_qid: int = 0
    aliases: int = 0
    text_field: str = ""


@dataclass
class PreparationReport:
    """The outcome of :func:`prepare_dataset`: per-split and KB counts."""

    dataset: str
    dataset_dir: str
    output_dir: str
    kb_dir: str
    embed_images: bool = False
    limit: int = 0
    mention_image_folder: Optional[str] = None
    mention_image_fallback: bool = False
    splits: Dict[str, SplitReport] = field(default_factory=dict)
    kb: KBReport = field(default_factory=KBReport)

    def to_dict(self) -> Dict[str, Any]:
        """RETURNS (Dict[str, Any]): A JSON-serializable copy of the report."""
        return asdict(self)

    def format_table(self) -> str:
        """RETURNS (str): A readable multi-line table of the counts."""
        names = list(self.splits)
        width = max(len(name) for name in SPLIT_COUNT_FIELDS)
        lines = [
            f"Dataset {self.dataset} from {self.dataset_dir}",
            f"{'mentions':<{width}}  " + "  ".join(f"{name:>7}" for name in names),
        ]
        for name in SPLIT_COUNT_FIELDS:
            values = [getattr(self.splits[split], name) for split in names]
            lines.append(f"{name:<{width}}  " + "  ".join(f"{value:>7}" for value in values))
        for split in names:
            examples = self.splits[split].gold_missing_examples
            if examples:
                lines.append(
                    f"gold QIDs missing from the KB ({split}, first): {', '.join(examples)}"
                )
        folder = self.mention_image_folder or "(none found)"
        fallback = " (fallback: mention_image/ is missing)" if self.mention_image_fallback else ""
        lines.append(f"mention image folder: {folder}{fallback}")
        lines.append("knowledge base")
        kb = asdict(self.kb)
        kb_width = max(len(name) for name in kb)
        lines.extend(f"  {name:<{kb_width}}  {value}" for name, value in kb.items())
        lines.append(f"docs written to {self.output_dir}, KB written to {self.kb_dir}")
        return "\n".join(lines)


# Reading files --------------------------------------------------------------


def read_json(path: Path) -> Any:
    """Read a JSON file, naming the file and position on errors.

    path (Path): The file.
    RETURNS (Any): The parsed JSON.
    RAISES (DatasetError): If the file is missing or is not valid JSON.
    """
    if not path.is_file():
        raise DatasetError(f"File not found: {path}")
    try:
        # qid2id.json is a single line; json.loads reads that and multi-line JSON alike.
        return json.loads(path.read_text(encoding="utf8"))
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"Malformed JSON in {path} at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from err
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path} is not UTF-8 text: {err}") from err


def _read_record_list(path: Path) -> List[Dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, list):
        raise DatasetError(
            f"{path} must contain a JSON list of records, found {type(data).__name__}."
        )
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise DatasetError(
                f"{path}: record {i} is a {type(record).__name__}, expected an object."
            )
    return data


def find_split_files(dataset: str, dataset_dir: Path) -> Dict[str, Path]:
    """Locate the train/dev/test files of a dataset.

    dataset (str): One of ``DATASET_PREFIXES``.
    dataset_dir (Path): The dataset folder.
    RETURNS (Dict[str, Path]): The file of each split.
    RAISES (DatasetError): For an unknown dataset or if no complete set of files exists.
    """
    if dataset not in DATASET_PREFIXES:
        raise DatasetError(
            f"Unknown dataset {dataset!r}. Choose one of: {', '.join(DATASET_PREFIXES)}."
        )
    for prefix in DATASET_PREFIXES[dataset]:
        paths = {split: dataset_dir / f"{prefix}_{split}.json" for split in SPLITS}
        if all(path.is_file() for path in paths.values()):
            return paths
    expected = " or ".join(
        f"{prefix}_{{{','.join(SPLITS)}}}.json" for prefix in DATASET_PREFIXES[dataset]
    )
    raise DatasetError(f"No split files for {dataset} in {dataset_dir}: expected {expected}.")


def detect_text_field(records: Sequence[Dict[str, Any]]) -> str:
    """Return ``"desc"`` (M3EL's data) if any entity has it, else ``"attr"`` (MIMIC's).

    records (Sequence[Dict[str, Any]]): The entity records.
    RETURNS (str): The field holding the entity text.
    """
    return "desc" if any("desc" in record for record in records) else "attr"


def _is_nil(qid: Any) -> bool:
    return isinstance(qid, str) and qid.strip().lower() == "nil"


def _as_int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def invert_qid2id(qid2id: Dict[str, Any]) -> Dict[int, str]:
    """Map each int id to its QID, keeping the first QID if several share an id.

    qid2id (Dict[str, Any]): QID -> int id, as in ``qid2id.json``.
    RETURNS (Dict[int, str]): id -> QID.
    """
    id2qid: Dict[int, str] = {}
    for qid, value in qid2id.items():
        index = _as_int(value)
        if index is not None and not _is_nil(qid):
            id2qid.setdefault(index, qid)
    return id2qid


# Image paths ----------------------------------------------------------------


def is_unsafe_name(name: str) -> bool:
    """Whether a file name could point outside its folder.

    Absolute paths (POSIX or Windows), ``..`` components and NUL bytes are unsafe,
    whichever separator they use.

    name (str): The file name from the dataset.
    RETURNS (bool): True if the name must not be opened.
    """
    if "\0" in name:
        return True
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    return (
        posix.is_absolute() or bool(windows.anchor) or ".." in posix.parts or ".." in windows.parts
    )


def safe_join(folder: Path, name: str) -> Optional[Path]:
    """Join a dataset file name to its folder, or return None if it is unsafe.

    folder (Path): The image folder.
    name (str): A relative file name, possibly with subfolders.
    RETURNS (Optional[Path]): The path inside ``folder``, or None.
    """
    if is_unsafe_name(name):
        return None
    path = Path(os.path.normpath(folder / name))
    return path if path.is_relative_to(os.path.normpath(folder)) else None


def _basename(name: str) -> str:
    # Datasets may carry Windows-style paths; split on both separators.
    return PureWindowsPath(name).name


def _usable_file(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def _image_value(path: Path, embed: bool) -> ImageRef:
    return path.read_bytes() if embed else str(path.absolute())


def find_mention_image_folder(dataset_dir: Path) -> Tuple[Optional[Path], bool]:
    """Return the mention image folder and whether it is the ``mention_images`` fallback.

    dataset_dir (Path): The dataset folder.
    RETURNS (Tuple[Optional[Path], bool]): The folder (None if neither exists) and the flag.
    """
    for i, name in enumerate(MENTION_IMAGE_DIRS):
        if (dataset_dir / name).is_dir():
            return dataset_dir / name, i > 0
    return None, False


def resolve_mention_image(img_path: Any, folder: Optional[Path]) -> Tuple[str, Optional[Path]]:
    """Find a mention image the way MIMIC and M3EL do: basename with ``.jpg`` forced.

    If the ``.jpg`` file does not exist but the original basename does, that is used.

    img_path (Any): The record's ``imgPath``.
    folder (Optional[Path]): The mention image folder, if there is one.
    RETURNS (Tuple[str, Optional[Path]]): A status (``"found"``, ``"missing"``,
        ``"empty_path"`` or ``"unsafe"``) and the file if found.
    """
    if not isinstance(img_path, str) or not img_path.strip():
        return "empty_path", None
    img_path = img_path.strip()
    if is_unsafe_name(img_path):
        return "unsafe", None
    base = _basename(img_path)
    if folder is None or base in ("", ".", ".."):
        return "missing", None
    forced_jpg = os.path.splitext(base)[0] + ".jpg"
    for candidate in dict.fromkeys((forced_jpg, base)):
        path = safe_join(folder, candidate)
        if path is not None and _usable_file(path):
            return "found", path
    return "missing", None


# Docs -----------------------------------------------------------------------


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


# Knowledge base -------------------------------------------------------------


def _image_list(record: Dict[str, Any]) -> List[str]:
    images = record.get("image_list") or []
    if isinstance(images, str):
        images = [images]
    return [name for name in images if isinstance(name, str) and name.strip()]


def entity_images(
    record: Dict[str, Any], folder: Path, embed_images: bool, counts: KBReport
) -> List[ImageRef]:
    """The existing, safe images of one entity record.

    record (Dict[str, Any]): The entity record.
    folder (Path): The ``kb_image`` folder.
    embed_images (bool): Return bytes instead of absolute paths.
    counts (KBReport): Updated in place.
    RETURNS (List[ImageRef]): The images, in ``image_list`` order.
    """
    images: List[ImageRef] = []
    for name in _image_list(record):
        path = safe_join(folder, name.strip())
        if path is None:
            counts.kb_unsafe_image_paths += 1
        elif not _usable_file(path):
            counts.kb_images_missing += 1
        else:
            images.append(_image_value(path, embed_images))
    return images


def build_kb(
    nlp: Language,
    records: Sequence[Dict[str, Any]],
    id2qid: Dict[int, str],
    image_folder: Path,
    counts: KBReport,
    *,
    embed_images: bool = False,
) -> MultimodalKB:
    """Build a :class:`MultimodalKB` from entity records, without aliases.

    nlp (Language): Supplies the vocab.
    records (Sequence[Dict[str, Any]]): Records of ``kb_entity.json``.
    id2qid (Dict[int, str]): The inverted ``qid2id.json``.
    image_folder (Path): The ``kb_image`` folder.
    counts (KBReport): Updated in place.
    embed_images (bool): Store image bytes instead of paths.
    RETURNS (MultimodalKB): The KB, entities in file order.
    """
    kb = MultimodalKB(nlp.vocab)
    counts.records = len(records)
    counts.text_field = detect_text_field(records)
    for record in records:
        qid = record.get("qid") if isinstance(record.get("qid"), str) else None
        qid = (qid or "").strip() or id2qid.get(_as_int(record.get("id")), "")
        if not qid or _is_nil(qid):
            counts.no_qid += 1
            continue
        if kb.has_record(qid):
            counts.duplicate_qids += 1
            continue
        images = entity_images(record, image_folder, embed_images, counts)
        counts.images += len(images)
        counts.entities_without_images += not images
        name = record.get("entity_name")
        description = record.get(counts.text_field)
        kb.add_multimodal_entity(
            qid,
            unquote(name) if isinstance(name, str) else qid,
            description if isinstance(description, str) else "",
            images,
        )
        counts.entities += 1
    return kb


def train_aliases(docs: Iterable[Doc]) -> Dict[str, List[str]]:
    """Mention surface forms per gold QID, to be added as aliases.

    Use the training docs only: dev/test surface forms would leak into evaluation.

    docs (Iterable[Doc]): Docs whose entities carry gold ``kb_id_``.
    RETURNS (Dict[str, List[str]]): QID -> sorted surface forms.
    """
    aliases: Dict[str, set] = {}
    for doc in docs:
        for ent in doc.ents:
            aliases.setdefault(ent.kb_id_, set()).add(ent.text)
    return {qid: sorted(forms) for qid, forms in aliases.items()}


# Entry point ----------------------------------------------------------------


def _blank(lang: str) -> Language:
    try:
        return spacy.blank(lang)
    except (ImportError, KeyError) as err:
        raise DatasetError(f"Unknown spaCy language code {lang!r}: {err}") from err


def prepare_dataset(
    dataset: str,
    dataset_dir: Union[str, Path],
    output_dir: Union[str, Path],
    kb_dir: Union[str, Path],
    *,
    nlp_lang: str = "en",
    embed_images: bool = False,
    limit: int = 0,
) -> PreparationReport:
    """Convert a MIMIC-format dataset into DocBins and a saved :class:`MultimodalKB`.

    dataset (str): ``"wikimel"``, ``"richpediamel"``, ``"wikidiverse"`` or ``"demo"``.
    dataset_dir (Union[str, Path]): The dataset folder.
    output_dir (Union[str, Path]): Receives ``{train,dev,test}.spacy`` and ``report.json``.
    kb_dir (Union[str, Path]): Receives the KB (``MultimodalKB.to_disk``).
    nlp_lang (str): Language of the blank pipeline used to tokenize.
    embed_images (bool): Store image bytes instead of absolute paths.
    limit (int): Keep at most the first ``limit`` records per split (0: all); the
        KB is always complete.
    RETURNS (PreparationReport): The counts, also written to ``report.json``.
    RAISES (DatasetError): For missing folders or files and malformed JSON.
    """
    dataset_dir, output_dir, kb_dir = Path(dataset_dir), Path(output_dir), Path(kb_dir)
    dataset = dataset.lower()
    if not dataset_dir.is_dir():
        raise DatasetError(f"Dataset folder not found: {dataset_dir}")
    if limit < 0:
        raise DatasetError(f"limit must be >= 0, got {limit}.")
    split_files = find_split_files(dataset, dataset_dir)
    nlp = _blank(nlp_lang)
    image_folder, fallback = find_mention_image_folder(dataset_dir)
    report = PreparationReport(
        dataset=dataset,
        dataset_dir=str(dataset_dir.absolute()),
        output_dir=str(output_dir.absolute()),
        kb_dir=str(kb_dir.absolute()),
        embed_images=embed_images,
        limit=limit,
        mention_image_folder=image_folder.name if image_folder else None,
        mention_image_fallback=fallback,
    )
    qid2id = read_json(dataset_dir / QID2ID_FILE)
    if not isinstance(qid2id, dict):
        raise DatasetError(
            f"{dataset_dir / QID2ID_FILE} must contain a JSON object mapping QIDs to ids."
        )
    entity_records = _read_record_list(dataset_dir / KB_FILE)
    kb = build_kb(
        nlp,
        entity_records,
        invert_qid2id(qid2id),
        dataset_dir / KB_IMAGE_DIR,
        report.kb,
        embed_images=embed_images,
    )
    docs_by_split = {}
    for split, path in split_files.items():
        counts = report.splits[split] = SplitReport(file=path.name)
        docs_by_split[split] = split_docs(
            nlp,
            _read_record_list(path),
            kb.entity_ids,
            image_folder,
            counts,
            path=path,
            embed_images=embed_images,
            limit=limit,
        )
    report.kb.aliases = kb.add_name_aliases(extra_aliases=train_aliases(docs_by_split["train"]))
    for split, docs in docs_by_split.items():
        write_docbin(docs, output_dir / f"{split}.spacy")
    kb_dir.mkdir(parents=True, exist_ok=True)
    kb.to_disk(kb_dir)
    (output_dir / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf8")
    return report
