"""The Ray engine: Ray Data ``map_batches`` over shards, with a pool of actors.

Each actor loads the pipeline once; its linker memory-maps the saved entity
cache, so the actors of one node share those pages. One dataset row is one
input shard and one actor call links and writes it, so a shard's rows never
depend on which actor ran it or how often. An actor that dies (killed,
out of memory) is restarted and its shard retried (Ray Data's default for
actor pools: no limit); a shard whose task fails for good (an exception out
of the actor) is left unfinished, the other shards go on, the driver names
it at the end, and rerunning the command retries it. This module is the only one that imports
Ray (``pip install -c constraints.txt 'spacy-m3el[ray]'``).

Without ``RAY_ADDRESS`` a local Ray instance is started with as many CPUs as
there are workers (or cores, if more); with it (``ray://head:10001`` or
``head:6379``) the run joins that cluster, whose nodes must see the model,
input and output paths at the same place (a shared filesystem).
"""

import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List

import numpy

from .engines import CorpusJob, Progress
from .linking import load_shard_linker, timed_link
from .output import ShardCounts, write_shard
from .records import InputShard

COUNT_FIELDS = tuple(ShardCounts.__annotations__)


def import_ray():
    """The ``ray`` module, or a ValueError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ValueError(
            "The ray engine needs Ray: pip install -c constraints.txt 'spacy-m3el[ray]'"
        ) from err
    return ray


def init_ray(workers: int) -> None:
    """Join the cluster of ``RAY_ADDRESS``, or start a local Ray for ``workers`` actors."""
    ray = import_ray()
    if ray.is_initialized():
        return
    # Ray forks its processes; a fast tokenizer that already ran would warn about it.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # We print our own progress (docs/s); without this Ray warns that its bars are off.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING, configure_logging=False)
    else:
        ray.init(
            num_cpus=max(workers, os.cpu_count() or 1),
            include_dashboard=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # A shard that fails after its retries is reported by the driver, not fatal to the others.
    context.max_errored_blocks = -1


class ShardActor:
    """A Ray Data actor: loads the pipeline once, then links and writes whole shards."""

    def __init__(self, model: str, component: Any, output: str, settings: Dict[str, Any]):
        if settings.pop("use_gpu", False):
            import spacy

            spacy.require_gpu()
        self.linker, _ = load_shard_linker(Path(model), component, **settings)
        self.output = Path(output)

    def __call__(self, batch: Dict[str, numpy.ndarray]) -> Dict[str, List[Any]]:
        done: Dict[str, List[Any]] = {name: [] for name in ("name", "seconds") + COUNT_FIELDS}
        for i in range(len(batch["name"])):
            shard = InputShard(
                name=str(batch["name"][i]),
                path=str(batch["path"][i]),
                start=int(batch["start"][i]),
                stop=int(batch["stop"][i]),
                offset=int(batch["offset"][i]),
            )
            result, seconds = timed_link(self.linker, shard)
            write_shard(self.output, result)
            done["name"].append(shard.name)
            done["seconds"].append(seconds)
            for field in COUNT_FIELDS:
                done[field].append(getattr(result.counts, field))
        return done


def check_saved_cache(model: Path, component: Any) -> None:
    """Raise a ValueError unless the pipeline folder holds a current entity cache (else
    every actor would encode the whole KB itself)."""
    _, linker = load_shard_linker(model, component)
    if not linker.index.has_current_cache(linker.kb):
        raise ValueError(
            f"{model} has no current entity cache, so every Ray worker would encode the "
            f"whole KB itself. Build it once first: python -m spacy_m3el build-cache {model} "
            "[--engine ray --workers N]"
        )


def run_ray(job: CorpusJob, pending: List[InputShard], progress: Progress) -> None:
    """Link the pending shards on a Ray actor pool, updating ``progress`` per shard."""
    ray = import_ray()
    check_saved_cache(job.model, job.component)
    init_ray(job.workers)
    items = [asdict(shard) for shard in pending]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    settings = {
        "batch_size": job.batch_size,
        "top_k": job.top_k,
        "use_gpu": job.gpus_per_worker > 0,
    }
    linked = dataset.map_batches(
        ShardActor,
        fn_constructor_kwargs={
            "model": str(job.model.resolve()),
            "component": job.component,
            "output": str(job.output.resolve()),
            "settings": settings,
        },
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(job.workers, len(items))),
        num_cpus=1,
        num_gpus=job.gpus_per_worker or None,
    )
    for row in linked.iter_rows():
        progress.update(ShardCounts(**{field: int(row[field]) for field in COUNT_FIELDS}))
