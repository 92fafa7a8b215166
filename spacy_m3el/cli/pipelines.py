"""Commands on trained pipelines: evaluate, compare, fit-decision, build-cache, configure."""

import argparse
from pathlib import Path
from typing import Optional

from .common import CommandError

# evaluate ---------------------------------------------------------------------


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="Trained pipeline folder.")
    parser.add_argument("data", type=Path, help=".spacy file with gold entities and images.")
    parser.add_argument("--output", type=Path, default=None, help="Metrics JSON to write.")
    parser.add_argument("--component", default=None, help="Name of the m3el_linker (if several).")
    parser.add_argument("--batch-size", type=int, default=16, help="Mentions ranked at once.")
    parser.add_argument(
        "--entity-chunk-size", type=int, default=2048, help="Entities scored at once."
    )
    parser.add_argument("--title", default="", help="Title of the printed table.")
    parser.add_argument(
        "--seen-in",
        type=Path,
        default=None,
        help="Training .spacy file: also split Hits@1 by whether the gold entity has "
        "training mentions (seen) or not (zero-shot).",
    )


def run_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_path, format_metrics

    for path in (args.model, args.data, args.seen_in):
        if path is not None and not path.exists():
            raise CommandError(f"Not found: {path}")
    metrics = evaluate_path(
        args.model,
        args.data,
        args.output,
        seen_in=args.seen_in,
        component=args.component,
        batch_size=args.batch_size,
        entity_chunk_size=args.entity_chunk_size,
    )
    print(format_metrics(metrics, args.title))
    return 0


# compare ----------------------------------------------------------------------


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", metavar="NAME=METRICS_JSON", help="Runs to put side by side."
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="Write the table to this file too."
    )


def run_compare(args: argparse.Namespace) -> int:
    import srsly

    from ..evaluation import format_comparison

    runs = {}
    for item in args.runs:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).exists():
            raise CommandError(f"Expected NAME=METRICS_JSON with an existing file, got {item!r}.")
        runs[name] = srsly.read_json(path)
    table = format_comparison(runs)
    print(table)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table + "\n", encoding="utf8")
    return 0


# fit-decision -----------------------------------------------------------------


def add_fit_decision_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="Trained pipeline folder (updated in place).")
    parser.add_argument("data", type=Path, help="Dev .spacy file with gold entities and images.")
    parser.add_argument("--output", type=Path, default=None, help="Save here instead.")
    parser.add_argument("--component", default=None, help="Name of the m3el_linker (if several).")
    parser.add_argument(
        "--single-score",
        action="store_true",
        help="One weight for the model's overall score instead of one per matching unit.",
    )


def load_linker(model: Path, component: Optional[str]):
    """A saved pipeline and its m3el_linker; a CommandError if the folder does not exist."""
    import spacy

    from ..evaluation import find_linker

    if not model.is_dir():
        raise CommandError(f"Pipeline folder not found: {model}")
    nlp = spacy.load(model)
    return nlp, find_linker(nlp, component)


def run_fit_decision(args: argparse.Namespace) -> int:
    """Fit how the model's score and the alias evidence combine, on dev data; save it."""
    from ..readers import read_examples

    nlp, linker = load_linker(args.model, args.component)
    examples = list(read_examples(nlp, args.data, image_attr=linker.image_attr))

    def dev_hits() -> float:
        return float(linker.score(examples)["nel_hits@1"])

    before = dev_hits()
    decision = linker.fit_decision(examples, per_unit=not args.single_score)
    after = dev_hits()
    output = args.output or args.model
    nlp.to_disk(output)
    print(
        f"Linking decision fitted on {decision.fitted_on} dev mentions: "
        + (
            ", ".join(f"{unit} weight {w:.3f}" for unit, w in decision.unit_weights)
            if decision.unit_weights
            else f"score weight {decision.score_weight:.3f}"
        )
        + f", alias weight {decision.alias_weight:.3f}, prior "
        f"weight {decision.prior_weight:.3f}. Dev Hits@1 over the candidates "
        f"{before * 100:.2f}% -> {after * 100:.2f}%. Saved to {output}."
    )
    return 0


# build-cache ------------------------------------------------------------------


def add_build_cache_arguments(parser: argparse.ArgumentParser) -> None:
    from ..scaleout.cli import add_engine_arguments

    parser.add_argument("model", type=Path, help="Pipeline folder; the cache is written into it.")
    parser.add_argument("--component", default=None, help="Name of the m3el_linker (if several).")
    add_engine_arguments(parser)


def run_build_cache(args: argparse.Namespace) -> int:
    """Encode every KB entity once (here, or on Ray actors); store the cache in the pipeline."""
    import time

    from ..pipeline.linker import CACHE_FILE

    if args.workers < 1 or args.gpus_per_worker < 0:
        raise CommandError("--workers must be at least 1 and --gpus-per-worker at least 0.")
    _, linker = load_linker(args.model, args.component)
    start = time.perf_counter()
    if args.engine == "ray":
        from ..scaleout.cache_build import build_cache_ray

        cache = build_cache_ray(linker, args.model, args.workers, args.gpus_per_worker)
    else:
        cache = linker.entity_cache
    seconds = time.perf_counter() - start
    target = args.model / linker.name / CACHE_FILE
    cache.to_disk(target)
    print(
        f"Entity cache: {len(cache)} entities, {cache.precision}, "
        f"{cache.bytes_per_entity:.0f} bytes per entity, {seconds:.1f} s"
        f"{' (0 s if the saved cache was current)' if args.engine == 'local' else ''} -> {target}"
    )
    return 0


# configure --------------------------------------------------------------------


def add_configure_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="Training config (e.g. configs/m3el.cfg).")
    parser.add_argument("train", type=Path, help="The training .spacy file.")
    parser.add_argument("--output", required=True, type=Path, help="Config file to write.")
    parser.add_argument(
        "--epochs-per-eval",
        type=float,
        default=1.0,
        help="Validate every this many epochs (configs that train by epochs; 0 keeps the config).",
    )
    parser.add_argument(
        "--patience-evals",
        type=int,
        default=3,
        help="Stop after this many validations without a better score (0: never).",
    )


def run_configure(args: argparse.Namespace) -> int:
    from ..training_config import per_epoch_config

    if not args.config.exists():
        raise CommandError(f"Config not found: {args.config}")
    config, summary = per_epoch_config(
        args.config, args.train, args.epochs_per_eval, args.patience_evals
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    config.to_disk(args.output, interpolate=False)
    print(f"{args.output}: {summary}")
    return 0
