"""A training config made concrete per dataset: validation once per epoch."""

from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin
from thinc.api import Config

from spacy_m3el.cli import main
from spacy_m3el.training_config import per_epoch_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def train_file(tmp_path) -> Path:
    nlp = spacy.blank("en")
    path = tmp_path / "train.spacy"
    DocBin(docs=[nlp.make_doc(f"doc {i}") for i in range(300)]).to_disk(path)
    return path


def test_epoch_based_config_validates_once_per_epoch(train_file, tmp_path):
    config, summary = per_epoch_config(ROOT / "configs" / "m3el.cfg", train_file)
    assert config["training"]["eval_frequency"] == 3  # ceil(300 / 128)
    assert config["training"]["patience"] == 9
    assert "3 steps per epoch" in summary
    twice, _ = per_epoch_config(ROOT / "configs" / "m3el.cfg", train_file, 2.0, 0)
    assert (twice["training"]["eval_frequency"], twice["training"]["patience"]) == (6, 0)
    output = tmp_path / "m3el.cfg"
    command = ["configure", str(ROOT / "configs" / "m3el.cfg"), str(train_file)]
    assert main([*command, "--output", str(output)]) == 0
    written = Config().from_disk(output, interpolate=False)
    assert written["training"]["eval_frequency"] == 3
    assert written["paths"]["train"] is None  # variables and paths untouched


def test_step_based_config_is_left_as_it_is(train_file):
    config, summary = per_epoch_config(ROOT / "configs" / "demo.cfg", train_file)
    original = Config().from_disk(ROOT / "configs" / "demo.cfg", interpolate=False)
    assert config == original and "trains by steps" in summary


def test_other_batchers_and_missing_data_are_clear_errors(train_file, tmp_path):
    config = Config().from_disk(ROOT / "configs" / "m3el.cfg", interpolate=False)
    config["training"]["batcher"] = {"@batchers": "spacy.batch_by_words.v1", "size": 1000}
    path = tmp_path / "words.cfg"
    config.to_disk(path)
    with pytest.raises(ValueError, match="batch_by_sequence"):
        per_epoch_config(path, train_file)
    with pytest.raises(FileNotFoundError, match="run the prepare step"):
        per_epoch_config(ROOT / "configs" / "m3el.cfg", tmp_path / "missing.spacy")
