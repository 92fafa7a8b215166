"""`spacy train` with the shipped configs, and the project workflow end to end."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import srsly

from spacy_m3el.datasets.demo import generate_demo_dataset
from spacy_m3el.datasets.mimic import prepare_dataset

ROOT = Path(__file__).parent.parent
SMALL_DEMO = {"n_names": 4, "entities_per_name": 2, "mentions_per_entity": 6}


def run(args, cwd):
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=offline_env()
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def offline_env():
    import os

    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return env


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory, tiny_clip):
    root = tmp_path_factory.mktemp("small")
    generate_demo_dataset(root / "demo", seed=1, **SMALL_DEMO)
    prepare_dataset("demo", root / "demo", root / "corpus", root / "corpus" / "kb")
    return root


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.cfg")))
def test_configs_are_valid(config):
    run(["-m", "spacy", "debug", "config", str(ROOT / "configs" / config)], cwd=ROOT)


@pytest.mark.parametrize("config", ["demo.cfg", "demo-otmel.cfg", "demo-clip.cfg", "demo-hard.cfg"])
def test_spacy_train_runs_a_few_steps(small_corpus, tiny_clip, config):
    out = small_corpus / f"training-{config}"
    corpus = small_corpus / "corpus"
    # Switches the shipped demo configs leave off, through spacy train on the dual encoder.
    switches = {"logit_adjustment": "1.0", "model.use_i2t_unit": "true"}
    extra = [
        arg
        for key, value in (switches.items() if config == "demo-clip.cfg" else ())
        for arg in (f"--components.m3el_linker.{key}", value)
    ]
    run(
        [
            "-m",
            "spacy",
            "train",
            str(ROOT / "configs" / config),
            "--output",
            str(out),
            "--paths.train",
            str(corpus / "train.spacy"),
            "--paths.dev",
            str(corpus / "dev.spacy"),
            "--paths.kb",
            str(corpus / "kb"),
            "--paths.encoder",
            tiny_clip,
            "--training.max_steps",
            "6",
            "--training.eval_frequency",
            "3",
            *extra,
        ],
        cwd=small_corpus,
    )
    nlp = spacy.load(out / "model-best")
    linker = nlp.get_pipe("m3el_linker")
    assert linker.logit_adjustment == (config in ("demo-clip.cfg", "demo-hard.cfg"))
    assert linker.net.units.i2t == (config == "demo-clip.cfg")
    assert linker.n_kb_mentions == (16 if config in ("demo-hard.cfg", "demo-otmel.cfg") else 0)
    meta = srsly.read_json(out / "model-best" / "meta.json")
    assert "nel_mrr" in meta["performance"]
    assert len(linker.kb) == SMALL_DEMO["n_names"] * SMALL_DEMO["entities_per_name"]
    units = linker.net.units
    assert units.fusion == (config == "demo-otmel.cfg")
    assert units.late_interaction == (config in ("demo.cfg", "demo-hard.cfg"))


def test_spacy_train_runs_the_pretrained_towers_config(small_corpus, tiny_bert, tmp_path):
    """configs/demo-pretrained.cfg (frozen towers, feature store) with a random
    EfficientNet-Lite0 and a tiny BERT in place of the installed weights."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    weights = tmp_path / "lite0.pth"
    torch.save(EfficientNet.from_name("efficientnet-lite0", image_size=32).state_dict(), weights)
    out, corpus = small_corpus / "training-pretrained", small_corpus / "corpus"
    paths = {"train": "train.spacy", "dev": "dev.spacy", "kb": "kb"}
    args = [f"--paths.{key}={corpus / name}" for key, name in paths.items()]
    vision = "--components.m3el_linker.model.encoder.vision"
    args += [f"--paths.transformer={tiny_bert}", f"--paths.image_store={tmp_path / 'images'}"]
    args += [f"{vision}.weights_path={weights}", f"{vision}.image_size=32"]
    args += ["--components.m3el_linker.model.encoder.text.width=32"]
    args += ["--training.max_steps=4", "--training.eval_frequency=2"]
    config = str(ROOT / "configs" / "demo-pretrained.cfg")
    run(["-m", "spacy", "train", config, "--output", str(out), *args], cwd=small_corpus)
    nlp = spacy.load(out / "model-best")
    encoder = nlp.get_pipe("m3el_linker").model.net.encoder
    assert type(encoder).__name__ == "TowerEncoder" and encoder.vision.output_block == 14
    assert encoder.vision.trained_blocks == 2  # blocks 13 and 14 learn, the rest is stored
    assert not any(p.requires_grad for p in encoder.vision.net._blocks[:12].parameters())
    assert all(p.requires_grad for p in encoder.vision.net._blocks[12:].parameters())
    assert (tmp_path / "images.features" / "vision").is_dir()  # beside the image store
    assert "nel_kb_mrr" in srsly.read_json(out / "model-best" / "meta.json")["performance"]


