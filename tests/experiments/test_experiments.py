"""The experiments: suites, the resumable runner, the summary, and a whole tiny workflow."""

from pathlib import Path

import pytest
import srsly

from spacy_m3el.cli import main
from spacy_m3el.experiments.report import markdown_table, summarize
from spacy_m3el.experiments.suites import (
    FULL,
    ablations,
    low_resource,
    suite_variants,
    systems,
)

ROOT = Path(__file__).resolve().parents[2]


def test_suites_name_the_papers_rows():
    names = [v.name for v in ablations()]
    assert names[0] == FULL and "w/o contrastive" in names
    assert {"textual-to-visual alone", "visual-to-textual alone"} <= set(names)
    alone = next(v for v in ablations() if v.name == "textual-to-visual alone").overrides
    assert [k for k, on in alone.items() if on] == ["components.m3el_linker.model.use_t2v_unit"]
    rows = low_resource((0.5, 0.1))
    assert [v.train_fraction for v in rows] == [0.1, 0.5, 1.0]
    assert rows[0].overrides == {"corpora.train.fraction": 0.1} and rows[-1].overrides == {}
    assert len(suite_variants(["all"])) == len(ablations()) + len(low_resource())
    with pytest.raises(ValueError, match="Unknown experiment suite"):
        suite_variants(["ablation"])


@pytest.mark.parametrize("variant", systems(), ids=lambda v: v.name)
def test_every_system_builds_from_the_demo_config(variant, tiny_clip):
    """Each row of the systems suite is a valid pipeline: the units and alignment it names."""
    from spacy.util import load_config, load_model_from_config

    overrides = {**variant.overrides, "paths.encoder": tiny_clip}
    config = load_config(ROOT / "configs" / "demo.cfg", overrides=overrides)
    net = load_model_from_config(config).get_pipe("m3el_linker").net
    switch = {k.rsplit(".", 1)[-1]: v for k, v in variant.overrides.items() if k.endswith("unit")}
    alignment = variant.overrides.get("components.m3el_linker.model.alignment", {})
    aligns = {type(m).__name__ for m in net.modules() if type(m).__name__.endswith("Alignment")}
    assert aligns <= {"OTAlignment" if alignment else "AttentionAlignment"}
    global_only = variant.name in ("CLIP dual encoder", "dual encoder + image-to-text")
    assert bool(aligns) != global_only  # global vectors only: no tokens aligned
    assert (net.fusion_unit is not None) == switch.get("use_fusion_unit", False)
    cross = [switch.get(f"use_{unit}_unit", True) for unit in ("t2v", "v2t")]
    assert [net.units.t2v, net.units.v2t] == cross
    assert net.units.i2t == switch.get("use_i2t_unit", False)
    assert (net.cross_unit is None) == (not any(cross))
    late = variant.overrides.get("components.m3el_linker.model.use_late_interaction", True)
    assert net.text_unit.late_interaction == late == net.image_unit.late_interaction
    predict_with = alignment.get("predict_with", "teacher")
    if alignment:
        ot = [m for m in net.modules() if type(m).__name__ == "OTAlignment"]
        assert {m.settings.predict_with for m in ot} == {predict_with}
    assert ("distilled" in variant.name) == (predict_with == "student")


def _run(variant, seed, hits, mrr, suite="ablations", fraction=None):
    split = {"mrr": mrr, "hits@1": hits, "hits@3": hits, "hits@5": hits, "n_mentions": 10}
    return {
        "variant": variant,
        "suite": suite,
        "seed": seed,
        "train_fraction": fraction,
        "test": split,
        "dev": split,
        "by_gold_image": {"hits@1_gold_with_image": hits, "hits@1_gold_without_image": None},
    }


def test_summary_gives_mean_and_std_over_seeds():
    runs = [_run("A", 0, 0.5, 0.6), _run("A", 1, 0.7, 0.8), _run("B", 0, 0.9, 0.95)]
    rows = summarize(runs)
    assert [r["variant"] for r in rows] == ["A", "B"]
    assert rows[0]["seeds"] == [0, 1]
    assert rows[0]["test"]["hits@1"]["mean"] == pytest.approx(0.6)
    assert rows[0]["test"]["hits@1"]["std"] == pytest.approx(0.1)
    assert rows[0]["by_gold_image"]["hits@1_gold_without_image"]["mean"] is None
    table = markdown_table(rows, "demo")
    assert "| A | 60.00 ± 10.00 |" in table and "| B | 90.00 |" in table


