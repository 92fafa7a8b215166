"""The text tower's token selection: windows, focus, and the gradient's way back."""

import numpy
import pytest
import spacy

from spacy_m3el.ml.text_tower import MentionWindow, _gather, _window_rows


def test_a_mention_row_is_its_own_tokens_then_its_context():
    doc = spacy.blank("en")("Yesterday Jordan scored 32 points in the game .")
    window = MentionWindow(doc[1:2], 0, len(doc))
    rows, n_focus = _window_rows(window, max_tokens=96)
    assert rows == [1] + list(range(len(doc)))
    assert n_focus == 1


def test_rows_respect_max_tokens():
    doc = spacy.blank("en")(" ".join(["word"] * 50))
    rows, n_focus = _window_rows(MentionWindow(doc[10:40], 0, 50), max_tokens=16)
    assert len(rows) == 16 and n_focus == 8


def test_gather_pads_masks_and_scatters_the_adjoint():
    rng = numpy.random.default_rng(0)
    vectors = [rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=(2, 3)).astype("f4")]
    rows = [([4, 0, 1, 4], 1), ([1], 1)]
    arrays, scatter = _gather(vectors, rows)
    assert arrays.tokens.shape == (2, 4, 3)
    assert arrays.mask.tolist() == [[True] * 4, [True, False, False, False]]
    assert arrays.focus.tolist() == [[True, False, False, False], [True, False, False, False]]
    numpy.testing.assert_array_equal(arrays.tokens[0, 3], vectors[0][4])
    # <gather(v), d> == <v, scatter(d)> for any d: the backprop is the exact adjoint.
    d = rng.normal(size=arrays.tokens.shape).astype("float32")
    left = float((arrays.tokens * d).sum())
    right = sum(float((v * dv).sum()) for v, dv in zip(vectors, scatter(d)))
    assert left == pytest.approx(right, rel=1e-5)
    assert scatter(d)[0][4].tolist() == pytest.approx((d[0, 0] + d[0, 3]).tolist())
