"""Smoke tests of the benchmarks (``bench/``): every script on a tiny size, into tmp_path.

They check that the scripts run against the package's current API and write
tables with the expected rows and sane values, not the speed figures.
"""

import json
import re
import subprocess
import sys

import pytest

from bench import approximate_index, pipe_memory, scale
from bench.common import BENCHMARKS_MD, IVF_HEADING, ROOT, section, train_demo_pipeline

SIZE = 200  # entities (the demo KB has 120; the rest are distractors)
MENTIONS = 24
TINY = "## Tiny encoder (trained on the demo), KB grown with distractors"
VIT = "## CLIP with ViT-B/32 shapes (random weights)"
TRAINING = "## Training throughput (tiny encoder; no step re-encodes the KB)"


# Single-threaded (the benchmarks measure with 2 threads by default): see one_torch_thread.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demo_work(tmp_path_factory):
    """A work folder with the demo dataset and a tiny linker trained for one step."""
    work = tmp_path_factory.mktemp("bench")
    train_demo_pipeline(work, steps=1)
    return work


@pytest.fixture
def repository_report_unchanged():
    """Fail if a smoke run touched the repository's BENCHMARKS.md or BENCHMARKS.json."""
    paths = [BENCHMARKS_MD, BENCHMARKS_MD.with_suffix(".json")]
    before = [p.read_bytes() if p.exists() else None for p in paths]
    yield
    assert [p.read_bytes() if p.exists() else None for p in paths] == before


def table_rows(markdown: str, heading: str):
    """The data rows (cells) of the first table under a level-2 heading."""
    text = section(markdown, heading)
    assert text is not None, f"no section {heading!r}"
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def in_unit_interval(*values):
    return all(0.0 <= value <= 1.0 for value in values)


def test_scale_smoke(demo_work, tmp_path, repository_report_unchanged, no_network):
    output = tmp_path / "report" / "BENCHMARKS.md"
    argv = ["--work", str(demo_work), "--sizes", str(SIZE), "--mentions", str(MENTIONS)]
    argv += ["--repeats", "1", "--exhaustive-limit", "8", "--train-batches", "2,4"]
    argv += ["--vit-encoder", "tiny", "--million", "3000", "--threads", "1"]
    argv += ["--output", str(output)]
    scale.main(argv)
    results = json.loads(output.with_suffix(".json").read_text(encoding="utf8"))
    markdown = output.read_text(encoding="utf8")
    assert f"Command: `python -m bench.scale {' '.join(argv)}`" in markdown

    (size,) = results["sizes"]
    assert size["size"] == SIZE and size["mentions"] == MENTIONS
    assert size["exhaustive_mentions"] == 8
    for key in ("cache_build_s", "pipe_ms", "encoder_ms", "stage1_ms", "stage2_ms"):
        assert size[key] > 0, key
    assert size["pipe_per_s"] > 0 and size["bare_per_s"] > 0 and size["exhaustive_ms"] > 0
    recalls = [size[f"retrieval_recall@{k}"] for k in (1, 5, 10, 50)]
    assert in_unit_interval(*recalls) and recalls == sorted(recalls)
    assert in_unit_interval(
        size["stage1_recall"],
        size["hits1_two_stage"],
        size["hits1_exhaustive"],
        size["same_top1"],
        size["exhaustive_top1_in_stage1"],
    )
    assert 1 <= size["candidates"] <= size["candidates_uncapped"]
    assert size["candidates"] <= size["max_candidates"]
    int8, fp16, fp32 = (size[f"bytes_per_entity_{p}"] for p in ("int8", "float16", "float32"))
    assert 0 < int8 < fp16 < fp32
    (row,) = table_rows(markdown, TINY)
    assert len(row) == 14 and row[0] == f"{SIZE}"

    vit = results["vit"]
    assert vit["encoder"] == "tiny" and vit["pipe_per_s"] > 0 and vit["bare_per_s"] > 0
    stages = vit["stages"][str(SIZE)]
    assert stages["stage1_ms"] > 0 and stages["stage2_ms"] > 0
    assert stages["bytes_per_entity"] == pytest.approx(int8, rel=0.05)
    (row,) = table_rows(markdown, VIT)
    assert row[0] == f"{SIZE}"

    million = results["million"]
    assert million["tiny_entities"] == million["vit_b32_entities"] == 3000
    assert million["tiny_ms_per_mention"] > 0 and million["vit_b32_ms_per_mention"] > 0

    assert sorted(results["training"], key=int) == ["2", "4"]
    assert all(t["examples_per_s"] > 0 for t in results["training"].values())
    assert [row[0] for row in table_rows(markdown, TRAINING)] == ["2", "4"]

    assert len(results["targets"]) == 7
    assert [row[2] in ("PASS", "MISS") for row in table_rows(markdown, "## Targets")] == [True] * 7


