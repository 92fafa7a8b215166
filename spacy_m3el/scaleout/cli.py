"""``python -m spacy_m3el link-corpus``: link a corpus of captions into Parquet shards."""

import argparse
import time
from pathlib import Path

from .engines import ENGINES, CorpusJob, format_summary, run_corpus_job


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--engine``, ``--workers``, ``--gpus-per-worker`` (shared with ``build-cache``)."""
    parser.add_argument("--engine", choices=ENGINES, default="local", help="Where to run.")
    parser.add_argument(
        "--workers", type=int, default=2, help="Ray actors (each loads the pipeline once)."
    )
    parser.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="GPUs per Ray actor (0: CPU)."
    )


def add_link_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="Trained pipeline folder.")
    parser.add_argument(
        "inputs", type=Path, nargs="+", help="JSONL/Parquet files or folders of them."
    )
    parser.add_argument("output", type=Path, help="Folder of the output Parquet shards.")
    add_engine_arguments(parser)
    parser.add_argument("--component", default=None, help="Name of the m3el_linker (if several).")
    parser.add_argument(
        "--shard-size", type=int, default=1000, help="Documents per input/output shard."
    )
    parser.add_argument("--batch-size", type=int, default=64, help="Documents per nlp.pipe batch.")
    parser.add_argument("--top-k", type=int, default=5, help="Candidates kept per mention.")
    parser.add_argument(
        "--n-process", type=int, default=1, help="Local engine: processes of nlp.pipe."
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        help="Ray: starts of a shard whose worker keeps dying before it is given up.",
    )


def run_link_corpus(args: argparse.Namespace) -> int:
    """Link every document of the inputs; resume a run interrupted earlier."""
    if not args.model.is_dir():
        raise ValueError(f"Pipeline folder not found: {args.model}")
    job = CorpusJob(
        model=args.model,
        inputs=args.inputs,
        output=args.output,
        engine=args.engine,
        component=args.component,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        top_k=args.top_k,
        n_process=args.n_process,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        max_attempts=args.max_attempts,
    )
    start = time.perf_counter()
    counts = run_corpus_job(job)
    print(format_summary(counts, args.output, time.perf_counter() - start))
    return 0
