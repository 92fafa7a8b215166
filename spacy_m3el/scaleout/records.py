"""Input of ``link-corpus``: JSONL or Parquet files, cut into shards of records.

A record is one document:

- ``id`` (str or int, required): the document's ID, copied to every output row.
- ``text`` (str, required): the text.
- ``image`` (optional): a file path (relative paths are resolved against the
  folder of the input file) or, in Parquet, the encoded image bytes.
  JSONL cannot hold bytes: give them base64-encoded as ``image_base64``.
- ``entities`` (optional): the mentions to link, a list of
  ``{"start": int, "end": int, "label": str}`` character offsets. Without it
  the pipeline's own NER finds them.

An input file is cut into shards of ``shard_size`` records (the last may be
shorter). A shard is named by its file and position (``captions-00003``), is
planned from the file alone (the same file and size always give the same
shards) and is read without reading the records before it: JSONL shards
record their byte offset, Parquet shards read only their row groups.
Blank JSONL lines are skipped and do not count as records.
"""

import base64
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc

from ..images import set_image

FORMATS = {".jsonl": "jsonl", ".parquet": "parquet"}
logger = logging.getLogger("spacy_m3el")


class RecordError(ValueError):
    """A record that cannot become a document; the message says what to fix."""


@dataclass(frozen=True)
class InputShard:
    """A run of consecutive records of one input file.

    name (str): ``<file stem>-<shard number, 5 digits>``; names the output shard.
    path (str): The input file.
    start (int): Index of the first record in the file.
    stop (int): One past the last record.
    offset (int): For JSONL, the byte offset of the first record's line.
    """

    name: str
    path: str
    start: int
    stop: int
    offset: int = 0

    def __len__(self) -> int:
        return self.stop - self.start


def input_files(inputs: Sequence[Path]) -> List[Path]:
    """The input files: the given files, and the .jsonl/.parquet files of given folders
    (sorted); a ValueError for a missing path, another format or two files of one stem."""
    files: List[Path] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix in FORMATS)
            if not found:
                raise ValueError(f"No .jsonl or .parquet files in the folder {item}.")
            files.extend(found)
        elif not item.exists():
            raise ValueError(f"Input not found: {item}")
        elif item.suffix not in FORMATS:
            raise ValueError(f"Input {item} is neither .jsonl nor .parquet; convert it first.")
        else:
            files.append(item)
    stems: Dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise ValueError(
                f"Input files {stems[path.stem]} and {path} have the same name; output shards "
                "are named by file, so rename one."
            )
        stems[path.stem] = path
    return files


def plan_shards(inputs: Sequence[Path], shard_size: int) -> List[InputShard]:
    """The shards of all input files, in file order."""
    if shard_size < 1:
        raise ValueError(f"The shard size must be at least 1, got {shard_size}.")
    shards: List[InputShard] = []
    for path in input_files(inputs):
        if FORMATS[path.suffix] == "jsonl":
            bounds = _jsonl_shard_offsets(path, shard_size)
        else:
            bounds = _parquet_shard_bounds(path, shard_size)
        for number, (start, stop, offset) in enumerate(bounds):
            shards.append(
                InputShard(f"{path.stem}-{number:05d}", str(path.resolve()), start, stop, offset)
            )
    return shards


def _jsonl_shard_offsets(path: Path, shard_size: int) -> List[Tuple[int, int, int]]:
    bounds: List[Tuple[int, int, int]] = []
    count, offset, start_offset = 0, 0, 0
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                if count % shard_size == 0:
                    start_offset = offset
                    bounds.append((count, count, start_offset))
                count += 1
                bounds[-1] = (bounds[-1][0], count, start_offset)
            offset += len(line)
    return bounds


def _parquet_shard_bounds(path: Path, shard_size: int) -> List[Tuple[int, int, int]]:
    metadata = _parquet_file(path).metadata
    rows = metadata.num_rows
    groups = range(metadata.num_row_groups)
    largest = max((metadata.row_group(i).num_rows for i in groups), default=0)
    if largest > 2 * shard_size:
        logger.warning(
            "%s has row groups of up to %d rows, more than the shard size (%d): each shard "
            "reads its whole row group. Write the file with smaller row groups "
            "(pyarrow.parquet.write_table(..., row_group_size=%d)) or raise --shard-size.",
            path,
            largest,
            shard_size,
            shard_size,
        )
    return [(start, min(rows, start + shard_size), 0) for start in range(0, rows, shard_size)]


