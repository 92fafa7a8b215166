"""Locating and reading the files of a MIMIC-format dataset, and their quirks.

The file and folder names of the MIMIC / M3EL layout, the split files of each
dataset, strict JSON reading with helpful errors, and the quirks of the
records: ``"nil"`` answers in any case, ids given as ints or digit strings,
entity text under ``desc`` (M3EL) or ``attr`` (MIMIC), and the ``qid2id.json``
mapping.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

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


class DatasetError(ValueError):
    """A dataset folder or file that cannot be prepared (a user error)."""


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
