"""Scale-out: link-corpus and build-cache with the local and Ray engines.

Run from the repository root (about 8 min on 2 cores, most of it building the 100K KB once):
      python -m bench.scaleout [--work DIR] [--entities 100000] [--docs 20000]

The tiny demo pipeline (trained briefly: throughput does not depend on how well
it links) with its KB grown to ``--entities`` with distractors. Measures:

1. ``build-cache``: local (one process) against ``--engine ray --workers 2``,
   and whether the two caches are identical;
2. ``link-corpus`` of the same captions (the demo's test mentions, repeated,
   entities given) with the local engine, the local engine with
   ``--n-process 2`` and the Ray engine with 2 workers: wall time of the whole
   command and docs/s; and the fixed cost of each (the same command on one document);
3. memory of 2 Ray actors that each load the pipeline and touch every page of
   its entity cache, with the cache memory-mapped (shared pages) and copied
   (private): RSS, PSS, shared and private MiB per worker (``/proc/<pid>/smaps_rollup``).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from .common import command_line, grow_kb, machine, output_path, publish, train_demo_pipeline

HEADING = "## Scale-out: link-corpus and build-cache, local and Ray"
CACHE = Path("m3el_linker") / "entity_cache.safetensors"
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


def cli(*args: object) -> float:
    """Run ``python -m spacy_m3el ARGS``; its wall time in seconds."""
    start = time.perf_counter()
    argv = [sys.executable, "-m", "spacy_m3el", *map(str, args)]
    done = subprocess.run(argv, env=dict(os.environ, **RAY_ENV), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def grown_pipeline(work: Path, steps: int, entities: int) -> Path:
    """The demo pipeline with its KB grown to ``entities`` (saved without a cache); the
    work folder's trained pipeline is reused if there is one."""
    import spacy

    target = work / f"pipeline-{entities}"
    if (target / "meta.json").exists():
        return target
    trained = work / "pipeline"
    nlp = spacy.load(
        trained if (trained / "meta.json").exists() else train_demo_pipeline(work, steps)
    )
    linker = nlp.get_pipe("m3el_linker")
    grown = grow_kb(linker.kb, entities, image_folder=work / f"kb-images-{entities}")
    linker.set_kb(lambda vocab: grown)
    linker.save_entity_cache = False
    nlp.to_disk(target)
    return target


def write_corpus(work: Path, docs: int) -> Path:
    """JSONL captions: the demo's test mentions (entity given, image path), repeated."""
    import spacy

    from spacy_m3el.readers import read_examples

    nlp = spacy.blank("en")
    mentions = []
    for eg in read_examples(nlp, work / "corpus" / "test.spacy"):
        image = eg.reference._.image
        for ent in eg.reference.ents:
            record = {"text": eg.reference.text, "image": image if isinstance(image, str) else None}
            record["entities"] = [
                {"start": ent.start_char, "end": ent.end_char, "label": ent.label_}
            ]
            mentions.append(record)
    path = work / f"captions-{docs}.jsonl"
    with path.open("w", encoding="utf8") as handle:
        for i in range(docs):
            handle.write(json.dumps({"id": f"doc{i}", **mentions[i % len(mentions)]}) + "\n")
    return path


def cache_builds(model: Path, work: Path, ray: bool = True) -> Dict[str, object]:
    """build-cache locally and (unless ``ray`` is false) on Ray (2 workers); seconds and
    whether the caches agree."""
    import numpy

    from spacy_m3el.pipeline.mapped_file import map_safetensors

    local_s = cli("build-cache", model)
    size = (model / CACHE).stat().st_size / 2**20
    if not ray:
        return {"local_s": local_s, "ray_s": None, "identical": None, "mib": size}
    ray_model = work / "pipeline-ray-cache"
    shutil.rmtree(ray_model, ignore_errors=True)
    shutil.copytree(model, ray_model)
    (ray_model / CACHE).unlink()
    ray_s = cli("build-cache", ray_model, "--engine", "ray", "--workers", 2)
    meta_a, a = map_safetensors(model / CACHE)
    meta_b, b = map_safetensors(ray_model / CACHE)
    same = meta_a == meta_b and sorted(a) == sorted(b)
    same = same and all(numpy.array_equal(a[k], b[k]) for k in a)
    shutil.rmtree(ray_model)
    return {
        "local_s": local_s,
        "ray_s": ray_s,
        "identical": same,
        "mib": (model / CACHE).stat().st_size / 2**20,
    }


ENGINE_RUNS = {  # --engines key: (table row, link-corpus options)
    "local": ("local, 1 process", ["--engine", "local"]),
    "n-process": ("local, --n-process 2", ["--engine", "local", "--n-process", 2]),
    "ray": ("ray, --workers 2", ["--engine", "ray", "--workers", 2]),
}


def link_runs(
    model: Path, corpus: Path, one_doc: Path, work: Path, shard_size: int, engines: List[str]
) -> List[Dict]:
    """Each of ``engines`` (keys of ENGINE_RUNS) on the corpus and on one document (its
    fixed cost)."""
    rows = []
    for key in engines:
        name, options = ENGINE_RUNS[key]
        times = []
        for path in (corpus, one_doc):
            output = work / "links"
            shutil.rmtree(output, ignore_errors=True)
            times.append(
                cli("link-corpus", model, path, output, "--shard-size", shard_size, *options)
            )
        docs = sum(1 for line in corpus.open() if line.strip())
        rows.append(
            {
                "engine": name,
                "wall_s": times[0],
                "docs_per_s": docs / times[0],
                "steady_docs_per_s": docs / max(1e-9, times[0] - times[1]),
                "one_doc_s": times[1],
            }
        )
    return rows