def test_scale_writes_the_repository_report_only_for_full_size_runs():
    assert not scale.parse_args(["--sizes", "200"]).full_run
    assert not scale.parse_args(["--repeats", "1"]).full_run
    assert not scale.parse_args(["--vit-encoder", "tiny"]).full_run
    assert scale.parse_args([]).full_run and scale.parse_args(["--quick"]).full_run
    assert scale.parse_args(["--quick"]).sizes == [1000, 10000]


@pytest.mark.parametrize(
    "script",
    [
        "scale",
        "approximate_index",
        "pipe_memory",
        "otmel",
        "text_tower",
        "scaleout",
        "pretrained",
        "frozen_towers",
    ],
)
def test_benchmarks_run_as_modules(script):
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{script}", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "--work" in result.stdout or "--output" in result.stdout


def test_approximate_index_smoke(demo_work, tmp_path, repository_report_unchanged, no_network):
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\n## Other\n\nkept\n", encoding="utf8")
    argv = ["--work", str(demo_work), "--size", "300", "--lists", "4", "--probes", "1,4"]
    argv += ["--threads", "1"]
    rows = approximate_index.main([*argv, "--output", str(output)])
    markdown = output.read_text(encoding="utf8")
    assert "## Other\n\nkept" in markdown
    table = table_rows(markdown, IVF_HEADING)
    assert [row[0] for row in table] == [
        "exhaustive, float32",
        "exhaustive, int8 + rescoring (shipped)",
        "IVF 4 lists, nprobe 1",
        "IVF 4 lists, nprobe 4",
    ]
    assert re.search(r"KB grown to 300 entities x \d+ dims, \d+ queries", markdown)
    assert all(row["ms"] > 0 and in_unit_interval(row["recall"]) for row in rows)
    assert rows[0]["recall"] == 1.0
    assert rows[-1]["recall"] >= 0.99  # probing every list is an exhaustive float32 search


def test_pipe_memory_smoke(tmp_path, capsys, no_network):
    output = tmp_path / "pipe_memory.json"
    argv = ["--docs", "96", "--batch-size", "16", "--block", "32", "--output", str(output)]
    pipe_memory.main(argv)
    result = json.loads(output.read_text(encoding="utf8"))
    assert [block["docs"] for block in result["blocks"]] == [32, 64, 96]
    assert all(block["rss_mib"] > 0 and block["docs_per_s"] > 0 for block in result["blocks"])
    assert 0 < result["linked"] <= 96
    printed = capsys.readouterr().out
    assert "RSS MiB" in printed and "RSS growth from the first block to the end" in printed


def test_accuracy_smoke(demo_work, tmp_path, repository_report_unchanged, no_network):
    from bench import accuracy

    output = tmp_path / "BENCHMARKS.md"
    argv = ["--work", str(demo_work), "--sizes", "150", "--steps", "2", "--mentions", "12"]
    results = accuracy.main([*argv, "--output", str(output)])
    rows = table_rows(output.read_text(encoding="utf8"), accuracy.HEADING)
    assert [row[0] for row in rows] == ["distractors", "fresh names", "look-alikes"]
    assert all(row[1] == "150" for row in rows)
    for row in results["rows"]:
        assert in_unit_interval(row["ceiling"], *(row[v] for v in accuracy.VARIANTS))
    assert results["dev"] > 0 and all("alias_weight" in row for row in results["rows"])
    # A given trained pipeline (here the tiny one) instead of the two tiny models.
    heading = "## Accuracy of a given pipeline"
    argv = ["--work", str(tmp_path), "--sizes", "150", "--mentions", "12", "--heading", heading]
    argv += ["--pipeline", str(demo_work / "mined"), "--corpus", str(demo_work / "corpus")]
    argv += ["--kinds", "distractors,look-alikes"]
    results = accuracy.main([*argv, "--output", str(output)])
    rows = table_rows(output.read_text(encoding="utf8"), heading)
    assert [row[0] for row in rows] == ["distractors", "look-alikes"] and all(
        row[3 + accuracy.VARIANTS.index("no mining, score")] == "–" for row in rows
    )
    assert all(0 <= row["mined + alias"] <= 1 for row in results["rows"])