def test_spacy_train_runs_the_transformer_pipeline_on_a_pretrained_vision_tower(
    small_corpus, tiny_bert, tmp_path
):
    """configs/demo-trf-pretrained.cfg: transformer + ner + m3el_linker whose images go
    through EfficientNet-Lite (a random Lite0 here), its frozen part in the feature store."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    weights = tmp_path / "lite0.pth"
    torch.save(EfficientNet.from_name("efficientnet-lite0", image_size=32).state_dict(), weights)
    out, corpus = small_corpus / "training-trf-pretrained", small_corpus / "corpus"
    paths = {"train": "train.spacy", "dev": "dev.spacy", "kb": "kb"}
    args = [f"--paths.{key}={corpus / name}" for key, name in paths.items()]
    encoder = "--components.m3el_linker.model.encoder"
    args += [f"--paths.transformer={tiny_bert}", f"--paths.image_store={tmp_path / 'images'}"]
    args += [f"{encoder}.vision.weights_path={weights}", f"{encoder}.vision.image_size=32"]
    args += [f"{encoder}.text_width=32", "--training.max_steps=4", "--training.eval_frequency=2"]
    config = str(ROOT / "configs" / "demo-trf-pretrained.cfg")
    run(["-m", "spacy", "train", config, "--output", str(out), *args], cwd=small_corpus)
    nlp = spacy.load(out / "model-best")
    assert nlp.pipe_names == ["transformer", "ner", "m3el_linker"]
    encoder = nlp.get_pipe("m3el_linker").model.net.encoder
    assert type(encoder).__name__ == "TowerVisionEncoder" and encoder.vision.trained_blocks == 2
    assert (tmp_path / "images.features" / "vision").is_dir()
    performance = srsly.read_json(out / "model-best" / "meta.json")["performance"]
    assert {"ents_f", "nel_kb_mrr"} <= set(performance)


def test_spacy_train_runs_the_transformer_pipeline(small_corpus, tiny_clip, tiny_bert):
    """transformer + ner + m3el_linker (configs/demo-trf.cfg) with a tiny BERT."""
    out = small_corpus / "training-trf"
    corpus = small_corpus / "corpus"
    paths = {"train": "train.spacy", "dev": "dev.spacy", "kb": "kb"}
    args = [f"--paths.{key}={corpus / name}" for key, name in paths.items()]
    args += [f"--paths.encoder={tiny_clip}", f"--paths.transformer={tiny_bert}"]
    args += ["--components.m3el_linker.model.encoder.text_width=32"]
    args += ["--training.max_steps=4", "--training.eval_frequency=2"]
    config = str(ROOT / "configs" / "demo-trf.cfg")
    run(["-m", "spacy", "train", config, "--output", str(out), *args], cwd=small_corpus)
    nlp = spacy.load(out / "model-best")
    assert nlp.pipe_names == ["transformer", "ner", "m3el_linker"]
    performance = srsly.read_json(out / "model-best" / "meta.json")["performance"]
    assert {"ents_f", "nel_kb_mrr"} <= set(performance)


def small_project(tmp_path: Path, config: str) -> Path:
    """A copy of the project whose ``config`` trains 4 steps, with a small demo dataset."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "project.yml", project)
    shutil.copytree(ROOT / "configs", project / "configs")
    text = (project / "configs" / config).read_text()
    for steps in ("max_steps = 1000", "max_steps = 300"):
        text = text.replace(steps, "max_steps = 4")
    text = text.replace("eval_frequency = 100", "eval_frequency = 2")
    # The tiny BERT stands in for all-MiniLM-L6-v2 (width 384).
    text = text.replace("text_width = 384", "text_width = 32")
    (project / "configs" / config).write_text(text)
    generate_demo_dataset(project / "assets" / "demo", seed=2, **SMALL_DEMO)
    return project


