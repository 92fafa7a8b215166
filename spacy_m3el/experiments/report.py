"""The experiments' outputs: mean and standard deviation over seeds, a Markdown table
in the papers' layout, and a figure."""

from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy

TABLE_METRICS = (("hits@1", "H@1"), ("hits@3", "H@3"), ("hits@5", "H@5"), ("mrr", "MRR"))
IMAGE_METRICS = (
    ("hits@1_gold_with_image", "H@1, gold with image"),
    ("hits@1_gold_without_image", "H@1, gold without image"),
    ("wrong_top1_share_without_image", "image-less share of wrong top-1"),
)
TRAINING_METRICS = (("hits@1_seen", "H@1, seen"), ("hits@1_unseen", "H@1, zero-shot"))


def _stats(values: Sequence[Optional[float]]) -> Dict[str, Optional[float]]:
    present = [float(v) for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(numpy.mean(present)), "std": float(numpy.std(present)), "n": len(present)}


def summarize(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per variant (in first-seen order): its suite, seeds, and per metric the
    mean and (population) standard deviation over the seeds, test and dev."""
    groups: "OrderedDict[tuple, List[Dict[str, Any]]]" = OrderedDict()
    for run in runs:
        groups.setdefault((run["suite"], run["variant"]), []).append(run)
    rows = []
    for (suite, variant), members in groups.items():
        row: Dict[str, Any] = {
            "suite": suite,
            "variant": variant,
            "seeds": [m["seed"] for m in members],
            "train_fraction": members[0].get("train_fraction"),
        }
        for split in ("test", "dev"):
            row[split] = {
                key: _stats([m[split][key] for m in members])
                for key in members[0][split]
                if key != "n_mentions"
            }
        row["by_gold_image"] = {
            key: _stats([m["by_gold_image"].get(key) for m in members]) for key, _ in IMAGE_METRICS
        }
        # Runs measured before the split was reported have none (their cells read n/a).
        row["by_training"] = {
            key: _stats([m.get("by_training", {}).get(key) for m in members])
            for key, _ in TRAINING_METRICS
        }
        rows.append(row)
    return rows


def _cell(stat: Dict[str, Optional[float]]) -> str:
    if stat["mean"] is None:
        return "n/a"
    if stat["n"] > 1:
        return f"{stat['mean'] * 100:.2f} ± {stat['std'] * 100:.2f}"
    return f"{stat['mean'] * 100:.2f}"


def markdown_table(rows: List[Dict[str, Any]], title: str = "") -> str:
    """Per suite, a table: variant, test H@1/H@3/H@5/MRR (mean ± std over seeds), dev MRR,
    test H@1 on seen and zero-shot gold entities (when the test set has zero-shot ones);
    the missing-images suite adds the split by the gold's image."""
    out = [f"# {title}", ""] if title else []
    for suite in dict.fromkeys(row["suite"] for row in rows):
        members = [row for row in rows if row["suite"] == suite]
        image_cols = suite == "missing-images"
        zero_shot = any(row["by_training"]["hits@1_unseen"]["n"] for row in members)
        header = ["Model"] + [label for _, label in TABLE_METRICS] + ["dev MRR"]
        if zero_shot:
            header += [label for _, label in TRAINING_METRICS]
        if image_cols:
            header += [label for _, label in IMAGE_METRICS]
        out += [f"## {suite}", "", "| " + " | ".join(header) + " |"]
        out.append("|" + "---|" * len(header))
        for row in members:
            cells = [row["variant"]] + [_cell(row["test"][key]) for key, _ in TABLE_METRICS]
            cells.append(_cell(row["dev"]["mrr"]))
            if zero_shot:
                cells += [_cell(row["by_training"][key]) for key, _ in TRAINING_METRICS]
            if image_cols:
                cells += [_cell(row["by_gold_image"][key]) for key, _ in IMAGE_METRICS]
            out.append("| " + " | ".join(cells) + " |")
        seeds = sorted({s for row in members for s in row["seeds"]})
        out += ["", f"Test set, full-KB ranking (float32). Seeds: {seeds}.", ""]
    return "\n".join(out).rstrip() + "\n"


def draw_figure(rows: List[Dict[str, Any]], path: Path, title: str = "") -> Path:
    """Bars with error bars (test Hits@1 per variant of the ablation and image-less suites)
    and, for the low-resource suite, Hits@1 against the share of training data."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    bar_suites = [s for s in dict.fromkeys(r["suite"] for r in rows) if s != "low-resource"]
    curve = [r for r in rows if r["suite"] == "low-resource"]
    panels = len(bar_suites) + (1 if curve else 0)
    figure, axes = pyplot.subplots(1, max(1, panels), figsize=(6 * max(1, panels), 4.2))
    axes = numpy.atleast_1d(axes)
    for axis, suite in zip(axes, bar_suites):
        members = [r for r in rows if r["suite"] == suite]
        means = [r["test"]["hits@1"]["mean"] * 100 for r in members]
        stds = [r["test"]["hits@1"]["std"] * 100 for r in members]
        axis.bar(range(len(members)), means, yerr=stds, capsize=4, color="#4c72b0")
        axis.set_xticks(
            range(len(members)), [r["variant"] for r in members], rotation=35, ha="right"
        )
        axis.set_ylabel("test Hits@1 (%)")
        axis.set_title(suite)
        axis.set_ylim(max(0.0, min(means) - 10), 100)
    if curve:
        axis = axes[-1]
        curve = sorted(curve, key=lambda r: r["train_fraction"])
        x = [r["train_fraction"] * 100 for r in curve]
        y = [r["test"]["hits@1"]["mean"] * 100 for r in curve]
        err = [r["test"]["hits@1"]["std"] * 100 for r in curve]
        axis.errorbar(x, y, yerr=err, marker="o", capsize=4)
        axis.set_xlabel("training mentions used (%)")
        axis.set_ylabel("test Hits@1 (%)")
        axis.set_title("low-resource")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return path
