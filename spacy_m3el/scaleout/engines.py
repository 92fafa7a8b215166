"""``link-corpus``: plan the shards, skip the finished ones, run an engine, sum up.

Engines link the pending shards and write each one as it is done:

- ``local``: this process, shard after shard (``n_process`` > 1 uses spaCy's
  multiprocessing inside each shard);
- ``ray``: an actor pool on a Ray cluster (:mod:`.ray_engine`).

Either way the rows depend only on the input, the pipeline and the settings
recorded in ``_run.json``, so a rerun after a crash finishes the same output.
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, TextIO

from .linking import load_shard_linker, timed_link
from .output import (
    ShardCounts,
    claim_output,
    finished_shards,
    output_counts,
    run_settings,
    shard_path,
    write_shard,
)
from .records import InputShard, plan_shards

ENGINES = ("local", "ray")


@dataclass
class CorpusJob:
    """What to link and how (everything ``link-corpus`` takes)."""

    model: Path
    inputs: Sequence[Path]
    output: Path
    engine: str = "local"
    component: Optional[str] = None
    shard_size: int = 1000
    batch_size: int = 64
    top_k: int = 5
    n_process: int = 1
    workers: int = 2
    gpus_per_worker: float = 0.0
    max_attempts: int = 3

    def validate(self) -> None:
        """RAISES (ValueError): A setting out of range, or the output among the inputs."""
        if self.engine not in ENGINES:
            raise ValueError(f"Unknown engine {self.engine!r}; use one of {', '.join(ENGINES)}.")
        for name in ("shard_size", "batch_size", "top_k", "n_process", "workers", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker cannot be negative, got {self.gpus_per_worker}.")
        if any(self.output.resolve() == p.resolve() for p in self.inputs):
            raise ValueError(
                f"The output folder {self.output} is also an input: its shards would be read "
                "as documents. Write to another folder."
            )


class Progress:
    """Shards and documents done, and documents per second, on one updating line."""

    def __init__(self, shards: int, stream: TextIO = sys.stderr):
        self.total_shards = shards
        self.done = ShardCounts()
        self.stream = stream
        # A terminal gets one line redrawn every second; a log file a line every 30 s.
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.interval = 1.0 if self.tty else 30.0
        self.start = time.perf_counter()
        self._shown = float("-inf")

    @property
    def docs_per_second(self) -> float:
        return self.done.docs / max(1e-9, time.perf_counter() - self.start)

    def update(self, counts: ShardCounts) -> None:
        self.done.add(counts)
        now = time.perf_counter()
        if now - self._shown >= self.interval or self.done.shards == self.total_shards:
            self._shown = now
            last = self.done.shards == self.total_shards
            start = "\r" if self.tty else ""
            end = "\n" if last or not self.tty else ""
            self.stream.write(
                f"{start}{self.done.shards}/{self.total_shards} shards, "
                f"{self.done.docs} docs, {self.docs_per_second:.1f} docs/s{end}"
            )
            self.stream.flush()


def run_corpus_job(job: CorpusJob, stream: TextIO = sys.stderr) -> ShardCounts:
    """Link the job's pending shards with its engine; the counts of the whole output.

    RAISES (ValueError): bad settings, or shards still unfinished after the run
        (named; rerunning the same command retries them).
    """
    job.validate()
    shards = plan_shards(job.inputs, job.shard_size)
    claim_output(
        job.output, run_settings(job.model, job.inputs, job.shard_size, job.top_k, job.component)
    )
    finished = set(finished_shards(job.output))
    pending = [shard for shard in shards if shard.name not in finished]
    stream.write(
        f"{len(shards)} shards, {len(shards) - len(pending)} finished earlier, "
        f"{len(pending)} to link with the {job.engine} engine.\n"
    )
    progress = Progress(len(pending), stream)
    if pending and job.engine == "local":
        run_local(job, pending, progress)
    elif pending:
        from .ray_engine import run_ray

        run_ray(job, pending, progress)
    missing = [shard.name for shard in shards if not shard_path(job.output, shard.name).exists()]
    if missing:
        raise ValueError(
            f"{len(missing)} shards were not finished ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); rerun the same command to retry them."
        )
    return output_counts(job.output, [shard.name for shard in shards])


def run_local(job: CorpusJob, pending: List[InputShard], progress: Progress) -> None:
    """Link the pending shards in this process, writing each when it is done."""
    linker, _ = load_shard_linker(
        job.model,
        job.component,
        batch_size=job.batch_size,
        top_k=job.top_k,
        n_process=job.n_process,
    )
    for shard in pending:
        result, _ = timed_link(linker, shard)
        write_shard(job.output, result)
        progress.update(result.counts)


def format_summary(counts: ShardCounts, output: Path, seconds: float) -> str:
    """The closing summary of a run (the counts cover the whole output, resumed or not)."""
    lines = [
        f"Linked {counts.docs} docs in {counts.shards} shards -> {output}",
        f"  mentions: {counts.mentions} ({counts.nil} NIL)",
        f"  docs linked from text only (image unreadable): {counts.unreadable_images}",
        f"  docs failed: {counts.errors}"
        + (f" (reasons in {output / 'errors'})" if counts.errors else ""),
        f"  this run: {seconds:.1f} s",
    ]
    return "\n".join(lines)
