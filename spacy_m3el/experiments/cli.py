"""``python -m spacy_m3el experiments``: the papers' experiments from the command line."""

import argparse
from pathlib import Path

from .suites import SUITES


def add_experiments_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite",
        action="append",
        required=True,
        choices=sorted(SUITES) + ["all"],
        help="Which rows to run (repeatable); all = ablations + low-resource.",
    )
    parser.add_argument("--config", required=True, type=Path, help="Training config.")
    parser.add_argument(
        "--corpus",
        required=True,
        type=Path,
        help="Folder with {train,dev,test}.spacy and kb/ (the prepare step's output).",
    )
    parser.add_argument("--encoder", required=True, help="CLIP checkpoint (folder or hub name).")
    parser.add_argument("--work", required=True, type=Path, help="Folder for the runs (resumable).")
    parser.add_argument(
        "--output",
        required=True,
        type=Path,
        help="Output stem: writes <stem>.json, <stem>.md and <stem>.png.",
    )
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds (default 0,1,2).")
    parser.add_argument(
        "--max-steps", type=int, default=0, help="Shorter training (0: the config's own)."
    )
    parser.add_argument(
        "--fractions",
        default="0.1,0.2,0.5",
        help="Training shares of the low-resource suite (default 0.1,0.2,0.5).",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="ROW",
        help="Run only the rows with this exact name (repeatable), e.g. --only 'M3EL (attention)'.",
    )
    parser.add_argument("--title", default="", help="Title of the table and figure.")


def run_experiments_command(args: argparse.Namespace) -> int:
    from .driver import run_experiments
    from .runner import ExperimentData
    from .suites import suite_variants

    for split in ("train.spacy", "dev.spacy", "test.spacy", "kb"):
        if not (args.corpus / split).exists():
            raise FileNotFoundError(
                f"{args.corpus / split} not found: run the prepare step first "
                "(spacy project run prepare)."
            )
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    data = ExperimentData(
        config=args.config,
        train=args.corpus / "train.spacy",
        dev=args.corpus / "dev.spacy",
        test=args.corpus / "test.spacy",
        kb=args.corpus / "kb",
        encoder=args.encoder,
        max_steps=args.max_steps,
    )
    fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    variants = suite_variants(args.suite, fractions=fractions)
    if args.only:
        unknown = sorted(set(args.only) - {variant.name for variant in variants})
        if unknown:
            names = ", ".join(repr(variant.name) for variant in variants)
            raise ValueError(f"Unknown row(s) {unknown} for --only; the suites have: {names}.")
        variants = [variant for variant in variants if variant.name in args.only]
    report = run_experiments(data, variants, seeds, args.work, args.output, title=args.title)
    print(
        f"{len(report['runs'])} runs in {report['seconds']:.0f} s -> {args.output}.{{json,md,png}}"
    )
    print(args.output.with_suffix(".md").read_text(encoding="utf8"))
    return 0
