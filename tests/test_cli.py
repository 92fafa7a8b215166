"""The ``python -m spacy_m3el`` command line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spacy_m3el.cli import COMMANDS, main

DEMO_SIZES = ["--n-names", "4", "--entities-per-name", "2", "--mentions-per-entity", "4"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "demo"
    assert main(["make-demo", "--output", str(path), "--seed", "1", *DEMO_SIZES]) == 0
    return path


def test_commands_registered():
    assert {"prepare", "make-demo", "make-tiny-clip"} <= set(COMMANDS)


def test_make_demo_then_prepare(demo_dir: Path, tmp_path: Path, capsys):
    assert len(json.loads((demo_dir / "kb_entity.json").read_text())) == 8
    capsys.readouterr()
    out = tmp_path / "corpus"
    code = main(
        ["prepare", "--dataset", "demo", "--dataset-dir", str(demo_dir), "--output", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "kept" in printed and "knowledge base" in printed
    assert (out / "train.spacy").exists() and (out / "kb" / "m3el_entities.msgpack").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["kb"]["entities"] == 8


def test_prepare_options(demo_dir: Path, tmp_path: Path):
    kb = tmp_path / "elsewhere"
    args = [
        "prepare",
        "--dataset",
        "demo",
        "--dataset-dir",
        str(demo_dir),
        "--output",
        str(tmp_path / "o"),
        "--kb",
        str(kb),
        "--embed-images",
        "--limit",
        "3",
    ]
    assert main(args) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["embed_images"] and report["limit"] == 3
    assert report["splits"]["train"]["kept"] + report["splits"]["train"]["nil"] <= 3
    assert (kb / "m3el_entities.msgpack").exists()


def test_malformed_file_is_a_clean_error(demo_dir: Path, tmp_path: Path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in demo_dir.glob("*.json"):
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "DEMO_dev.json").write_text("[{]", encoding="utf8")
    code = main(
        [
            "prepare",
            "--dataset",
            "demo",
            "--dataset-dir",
            str(broken),
            "--output",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "DEMO_dev.json" in err and "line 1, column 3" in err and "Traceback" not in err


def test_make_tiny_clip(demo_dir: Path, tmp_path: Path):
    out = tmp_path / "clip"
    assert (
        main(
            ["make-tiny-clip", "--output", str(out), "--corpus-from", str(demo_dir), "--seed", "2"]
        )
        == 0
    )
    assert (out / "config.json").exists() and (out / "merges.txt").exists()
    name = (
        json.loads((demo_dir / "kb_entity.json").read_text())[0]["entity_name"]
        .split("%20")[-1]
        .lower()
    )
    assert name + "</w>" in json.loads((out / "vocab.json").read_text())


def test_make_tiny_clip_missing_corpus(tmp_path: Path, capsys):
    assert (
        main(
            [
                "make-tiny-clip",
                "--output",
                str(tmp_path / "c"),
                "--corpus-from",
                str(tmp_path / "no"),
            ]
        )
        == 1
    )
    assert "not found" in capsys.readouterr().err


def test_module_entry_point_missing_folder(tmp_path: Path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "spacy_m3el",
            "prepare",
            "--dataset",
            "wikimel",
            "--dataset-dir",
            str(tmp_path / "missing"),
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Dataset folder not found" in result.stderr and "Traceback" not in result.stderr


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--dataset", "nope", "--dataset-dir", "x", "--output", "y"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main([])