def test_otmel_smoke(demo_work, tmp_path, repository_report_unchanged, no_network):
    from bench import otmel
    from bench.common import tiny_model_config

    model = tiny_model_config(demo_work / "tiny-clip")["model"]
    student = {"@misc": "spacy_m3el.OTAlignment.v1", "distillation_weight": 0.5}
    student["predict_with"] = "student"
    otmel_model = dict(model, alignment=student, use_fusion_unit=True)
    otmel_model.update(use_t2v_unit=False, use_v2t_unit=False)
    distilled = train_demo_pipeline(demo_work, 1, {"model": otmel_model}, name="otmel")
    output = tmp_path / "BENCHMARKS.md"
    args = ["--pipeline", f"M3EL={demo_work / 'pipeline'}", "--pipeline", f"OT-MEL={distilled}"]
    args += ["--corpus", str(demo_work / "corpus"), "--sizes", "200,300", "--mentions", "8"]
    args += ["--repeats", "1", "--train-batch-size", "4"]
    text = otmel.main(args + ["--output", str(output)])
    assert text in output.read_text()
    for row in ("| attention |", "| OT (Sinkhorn, 3 it.) |", "| OT student |"):
        assert text.count(row) == len(otmel.SHAPES)
    rows = [line for line in text.splitlines() if line.startswith(("| M3EL |", "| OT-MEL |"))]
    assert len(rows) == 2
    for row in rows:
        cells = [float(cell) for cell in row.strip("|").split("|")[1:]]
        assert len(cells) == 3 and all(value > 0 for value in cells)


def test_train_speed_smoke(tmp_path, repository_report_unchanged):
    """Both trees train (the baseline is HEAD here: a clone always has it) with identical
    final scores, with and without the image store and the prefetch batcher; the table
    has a row per run, the speed-up lines and the profile."""
    from bench import train_speed

    output = tmp_path / "BENCHMARKS.md"
    args = ["--work", str(tmp_path / "work"), "--baseline", "HEAD", "--steps", "2"]
    args += ["--datasets", "demo", "--vit-steps", "2", "--vit-encoder", "tiny", "--threads", "1"]
    args += ["--profile-steps", "2", "--prefetch"]  # the profile table, from 2 updates
    text = train_speed.main(args + ["--output", str(output)])
    assert text in output.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| demo")]
    assert len(rows) == 8
    assert [row.split("|")[2].strip() for row in rows[:4]] == [
        "baseline",
        "this",
        "this, store",
        "this, store, prefetch",
    ]
    for row in rows:
        cells = row.strip("|").split("|")
        assert float(cells[4]) > 0 and float(cells[5]) > 0
    assert len(set(row.split("|")[-2] for row in rows[:4])) == 1  # same final dev MRR
    assert text.count("x examples/s of `spacy train`") == 2
    assert "Where a training step spends its time" in text


def test_frozen_towers_smoke(tmp_path):
    """Fine-tuned and frozen (m3el-frozen.cfg, feature store built in init) both train; a
    row each and the speed-up line."""
    from bench import frozen_towers

    output = tmp_path / "BENCHMARKS.md"
    args = ["--work", str(tmp_path / "work"), "--encoder", "tiny", "--threads", "1"]
    args += ["--tuned-steps", "2", "--frozen-steps", "3"]
    text = frozen_towers.main(args + ["--output", str(output)])
    assert text in output.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| f")]
    steps = [int(row.split("|")[2]) for row in rows]
    assert len(rows) == 2 and steps[0] < steps[1]
    assert all(float(row.split("|")[4]) > 0 for row in rows)
    assert (tmp_path / "work" / "image-store.features").is_dir()
    assert "faster per step than fine-tuning" in text


def test_image_store_smoke(tmp_path):
    from bench import image_store

    text = image_store.main(["--work", str(tmp_path), "--dataset", "demo", "--workers", "1,2"])
    rows = [line for line in text.splitlines() if line.startswith(("| tiny", "| ViT"))]
    assert len(rows) == 4 and len({row.split("|")[3] for row in rows}) == 1  # same count


