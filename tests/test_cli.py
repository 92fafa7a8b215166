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


def test_make_tiny_clip_image_size_sets_the_patches(tmp_path: Path, capsys):
    out = tmp_path / "clip64"
    assert main(["make-tiny-clip", "--output", str(out), "--image-size", "64"]) == 0
    config = json.loads((out / "config.json").read_text())["vision_config"]
    assert (config["image_size"], config["patch_size"]) == (64, 8)
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["crop_size"] == {"height": 64, "width": 64}
    bad = ["make-tiny-clip", "--output", str(tmp_path / "bad"), "--image-size", "60"]
    assert main(bad) == 1
    assert "multiple of --patch-size" in capsys.readouterr().err


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


def test_make_demo_hard(demo_dir: Path, tmp_path: Path, capsys):
    """``--hard`` alone or with a value (as project.yml passes ``demo_hard``)."""
    hard = tmp_path / "hard"
    assert main(["make-demo", "--output", str(hard), "--seed", "1", *DEMO_SIZES, "--hard"]) == 0
    kb = json.loads((hard / "kb_entity.json").read_text())
    colours_by_name = {}
    for entity in kb:
        words = entity["desc"].rstrip(".").split()  # "... shows a dotted red circle on blue."
        assert words[-5] in ("plain", "dotted", "hatched", "checkered", "ringed")
        colours_by_name.setdefault(entity["entity_name"], set()).add((words[-4], words[-1]))
    assert all(len(colours) == 1 for colours in colours_by_name.values())
    train = {r["answer"] for r in json.loads((hard / "DEMO_train.json").read_text())}
    assert len(set(json.loads((hard / "qid2id.json").read_text())) - train) == 2
    same = tmp_path / "not-hard"
    args = ["make-demo", "--output", str(same), "--seed", "1", *DEMO_SIZES, "--hard", "false"]
    assert main(args) == 0
    for name in ("kb_entity.json", "DEMO_train.json"):
        assert (same / name).read_bytes() == (demo_dir / name).read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["make-demo", "--output", str(tmp_path / "x"), "--hard", "maybe"])
    assert exc.value.code == 2
    assert "--hard" in capsys.readouterr().err
    both = ["make-demo", "--output", str(tmp_path / "y"), "--hard", "--fine-siblings"]
    assert main(both) == 1
    assert "fine_siblings and hard" in capsys.readouterr().err


def test_assets_passes_hard_to_the_demo_settings(tmp_path: Path, capsys):
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text("{}")
    data = tmp_path / "demo"
    args = ["assets", "--dataset", "demo", "--dataset-dir", str(data), "--encoder", str(encoder)]
    assert main([*args, "--hard", "true"]) == 0
    assert "Generated the hard demo dataset" in capsys.readouterr().out
    settings = json.loads((data / "demo_settings.json").read_text())
    assert settings == {"no_image_fraction": 0.05, "hard": True}
    assert main([*args, "--hard", "true"]) == 0
    assert "Generated" not in capsys.readouterr().out
    assert main(args) == 0
    assert "Generated the demo dataset" in capsys.readouterr().out
    assert json.loads((data / "demo_settings.json").read_text())["hard"] is False


def test_assets_builds_the_tiny_clip_at_the_asked_image_size(tmp_path: Path, capsys):
    data, encoder = tmp_path / "demo", tmp_path / "clip-64"
    sizes = ["--n-names", "2", "--entities-per-name", "2", "--mentions-per-entity", "3"]
    assert main(["make-demo", "--output", str(data), *sizes]) == 0
    args = ["assets", "--dataset", "demo", "--dataset-dir", str(data), "--encoder", str(encoder)]
    assert main([*args, "--image-size", "64"]) == 0
    assert "(64-pixel images)" in capsys.readouterr().out
    assert json.loads((encoder / "config.json").read_text())["vision_config"]["image_size"] == 64
    assert main([*args, "--image-size", "64"]) == 0
    assert "Encoder images: 64 pixels" in capsys.readouterr().out
    # An existing checkpoint of another size is used as it is, with a note that says so.
    assert main(args) == 0
    assert "takes 64-pixel images, not the 32 asked for" in capsys.readouterr().out
    assert main([*args, "--image-size", "30"]) == 1


