"""Training speed of ``spacy train``: this tree against a baseline commit, side by side.

Each run is ``spacy train configs/demo.cfg`` of its tree (init, then spaCy's loop with
its evaluations every 100 steps and checkpoints), in a fresh process with 2 torch
threads, timed by ``bench/train_driver.py``. The baseline tree is extracted from git
(``git archive``) and put first on the run's ``PYTHONPATH``; the data and encoders are
the same for both trees. Rows:

- the demo (120 entities, 1,005 training mentions) and a 6,000-mention demo (800
  entities; 200 names of 4 entities, 11 mentions each), ``--steps`` steps of 32;
- this tree with and without its image store (``paths.image_store``; the store is built
  afresh in each run's initialization, so that cost is in "init s");
- a CLIP with ViT-B/32's shapes (random weights, 224 px images) on the demo for
  ``--vit-steps`` steps: the median ms per update (evaluation made cheap, the first
  step's KB encoding for negative mining not in the median).

The final dev scores of each fixed-step run are printed so that identical results for
the same seed can be checked.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from .common import ROOT, command_line, machine, publish

HEADING = "## Training speed (`spacy train`)"
BASELINE = "93d5ca2"  # the last commit before the training-speed work (issue 17)
DRIVER = Path(__file__).resolve().parent / "train_driver.py"
SIX_K = ["--n-names", "200", "--entities-per-name", "4", "--mentions-per-entity", "11"]
VIT_WIDTHS = {"text_width": 512, "vision_width": 768, "projection_dim": 512}


def _module(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "spacy_m3el", *args], check=True, cwd=ROOT)


def prepare_data(work: Path, name: str, demo_args: List[str]) -> Path:
    """A demo dataset in the MIMIC layout, prepared into ``.spacy`` files and a KB."""
    corpus = work / name / "corpus"
    if not (corpus / "train.spacy").exists():
        assets = work / name / "assets"
        _module("make-demo", "--output", str(assets), *demo_args)
        _module(
            "prepare", "--dataset", "demo", "--dataset-dir", str(assets), "--output", str(corpus)
        )
    return corpus


def prepare_encoders(work: Path, assets: Path, vit: str) -> Dict[str, Path]:
    encoders = {"tiny": work / "tiny-clip"}
    if not (encoders["tiny"] / "config.json").exists():
        _module("make-tiny-clip", "--output", str(encoders["tiny"]), "--corpus-from", str(assets))
    if vit == "tiny":
        encoders["vit"] = encoders["tiny"]
    elif vit == "b32":
        from .vit import build_vit_b32

        encoders["vit"] = work / "vit-b32"
        if not (encoders["vit"] / "config.json").exists():
            build_vit_b32(encoders["vit"], assets)
    return encoders


def baseline_tree(work: Path, revision: str) -> Path:
    """The package and configs of ``revision``, extracted once into ``work``."""
    tree = work / f"tree-{revision}"
    if not (tree / "spacy_m3el").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", revision, "spacy_m3el", "configs"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def prefetch_config(work: Path) -> Path:
    """This tree's demo config with its batcher wrapped in ``spacy_m3el.PrefetchBatcher.v1``."""
    from thinc.api import Config

    config = Config().from_disk(ROOT / "configs" / "demo.cfg", interpolate=False)
    inner = config["training"]["batcher"]
    config["training"]["batcher"] = {
        "@batchers": "spacy_m3el.PrefetchBatcher.v1",
        "ahead": 2,
        "batcher": inner,
    }
    (work / "configs").mkdir(parents=True, exist_ok=True)
    config.to_disk(work / "configs" / "demo-prefetch.cfg")
    return work / "configs" / "demo-prefetch.cfg"


def run(
    tree: Path,
    overrides: Dict[str, object],
    threads: int,
    work: Path,
    profile_steps: int = 0,
    config: Optional[Path] = None,
) -> dict:
    """One timed ``spacy train`` of ``tree``'s demo config (or, with ``profile_steps``,
    that many profiled updates and one dev evaluation), in a fresh process."""
    with tempfile.TemporaryDirectory(dir=work) as output:
        settings = {
            "config": str(config or tree / "configs" / "demo.cfg"),
            "overrides": overrides,
            "output": output,
            "threads": threads,
            "profile_steps": profile_steps,
        }
        env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads))
        done = subprocess.run(
            [sys.executable, str(DRIVER), json.dumps(settings)],
            check=True,
            capture_output=True,
            text=True,
            cwd=tree,
            env=env,
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["package"]).resolve() != (tree / "spacy_m3el").resolve():
        raise RuntimeError(f"The run imported {result['package']}, not the tree {tree}.")
    return result


