"""Stage 2 and exhaustive ranking: rankings, probabilities, NIL, agreement of the two paths."""

import numpy
import pytest

from spacy_m3el.kb import NIL
from spacy_m3el.pipeline.ranking import choose, rerank, score_all, to_ranking

from ..util import ENTITIES, color_image, make_doc, trained_pipeline


@pytest.fixture(scope="module")
def trained_nlp(tiny_clip):
    return trained_pipeline(tiny_clip, steps=10)


def test_to_ranking_sorts_by_score_with_softmax_probabilities():
    ranking = to_ranking(["a", "b", "c"], numpy.array([0.5, 2.0, 0.5], dtype="float32"))
    assert [kb_id for kb_id, _ in ranking] == ["b", "a", "c"]  # ties keep candidate order
    probabilities = numpy.array([p for _, p in ranking])
    assert probabilities.sum() == pytest.approx(1.0)
    expected = numpy.exp([2.0, 0.5, 0.5]) / numpy.exp([2.0, 0.5, 0.5]).sum()
    numpy.testing.assert_allclose(probabilities, expected)
    assert to_ranking([], numpy.zeros(0)) == []


def test_choose_applies_the_threshold():
    assert choose([], None) == NIL
    assert choose([("Q1", 0.6), ("Q2", 0.4)], None) == "Q1"
    assert choose([("Q1", 0.6), ("Q2", 0.4)], 0.7) == NIL
    assert choose([("Q1", 0.6), ("Q2", 0.4)], 0.6) == "Q1"


def test_rerank_scores_equal_the_exhaustive_scores_of_the_same_rows(trained_nlp):
    linker = trained_nlp.get_pipe("m3el_linker")
    docs = [make_doc(trained_nlp, kb_id, color_image(color)) for kb_id, _, _, color in ENTITIES[:3]]
    spans = [doc.ents[0] for doc in docs]
    images, _ = linker.load_images(docs)
    mentions = linker.encode_mentions(spans, images)
    cache = linker.entity_cache
    rows = [[4, 0, 2], [1], []]
    rankings = rerank(linker.model, mentions, cache, rows)
    everything = score_all(linker.model, mentions, cache, entity_chunk_size=2)
    assert rankings[2] == []
    for ranking, candidate_rows, row_scores in zip(rankings, rows, everything):
        if not candidate_rows:
            continue
        expected = to_ranking([cache.kb_ids[r] for r in candidate_rows], row_scores[candidate_rows])
        assert [kb_id for kb_id, _ in ranking] == [kb_id for kb_id, _ in expected]
        numpy.testing.assert_allclose([p for _, p in ranking], [p for _, p in expected], atol=1e-5)
    assert rerank(linker.model, mentions, cache, [[], [], []]) == [[], [], []]
