"""Hard negatives mined from the whole KB."""

import numpy
import pytest

from spacy_m3el.kb import MultimodalKB
from spacy_m3el.pipeline.mining import NegativeMiner, content_key
from spacy_m3el.pipeline.training import component_training_batch, with_gold_ents, with_images

from ..util import ENTITIES, color_image, create_kb, make_examples, png_bytes, train


def kb_with_duplicates(vocab) -> MultimodalKB:
    """The test KB plus an exact copy of Q1 (another ID) and a look-alike of Q1 named otherwise."""
    kb = create_kb(vocab)
    q1 = kb.get_record("Q1")
    kb.add_multimodal_entity("Q1-copy", q1.name, q1.description, list(q1.images))
    kb.add_multimodal_entity("L1", "Zorblax", q1.description, list(q1.images))
    kb.add_name_aliases()
    return kb


@pytest.fixture
def mining_nlp(build_nlp):
    nlp = build_nlp(component_overrides={"n_mined_negatives": 3, "mining_refresh": 2})
    linker = nlp.get_pipe("m3el_linker")
    linker.set_kb(kb_with_duplicates)
    return nlp


def mine(nlp, examples):
    linker = nlp.get_pipe("m3el_linker")
    mined = {}

    def record(kb, mentions, gold_ids, queries_of):
        result = NegativeMiner.mine(linker.miner, kb, mentions, gold_ids, queries_of)
        mined.update(zip(gold_ids, result))
        return result

    linker.miner.mine = record
    batch = component_training_batch(linker, with_images(with_gold_ents(examples), "image"))
    del linker.miner.mine
    return mined, batch


def test_mined_negatives_exclude_the_gold_and_its_duplicates(mining_nlp):
    examples = make_examples(mining_nlp, per_entity=1)
    mined, batch = mine(mining_nlp, examples)
    assert set(mined) == {kb_id for kb_id, _, _, _ in ENTITIES}
    for gold, negatives in mined.items():
        assert len(negatives) == 3 and gold not in negatives
        assert len(set(negatives)) == 3
    assert "Q1-copy" not in mined["Q1"]  # same name, description and image: a duplicate
    # Every mined negative is one of the batch's entities.
    assert batch.entity_features["input_ids"].shape[0] >= len(ENTITIES)


def test_mining_is_reproducible_and_follows_the_weights(mining_nlp, build_nlp):
    examples = make_examples(mining_nlp, per_entity=1)
    first, _ = mine(mining_nlp, examples)
    again, _ = mine(mining_nlp, examples)
    assert first == again
    linker = mining_nlp.get_pipe("m3el_linker")
    refreshes, before = linker.miner.refreshes, linker.miner.snapshot(linker.kb)
    train(mining_nlp, make_examples(mining_nlp), steps=6)
    assert linker.miner.refreshes > refreshes  # re-encoded every 2 updates
    later, _ = mine(mining_nlp, examples)
    snapshot = linker.miner.snapshot(linker.kb)
    assert snapshot.model_fingerprint != before.model_fingerprint
    assert snapshot.model_fingerprint == linker.model.fingerprint()  # refreshed at the last update
    # A miner that has never seen the old weights finds the same negatives: nothing is stale.
    fresh = NegativeMiner(linker.index, 3, 2)
    linker.miner, kept = fresh, linker.miner
    assert mine(mining_nlp, examples)[0] == later
    linker.miner = kept
    # Same seed, same training: the same negatives.
    other = build_nlp(component_overrides={"n_mined_negatives": 3, "mining_refresh": 2})
    other.get_pipe("m3el_linker").set_kb(kb_with_duplicates)
    train(other, make_examples(other), steps=6)
    assert mine(other, examples)[0] == later


def test_content_key_tells_duplicates_from_look_alikes(tiny_clip):
    import spacy

    kb = kb_with_duplicates(spacy.blank("en").vocab)
    keys = {r.kb_id: content_key(r) for r in kb.records()}
    assert keys["Q1"] == keys["Q1-copy"]
    assert keys["Q1"] != keys["L1"] and keys["Q1"] != keys["Q2"]
    array = color_image(ENTITIES[0][3])
    assert content_key(kb.get_record("Q1")) != content_key(
        type(kb.get_record("Q1"))("Q9", "x", "y", (array,))
    )
    assert png_bytes(array)  # images given as bytes and as arrays both hash


def test_invalid_mining_settings_are_clear_errors(build_nlp):
    with pytest.raises(ValueError, match="n_mined_negatives must be at least 0"):
        build_nlp(component_overrides={"n_mined_negatives": -1})
    with pytest.raises(ValueError, match="mining_refresh must be at least 1"):
        build_nlp(component_overrides={"mining_refresh": 0})


def test_mining_off_gives_the_batch_of_before(build_nlp):
    nlp = build_nlp(component_overrides={"n_mined_negatives": 0})
    linker = nlp.get_pipe("m3el_linker")
    examples = with_images(with_gold_ents(make_examples(nlp, per_entity=1)), "image")
    numpy.random.seed(0)
    batch = component_training_batch(linker, examples)
    assert linker.miner.refreshes == 0
    assert batch.entity_features["input_ids"].shape[0] == len(ENTITIES)
