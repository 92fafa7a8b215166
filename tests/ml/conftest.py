"""Fixtures for the model-level tests."""

import pytest
import torch

from spacy_m3el.ml.tiny_clip import build_tiny_clip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: torch's thread pool only adds overhead, and stalls badly on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    """A tiny CLIP with the default vocabulary (not the one of tests/util.py)."""
    return str(build_tiny_clip(tmp_path_factory.mktemp("tiny_clip")))
