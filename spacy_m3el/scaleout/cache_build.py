"""``build-cache --engine ray``: encode a KB's entities on a pool of Ray actors.

The KB's records are cut into contiguous runs whose lengths are multiples of
the linker's entity batch size; each actor (one pipeline load each, a GPU if
asked) encodes runs with the same code as the single-process build
(``EntityIndex.encode_records``) and returns the stored features as
safetensors bytes; the driver concatenates them in KB order. Every batch is
the batch the single-process build would encode, so the cache is the same.
"""

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy

from ..pipeline.entity_cache import EntityCache, concat_stored
from .linking import load_pipeline
from .ray_engine import actor_pool, import_ray, init_ray, ray_rows

logger = logging.getLogger("spacy_m3el")
RUNS_PER_WORKER = 4  # more runs than workers, so a slow or restarted actor delays less


def run_starts(entities: int, workers: int, batch_size: int) -> List[int]:
    """Start offsets of the runs: about ``RUNS_PER_WORKER`` per worker, each a whole
    number of batches (the last may be shorter)."""
    batches = -(-entities // batch_size)
    per_run = max(1, -(-batches // (workers * RUNS_PER_WORKER))) * batch_size
    return list(range(0, entities, per_run))


class CacheShardEncoder:
    """A Ray Data actor: loads the pipeline once, encodes runs of KB records."""

    def __init__(self, model: str, component: Optional[str], use_gpu: bool):
        _, self.linker = load_pipeline(model, component, use_gpu)
        self.records = list(self.linker.kb.records())
        self.fingerprints = f"{self.linker.model.fingerprint()}/{self.linker.kb.fingerprint()}"

    def __call__(self, batch: Dict[str, numpy.ndarray]) -> Dict[str, List[Any]]:
        from safetensors.numpy import save

        out: Dict[str, List[Any]] = {"start": [], "features": [], "fingerprint": [], "unread": []}
        index = self.linker.index
        for start, stop in zip(batch["start"], batch["stop"]):
            stored, unreadable = index.encode_records(
                self.linker.kb, self.records[int(start) : int(stop)], index.precision
            )
            out["start"].append(int(start))
            out["features"].append(save({k: numpy.ascontiguousarray(v) for k, v in stored.items()}))
            out["fingerprint"].append(self.fingerprints)
            out["unread"].append(unreadable)
        return out


def build_cache_ray(linker, model: Path, workers: int, gpus_per_worker: float = 0.0) -> EntityCache:
    """The entity cache of a saved pipeline's linker, encoded on ``workers`` Ray actors.

    linker (M3ELLinker): The linker of ``model``, loaded in this process (its KB
        and weights give the cache's fingerprints and order).
    model (Path): The pipeline folder the actors load.
    RAISES (ValueError): An actor's weights differ from the driver's (the folder
        changed during the build).
    """
    from safetensors.numpy import load

    kb_ids = [record.kb_id for record in linker.kb.records()]
    if not kb_ids:
        return linker.build_entity_cache()
    ray = import_ray()
    init_ray(workers)
    starts = run_starts(len(kb_ids), workers, linker.index.batch_size)
    items = [{"start": s, "stop": e} for s, e in zip(starts, starts[1:] + [len(kb_ids)])]
    fingerprint, kb_fingerprint = linker.model.fingerprint(), linker.kb.fingerprint()
    encoded = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        CacheShardEncoder,
        fn_constructor_kwargs={
            "model": str(model.resolve()),
            "component": linker.name,
            "use_gpu": gpus_per_worker > 0,
        },
        **actor_pool(ray, len(items), workers, gpus_per_worker),
    )
    parts: Dict[int, Dict[str, numpy.ndarray]] = {}
    unreadable = 0
    for row in ray_rows(encoded):
        if row["fingerprint"] != f"{fingerprint}/{kb_fingerprint}":
            raise ValueError(
                f"A worker loaded other weights or another KB than this process from {model}; "
                "was the pipeline saved again during the build, or does the node see another "
                "folder at that path? Run build-cache again."
            )
        parts[int(row["start"])] = load(bytes(row["features"]))
        unreadable += int(row["unread"])
    if sorted(parts) != starts:
        raise ValueError("Some KB runs were not encoded; run build-cache again.")
    if unreadable:
        logger.warning(
            "%s: %d entity images could not be read; those entities are encoded from text only.",
            linker.name,
            unreadable,
        )
    return EntityCache(
        kb_ids,
        concat_stored([parts[start] for start in starts]),
        linker.index.precision,
        fingerprint,
        kb_fingerprint,
        linker.model.retrieval_spec,
    )
