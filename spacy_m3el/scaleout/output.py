"""Output of ``link-corpus``: one Parquet shard per input shard, written atomically.

``<output>/<shard>.parquet`` holds one row per mention (:data:`COLUMNS`); its
schema metadata (key ``spacy_m3el``) holds the shard's counts, so a summary
of the whole output needs no pass over the rows. Documents that failed are
listed in ``<output>/errors/<shard>.jsonl`` (ID, record number, reason),
written before the shard. A shard file appears only complete (written to a
temporary name, then renamed), so its presence means the shard is done: a
rerun skips it. ``<output>/_run.json`` records the settings that determine
the rows; a rerun with other settings is refused rather than mixing outputs.
"""

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from ..pipeline.mapped_file import save_atomically

COLUMNS = (
    "doc_id",
    "record",
    "start_char",
    "end_char",
    "text",
    "label",
    "kb_id",
    "score",
    "candidates",
    "image_status",
    "image_error",
)
METADATA_KEY = b"spacy_m3el"
RUN_FILE = "_run.json"
ERRORS_DIR = "errors"
# The temporary files of save_atomically for shards, errors files and _run.json.
PARTIAL = re.compile(r"\.(.+\.parquet|.+\.jsonl|_run\.json)\.[0-9a-f]{32}\.tmp")


@dataclass
class ShardCounts:
    """What one shard (or a whole run) held: documents, mentions, NIL links, documents
    whose image could not be read (linked from text only), and failed documents."""

    shards: int = 0
    docs: int = 0
    mentions: int = 0
    nil: int = 0
    unreadable_images: int = 0
    errors: int = 0

    def add(self, other: "ShardCounts") -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class ShardResult:
    """The linked rows and failed documents of one input shard."""

    name: str
    rows: List[Dict[str, Any]] = field(default_factory=list)
    errors: List[Dict[str, Any]] = field(default_factory=list)
    counts: ShardCounts = field(default_factory=ShardCounts)


def _schema():
    import pyarrow as pa

    candidate = pa.struct([("kb_id", pa.string()), ("score", pa.float64())])
    return pa.schema(
        [
            ("doc_id", pa.string()),
            ("record", pa.int64()),
            ("start_char", pa.int64()),
            ("end_char", pa.int64()),
            ("text", pa.string()),
            ("label", pa.string()),
            ("kb_id", pa.string()),
            ("score", pa.float64()),
            ("candidates", pa.list_(candidate)),
            ("image_status", pa.string()),
            ("image_error", pa.string()),
        ]
    )


def shard_path(output: Path, name: str) -> Path:
    return output / f"{name}.parquet"


def finished_shards(output: Path) -> List[str]:
    """Names of the shards whose output is complete."""
    if not output.is_dir():
        return []
    return sorted(p.stem for p in output.glob("*.parquet"))


def write_shard(output: Path, result: ShardResult) -> Path:
    """Write a shard's errors (if any), then its rows; each file appears complete or not at all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    errors_path = output / ERRORS_DIR / f"{result.name}.jsonl"
    if result.errors:
        errors_path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(error, ensure_ascii=False) + "\n" for error in result.errors)
        save_atomically(errors_path, lambda p: p.write_text(lines, encoding="utf8"))
    elif errors_path.exists():  # left by an earlier, interrupted attempt
        errors_path.unlink()
    counts = dict(asdict(result.counts), shard=result.name)
    schema = _schema().with_metadata({METADATA_KEY: json.dumps(counts).encode("utf8")})
    table = pa.Table.from_pylist(result.rows, schema=schema)
    target = shard_path(output, result.name)
    save_atomically(target, lambda p: pq.write_table(table, str(p)))
    return target


def shard_counts(path: Path) -> ShardCounts:
    """The counts stored in a shard's metadata."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(str(path)).metadata or {}
    stored = json.loads(metadata.get(METADATA_KEY, b"{}"))
    return ShardCounts(**{k: v for k, v in stored.items() if k in ShardCounts.__annotations__})


def output_counts(output: Path, names: Optional[Iterable[str]] = None) -> ShardCounts:
    """The counts of the finished shards (of ``names`` only, if given)."""
    total = ShardCounts()
    for name in finished_shards(output) if names is None else names:
        total.add(shard_counts(shard_path(output, name)))
    return total


def read_links(output: Path) -> List[Dict[str, Any]]:
    """All rows of a finished output, shard by shard (for tests and small outputs;
    large ones are better read with ``pyarrow.dataset`` or Ray Data)."""
    import pyarrow.parquet as pq

    rows: List[Dict[str, Any]] = []
    for name in finished_shards(output):
        rows.extend(pq.read_table(str(shard_path(output, name))).to_pylist())
    return rows


def read_errors(output: Path) -> List[Dict[str, Any]]:
    """All failed documents of an output, shard by shard."""
    errors: List[Dict[str, Any]] = []
    for path in sorted((output / ERRORS_DIR).glob("*.jsonl")):
        if shard_path(output, path.stem).exists():
            errors.extend(json.loads(line) for line in path.read_text("utf8").splitlines())
    return errors


def claim_output(output: Path, settings: Dict[str, Any]) -> None:
    """Create the output folder, or check that it holds a run with the same settings
    (and delete the partial files of an interrupted run).

    RAISES (ValueError): The folder holds the output of a run with other settings.
    """
    output.mkdir(parents=True, exist_ok=True)
    for folder in (output, output / ERRORS_DIR):  # files of writers killed mid-write
        for partial in folder.glob(".*.tmp"):
            if PARTIAL.fullmatch(partial.name):
                partial.unlink(missing_ok=True)
    run_file = output / RUN_FILE
    if run_file.exists():
        earlier = json.loads(run_file.read_text("utf8"))
        keys = set(earlier) | set(settings)
        changed = sorted(k for k in keys if earlier.get(k) != settings.get(k))
        if changed:
            raise ValueError(
                f"{output} holds the output of a run with other settings ({', '.join(changed)}"
                "; a changed input file or pipeline counts too); rerun the same command on "
                "the same files to resume it, or write to a new folder."
            )
        return
    text = json.dumps(settings, indent=2, sort_keys=True)
    save_atomically(run_file, lambda p: p.write_text(text, encoding="utf8"))


def run_settings(
    model: Path, inputs: Sequence[Path], shard_size: int, top_k: int, component: Optional[str]
) -> Dict[str, Any]:
    """What decides which rows a run writes (engines and worker counts do not): the
    settings, and the size and modification time of every input file and of every file
    of the pipeline (its entity cache aside, which ``build-cache`` may redo)."""
    from .records import input_files

    def stamp(path: Path) -> List[int]:
        info = path.stat()
        return [info.st_size, info.st_mtime_ns]

    pipeline_files = sorted(
        p for p in model.rglob("*") if p.is_file() and p.name != "entity_cache.safetensors"
    )
    return {
        "model": str(model.resolve()),
        "pipeline_files": {str(p.relative_to(model)): stamp(p) for p in pipeline_files},
        "inputs": {str(p.resolve()): stamp(p) for p in input_files(inputs)},
        "shard_size": shard_size,
        "top_k": top_k,
        "component": component,
    }
