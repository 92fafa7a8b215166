"""Shared fixtures: a tiny offline CLIP, blocked network, pipelines to train."""

import socket
from typing import Callable

import pytest
import spacy
from spacy.language import Language

import spacy_m3el  # noqa: F401
from spacy_m3el.ml.tiny_bert import build_tiny_bert
from spacy_m3el.ml.tiny_clip import build_tiny_clip

from .util import CORPUS, create_kb, linker_config, make_examples


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    """Path of a tiny random CLIP checkpoint built offline."""
    return str(build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), corpus=CORPUS))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """Path of a tiny random BERT checkpoint built offline (the shared transformer of tests)."""
    return str(build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), corpus=CORPUS))


@pytest.fixture
def no_network(monkeypatch):
    """Make any network connection attempt fail loudly."""

    def refuse(*args, **kwargs):
        raise RuntimeError("network access attempted during a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def build_nlp(tiny_clip) -> Callable[..., Language]:
    """Build (not train) a blank pipeline with an initialized m3el_linker."""

    def build(
        examples_factory=make_examples, component_overrides=None, **model_overrides
    ) -> Language:
        from thinc.api import fix_random_seed

        fix_random_seed(0)
        nlp = spacy.blank("en")
        config = linker_config(tiny_clip, **model_overrides)
        config.update(component_overrides or {})
        linker = nlp.add_pipe("m3el_linker", config=config)
        linker.set_kb(create_kb)
        examples = examples_factory(nlp)
        nlp.initialize(lambda: examples)
        return nlp

    return build


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run torch single-threaded for a test module: on tiny tensors its thread pool only
    adds overhead, and on a busy 2-core machine waiting threads stall it many times over."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