def run_steps(project: Path, config: str, *options: str) -> str:
    """The project's steps up to the evaluation with ``config``; their output."""
    out = ""
    for step in ("assets", "prepare", "configure", "train", "evaluate"):
        command = ["-m", "spacy", "project", "run", step, str(project), "--vars.config", config]
        out += run([*command, *options], cwd=project)
    return out


def test_project_transformer_pipeline_from_raw_text(tmp_path, tiny_bert):
    """The project's steps with demo-trf.cfg: the evaluation reports NER and linking on raw
    text next to the gold-span ranking."""
    project = small_project(tmp_path, "demo-trf.cfg")
    out = run_steps(project, "demo-trf.cfg", "--vars.transformer", tiny_bert)
    assert "Transformer: local checkpoint" in out
    assert "Raw text: NER finds the mentions" in out
    metrics = srsly.read_json(project / "metrics" / "demo.json")
    assert metrics["n_mentions"] > 0 and "mrr" in metrics
    raw = metrics["raw_text"]
    assert {"ents_p", "ents_r", "ents_f", "link_p", "link_r", "link_f"} <= set(raw)
    assert raw["link_gold"] >= metrics["n_mentions"]  # NIL and out-of-KB gold are not ranked


def test_project_trains_and_evaluates_otmel(tmp_path):
    """OT-MEL through the project's steps (the rest of the workflow is the same for every
    config: test_project_workflow_end_to_end)."""
    project = small_project(tmp_path, "demo-otmel.cfg")
    run_steps(project, "demo-otmel.cfg")
    config = (project / "training" / "model-best" / "config.cfg").read_text()
    assert "spacy_m3el.OTAlignment.v1" in config
    metrics = srsly.read_json(project / "metrics" / "demo.json")
    assert metrics["n_mentions"] > 0 and 0 <= metrics["mrr"] <= 1


def test_project_workflow_end_to_end(tmp_path):
    config = "demo.cfg"
    project = small_project(tmp_path, config)
    command = ["-m", "spacy", "project", "run", "all", str(project), "--vars.config", config]
    out = run(command, cwd=project)
    assert "Built a tiny offline CLIP" in out
    assert (project / "training" / "model-best").is_dir()
    for name in ("demo", "demo-text-only"):
        metrics = srsly.read_json(project / "metrics" / f"{name}.json")
        assert metrics["n_mentions"] > 0
        for key in ("mrr", "hits@1", "hits@3", "hits@5", "hits@10", "hits@20", "mean_rank"):
            assert key in metrics
        split = metrics["by_training"]  # the evaluation splits seen and zero-shot golds
        assert split["n_seen"] + split["n_unseen"] == metrics["n_mentions"]
    assert "Hits@1 by the gold's training mentions" in out
    assert "text-only" in (project / "metrics" / "demo-comparison.txt").read_text()
    assert "raw_text" not in srsly.read_json(project / "metrics" / "demo.json")  # no NER
