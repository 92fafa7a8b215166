"""Training batches: image-swap negatives (the gold's text with a sibling's image)."""

from types import SimpleNamespace

import numpy
import spacy

from spacy_m3el.pipeline.training import swap_images

from ..util import make_examples


def candidates(*kb_ids):
    return [SimpleNamespace(entity_=kb_id) for kb_id in kb_ids]


def test_swaps_take_a_same_name_siblings_image_else_the_next_one():
    images = ["img-A", "img-B", None, "img-D"]  # columns of A, B, C (no image), D
    column = {"A": 0, "B": 1, "C": 2, "D": 3}
    golds = ["A", "B", "C", "A"]
    aliases = [candidates("A", "D"), candidates("B"), candidates("C", "A"), candidates("A", "D")]
    swapped = dict(swap_images(golds, images, column, aliases))
    assert swapped == {0: "img-D", 1: "img-D"}  # A gets its sibling D's; B the next with one
    assert 2 not in swapped  # an image-less gold has no image to swap


def test_batch_with_swaps_trains_and_adds_one_column_per_gold(build_nlp):
    from spacy_m3el.pipeline.training import component_training_batch, training_examples

    from ..util import make_examples

    nlp = build_nlp(component_overrides={"image_swap_negatives": True})
    linker = nlp.get_pipe("m3el_linker")
    examples = training_examples(linker, make_examples(nlp)[:4])
    with_swaps = component_training_batch(linker, examples)
    linker.image_swap_negatives = False
    plain = component_training_batch(linker, examples)
    n_golds = len(set(eg.reference.ents[0].kb_id_ for eg in examples))
    extra = len(with_swaps.entity_features["has_image"]) - len(plain.entity_features["has_image"])
    assert extra == n_golds
    numpy.testing.assert_array_equal(with_swaps.labels, plain.labels)
    linker.image_swap_negatives = True
    losses = {}
    nlp.update(make_examples(nlp)[:4], sgd=nlp.create_optimizer(), losses=losses)
    assert numpy.isfinite(losses["m3el_linker"])


def test_kb_mentions_are_entities_named_and_pictured_by_the_kb(build_nlp):
    from spacy_m3el.images import get_image
    from spacy_m3el.pipeline.training import kb_mentions

    nlp = build_nlp()
    linker = nlp.get_pipe("m3el_linker")
    numpy.random.seed(3)
    spans, gold_ids = kb_mentions(linker, 4)
    assert len(spans) == 4 and len(set(gold_ids)) == 4
    for span, kb_id in zip(spans, gold_ids):
        record = linker.kb.get_record(kb_id)
        assert span.text == span.doc.text == record.name
        assert get_image(span.doc, linker.image_attr) is not None
    numpy.random.seed(3)
    assert kb_mentions(linker, 4)[1] == gold_ids  # deterministic with the seed
    assert len(kb_mentions(linker, 100)[1]) == len(linker.kb)  # at most every entity
    blank = numpy.zeros((8, 8, 3), dtype=numpy.uint8)
    linker.kb.add_multimodal_entity("Q99", "  ", "no name", [blank])
    assert "Q99" not in kb_mentions(linker, 100)[1]  # a blank name cannot be a mention


def test_kb_mentions_carry_the_kb_image_reference_which_the_image_store_serves(build_nlp, tmp_path):
    from spacy_m3el.images import get_image
    from spacy_m3el.pipeline.inputs import build_image_store
    from spacy_m3el.pipeline.training import kb_mentions

    nlp = build_nlp()
    linker = nlp.get_pipe("m3el_linker")
    store = build_image_store(linker, tmp_path / "store", [], None)
    spans, gold_ids = kb_mentions(linker, 3)
    for span, kb_id in zip(spans, gold_ids):
        assert get_image(span.doc, linker.image_attr) == linker.kb.get_record(kb_id).images[0]
    images, statuses = linker.load_images([span.doc for span in spans])
    assert statuses == ["ok"] * 3 and store.hits == 3 + 3  # checked when drawn, then loaded


def test_kb_mentions_teach_entities_no_training_mention_names(build_nlp):
    """Trained only on Q1, Q3, Q5, a linker without KB mentions links their image-only
    siblings' mentions to them; with KB mentions it learns the siblings too."""
    from ..pipeline.test_linker import accuracy
    from ..util import make_examples, train

    def seen_only(nlp):
        return [
            eg for eg in make_examples(nlp) if eg.reference.ents[0].kb_id_ in {"Q1", "Q3", "Q5"}
        ]

    results = {}
    for n in (0, 6):
        nlp = build_nlp(examples_factory=seen_only, component_overrides={"n_kb_mentions": n})
        train(nlp, seen_only(nlp), steps=60)
        unseen = [
            eg
            for eg in make_examples(nlp, per_entity=2, seed=1000)
            if eg.reference.ents[0].kb_id_ in {"Q2", "Q4", "Q6"}
        ]
        results[n] = accuracy(nlp, unseen)
    assert results[0] <= 0.5 and results[6] == 1.0, results


