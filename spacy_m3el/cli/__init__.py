"""Command line: ``python -m spacy_m3el <command> [options]``.

Each command is an ``(add_arguments, run)`` pair in :data:`COMMANDS`; to add
one, write the two functions (in ``data``, ``pipelines`` or the module of the
feature) and register them here. ``run`` returns the exit code. User errors
(``ValueError``, ``OSError``) are printed without a traceback and exit with code 1.
"""

import argparse
import sys
from typing import Dict, List, Optional, Tuple

from ..experiments.cli import add_experiments_arguments, run_experiments_command
from ..scaleout.cli import add_link_corpus_arguments, run_link_corpus
from ..visualize.cli import add_visualize_arguments, run_visualize
from .common import AddArguments, CommandError, Run
from .data import (
    add_assets_arguments,
    add_make_demo_arguments,
    add_make_tiny_clip_arguments,
    add_prepare_arguments,
    run_assets,
    run_make_demo,
    run_make_tiny_clip,
    run_prepare,
)
from .pipelines import (
    add_build_cache_arguments,
    add_compare_arguments,
    add_configure_arguments,
    add_evaluate_arguments,
    add_fit_decision_arguments,
    run_build_cache,
    run_compare,
    run_configure,
    run_evaluate,
    run_fit_decision,
)

__all__ = ["COMMANDS", "CommandError", "build_parser", "main"]


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
    "link-corpus": (
        "Link every document of JSONL/Parquet files into Parquet shards (local or Ray).",
        add_link_corpus_arguments,
        run_link_corpus,
    ),
    "compare": ("Print metrics of several runs side by side.", add_compare_arguments, run_compare),
    "configure": (
        "Write a training config that validates once per epoch of the given training data.",
        add_configure_arguments,
        run_configure,
    ),
    "visualize": (
        "Write an HTML page of the links (with images and candidates) on a .spacy file.",
        add_visualize_arguments,
        run_visualize,
    ),
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
