"""The linker with a text tower that listens to a shared spacy-transformers component."""

import numpy
import pytest
import spacy

from ..util import (
    create_kb,
    make_examples,
    raw_docs,
    trained_transformer_pipeline,
    transformer_pipeline,
    unlabeled,
)


def weights(parameters):
    return [p.detach().clone() for p in parameters]


def changed(before, parameters) -> float:
    return max(float((a - b.detach()).abs().max()) for a, b in zip(before, parameters))


def links(docs):
    return [[(e.start_char, e.kb_id_, e._.m3el_candidates) for e in doc.ents] for doc in docs]


def linker_settings(nlp):
    """The linker's settings from the pipeline's config, to add it again changed."""
    return {k: v for k, v in nlp.config["components"]["m3el_linker"].items() if k != "factory"}


@pytest.fixture(scope="module")
def full_pipeline(tiny_clip, tiny_bert, one_torch_thread):
    """transformer + ner + m3el_linker trained on the image-decisive examples."""
    return trained_transformer_pipeline(tiny_clip, tiny_bert, steps=30)


def test_the_linker_registers_as_a_listener(tiny_clip, tiny_bert, one_torch_thread):
    nlp = transformer_pipeline(tiny_clip, tiny_bert, ner=True)
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    assert nlp.get_pipe("transformer").listening_components == ["ner", "m3el_linker"]


def test_the_linker_loss_alone_trains_the_shared_transformer(
    tiny_clip, tiny_bert, one_torch_thread
):
    nlp = transformer_pipeline(tiny_clip, tiny_bert)
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    tower = nlp.get_pipe("m3el_linker").model.text_tower
    before = weights(tower.parameters())
    optimizer = nlp.create_optimizer()
    losses = nlp.update(examples, sgd=optimizer)
    assert set(losses) == {"transformer", "m3el_linker"}
    assert losses["transformer"] > 0  # the linker's gradient reached the transformer
    # spaCy steps a component right after its own update, so the transformer applies the
    # gradient its listeners gave back at the next step (for the NER's as well).
    nlp.update(examples, sgd=optimizer)
    assert changed(before, tower.parameters()) > 0


def test_a_frozen_transformer_stays_unchanged(tiny_clip, tiny_bert, one_torch_thread):
    nlp = transformer_pipeline(tiny_clip, tiny_bert)
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    transformer = nlp.get_pipe("transformer")
    for eg in examples:  # annotating: the listener reads doc._.trf_data
        transformer(eg.predicted)
    linker = nlp.get_pipe("m3el_linker")
    before, before_net = (
        weights(linker.model.text_tower.parameters()),
        weights(linker.net.parameters()),
    )
    nlp.update(examples, sgd=nlp.create_optimizer(), exclude=["transformer"])
    # No gradient reached the transformer (so no later step could move it either).
    assert all(p.grad is None or not p.grad.any() for p in linker.model.text_tower.parameters())
    assert changed(before, linker.model.text_tower.parameters()) == 0
    assert changed(before_net, linker.net.parameters()) > 0


def test_a_step_without_mentions_still_steps_the_transformer(
    tiny_clip, tiny_bert, one_torch_thread
):
    """The linker is the last listener: it must hand back the batch even with nothing to
    learn, or the transformer would never apply the NER's gradient."""
    nlp = transformer_pipeline(tiny_clip, tiny_bert, ner=True)
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    tower = nlp.get_pipe("m3el_linker").model.text_tower
    for eg in examples:
        eg.reference.ents = []
    before = weights(tower.parameters())
    optimizer = nlp.create_optimizer()
    for _ in range(2):  # the transformer applies the listeners' gradient at the next step
        nlp.update(examples, sgd=optimizer)
    assert changed(before, tower.parameters()) > 0


def test_ner_and_linker_on_raw_text_pipe_equals_call(full_pipeline):
    nlp, examples = full_pipeline
    docs = raw_docs(nlp, examples)
    one_by_one = [nlp(doc) for doc in raw_docs(nlp, examples)]
    piped = list(nlp.pipe(docs, batch_size=5))
    assert sum(len(doc.ents) for doc in piped) > 0  # the NER finds mentions
    for a, b in zip(links(one_by_one), links(piped)):
        assert [(s, k) for s, k, _ in a] == [(s, k) for s, k, _ in b]
        for (_, _, ca), (_, _, cb) in zip(a, b):
            assert [c for c, _ in ca] == [c for c, _ in cb]
            numpy.testing.assert_allclose([p for _, p in ca], [p for _, p in cb], atol=1e-5)


