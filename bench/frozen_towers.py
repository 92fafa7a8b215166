"""Training steps at ViT-B/32 scale: frozen CLIP towers on stored features against fine-tuning.

Both runs train on the demo with a CLIP of ViT-B/32's shapes (random weights, 224 px
images, 12-layer text tower; the weights do not change the cost), batches of 32, in a
fresh process each with 2 torch threads (``bench/train_driver.py``), with the image
store:

- fine-tuned: ``configs/demo.cfg`` with the ViT-B/32 widths (``spacy_m3el.CLIPEncoder.v1``,
  every CLIP weight trained), as ``bench.train_speed``'s ViT-B/32 row;
- frozen, stored features: ``configs/m3el-frozen.cfg`` (``spacy_m3el.TowerEncoder.v1``
  with both CLIP towers frozen); the feature store is built during initialization
  (its time is in "init s"), then each step runs the projections and the matching
  network only.

Printed: initialization seconds, the median ms per update (the first left out),
examples/s of the updates, peak memory, and the speed-up per step.
"""

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from .common import ROOT, command_line, machine, publish
from .train_speed import VIT_WIDTHS, prepare_data, prepare_encoders, row, run, vit_overrides

HEADING = "## Frozen towers at ViT-B/32 scale (training steps)"


def frozen_overrides(corpus: Path, encoder: Path, steps: int, store: Path) -> Dict[str, object]:
    """m3el-frozen.cfg on the demo: the fine-tuned run's data, batch size and evaluation."""
    overrides = vit_overrides(corpus, encoder, steps, {})
    overrides.update(
        {
            "training.max_epochs": 0,
            "training.batcher.size": 32,
            "training.patience": 0,
            "paths.image_store": str(store),
        }
    )
    return overrides


def report(rows: List[Dict[str, object]], command: str) -> str:
    lines = [
        f"Machine: {machine()}",
        f"Command: `{command}`",
        "",
        "| run | steps | init s | ms/step (median) | examples/s (updates) | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['steps']} | {r['init_s']:.1f} | {r['ms_per_step']:.0f} "
            f"| {r['update_ex_s']:.1f} | {r['peak_rss_mib']:.0f} |"
        )
    tuned, frozen = rows
    lines += [
        "",
        f"Frozen with stored features: {tuned['ms_per_step'] / frozen['ms_per_step']:.1f}x "
        "faster per step than fine-tuning every CLIP weight (initialization, with the "
        f"feature store build: {frozen['init_s']:.0f} s, against {tuned['init_s']:.0f} s).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench.frozen_towers", description=__doc__)
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "m3el-frozen-towers"
    )
    parser.add_argument("--tuned-steps", type=int, default=4, help="Fine-tuned updates.")
    parser.add_argument("--frozen-steps", type=int, default=40, help="Frozen updates.")
    parser.add_argument(
        "--encoder", choices=["b32", "tiny"], default="b32", help="tiny: smoke runs only."
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None, help="Markdown file to update.")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    corpus = prepare_data(work, "demo", [])
    encoder = prepare_encoders(work, work / "demo" / "assets", args.encoder)["vit"]
    widths = VIT_WIDTHS if args.encoder == "b32" else {}
    store = work / "image-store"
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(f"{store}.features", ignore_errors=True)
    tuned = vit_overrides(corpus, encoder, args.tuned_steps, widths)
    tuned["paths.image_store"] = str(store)
    frozen = frozen_overrides(corpus, encoder, args.frozen_steps, store)
    if args.encoder == "tiny":  # the tiny CLIP's widths in m3el-frozen.cfg's towers
        towers = "components.m3el_linker.model.encoder"
        frozen.update({f"{towers}.vision.width": 32, f"{towers}.vision.pooled_width": 32})
        frozen.update({f"{towers}.text.width": 32, f"{towers}.text.pooled_width": 32})
        frozen[f"{towers}.projection_dim"] = 32
    rows = [row("fine-tuned (demo.cfg)", "this", run(ROOT, tuned, args.threads, work))]
    config = ROOT / "configs" / "m3el-frozen.cfg"
    result = run(ROOT, frozen, args.threads, work, config=config)
    rows.append(row("frozen, stored features (m3el-frozen.cfg)", "this", result))
    text = report(rows, command_line("bench.frozen_towers", argv).strip())
    return publish(text, args.output, HEADING)


if __name__ == "__main__":
    main()
