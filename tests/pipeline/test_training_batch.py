"""Training batches: image-swap negatives (the gold's text with a sibling's image)."""

from types import SimpleNamespace

import numpy

from spacy_m3el.pipeline.training import swap_images


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
    from spacy_m3el.pipeline.training import component_training_batch

    from ..util import make_examples

    nlp = build_nlp(component_overrides={"image_swap_negatives": True})
    linker = nlp.get_pipe("m3el_linker")
    examples = linker._prepare(make_examples(nlp)[:4])
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