def test_project_passes_demo_hard_to_assets():
    import srsly

    project = srsly.read_yaml(Path(__file__).parent.parent / "project.yml")
    assert project["vars"]["demo_hard"] is False
    (assets,) = [c for c in project["commands"] if c["name"] == "assets"]
    assert "--hard ${vars.demo_hard}" in assets["script"][0]
    assert "--image-size ${vars.tiny_clip_image_size}" in assets["script"][0]


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--dataset", "nope", "--dataset-dir", "x", "--output", "y"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main([])


@pytest.fixture
def wikimel_dir(demo_dir: Path, tmp_path: Path) -> Path:
    """The demo data laid out under WikiMEL's file names."""
    import shutil

    target = tmp_path / "WikiMEL"
    shutil.copytree(demo_dir, target)
    for split in ("train", "dev", "test"):
        (target / f"DEMO_{split}.json").rename(target / f"WIKIMEL_{split}.json")
    return target


def test_assets_stops_at_once_when_the_encoder_cannot_be_had(
    wikimel_dir, tmp_path, monkeypatch, capsys
):
    """The project's default encoder path with a real dataset: say what to pass, before any work."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.chdir(tmp_path)
    args = ["assets", "--dataset", "wikimel", "--dataset-dir", str(wikimel_dir)]
    assert main([*args, "--encoder", "encoders/tiny-clip"]) == 1
    error = capsys.readouterr().err
    assert "--vars.encoder" in error and "make-tiny-clip" in error
    assert f"--corpus-from {wikimel_dir}" in error
    assert not (tmp_path / "encoders").exists()
    assert main([*args, "--encoder", "openai/clip-vit-base-patch32"]) == 1
    assert "HF_HUB_OFFLINE=0" in capsys.readouterr().err


def test_assets_accepts_a_local_checkpoint_or_an_allowed_download(
    wikimel_dir, tmp_path, monkeypatch, capsys
):
    from spacy_m3el.ml.tiny_clip import build_tiny_clip

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    local = build_tiny_clip(tmp_path / "clip")
    args = ["assets", "--dataset", "wikimel", "--dataset-dir", str(wikimel_dir)]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main([*args, "--encoder", str(local)]) == 0
    assert "local checkpoint" in capsys.readouterr().out
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert main([*args, "--encoder", "openai/clip-vit-base-patch32"]) == 0
    assert "downloaded from the Hugging Face hub" in capsys.readouterr().out


def test_fit_decision_command_saves_the_fitted_decision(demo_dir: Path, tmp_path: Path, capsys):
    import spacy
    from thinc.api import fix_random_seed

    from spacy_m3el.kb import kb_from_file
    from spacy_m3el.ml.tiny_clip import build_tiny_clip
    from spacy_m3el.readers import read_examples

    corpus = tmp_path / "corpus"
    assert (
        main(
            [
                "prepare",
                "--dataset",
                "demo",
                "--dataset-dir",
                str(demo_dir),
                "--output",
                str(corpus),
            ]
        )
        == 0
    )
    clip = build_tiny_clip(tmp_path / "clip")
    fix_random_seed(0)
    nlp = spacy.blank("en")
    widths = {"text_width": 32, "vision_width": 32, "projection_dim": 32}
    config = {
        "model": {"hidden_width": 16, "image_width": 16, "encoder": {"name": str(clip), **widths}}
    }
    nlp.add_pipe("m3el_linker", config=config).set_kb(kb_from_file(corpus / "kb"))
    nlp.initialize(lambda: list(read_examples(nlp, corpus / "train.spacy")))
    nlp.to_disk(tmp_path / "pipeline")
    capsys.readouterr()
    code = main(["fit-decision", str(tmp_path / "pipeline"), str(corpus / "dev.spacy")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Linking decision fitted on" in printed and "Dev Hits@1" in printed
    decision = spacy.load(tmp_path / "pipeline").get_pipe("m3el_linker").decision
    assert decision.fitted_on > 0
    assert main(["fit-decision", str(tmp_path / "missing"), str(corpus / "dev.spacy")]) == 1