def data_overrides(corpus: Path, encoder: Path, steps: int) -> Dict[str, object]:
    return {
        "paths.train": str(corpus / "train.spacy"),
        "paths.dev": str(corpus / "dev.spacy"),
        "paths.kb": str(corpus / "kb"),
        "paths.encoder": str(encoder),
        "training.max_steps": steps,
    }


def vit_overrides(corpus: Path, encoder: Path, steps: int, widths: dict) -> Dict[str, object]:
    """A few steps with another encoder's widths; evaluation once, on 8 dev documents."""
    overrides = data_overrides(corpus, encoder, steps)
    overrides.update({f"components.m3el_linker.model.encoder.{k}": v for k, v in widths.items()})
    overrides.update({"training.eval_frequency": 10_000, "corpora.dev.limit": 8})
    return overrides


def row(name: str, tree: str, result: dict) -> Dict[str, object]:
    steps = result["step_seconds"][1:] or result["step_seconds"]
    return {
        "run": name,
        "tree": tree,
        "init_s": result["init_seconds"],
        "loop_s": result["loop_seconds"],
        "examples": result["examples"],
        "steps": result["steps"],
        "train_ex_s": result["examples"] / result["loop_seconds"],
        "update_ex_s": result["examples"] / result["update_seconds"],
        "ms_per_step": 1000 * statistics.median(steps),
        "peak_rss_mib": result["peak_rss_mib"],
        "scores": result["scores"],
    }