def test_text_tower_smoke(tmp_path, tiny_bert):
    """Three runs (tiny CLIP text tower; the shared transformer with and without the entity
    gradient) on a small hard demo, a row each with seen and zero-shot Hits@1."""
    from bench import text_tower

    output = tmp_path / "BENCHMARKS.md"
    args = ["--work", str(tmp_path / "work"), "--small", "--clip-steps", "2", "--trf-steps", "2"]
    args += ["--transformer", tiny_bert, "--text-width", "32", "--output", str(output)]
    text = text_tower.main(args)
    assert text in output.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == 3
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert 0 <= float(cells[4]) <= 100 and 0 <= float(cells[7]) <= 100  # Hits@1, zero-shot
    assert rows[0].split("|")[-2].strip() == "–"  # no NER in demo.cfg
    assert float(rows[1].split("|")[-3]) >= 0  # NER F of the transformer pipeline


def test_pretrained_smoke(tmp_path, tiny_bert):
    """The three rows (tiny CLIP, frozen towers, last blocks trained) on a small hard demo,
    with a random EfficientNet-Lite0 and a tiny BERT: metrics, shape probe, store figures."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from bench import pretrained

    weights = tmp_path / "lite0.pth"
    torch.save(EfficientNet.from_name("efficientnet-lite0", image_size=32).state_dict(), weights)
    output = tmp_path / "BENCHMARKS.md"
    args = ["--work", str(tmp_path / "work"), "--small", "--steps", "2", "--datasets", "hard"]
    args += ["--transformer", tiny_bert, "--text-width", "32", "--vision-weights", str(weights)]
    text = pretrained.main(args + ["--output", str(output)])
    assert text in output.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| hard")]
    assert len(rows) == 3
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert all(0 <= float(cells[i]) <= 100 for i in (6, 7, 10))  # Hits@1, MRR, shape
    store = [cell.strip() for cell in rows[1].strip("|").split("|")][-1]
    items, bytes_per_item, _ = (float(part) for part in store.split(" / "))
    assert items > 0 and bytes_per_item > 0
    assert rows[0].split("|")[-2].strip() == "–"  # the tiny CLIP stores no features


def test_scaleout_smoke(demo_work, tmp_path, repository_report_unchanged):
    """The local engine's rows of the tables (the Ray runs are what tests/scaleout test;
    here they would add a minute of Ray start-ups)."""
    from bench import scaleout

    output = tmp_path / "BENCHMARKS.md"
    argv = ["--work", str(demo_work), "--entities", "200", "--docs", "24", "--shard-size", "8"]
    argv += ["--engines", "local", "--no-ray", "--output", str(output)]
    results = scaleout.main(argv)
    assert scaleout.HEADING in output.read_text()
    assert results["cache"]["local_s"] > 0 and results["cache"]["ray_s"] is None
    (row,) = results["link"]
    assert row["engine"] == "local, 1 process" and row["docs_per_s"] > 0 and row["one_doc_s"] > 0
    assert results["memory"] == []
    assert scaleout.parse_args(["--engines", "local"]).engines == "local"


def test_shape_probe_smoke(demo_work, capsys, no_network):
    from bench import shape_probe

    results = shape_probe.main([str(demo_work / "pipeline"), "--per-shape", "1"])
    (accuracy,) = results.values()
    n_probes = len(shape_probe.colour_pairs()) * len(shape_probe.SHAPES)
    assert 0.0 <= accuracy <= 1.0
    assert accuracy * n_probes == pytest.approx(round(accuracy * n_probes))  # a share of probes
    assert "shape accuracy (chance 16.7%)" in capsys.readouterr().out


def test_units_smoke(demo_work, capsys, no_network):
    from bench import units

    results = units.main([str(demo_work / "corpus"), str(demo_work / "pipeline"), "--split", "dev"])
    (table,) = results.values()
    assert list(table) == ["score", "text", "image", "t2v", "v2t"]
    counts = table["score"]
    assert counts["n_seen"] + counts["n_zero_shot"] > 0
    for row in table.values():
        assert all(row[key] is None or 0.0 <= row[key] <= 1.0 for key in ("all", "seen"))
    assert "| ranked by | Hits@1 | seen | zero-shot |" in capsys.readouterr().out
