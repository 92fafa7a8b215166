"""Command line: ``python -m spacy_m3el <command> [options]``.

Each command is an ``(add_arguments, run)`` pair in :data:`COMMANDS`; to add
one, write the two functions and register them there. ``run`` returns the exit
code. User errors (``ValueError``, ``OSError``) are printed without a traceback
and exit with code 1.
"""

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from .experiments.cli import add_experiments_arguments, run_experiments_command

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A user error with a message to print."""


# prepare ----------------------------------------------------------------------


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    from .datasets.mimic import DATASET_PREFIXES

    parser.add_argument(
        "--dataset", required=True, choices=sorted(DATASET_PREFIXES), help="Dataset name."
    )
    parser.add_argument(
        "--dataset-dir", required=True, type=Path, help="Folder in the MIMIC layout."
    )
    parser.add_argument(
        "--output",
        required=True,
        type=Path,
        help="Folder for {train,dev,test}.spacy and report.json.",
    )
    parser.add_argument(
        "--kb", type=Path, default=None, help="Folder for the KB (default: OUTPUT/kb)."
    )
    parser.add_argument(
        "--embed-images", action="store_true", help="Store image bytes instead of paths."
    )
    parser.add_argument(
        "--limit", type=int, default=0, help="Keep only the first N records per split (0: all)."
    )
    parser.add_argument(
        "--lang", default="en", help="Language code of the tokenizer (default: en)."
    )


def run_prepare(args: argparse.Namespace) -> int:
    from .datasets.mimic import prepare_dataset

    report = prepare_dataset(
        args.dataset,
        args.dataset_dir,
        args.output,
        args.kb if args.kb is not None else args.output / "kb",
        nlp_lang=args.lang,
        embed_images=args.embed_images,
        limit=args.limit,
    )
    print(report.format_table())
    return 0


# make-demo --------------------------------------------------------------------


def add_make_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, type=Path, help="Dataset folder to write.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-names", type=int, default=40, help="Distinct entity names.")
    parser.add_argument(
        "--entities-per-name", type=int, default=3, help="Entities sharing each name."
    )
    parser.add_argument("--mentions-per-entity", type=int, default=12)
    add_no_image_fraction_argument(parser)


def add_no_image_fraction_argument(parser: argparse.ArgumentParser) -> None:
    from .datasets.demo import NO_IMAGE_ENTITY_FRACTION

    parser.add_argument(
        "--no-image-fraction",
        type=float,
        default=NO_IMAGE_ENTITY_FRACTION,
        help="Share of demo KB entities without an image (RichpediaMEL/WikiDiverse: 0.4-0.5).",
    )


def run_make_demo(args: argparse.Namespace) -> int:
    from .datasets.demo import generate_demo_dataset

    path = generate_demo_dataset(
        args.output,
        n_names=args.n_names,
        entities_per_name=args.entities_per_name,
        mentions_per_entity=args.mentions_per_entity,
        no_image_fraction=args.no_image_fraction,
        seed=args.seed,
    )
    print(f"Demo dataset written to {path}")
    return 0


# make-tiny-clip ---------------------------------------------------------------


def add_make_tiny_clip_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", required=True, type=Path, help="Folder for the CLIP checkpoint."
    )
    parser.add_argument(
        "--corpus-from",
        type=Path,
        default=None,
        metavar="DATASET_DIR",
        help="Learn the BPE merges from this dataset's names, descriptions and sentences.",
    )
    parser.add_argument("--seed", type=int, default=0)


def run_make_tiny_clip(args: argparse.Namespace) -> int:
    from .datasets.demo import make_demo_corpus_texts
    from .ml.tiny_clip import build_tiny_clip

    corpus = None
    if args.corpus_from is not None:
        if not args.corpus_from.is_dir():
            raise CommandError(f"Dataset folder not found: {args.corpus_from}")
        corpus = make_demo_corpus_texts(args.corpus_from)
    path = build_tiny_clip(args.output, corpus=corpus, seed=args.seed)
    print(f"Tiny CLIP written to {path}")
    return 0


# assets -----------------------------------------------------------------------


def add_assets_arguments(parser: argparse.ArgumentParser) -> None:
    from .datasets.mimic import DATASET_PREFIXES

    parser.add_argument("--dataset", required=True, choices=sorted(DATASET_PREFIXES))
    parser.add_argument("--dataset-dir", required=True, type=Path)
    parser.add_argument("--encoder", required=True, help="CLIP hub name or local folder.")
    add_no_image_fraction_argument(parser)


def run_assets(args: argparse.Namespace) -> int:
    """Make sure the dataset and encoder exist; build them for the offline demo."""
    from .datasets.demo import ensure_demo_dataset, make_demo_corpus_texts
    from .datasets.mimic import find_split_files
    from .ml.tiny_clip import build_tiny_clip

    if args.dataset == "demo":
        if ensure_demo_dataset(args.dataset_dir, no_image_fraction=args.no_image_fraction):
            print(
                f"Generated the demo dataset in {args.dataset_dir} "
                f"({args.no_image_fraction:.0%} of entities without an image)"
            )
    elif not args.dataset_dir.is_dir():
        raise CommandError(
            f"Dataset folder not found: {args.dataset_dir}. The MIMIC-format datasets cannot be "
            "downloaded automatically; see the README section 'Real datasets' for where to "
            "get them."
        )
    find_split_files(args.dataset, args.dataset_dir)
    encoder = Path(args.encoder)
    if encoder.is_dir():
        if not (encoder / "config.json").exists():
            raise CommandError(
                f"{encoder} has no config.json: not a Hugging Face checkpoint folder."
            )
        print(f"Encoder: local checkpoint {encoder}")
    elif args.dataset == "demo":
        build_tiny_clip(encoder, corpus=make_demo_corpus_texts(args.dataset_dir))
        print(f"Built a tiny offline CLIP in {encoder}")
    else:
        print(check_hub_encoder(args.encoder, args.dataset_dir))
    return 0


def check_hub_encoder(name: str, dataset_dir: Path) -> str:
    """Say where a non-local encoder comes from, or stop now if it cannot be had.

    Offline (``HF_HUB_OFFLINE=1``, the project's default), a checkpoint that is
    neither a local folder nor in the Hugging Face cache would only fail at
    ``initialize``, after the data preparation: fail here, saying what to pass.
    RETURNS (str): A line describing the encoder's source.
    """
    import os

    from huggingface_hub import try_to_load_from_cache

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid hub repo id (e.g. a path with several parts)
        cached = False
    if cached:
        return f"Encoder: {name!r} from the Hugging Face cache."
    if not offline:
        return f"Encoder: {name!r} will be downloaded from the Hugging Face hub at initialize."
    raise CommandError(
        f"Encoder {name!r} is neither a local checkpoint folder nor in the Hugging Face "
        "cache, and downloads are off (HF_HUB_OFFLINE=1). Pass --vars.encoder with a local "
        "CLIP checkpoint folder (for example a downloaded openai/clip-vit-base-patch32), or "
        "allow the download with HF_HUB_OFFLINE=0 and a hub name. For an offline try with a "
        "tiny random CLIP: python -m spacy_m3el make-tiny-clip --output encoders/tiny-clip "
        f"--corpus-from {dataset_dir}"
    )


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


def run_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_path, format_metrics

    for path in (args.model, args.data):
        if not path.exists():
            raise CommandError(f"Not found: {path}")
    metrics = evaluate_path(
        args.model,
        args.data,
        args.output,
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

    from .evaluation import format_comparison

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


def load_linker(model: Path, component: Optional[str]):
    """A saved pipeline and its m3el_linker; a CommandError if the folder does not exist."""
    import spacy

    from .evaluation import find_linker

    if not model.is_dir():
        raise CommandError(f"Pipeline folder not found: {model}")
    nlp = spacy.load(model)
    return nlp, find_linker(nlp, component)


def run_fit_decision(args: argparse.Namespace) -> int:
    """Fit how the model's score and the alias evidence combine, on dev data; save it."""
    from .readers import read_examples

    nlp, linker = load_linker(args.model, args.component)
    examples = list(read_examples(nlp, args.data, image_attr=linker.image_attr))

    def dev_hits() -> float:
        return float(linker.score(examples)["nel_hits@1"])

    before = dev_hits()
    decision = linker.fit_decision(examples)
    after = dev_hits()
    output = args.output or args.model
    nlp.to_disk(output)
    print(
        f"Linking decision fitted on {decision.fitted_on} dev mentions: score weight "
        f"{decision.score_weight:.3f}, alias weight {decision.alias_weight:.3f}, prior "
        f"weight {decision.prior_weight:.3f}. Dev Hits@1 over the candidates "
        f"{before * 100:.2f}% -> {after * 100:.2f}%. Saved to {output}."
    )
    return 0


# build-cache ------------------------------------------------------------------


def add_build_cache_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="Pipeline folder; the cache is written into it.")
    parser.add_argument("--component", default=None, help="Name of the m3el_linker (if several).")