def test_the_trained_linker_links_predicted_spans(full_pipeline):
    nlp, examples = full_pipeline
    docs = list(nlp.pipe(raw_docs(nlp, examples)))
    gold = [eg.reference.ents[0] for eg in examples]
    found = [
        next((e for e in doc.ents if e.start_char == g.start_char), None)
        for doc, g in zip(docs, gold)
    ]
    linked = [f is not None and f.kb_id_ == g.kb_id_ for f, g in zip(found, gold)]
    assert sum(linked) / len(linked) >= 0.5


def test_io_round_trip_offline_gives_identical_links(full_pipeline, tmp_path, no_network):
    nlp, examples = full_pipeline
    nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")
    assert links(loaded.pipe(raw_docs(loaded, examples))) == links(
        nlp.pipe(raw_docs(nlp, examples))
    )


def test_a_doc_the_transformer_did_not_see_is_encoded_through_it(full_pipeline):
    nlp, examples = full_pipeline
    linker = nlp.get_pipe("m3el_linker")
    by_pipeline = nlp(unlabeled(nlp, examples[0]))  # the transformer ran: the listener path
    alone = linker(unlabeled(nlp, examples[0]))  # no doc._.trf_data: the tower runs it
    assert alone._.trf_data is None
    assert links([alone])[0][0][1] == links([by_pipeline])[0][0][1]
    numpy.testing.assert_allclose(
        [p for _, p in alone.ents[0]._.m3el_candidates],
        [p for _, p in by_pipeline.ents[0]._.m3el_candidates],
        atol=1e-5,
    )


def test_the_entity_cache_follows_the_transformer_weights(full_pipeline):
    """Changing the transformer's weights in place, as thinc's optimizer does (and loading
    other weights), marks the linker's entity cache stale: key and fingerprint follow it."""
    import torch

    nlp, _ = full_pipeline
    linker = nlp.get_pipe("m3el_linker")
    assert linker.entity_cache is not None  # built for the current weights
    fingerprint = linker.model.fingerprint()
    assert linker.index.is_current(linker.kb)
    parameter = linker.model.text_tower.parameters()[-1]
    with torch.no_grad():
        parameter.add_(0.01)  # in place: the same storage, other values
    try:
        assert not linker.index.is_current(linker.kb)
        assert linker.model.fingerprint() != fingerprint
    finally:
        with torch.no_grad():
            parameter.sub_(0.01)


def test_a_text_tower_without_a_transformer_says_what_to_add(tiny_clip, tiny_bert):
    nlp = transformer_pipeline(tiny_clip, tiny_bert)
    nlp.remove_pipe("transformer")
    examples = make_examples(nlp)
    with pytest.raises(ValueError, match="Add a spacy-transformers 'transformer' component"):
        nlp.initialize(lambda: examples)
        nlp(unlabeled(nlp, examples[0]))


def test_a_text_width_that_does_not_match_the_transformer_names_the_fix(tiny_clip, tiny_bert):
    nlp = transformer_pipeline(tiny_clip, tiny_bert)
    config = linker_settings(nlp)
    config["model"]["encoder"]["text_width"] = 48
    nlp.remove_pipe("m3el_linker")
    nlp.add_pipe("m3el_linker", config=config).set_kb(create_kb)
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    with pytest.raises(ValueError, match="set text_width = 32"):
        nlp(unlabeled(nlp, examples[0]))


def test_ot_alignment_and_fusion_unit_work_with_the_text_tower(tiny_clip, tiny_bert):
    """Every matching unit takes the tower's text features: OT alignment in every slot and
    OT-MEL's fusion unit, trained and linking."""
    nlp = transformer_pipeline(tiny_clip, tiny_bert)
    config = linker_settings(nlp)
    config["model"]["use_fusion_unit"] = True
    config["model"]["alignment"] = {"@misc": "spacy_m3el.OTAlignment.v1", "iterations": 3}
    nlp.remove_pipe("m3el_linker")
    nlp.add_pipe("m3el_linker", config=config).set_kb(create_kb)
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    optimizer = nlp.create_optimizer()
    losses = [nlp.update(examples, sgd=optimizer)["m3el_linker"] for _ in range(3)]
    assert all(numpy.isfinite(losses))
    doc = nlp(unlabeled(nlp, examples[0]))
    assert doc.ents[0].kb_id_ and "fusion" in nlp.get_pipe("m3el_linker").net.units.enabled