def smaps(pid: int) -> Dict[str, float]:
    """RSS, PSS, shared and private MiB of a process."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0]) / 1024
    shared = fields.get("Shared_Clean", 0) + fields.get("Shared_Dirty", 0)
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {"rss": fields["Rss"], "pss": fields["Pss"], "shared": shared, "private": private}


class MemoryProbe:
    """A Ray actor holding a loaded pipeline whose cache pages have all been touched."""

    def __init__(self, model: str, mmap: bool):
        import spacy

        nlp = spacy.load(model)
        linker = nlp.get_pipe("m3el_linker")
        linker.index.load(Path(model) / CACHE, mmap=mmap)
        cache = linker.entity_cache
        self.checksum = sum(float(v.sum(dtype="float64")) for v in cache.stored.values())

    def measure(self) -> Dict[str, float]:
        return smaps(os.getpid())


def memory(model: Path, workers: int = 2) -> List[Dict[str, object]]:
    """Per-worker memory of ``workers`` actors, cache memory-mapped and copied."""
    import ray

    rows = []
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # Ray forks this process
    ray.init(num_cpus=workers, include_dashboard=False, configure_logging=False)
    try:
        probe = ray.remote(num_cpus=1)(MemoryProbe)
        for mmap in (True, False):
            actors = [probe.remote(str(model), mmap) for _ in range(workers)]
            ray.get([a.__ray_ready__.remote() for a in actors])  # every actor has read the cache
            for i, measured in enumerate(ray.get([a.measure.remote() for a in actors])):
                rows.append(
                    {"cache": "memory-mapped" if mmap else "copied", "worker": i, **measured}
                )
            for actor in actors:
                ray.kill(actor)
            time.sleep(2)
    finally:
        ray.shutdown()
    return rows


def report(results: Dict[str, object], command: str) -> str:
    build = results["cache"]
    lines = [
        f"Measured with `{command}` on {machine()}. The tiny demo pipeline, KB grown to "
        f"{results['entities']:,} entities (int8 entity cache {build['mib']:.0f} MiB); "
        f"{results['docs']:,} captions with their entity given and an image file, shards of "
        f"{results['shard_size']}; every figure is one run of the whole command (a fresh process, "
        "pipeline load included).",
        "",
        "| build-cache | seconds | identical to local |",
        "|---|---|---|",
        f"| local, 1 process | {build['local_s']:.1f} | - |",
    ]
    if build["ray_s"] is not None:
        lines.append(
            f"| ray, --workers 2 | {build['ray_s']:.1f} | {'yes' if build['identical'] else 'NO'} |"
        )
    lines += [
        "",
        "| link-corpus | wall s | docs/s | docs/s without the fixed cost | fixed cost s (1 doc) |",
        "|---|---|---|---|---|",
    ]
    for row in results["link"]:
        lines.append(
            f"| {row['engine']} | {row['wall_s']:.1f} | {row['docs_per_s']:.1f} | "
            f"{row['steady_docs_per_s']:.1f} | {row['one_doc_s']:.1f} |"
        )
    if not results["memory"]:
        return "\n".join(lines)
    lines += [
        "",
        "Memory per Ray worker (2 workers, each has loaded the pipeline and read every "
        "page of the cache; MiB):",
        "",
        "| entity cache | worker | RSS | PSS | shared | private |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["memory"]:
        lines.append(
            f"| {row['cache']} | {row['worker']} | {row['rss']:.0f} | {row['pss']:.0f} | "
            f"{row['shared']:.0f} | {row['private']:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-scaleout"))
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--steps", type=int, default=100, help="Training steps of the pipeline.")
    parser.add_argument(
        "--engines",
        default=",".join(ENGINE_RUNS),
        help=f"Comma-separated link-corpus runs, of: {', '.join(ENGINE_RUNS)}.",
    )
    parser.add_argument(
        "--no-ray", action="store_true", help="Skip the Ray cache build and the memory table."
    )
    parser.add_argument("--output", type=Path, default=None, help="Markdown file to update.")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    args = parse_args(argv)
    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    unknown = sorted(set(engines) - set(ENGINE_RUNS))
    if unknown:
        raise SystemExit(f"Unknown --engines {unknown}; choose from {list(ENGINE_RUNS)}.")
    args.work.mkdir(parents=True, exist_ok=True)
    model = grown_pipeline(args.work, args.steps, args.entities)
    corpus = write_corpus(args.work, args.docs)
    one_doc = args.work / "one-doc.jsonl"
    one_doc.write_text(corpus.open().readline(), encoding="utf8")
    results = {
        "entities": args.entities,
        "docs": args.docs,
        "shard_size": args.shard_size,
        "cache": cache_builds(model, args.work, ray=not args.no_ray),
        "link": link_runs(model, corpus, one_doc, args.work, args.shard_size, engines),
        "memory": [] if args.no_ray else memory(model),
    }
    full = args.entities >= 100_000 and args.docs >= 20000 and not args.no_ray
    full = full and engines == list(ENGINE_RUNS)
    output = output_path(args.output, full, args.work)
    publish(report(results, command_line("bench.scaleout", argv)), output, HEADING)
    return results


if __name__ == "__main__":
    main()
