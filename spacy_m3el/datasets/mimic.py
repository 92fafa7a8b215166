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

This module is the preparation driver (:func:`prepare_dataset`); the work is
done by ``mimic_files`` (reading the files), ``mimic_images`` (image paths),
``mimic_docs`` (mention Docs), ``mimic_kb`` (the KB) and ``mimic_report`` (the
counts), whose public names are re-exported here.
"""

import json
from pathlib import Path
from typing import Union

import spacy
from spacy.language import Language

from .mimic_docs import (
    DEFAULT_LABEL,
    IMAGE_STATUS_COUNTS,
    MAX_EXAMPLES,
    find_mention,
    make_entity_doc,
    mention_doc,
    split_docs,
    write_docbin,
)
from .mimic_files import (
    DATASET_PREFIXES,
    KB_FILE,
    KB_IMAGE_DIR,
    MENTION_IMAGE_DIRS,
    QID2ID_FILE,
    SPLITS,
    DatasetError,
    _read_record_list,
    detect_text_field,
    find_split_files,
    invert_qid2id,
    read_json,
)
from .mimic_images import (
    find_mention_image_folder,
    is_unsafe_name,
    resolve_mention_image,
    safe_join,
)
from .mimic_kb import build_kb, entity_images, train_aliases
from .mimic_report import SPLIT_COUNT_FIELDS, KBReport, PreparationReport, SplitReport

__all__ = [
    "DATASET_PREFIXES",
    "DEFAULT_LABEL",
    "IMAGE_STATUS_COUNTS",
    "KB_FILE",
    "KB_IMAGE_DIR",
    "MAX_EXAMPLES",
    "MENTION_IMAGE_DIRS",
    "QID2ID_FILE",
    "REPORT_FILE",
    "SPLITS",
    "SPLIT_COUNT_FIELDS",
    "DatasetError",
    "KBReport",
    "PreparationReport",
    "SplitReport",
    "build_kb",
    "detect_text_field",
    "entity_images",
    "find_mention",
    "find_mention_image_folder",
    "find_split_files",
    "invert_qid2id",
    "is_unsafe_name",
    "make_entity_doc",
    "mention_doc",
    "prepare_dataset",
    "read_json",
    "resolve_mention_image",
    "safe_join",
    "split_docs",
    "train_aliases",
    "write_docbin",
]

REPORT_FILE = "report.json"


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
