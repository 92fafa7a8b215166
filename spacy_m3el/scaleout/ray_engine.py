"""The Ray engine: Ray Data ``map_batches`` over shards, with a pool of actors.

Each actor loads the pipeline once; its linker memory-maps the saved entity
cache, so the actors of one node share those pages. One dataset row is one
input shard and one actor call links and writes it, so a shard's rows never
depend on which actor ran it or how often. An actor that dies (killed,
out of memory) is restarted and its shard retried, up to ``max_attempts``
starts of one shard (counted in ``<output>/.attempts``, since Ray Data itself
would restart without limit); a shard that fails for good is left unfinished,
the other shards go on, the driver names it at the end, and rerunning the
command retries it. This module is the only one that imports
Ray (``pip install -c constraints.txt 'spacy-m3el[ray]'``).

Without ``RAY_ADDRESS`` a local Ray instance is started with as many CPUs as
there are workers (or cores, if more); with it (``ray://head:10001`` or
``head:6379``) the run joins that cluster, whose nodes must see the model,
input and output paths at the same place (a shared filesystem).
"""

import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Iterator, List

import numpy

from .engines import CorpusJob, Progress
from .linking import ShardFailed, ShardLinker, load_pipeline, timed_link
from .output import ShardCounts, write_shard
from .records import InputShard

COUNT_FIELDS = tuple(ShardCounts.__annotations__)
ATTEMPTS_DIR = ".attempts"


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
    """Join the cluster of ``RAY_ADDRESS``, or start a local Ray for ``workers`` actors
    (unless this process already joined one); set Ray Data up for whole-shard tasks."""
    ray = import_ray()
    # Ray forks its processes; a fast tokenizer that already ran would warn about it.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # We print our own progress (docs/s); without this Ray warns that its bars are off.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    if ray.is_initialized():
        pass
    elif os.environ.get("RAY_ADDRESS"):
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
    # A shard that fails for good is named by the driver, not fatal to the other shards.
    context.max_errored_blocks = -1


def count_attempt(output: Path, name: str) -> int:
    """Count one more attempt at a shard (in ``<output>/.attempts/``); the count so far."""
    folder = output / ATTEMPTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / name
    count = (int(marker.read_text() or 0) if marker.exists() else 0) + 1
    marker.write_text(str(count))
    return count


class ShardActor:
    """A Ray Data actor: loads the pipeline once, then links and writes whole shards.

    A shard is given up (an exception, so Ray does not retry it) at its
    ``max_attempts``-th start: its earlier attempts killed their actors (a crash
    or the out-of-memory killer), and Ray would otherwise restart them forever.
    """

    def __init__(self, model: str, component: Any, output: str, settings: Dict[str, Any]):
        settings = dict(settings)
        self.max_attempts = settings.pop("max_attempts")
        nlp, linker = load_pipeline(model, component, settings.pop("use_gpu"))
        self.linker = ShardLinker(nlp, linker.name, **settings)
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
            attempt = count_attempt(self.output, shard.name)
            if attempt > self.max_attempts:
                raise ShardFailed(
                    f"shard {shard.name} was started {attempt - 1} times and its worker died "
                    "each time (a crash or out of memory?); giving up on it for this run"
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
    _, linker = load_pipeline(model, component)
    if not linker.index.has_current_cache(linker.kb):
        raise ValueError(
            f"{model} has no current entity cache, so every Ray worker would encode the "
            f"whole KB itself. Build it once first: python -m spacy_m3el build-cache {model} "
            "[--engine ray --workers N]"
        )


def actor_pool(ray, items: int, workers: int, gpus_per_worker: float) -> Dict[str, Any]:
    """The ``map_batches`` arguments of a pool of whole-item actor calls."""
    return {
        "batch_size": 1,
        "compute": ray.data.ActorPoolStrategy(size=max(1, min(workers, items))),
        "num_cpus": 1,
        "num_gpus": gpus_per_worker or None,
    }


def ray_rows(dataset) -> Iterator[Dict[str, Any]]:
    """The rows of a Ray dataset; a Ray failure as a ValueError that says what now."""
    ray = import_ray()
    try:
        yield from dataset.iter_rows()
    except ray.exceptions.RayError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"The Ray run stopped: {first}. Finished shards are kept; check that every node "
            "sees the pipeline, input and output paths, then rerun the same command."
        ) from err


def run_ray(job: CorpusJob, pending: List[InputShard], progress: Progress) -> None:
    """Link the pending shards on a Ray actor pool, updating ``progress`` per shard."""
    ray = import_ray()
    check_saved_cache(job.model, job.component)
    init_ray(job.workers)
    shutil.rmtree(job.output / ATTEMPTS_DIR, ignore_errors=True)
    items = [asdict(shard) for shard in pending]
    settings = {
        "batch_size": job.batch_size,
        "top_k": job.top_k,
        "use_gpu": job.gpus_per_worker > 0,
        "max_attempts": job.max_attempts,
    }
    linked = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ShardActor,
        fn_constructor_kwargs={
            "model": str(job.model.resolve()),
            "component": job.component,
            "output": str(job.output.resolve()),
            "settings": settings,
        },
        **actor_pool(ray, len(items), job.workers, job.gpus_per_worker),
    )
    for row in ray_rows(linked):
        progress.update(ShardCounts(**{field: int(row[field]) for field in COUNT_FIELDS}))
    shutil.rmtree(job.output / ATTEMPTS_DIR, ignore_errors=True)
