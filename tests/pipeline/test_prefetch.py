"""Prefetching training batches: same order, errors surface, the worker stops, and the
weights are those of a run without it."""

import threading
import time

import pytest
import torch

from spacy_m3el.pipeline.prefetch import prefetch_batcher, prefetched

from ..util import make_examples


def batches_of(items, size=3):
    items = list(items)
    return [items[i : i + size] for i in range(0, len(items), size)]


def test_batches_come_in_order_and_the_worker_finishes():
    out = list(prefetched(iter(batches_of(range(10))), ahead=2))
    assert out == batches_of(range(10))
    time.sleep(0.3)
    assert not any(t.name == "m3el-prefetch" for t in threading.enumerate())


def test_an_error_in_the_worker_reaches_the_training_thread():
    def failing():
        yield [1]
        raise KeyError("broken batch")

    batches = prefetched(failing(), ahead=2)
    assert next(batches) == [1]
    with pytest.raises(KeyError, match="broken batch"):
        next(batches)


def test_closing_the_batches_stops_the_worker():
    batches = prefetched(iter(batches_of(range(300), size=1)), ahead=1)
    next(batches)
    batches.close()
    time.sleep(0.5)
    assert not any(t.name == "m3el-prefetch" for t in threading.enumerate())


def test_ahead_must_be_positive():
    with pytest.raises(ValueError, match="ahead must be at least 1"):
        prefetch_batcher(batches_of, 0)


def train_batches(nlp, batcher, epochs=3):
    optimizer = nlp.create_optimizer()
    examples = make_examples(nlp)
    for _ in range(epochs):
        for batch in batcher(examples):
            nlp.update(batch, sgd=optimizer)
    return nlp.get_pipe("m3el_linker")


def test_prefetching_gives_the_weights_of_training_without_it(build_nlp):
    plain = train_batches(build_nlp(), batches_of)
    ahead = train_batches(build_nlp(), prefetch_batcher(batches_of, 2))
    assert plain.prepared.used == 0 and ahead.prepared.used == 3 * len(make_examples(build_nlp()))
    for key, value in plain.net.state_dict().items():
        assert torch.equal(value, ahead.net.state_dict()[key]), key


def test_a_prepared_example_whose_doc_changed_is_prepared_again(build_nlp):
    nlp = build_nlp()
    linker = nlp.get_pipe("m3el_linker")
    examples = make_examples(nlp)[:2]
    linker.prepare_batch(examples)
    examples[1].predicted[0].is_sent_start = True  # e.g. an annotating senter since
    examples[1].predicted[3].is_sent_start = True
    from spacy_m3el.pipeline.training import training_examples

    prepared = training_examples(linker, examples)
    assert linker.prepared.used == 1 and len(prepared) == 2
    assert prepared[1].predicted.has_annotation("SENT_START")
    assert [e.kb_id_ for e in prepared[1].predicted.ents] == [examples[1].reference.ents[0].kb_id_]


def test_a_registered_linker_leaves_other_pipelines_batches_alone(build_nlp):
    import spacy

    linker = build_nlp().get_pipe("m3el_linker")
    other = make_examples(spacy.blank("en"))
    linker.prepare_batch(other)
    linker.prepare_batch([1, 2])
    assert len(linker.prepared) == 0