def test_workflow_on_a_tiny_demo_writes_json_table_and_figure(tmp_path):
    """Two rows (the full model and a 50% low-resource row), one seed, a few steps."""
    demo, corpus, clip = tmp_path / "demo", tmp_path / "corpus", tmp_path / "clip"
    sizes = ["--n-names", "4", "--entities-per-name", "2", "--mentions-per-entity", "6"]
    assert main(["make-demo", "--output", str(demo), *sizes]) == 0
    args = ["--dataset", "demo", "--dataset-dir", str(demo), "--output", str(corpus)]
    assert main(["prepare", *args]) == 0
    assert main(["make-tiny-clip", "--output", str(clip), "--corpus-from", str(demo)]) == 0
    stem = tmp_path / "metrics" / "demo-experiments"
    command = [
        "experiments",
        "--suite",
        "low-resource",
        "--fractions",
        "0.5",
        "--config",
        str(ROOT / "configs" / "demo.cfg"),
        "--corpus",
        str(corpus),
        "--encoder",
        str(clip),
        "--work",
        str(tmp_path / "work"),
        "--output",
        str(stem),
        "--seeds",
        "0",
        "--max-steps",
        "4",
    ]
    assert main(command) == 0
    report = srsly.read_json(stem.with_suffix(".json"))
    assert [run["variant"] for run in report["runs"]] == ["50% of training", "100% of training"]
    for run in report["runs"]:
        assert 0.0 <= run["test"]["hits@1"] <= 1.0 and run["test"]["n_mentions"] > 0
    assert "| 50% of training |" in stem.with_suffix(".md").read_text(encoding="utf8")
    for run in report["runs"]:  # test mentions split by their gold's training mentions
        split = run["by_training"]
        assert split["n_seen"] + split["n_unseen"] == run["test"]["n_mentions"]
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A second call reuses the finished runs instead of training again.
    folders = sorted(p.name for p in (tmp_path / "work").iterdir())
    assert main(command) == 0
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == folders
    assert srsly.read_json(stem.with_suffix(".json"))["runs"] == report["runs"]
    # --only keeps the named rows (from the finished runs here).
    assert main(command + ["--only", "50% of training"]) == 0
    only = srsly.read_json(stem.with_suffix(".json"))["runs"]
    assert [run["variant"] for run in only] == ["50% of training"]
    assert main(command + ["--only", "60% of training"]) == 1


def test_run_key_follows_the_data_and_low_resource_rows_validate_per_own_epoch(tmp_path):
    from thinc.api import Config

    from spacy_m3el.experiments.runner import ExperimentData, run_key, schedule_overrides

    for name in ("train.spacy", "dev.spacy", "test.spacy"):
        (tmp_path / name).write_bytes(b"data " + name.encode())
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "contents").write_bytes(b"kb")
    config = Config().from_disk(ROOT / "configs" / "m3el.cfg", interpolate=False)
    config["training"]["eval_frequency"] = 100
    config["training"]["patience"] = 300
    config.to_disk(tmp_path / "m3el.cfg")
    data = ExperimentData(
        tmp_path / "m3el.cfg",
        tmp_path / "train.spacy",
        tmp_path / "dev.spacy",
        tmp_path / "test.spacy",
        tmp_path / "kb",
        "clip",
    )
    full, tenth = low_resource((0.1,))[::-1]
    key = run_key(data, full, 0)
    assert run_key(data, full, 0) == key and run_key(data, full, 1) != key
    (tmp_path / "test.spacy").write_bytes(b"regenerated test data")
    assert run_key(data, full, 0) != key  # new data at the same path is a new run
    assert schedule_overrides(data, tenth) == {
        "training.eval_frequency": 10,
        "training.patience": 30,
    }
    assert schedule_overrides(data, full) == {}
    steps = ExperimentData(
        *[getattr(data, f) for f in ("config", "train", "dev", "test", "kb")],
        encoder="clip",
        max_steps=50,
    )
    assert schedule_overrides(steps, tenth) == {}
    demo = ExperimentData(
        ROOT / "configs" / "demo.cfg",
        *[getattr(data, f) for f in ("train", "dev", "test", "kb")],
        encoder="clip",
    )
    assert schedule_overrides(demo, tenth) == {}  # demo.cfg trains by steps
