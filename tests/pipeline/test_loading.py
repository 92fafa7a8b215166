"""Loading saved pipelines: offline, without pickle, with clear errors for damaged folders."""

import logging
import pickle
import shutil

import pytest
import spacy
import torch

from ..util import ENTITIES, color_image, make_doc, trained_pipeline


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_clip):
    nlp = trained_pipeline(tiny_clip)
    nlp(make_doc(nlp, "Q1", None))  # builds the entity cache so it is saved too
    path = tmp_path_factory.mktemp("saved") / "pipeline"
    nlp.to_disk(path)
    return path


def damaged_copy(saved, tmp_path, damage):
    path = tmp_path / "copy"
    shutil.copytree(saved, path)
    damage(path / "m3el_linker")
    return path


def test_loads_without_pickle_or_network(saved, monkeypatch, no_network):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle or torch.load used while loading")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    nlp = spacy.load(saved)
    doc = nlp(make_doc(nlp, "Q3", color_image(ENTITIES[2][3])))
    assert doc.ents[0].kb_id_ != "NIL"


@pytest.mark.parametrize(
    "damage,message",
    [
        (
            lambda d: (d / "model").write_bytes((d / "model").read_bytes()[:1000]),
            "model weights cannot be loaded",
        ),
        (lambda d: (d / "model").unlink(), "has no 'model'"),
        (lambda d: shutil.rmtree(d / "kb"), "has no 'kb'"),
        (lambda d: (d / "kb" / "contents").write_bytes(b"garbage"), "knowledge base is corrupt"),
        (
            lambda d: (d / "kb" / "m3el_entities.msgpack").write_bytes(b"garbage"),
            "knowledge base is corrupt",
        ),
        (lambda d: (d / "kb" / "m3el_entities.msgpack").unlink(), "knowledge base is corrupt"),
        (lambda d: (d / "cfg").write_text("{not json"), "'cfg' is corrupt"),
    ],
)
def test_damaged_folder_gives_a_clear_error(saved, tmp_path, damage, message):
    with pytest.raises(ValueError, match=message):
        spacy.load(damaged_copy(saved, tmp_path, damage))


def test_config_that_does_not_match_the_weights(saved, tmp_path):
    def shrink(component):
        config = component.parent / "config.cfg"
        config.write_text(config.read_text().replace("hidden_width = 16", "hidden_width = 8"))

    with pytest.raises(ValueError, match="shape"):
        spacy.load(damaged_copy(saved, tmp_path, shrink))


def test_corrupt_entity_cache_is_ignored_and_rebuilt(saved, tmp_path, caplog):
    path = damaged_copy(
        saved, tmp_path, lambda d: (d / "entity_cache.safetensors").write_bytes(b"garbage")
    )
    with caplog.at_level(logging.WARNING, logger="spacy_m3el"):
        nlp = spacy.load(path)
    assert any("ignoring the saved entity cache" in r.getMessage() for r in caplog.records)
    assert nlp(make_doc(nlp, "Q1", None)).ents[0].kb_id_ in {"Q1", "Q2"}


def test_cache_of_other_units_is_not_used(saved, tmp_path, caplog):
    def drop_v2t(component):
        config = component.parent / "config.cfg"
        config.write_text(config.read_text().replace("use_v2t_unit = true", "use_v2t_unit = false"))

    nlp = spacy.load(damaged_copy(saved, tmp_path, drop_v2t))
    with caplog.at_level(logging.WARNING, logger="spacy_m3el"):
        nlp(make_doc(nlp, "Q1", None))
    assert any("does not match the current weights" in r.getMessage() for r in caplog.records)
    assert not any(
        key.startswith("cross.v2t") for key in nlp.get_pipe("m3el_linker").entity_cache.stored
    )


@pytest.mark.parametrize("policy", ["learned", "describe", "calibrated"])
def test_learned_missing_image_parameters_round_trip(build_nlp, tmp_path, policy):
    """A pipeline whose image-less items get learned features links the same after loading."""
    import numpy

    from ..util import make_examples, train

    nlp = build_nlp(missing_images=policy)
    train(nlp, make_examples(nlp), steps=3)
    docs = [make_doc(nlp, "Q2", None), make_doc(nlp, "Q5", color_image(ENTITIES[4][3]))]
    before = [ent._.m3el_candidates for doc in nlp.pipe(docs) for ent in doc.ents]
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    net = loaded.get_pipe("m3el_linker").net
    assert net.missing_images.policy == policy
    docs = [make_doc(loaded, "Q2", None), make_doc(loaded, "Q5", color_image(ENTITIES[4][3]))]
    after = [ent._.m3el_candidates for doc in loaded.pipe(docs) for ent in doc.ents]
    for a, b in zip(before, after):
        assert [k for k, _ in a] == [k for k, _ in b]
        numpy.testing.assert_allclose([p for _, p in a], [p for _, p in b], atol=1e-6)
