"""Fixtures for the model-level tests."""

import pytest

from spacy_m3el.ml.encoder import CLIPEncoder
from spacy_m3el.ml.tiny_clip import build_tiny_clip

from ..util import TINY as WIDTHS


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Model-level tests run single-threaded (see ``one_torch_thread``)."""
    yield


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    """A tiny CLIP with the default vocabulary (not the one of tests/util.py)."""
    return str(build_tiny_clip(tmp_path_factory.mktemp("tiny_clip")))


@pytest.fixture(scope="module")
def loaded_encoder(clip_path):
    """The tiny CLIP as an encoder with its weights loaded."""
    encoder = CLIPEncoder(clip_path, **WIDTHS)
    encoder.load_pretrained()
    return encoder