def test_gold_entities_are_copied_whether_or_not_the_tokens_align(build_nlp):
    """The fast path (same tokens) and spaCy's alignment give the same gold spans."""
    from spacy.training import Example

    from spacy_m3el.pipeline.training import GoldMentions, same_tokens, with_gold_ents

    nlp = build_nlp()
    linker = nlp.get_pipe("m3el_linker")
    aligned = make_examples(nlp, per_entity=1)
    split = []  # the predicted docs tokenized differently (the name in two tokens)
    for eg in aligned:
        name = eg.reference.ents[0].text
        words = [name[:1], name[1:]] + [t.text for t in eg.reference[1:]]
        spaces = [False] + [bool(t.whitespace_) for t in eg.reference]
        doc = spacy.tokens.Doc(nlp.vocab, words=words, spaces=spaces)
        split.append(Example(doc, eg.reference))
    assert all(same_tokens(eg.predicted, eg.reference) for eg in aligned)
    assert not any(same_tokens(eg.predicted, eg.reference) for eg in split)
    gold = GoldMentions(linker.kb, (), False, "m3el_linker")
    results = []
    for examples in (aligned, split):
        prepared = with_gold_ents(examples)
        assert all(not eg.predicted.ents for eg in examples)  # the inputs are not changed
        spans, ids = gold(prepared)
        results.append(([(s.start_char, s.end_char, s.label_) for s in spans], ids))
    assert results[0] == results[1]
    assert results[0][1] == [eg.reference.ents[0].kb_id_ for eg in aligned]


def test_only_the_kb_mentions_images_are_jittered(build_nlp):
    from spacy_m3el.pipeline.training import component_training_batch, training_examples

    nlp = build_nlp(component_overrides={"n_kb_mentions": 3, "n_mined_negatives": 0})
    linker = nlp.get_pipe("m3el_linker")
    examples = training_examples(linker, make_examples(nlp)[:4])
    batches = {}
    for name, jitter in (("plain", None), ("jittered", linker.kb_mention_jitter)):
        linker.kb_mention_jitter = jitter
        numpy.random.seed(5)  # the same KB mentions both times
        batches[name] = component_training_batch(linker, examples)
    plain, jittered = (batches[k].mention_features["pixel_values"] for k in batches)
    assert plain.shape == jittered.shape == (4 + 3,) + plain.shape[1:]
    numpy.testing.assert_array_equal(jittered[:4], plain[:4])  # real mentions as they are
    assert all(not numpy.allclose(jittered[i], plain[i]) for i in range(4, 7))


def test_mention_jitter_jitters_the_training_mentions_images(build_nlp):
    from spacy_m3el.ml.augment import ImageJitter
    from spacy_m3el.pipeline.training import component_training_batch, training_examples

    nlp = build_nlp(
        component_overrides={
            "n_kb_mentions": 2,
            "n_mined_negatives": 0,
            "kb_mention_jitter": None,
            "mention_jitter": {"@misc": "spacy_m3el.ImageJitter.v1", "noise": 0.1},
        }
    )
    linker = nlp.get_pipe("m3el_linker")
    assert linker.mention_jitter == ImageJitter(noise=0.1)
    examples = training_examples(linker, make_examples(nlp)[:4])
    batches = []
    for jitter in (None, linker.mention_jitter):
        linker.mention_jitter = jitter
        numpy.random.seed(5)
        batches.append(component_training_batch(linker, examples))
    plain, jittered = (b.mention_features["pixel_values"] for b in batches)
    assert all(not numpy.allclose(jittered[i], plain[i]) for i in range(4))
    numpy.testing.assert_array_equal(jittered[4:], plain[4:])  # KB mentions' jitter is off


def test_kb_mention_jitter_can_be_switched_off_in_the_config(build_nlp):
    nlp = build_nlp(component_overrides={"n_kb_mentions": 2, "kb_mention_jitter": None})
    assert nlp.get_pipe("m3el_linker").kb_mention_jitter is None
    losses = {}
    nlp.update(make_examples(nlp)[:4], sgd=nlp.create_optimizer(), losses=losses)
    assert numpy.isfinite(losses["m3el_linker"])


def test_logit_adjustment_biases_each_entity_column_by_its_training_mentions(build_nlp):
    """initialize counts the gold entities' training mentions; each batch row's loss bias
    is weight * log(1 + count) (an image swap takes its text's entity's)."""
    import math

    from spacy_m3el.pipeline.training import component_training_batch, training_examples

    overrides = {"logit_adjustment": 0.5, "n_mined_negatives": 0, "image_swap_negatives": True}
    nlp = build_nlp(component_overrides=overrides)
    linker = nlp.get_pipe("m3el_linker")
    counts = linker.training_counts
    assert sum(counts.values()) == len(make_examples(nlp)) and counts["Q1"] == 2
    linker.training_counts = counts = counts.copy()
    counts["Q1"], counts["Q2"] = 5, 0
    examples = training_examples(linker, make_examples(nlp)[:4])  # golds Q1, Q1, Q2, Q2
    batch = component_training_batch(linker, examples)
    rows = len(batch.entity_features["has_image"])
    assert batch.column_bias.shape == (rows,) and batch.column_bias.dtype == numpy.float32
    assert batch.column_bias[batch.labels[0]] == numpy.float32(0.5 * math.log(6))
    assert batch.column_bias[batch.labels[2]] == 0.0
    assert batch.column_bias[-2:].tolist() == batch.column_bias[batch.labels[[0, 2]]].tolist()
    linker.logit_adjustment = 0.0
    assert component_training_batch(linker, examples).column_bias is None
    losses = {}
    nlp.update(make_examples(nlp)[:4], sgd=nlp.create_optimizer(), losses=losses)
    assert numpy.isfinite(losses["m3el_linker"])


def test_negative_logit_adjustment_is_refused(build_nlp):
    import pytest

    with pytest.raises(ValueError, match="logit_adjustment must be at least 0"):
        build_nlp(component_overrides={"logit_adjustment": -1.0})
