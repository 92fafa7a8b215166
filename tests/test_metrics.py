"""Ranking metrics and the linker scorer against hand-computed values."""
import numpy
import pytest
import spacy
from spacy.training import Example

from spacy_m3el.pipeline.linker import install_span_extension
from spacy_m3el.scoring import candidate_ranks, rank_of_gold, ranking_metrics, score_linker


def test_rank_counts_ties_against_the_model():
    assert rank_of_gold(numpy.array([0.1, 0.9, 0.5]), 1) == 1
    assert rank_of_gold(numpy.array([0.5, 0.5, 0.5, 0.1]), 3) == 4
    assert rank_of_gold(numpy.full(10, 3.0), 0) == 10  # a constant scorer gets the worst rank


def test_ranking_metrics_by_hand():
    metrics = ranking_metrics([1, 2, 4, None], hits=(1, 3, 5))
    assert metrics["n_mentions"] == 4
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4 + 0) / 4)
    assert metrics["hits@1"] == pytest.approx(0.25)
    assert metrics["hits@3"] == pytest.approx(0.5)
    assert metrics["hits@5"] == pytest.approx(0.75)
    assert metrics["mean_rank"] == pytest.approx(7 / 3)
    assert ranking_metrics([], hits=(1,))["mrr"] == 0.0


def examples():
    install_span_extension()
    nlp = spacy.blank("en")
    cases = [("Q1", ["Q1", "Q2"]), ("Q2", ["Q3", "Q4", "Q2"]), ("Q5", ["Q6"]), ("NIL", ["Q7"])]
    result = []
    for gold, ranking in cases:
        reference = nlp.make_doc("Jordan won")
        reference.ents = [reference.char_span(0, 6, label="ENT", kb_id=gold)]
        predicted = nlp.make_doc("Jordan won")
        predicted.ents = [predicted.char_span(0, 6, label="ENT", kb_id=ranking[0])]
        predicted.ents[0]._.m3el_candidates = [(kb_id, 1.0 / (i + 1)) for i, kb_id in enumerate(ranking)]
        result.append(Example(predicted, reference))
    return result


def test_candidate_ranks_and_scorer():
    egs = examples()
    assert candidate_ranks(egs) == [1, 3, None]  # NIL gold is not ranked
    scores = score_linker(egs)
    assert scores["nel_mrr"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert scores["nel_hits@1"] == pytest.approx(1 / 3)
    assert scores["nel_hits@3"] == pytest.approx(2 / 3)
    # spaCy's NEL scores: 1 TP (Q1), wrong IDs count FP+FN (Q2, Q5), NIL gold predicted Q7 is an FP.
    assert scores["nel_micro_p"] == pytest.approx(1 / 4)
    assert scores["nel_micro_r"] == pytest.approx(1 / 3)
