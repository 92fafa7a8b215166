"""Linking at knowledge-base scale: entity cache, two-stage linking, exhaustive ranking.

Run from the repository root:
      python -m bench.scale               (1K, 10K, 100K entities; ~10-30 min on 2 cores)
      python -m bench.scale --quick       (1K and 10K; a few minutes)
Writes BENCHMARKS.md and BENCHMARKS.json (``--output``) and prints the same tables.
Runs made smaller than the real benchmark (``--steps``, ``--mentions``,
``--repeats``, ``--vit-encoder tiny``, ...) write into the work folder unless
``--output`` says otherwise.

What is measured (nothing here is estimated or hard-coded):
- A tiny M3EL (the demo's encoder) trained on the generated demo dataset, whose
  KB is grown with synthetic distractor entities (invented names, some shared
  with real entities, drawn emblem images) to each size. Per size, in a fresh
  process: entity-cache build time and bytes per entity, two-stage linking
  through ``nlp.pipe`` (time per mention; split into encoder / stage 1 / stage
  2 by running the component's stage methods on the same batches), the
  exhaustive full-KB ranking, stage-1 recall, Hits@1 of both, peak RSS.
- The bare encoder on the same mentions (image decoding, preprocessing and the
  encoder forward pass, nothing else): the floor for ``nlp.pipe``.
- A CLIP with ViT-B/32's shapes and random weights: ``nlp.pipe`` against its bare
  encoder on a 200-entity KB, and stages 1 and 2 over *synthetic* entity caches
  of 1K-100K entities (random features of the right shapes; ViT-B/32 cannot
  encode 100K entities on 2 CPU cores in a benchmark's time).
- Stage 1 alone over 1M entities (synthetic retrieval matrix).
- Training throughput (examples/s, peak RSS) for several batch sizes.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional

from .common import (
    ACCURACY_HEADING,
    IVF_HEADING,
    ROOT,
    int_list,
    machine,
    output_path,
    section,
    train_demo_pipeline,
)
from .report import report, targets
from .tiny import measure_size, measure_training
from .vit import ENCODERS, measure_stage1_million, measure_vit

COMMAND = "python -m bench.scale"
# What a task subprocess may run (``python -m bench.scale --task NAME --task-args JSON``).
TASKS = {
    f.__name__: f for f in (measure_size, measure_training, measure_vit, measure_stage1_million)
}
# Options that shrink the benchmark below its real size or change the machine's use (smoke
# runs): unless --output says otherwise, such runs do not write the repository's BENCHMARKS.md.
SMOKE_OPTIONS = (
    "steps",
    "mentions",
    "repeats",
    "train_batches",
    "vit_encoder",
    "million",
    "threads",
)


def in_subprocess(task: str, *args, threads: int = 2) -> object:
    """Run ``TASKS[task](*args)`` in a fresh interpreter (for per-task peak RSS): its result.

    The child is ``python -m bench.scale --task ...`` started in the repository
    root, so it imports this package as the parent does; torch uses ``threads``.
    """
    command = [sys.executable, "-m", "bench.scale", "--task", task, "--task-args", json.dumps(args)]
    command += ["--threads", str(threads)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{task} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_task(task: str, args_json: str, threads: int) -> None:
    """The child's side of :func:`in_subprocess`: print the task's result as one JSON line."""
    import torch

    torch.set_num_threads(threads)
    print(json.dumps(TASKS[task](*json.loads(args_json))), flush=True)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="spacy-m3el scale benchmarks")
    parser.add_argument("--sizes", type=int_list, default=[1000, 10000, 100000])
    parser.add_argument(
        "--quick", action="store_true", help="1K and 10K only, no ViT-B/32 and no 1M"
    )
    parser.add_argument("--steps", type=int, default=300, help="training steps of the tiny linker")
    parser.add_argument(
        "--exhaustive-limit",
        type=int,
        default=216,
        help="mentions ranked exhaustively per size (at most 108 at 100K and above)",
    )
    parser.add_argument(
        "--max-candidates",
        default="pipeline",
        help="override the linker's max_candidates (a number, or 'none' for no limit)",
    )
    parser.add_argument(
        "--mentions", type=int, default=0, help="test mentions per size (0: all; ViT-B/32: 96)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs per measurement (median; ViT: <= 3)"
    )
    parser.add_argument(
        "--train-batches", type=int_list, default=[8, 32, 128], help="training batch sizes"
    )
    parser.add_argument(
        "--vit-encoder",
        choices=ENCODERS,
        default="b32",
        help="'tiny' runs the ViT-B/32 part with the tiny encoder (smoke runs)",
    )
    parser.add_argument(
        "--million", type=int, default=1_000_000, help="entities of the stage-1-only part"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="Markdown report; its .json sibling gets the raw results (default: BENCHMARKS.md"
        " for a full-size run, else in the work folder)",
    )
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads of every measurement (default 2)"
    )
    parser.add_argument("--task", choices=sorted(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--task-args", default="[]", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = [1000, 10000]
    args.full_run = min(args.sizes) >= 1000 and all(
        getattr(args, name) == parser.get_default(name) for name in SMOKE_OPTIONS
    )
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    """Run the benchmark; write and print the report. RETURNS: the results (as in the JSON)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.task:
        run_task(args.task, args.task_args, args.threads)
        return {}
    import torch

    torch.set_num_threads(args.threads)  # for the report's machine line (and the demo training)
    run = partial(in_subprocess, threads=args.threads)
    start = time.perf_counter()
    work = (args.work or Path(tempfile.mkdtemp(prefix="m3el-bench-"))).resolve()
    output = output_path(args.output, args.full_run, work)
    print(f"working in {work}", flush=True)
    pipeline, corpus = work / "pipeline", work / "corpus"
    if not pipeline.exists():
        train_demo_pipeline(work, args.steps)
    results: Dict[str, object] = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    results["sizes"] = []
    for size in args.sizes:
        limit = args.exhaustive_limit if size < 100_000 else min(args.exhaustive_limit, 108)
        print(f"KB of {size:,} entities ...", flush=True)
        task_args = (str(pipeline), str(corpus), size, limit, args.max_candidates)
        measured = run("measure_size", *task_args, args.mentions, args.repeats)
        results["sizes"].append(measured)
        print(json.dumps(measured), flush=True)
    print("training throughput ...", flush=True)
    results["training"] = run("measure_training", str(pipeline), str(corpus), args.train_batches)
    if not args.quick:
        repeats = min(args.repeats, 3)
        print("ViT-B/32-sized encoder ...", flush=True)
        mentions = args.mentions or 96
        results["vit"] = run(
            "measure_vit",
            str(work),
            str(corpus),
            args.sizes,
            args.vit_encoder,
            200,
            mentions,
            repeats,
        )
        print("stage 1 at 1M ...", flush=True)
        results["million"] = run("measure_stage1_million", args.million, repeats)
    results["targets"] = targets(results)
    results["wall_s"] = time.perf_counter() - start
    text = report(results, " ".join([COMMAND, *argv]))
    print(text)
    # Sections written by the other benchmarks are kept.
    old = output.read_text(encoding="utf8") if output.exists() else ""
    kept = [section(old, heading) for heading in (IVF_HEADING, ACCURACY_HEADING)]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n\n".join([text.rstrip(), *filter(None, kept)]), encoding="utf8")
    output.with_suffix(".json").write_text(
        json.dumps(results, indent=1, default=str), encoding="utf8"
    )
    print(f"wrote {output} and {output.with_suffix('.json').name}", flush=True)
    return results


if __name__ == "__main__":
    main()