def report(rows: List[Dict[str, object]], command: str, baseline: str) -> str:
    lines = [
        f"Machine: {machine()}",
        f"Command: `{command}`; baseline tree: commit `{baseline}`.",
        "",
        "| run | tree | init s | loop s | examples/s (spacy train) | examples/s (updates) "
        "| ms/step (median) | peak RSS MiB | dev MRR (full KB) at the end |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mrr = r["scores"].get("nel_kb_mrr")
        lines.append(
            f"| {r['run']} | {r['tree']} | {r['init_s']:.1f} | {r['loop_s']:.1f} "
            f"| {r['train_ex_s']:.1f} | {r['update_ex_s']:.1f} | {r['ms_per_step']:.0f} "
            f"| {r['peak_rss_mib']:.0f} | {'-' if mrr is None else f'{mrr:.6f}'} |"
        )
    lines += ["", "Speed-up of this tree (with its image store) over the baseline:", ""]
    for name in dict.fromkeys(r["run"] for r in rows):
        base = next((r for r in rows if r["run"] == name and r["tree"] == "baseline"), None)
        new = next((r for r in rows if r["run"] == name and r["tree"] == "this, store"), None)
        if base and new:
            lines.append(
                f"- {name}: {new['train_ex_s'] / base['train_ex_s']:.2f}x examples/s of "
                f"`spacy train`, {new['update_ex_s'] / base['update_ex_s']:.2f}x of the "
                f"updates, {base['ms_per_step'] / new['ms_per_step']:.2f}x per step; largest "
                f"dev score difference {score_difference(base, new):.2g}"
            )
    return "\n".join(lines) + "\n"


def score_difference(a: Dict[str, object], b: Dict[str, object]) -> float:
    """The largest difference of the dev metrics (the losses left out)."""
    keys = set(a["scores"]) & set(b["scores"])
    numbers = [k for k in keys if k.startswith("nel_")]
    return max((abs(a["scores"][k] - b["scores"][k]) for k in numbers), default=float("nan"))


def profile_table(profiles: Dict[str, dict]) -> str:
    """ms per training step by phase, one column per profiled run."""
    names = list(profiles)
    phases = list(dict.fromkeys(p for r in profiles.values() for p in r["ms_per_step"]))
    lines = ["| phase (ms per step) | " + " | ".join(names) + " |"]
    lines.append("|---|" + "---|" * len(names))
    for phase in phases:
        cells = [f"{profiles[n]['ms_per_step'].get(phase, 0.0):.1f}" for n in names]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    for label, value in (
        ("other (spaCy's update, batch assembly, conversions)", None),
        ("**total per step**", "total_ms_per_step"),
    ):
        cells = []
        for n in names:
            total = profiles[n]["total_ms_per_step"]
            part = total - sum(profiles[n]["ms_per_step"].values())
            cells.append(f"{total if value else part:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = [f"{profiles[n]['evaluation_seconds']:.1f}" for n in names]
    lines.append("| one dev evaluation, seconds (full-KB ranking) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__)
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "m3el-train-speed"
    )
    parser.add_argument("--baseline", default=BASELINE, help="Git revision to compare with.")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--vit-steps", type=int, default=4, help="0: no ViT-B/32 rows.")
    parser.add_argument("--datasets", default="demo,demo-6k")
    parser.add_argument(
        "--vit-encoder", choices=["b32", "tiny"], default="b32", help="tiny: smoke runs only."
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--prefetch", action="store_true", help="Also this tree with the prefetch batcher."
    )
    parser.add_argument(
        "--profile-steps",
        type=int,
        default=60,
        help="Profiled updates on the last dataset (ViT: 2); 0: no profile table.",
    )
    parser.add_argument("--output", type=Path, default=None, help="Markdown file to update.")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    datasets = {
        name: prepare_data(work, name, SIX_K if name == "demo-6k" else [])
        for name in args.datasets.split(",")
    }
    first = next(iter(datasets))
    encoders = prepare_encoders(work, work / first / "assets", args.vit_steps and args.vit_encoder)
    trees = {"baseline": baseline_tree(work, args.baseline), "this": ROOT}
    settings = {
        name: (corpus, data_overrides(corpus, encoders["tiny"], args.steps))
        for name, corpus in datasets.items()
    }
    if args.vit_steps:
        widths = VIT_WIDTHS if args.vit_encoder == "b32" else {}
        label = f"{first}, {'ViT-B/32 shapes' if widths else 'tiny encoder, cheap evaluation'}"
        vit = vit_overrides(datasets[first], encoders["vit"], args.vit_steps, widths)
        settings[label] = (datasets[first], vit)
    rows = []
    for name, (corpus, overrides) in settings.items():
        rows += runs(name, trees, overrides, corpus, args.threads, work, args.prefetch)
    profiles = {}
    if args.profile_steps:
        profiled = [(list(datasets)[-1], args.profile_steps)]
        if args.vit_steps:
            profiled.append((label, 2))
        for name, steps in profiled:
            corpus, overrides = settings[name]
            store = {"paths.image_store": str(corpus.parent / "image-store")}
            for tree, root, extra in (
                ("baseline", trees["baseline"], {}),
                ("this, store", ROOT, store),
            ):
                profiles[f"{name}, {tree}"] = run(
                    root, dict(overrides, **extra), args.threads, work, steps
                )
    command = command_line("bench.train_speed", argv)
    text = report(rows, command.strip(), args.baseline)
    if profiles:
        text += (
            "\nWhere a training step spends its time (cProfile, cumulative time of each phase's "
        )
        text += "function; dev evaluation timed once, separately):\n\n" + profile_table(profiles)
    return publish(text, args.output, HEADING)


def runs(
    name: str,
    trees: Dict[str, Path],
    overrides: dict,
    corpus: Path,
    threads: int,
    work: Path,
    prefetch: bool = False,
):
    """The baseline, this tree without and with its image store (built afresh), and with
    ``prefetch`` also with the store and ``spacy_m3el.PrefetchBatcher.v1``."""
    store = corpus.parent / "image-store"
    results = [row(name, "baseline", run(trees["baseline"], overrides, threads, work))]
    results.append(row(name, "this", run(trees["this"], overrides, threads, work)))
    shutil.rmtree(store, ignore_errors=True)
    with_store = dict(overrides, **{"paths.image_store": str(store)})
    results.append(row(name, "this, store", run(trees["this"], with_store, threads, work)))
    if prefetch:
        config = prefetch_config(work)
        result = run(trees["this"], with_store, threads, work, config=config)
        results.append(row(name, "this, store, prefetch", result))
    for result in results:
        print(json.dumps(result), file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