def run_build_cache(args: argparse.Namespace) -> int:
    """Encode every KB entity once and store the cache in the pipeline folder."""
    import time

    from .pipeline.linker import CACHE_FILE

    _, linker = load_linker(args.model, args.component)
    start = time.perf_counter()
    cache = linker.entity_cache
    seconds = time.perf_counter() - start
    target = args.model / linker.name / CACHE_FILE
    cache.to_disk(target)
    print(
        f"Entity cache: {len(cache)} entities, {cache.precision}, "
        f"{cache.bytes_per_entity:.0f} bytes per entity, "
        f"{seconds:.1f} s (0 s if the saved cache was current) -> {target}"
    )
    return 0


# Dispatch ---------------------------------------------------------------------

COMMANDS: Dict[str, Tuple[str, AddArguments, Run]] = {
    "prepare": (
        "Convert a MIMIC-format dataset to .spacy files and a KB.",
        add_prepare_arguments,
        run_prepare,
    ),
    "make-demo": ("Write the synthetic demo dataset.", add_make_demo_arguments, run_make_demo),
    "make-tiny-clip": (
        "Write a tiny random CLIP checkpoint.",
        add_make_tiny_clip_arguments,
        run_make_tiny_clip,
    ),
    "assets": (
        "Check the dataset and encoder; build them for the demo.",
        add_assets_arguments,
        run_assets,
    ),
    "evaluate": (
        "Rank gold entities among all KB entities; write metrics.",
        add_evaluate_arguments,
        run_evaluate,
    ),
    "fit-decision": (
        "Fit the combination of model score and alias evidence on dev data.",
        add_fit_decision_arguments,
        run_fit_decision,
    ),
    "build-cache": (
        "Encode the KB once and save the entity cache with the pipeline.",
        add_build_cache_arguments,
        run_build_cache,
    ),
    "compare": ("Print metrics of several runs side by side.", add_compare_arguments, run_compare),
    "experiments": (
        "Run the papers' experiments (ablations, low-resource, image-less policies) over seeds.",
        add_experiments_arguments,
        run_experiments_command,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """RETURNS (argparse.ArgumentParser): The parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="python -m spacy_m3el", description="spaCy multimodal entity linking."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        add_arguments(subparser)
        subparser.set_defaults(run=run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line.

    argv (Optional[List[str]]): Arguments without the program name (default: ``sys.argv[1:]``).
    RETURNS (int): The exit code.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CommandError, ValueError, OSError) as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