def _parquet_file(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ValueError(
            "Reading and writing Parquet needs pyarrow: "
            "pip install -c constraints.txt 'spacy-m3el[corpus]'"
        ) from err
    return pq.ParquetFile(str(path))


def read_shard(shard: InputShard) -> List[Any]:
    """The raw records of a shard, in order: dicts, or a :class:`RecordError` for a
    JSONL line that is not a JSON object (the document is reported, not dropped)."""
    if shard.path.endswith(".jsonl"):
        return list(_read_jsonl(shard))
    table = _read_parquet_rows(Path(shard.path), shard.start, shard.stop)
    return table.to_pylist()


def _read_jsonl(shard: InputShard) -> Iterator[Any]:
    with open(shard.path, "rb") as handle:
        handle.seek(shard.offset)
        line_number = shard.start
        for line in handle:
            if line_number >= shard.stop:
                return
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as err:
                record = RecordError(f"record {line_number} is not valid JSON ({err})")
            if not isinstance(record, (dict, RecordError)):
                record = RecordError(f"record {line_number} is not a JSON object")
            yield record
            line_number += 1


def _read_parquet_rows(path: Path, start: int, stop: int):
    import pyarrow as pa

    handle = _parquet_file(path)
    groups, first, position = [], None, 0
    for group in range(handle.metadata.num_row_groups):
        size = handle.metadata.row_group(group).num_rows
        if position + size > start and position < stop:
            groups.append(group)
            first = position if first is None else first
        position += size
    if not groups:
        return pa.table({})
    table = handle.read_row_groups(groups)
    return table.slice(start - first, stop - start)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or _is_int(value)


def record_id(record: Any, index: int) -> str:
    """The record's ID as text, or ``#<index in file>`` when it has none."""
    if isinstance(record, dict) and _valid_id(record.get("id")):
        return str(record["id"])
    return f"#{index}"


def record_doc(nlp: Language, record: Any, base_dir: Path, image_attr: str) -> Doc:
    """The document of a record, with its image and (if given) entities set.

    RAISES (RecordError): The record lacks a field or a field is malformed.
    """
    if isinstance(record, RecordError):
        raise record
    if not _valid_id(record.get("id")):
        raise RecordError("'id' is missing or neither a string nor an integer")
    text = record.get("text")
    if not isinstance(text, str):
        raise RecordError(f"'text' must be a string, got {type(text).__name__}")
    doc = nlp.make_doc(text)
    image = _record_image(record, base_dir)
    try:
        set_image(doc, image, image_attr)
    except (TypeError, ValueError) as err:
        raise RecordError(f"bad image: {err}") from err
    entities = record.get("entities")
    if entities is not None:
        try:
            doc.ents = _record_spans(doc, entities)
        except ValueError as err:
            if isinstance(err, RecordError):
                raise
            raise RecordError(f"the entities overlap ({err})") from err
    return doc


def has_entities(record: Any) -> bool:
    return isinstance(record, dict) and record.get("entities") is not None


def _record_image(record: Dict[str, Any], base_dir: Path) -> Optional[Any]:
    image, encoded = record.get("image"), record.get("image_base64")
    if encoded is not None:
        try:
            return base64.b64decode(encoded, validate=True)
        except (TypeError, ValueError) as err:
            raise RecordError(f"'image_base64' is not valid base64 ({err})") from err
    if isinstance(image, str) and image and not Path(image).is_absolute():
        return str(base_dir / image)
    return image


def _record_spans(doc: Doc, entities: Any) -> List[Any]:
    if not isinstance(entities, list):
        raise RecordError("'entities' must be a list of {start, end, label}")
    spans = []
    for entity in entities:
        fields = entity if isinstance(entity, dict) else {}
        start, end, label = fields.get("start"), fields.get("end"), fields.get("label")
        if not (_is_int(start) and _is_int(end) and isinstance(label, str)):
            raise RecordError(f"entity {entity!r} needs integer start, end and a string label")
        if not 0 <= start < end <= len(doc.text):
            raise RecordError(f"entity [{start}, {end}) is empty or outside the text")
        span = doc.char_span(start, end, label=label)
        if span is None:
            raise RecordError(
                f"entity [{start}, {end}) {doc.text[start:end]!r} does not start and end on "
                "token boundaries"
            )
        spans.append(span)
    return sorted(spans, key=lambda span: span.start)
