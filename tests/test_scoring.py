"""Ranking metrics and the linker's scorer, against hand-computed values."""

from fractions import Fraction

import numpy
import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Example

from spacy_m3el.pipeline.linker import install_span_extension
from spacy_m3el.scoring import (
    CANDIDATES_ATTR,
    DEFAULT_HITS,
    PAPER_HITS,
    candidate_ranks,
    rank_of_gold,
    ranking_metrics,
    score_linker,
)

# rank_of_gold ------------------------------------------------------------------


@pytest.mark.parametrize(
    "scores,gold,rank",
    [
        ([0.1, 0.9, 0.5], 1, 1),  # the best score
        ([0.1, 0.9, 0.5], 2, 2),
        ([0.1, 0.9, 0.5], 0, 3),  # the worst score
        ([0.9, 0.5, 0.5, 0.1], 1, 3),  # a tie counts against the model
        ([0.9, 0.5, 0.5, 0.1], 2, 3),
        ([0.5, 0.5, 0.5, 0.1], 0, 3),
        ([-3.0, -1.0, -2.0], 1, 1),  # negative scores
        ([2.0], 0, 1),  # a single entity
    ],
)
def test_rank_of_gold(scores, gold, rank):
    assert rank_of_gold(numpy.array(scores), gold) == rank
    assert rank_of_gold(numpy.array(scores, dtype="float32"), gold) == rank


@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_constant_scores_give_the_worst_rank(n):
    for gold in {0, n // 2, n - 1}:
        assert rank_of_gold(numpy.full(n, 3.0), gold) == n
        assert rank_of_gold(numpy.zeros(n, dtype="float32"), gold) == n


def test_nan_scores_count_against_the_model():
    assert rank_of_gold(numpy.array([0.1, numpy.nan, 0.5]), 1) == 3  # NaN gold: worst rank
    assert rank_of_gold(numpy.full(4, numpy.nan), 0) == 4
    assert rank_of_gold(numpy.array([numpy.nan, 0.9, 0.5]), 1) == 2  # a NaN elsewhere ranks above


def test_rank_of_gold_returns_a_python_int():
    rank = rank_of_gold(numpy.array([0.2, 0.1], dtype="float32"), 0)
    assert type(rank) is int and rank == 1


# ranking_metrics ---------------------------------------------------------------


def test_ranking_metrics_by_hand():
    ranks = [1, 2, 4, None, 7, 1]
    metrics = ranking_metrics(ranks, hits=(1, 3, 5, 10))
    # Reciprocal ranks 1 + 1/2 + 1/4 + 0 + 1/7 + 1 over 6 mentions.
    assert metrics["mrr"] == pytest.approx(
        float((1 + Fraction(1, 2) + Fraction(1, 4) + 0 + Fraction(1, 7) + 1) / 6)
    )
    assert metrics["hits@1"] == pytest.approx(2 / 6)
    assert metrics["hits@3"] == pytest.approx(3 / 6)
    assert metrics["hits@5"] == pytest.approx(4 / 6)
    assert metrics["hits@10"] == pytest.approx(5 / 6)  # the unranked mention is never a hit
    assert metrics["mean_rank"] == pytest.approx(
        (1 + 2 + 4 + 7 + 1) / 5
    )  # unranked mention left out
    assert metrics["n_mentions"] == 6
    assert set(metrics) == {
        "mrr",
        "hits@1",
        "hits@3",
        "hits@5",
        "hits@10",
        "mean_rank",
        "n_mentions",
    }
    assert all(type(value) in (int, float) for value in metrics.values())


def test_ranking_metrics_defaults_and_prefix():
    metrics = ranking_metrics([1, 3, 6], prefix="nel_")
    assert set(metrics) == {"nel_mrr", "nel_mean_rank", "nel_n_mentions"} | {
        f"nel_hits@{k}" for k in DEFAULT_HITS
    }
    assert DEFAULT_HITS == (1, 3, 5)
    assert metrics["nel_mrr"] == pytest.approx((1 + 1 / 3 + 1 / 6) / 3)
    assert metrics["nel_hits@1"] == pytest.approx(1 / 3)
    assert metrics["nel_hits@3"] == pytest.approx(2 / 3)
    assert metrics["nel_hits@5"] == pytest.approx(2 / 3)
    assert metrics["nel_mean_rank"] == pytest.approx(10 / 3)


def test_ranking_metrics_paper_hits():
    metrics = ranking_metrics([1, 10, 20, 21], hits=PAPER_HITS)
    assert [metrics[f"hits@{k}"] for k in PAPER_HITS] == pytest.approx(
        [0.25, 0.25, 0.25, 0.5, 0.75]
    )


def test_ranking_metrics_empty_input():
    metrics = ranking_metrics([], prefix="x_")
    expected = {
        "x_n_mentions": 0,
        "x_mrr": 0.0,
        "x_mean_rank": 0.0,
        "x_hits@1": 0.0,
        "x_hits@3": 0.0,
        "x_hits@5": 0.0,
    }
    assert metrics == expected


def test_ranking_metrics_when_nothing_is_ranked():
    metrics = ranking_metrics([None, None], hits=(1,))
    assert metrics == {"n_mentions": 2, "mrr": 0.0, "hits@1": 0.0, "mean_rank": 0.0}


def test_ranking_metrics_perfect():
    metrics = ranking_metrics([1] * 5)
    assert metrics["mrr"] == 1.0 and metrics["hits@1"] == 1.0 and metrics["mean_rank"] == 1.0


# candidate_ranks and score_linker -------------------------------------------------

TEXT_A = "Jordan met Kastrel near Velmora ."
TEXT_B = "Tessa saw Orlin and Brask with Mira ."


def span_at(doc, word, label, kb_id=""):
    start = doc.text.index(word)
    return doc.char_span(start, start + len(word), label=label, kb_id=kb_id)


def make_example(nlp, text, gold, predicted):
    """gold: (word, label, kb_id); predicted: (word, label, kb_id, ranking or None)."""
    reference = nlp.make_doc(text)
    reference.ents = [span_at(reference, word, label, kb_id) for word, label, kb_id in gold]
    doc = nlp.make_doc(text)
    doc.ents = [span_at(doc, word, label, kb_id) for word, label, kb_id, _ in predicted]
    for ent, (_, _, _, ranking) in zip(doc.ents, predicted):
        if ranking is not None:
            ent._.set(CANDIDATES_ATTR, [(kb_id, 1.0 / (i + 1)) for i, kb_id in enumerate(ranking)])
    return Example(doc, reference)


@pytest.fixture
def examples():
    install_span_extension()
    nlp = spacy.blank("en")
    first = make_example(
        nlp,
        TEXT_A,
        gold=[("Jordan", "PER", "Q1"), ("Kastrel", "ORG", "Q3"), ("Velmora", "LOC", "Q5")],
        predicted=[
            ("Jordan", "PER", "Q1", ["Q1", "Q2"]),  # gold first: rank 1, TP
            ("Kastrel", "ORG", "Q4", ["Q4", "Q5", "Q3"]),  # gold third: rank 3, FP + FN
            ("Velmora", "LOC", "Q6", ["Q6", "Q7"]),  # gold absent: not ranked, FP + FN
        ],
    )
    second = make_example(
        nlp,
        TEXT_B,
        gold=[("Tessa", "PER", "NIL"), ("Orlin", "PER", "Q8"), ("Mira", "PER", "Q11")],
        predicted=[
            ("Tessa", "PER", "Q7", ["Q7"]),  # NIL gold: skipped by the ranking, FP for spaCy
            ("Orlin", "PER", "NIL", ["Q9", "Q8"]),  # linked to NIL (below threshold): rank 2, FN
            ("Brask", "PER", "Q10", ["Q10"]),  # no gold span here: skipped by both
            # "Mira" is a gold entity that was not predicted: skipped by both.
        ],
    )
    return [first, second]


def test_candidate_ranks(examples):
    assert candidate_ranks(examples) == [1, 3, None, 2]
    assert candidate_ranks(examples[:1]) == [1, 3, None]
    assert candidate_ranks([]) == []


def test_score_linker_by_hand(examples):
    scores = score_linker(examples)
    # Ranks 1, 3, not ranked, 2.
    assert scores["nel_n_mentions"] == 4
    assert scores["nel_mrr"] == pytest.approx((1 + 1 / 3 + 0 + 1 / 2) / 4)
    assert scores["nel_hits@1"] == pytest.approx(1 / 4)
    assert scores["nel_hits@3"] == pytest.approx(3 / 4)
    assert scores["nel_hits@5"] == pytest.approx(3 / 4)
    assert "nel_mean_rank" not in scores
    # spaCy's NEL counts: TP Jordan; FP Kastrel, Velmora (wrong IDs) and Tessa (NIL gold);
    # FN Kastrel, Velmora and Orlin (predicted NIL).
    assert scores["nel_micro_p"] == pytest.approx(1 / 4)
    assert scores["nel_micro_r"] == pytest.approx(1 / 4)
    assert scores["nel_micro_f"] == pytest.approx(1 / 4)
    per_type = scores["nel_f_per_type"]
    assert per_type["PER"]["p"] == pytest.approx(1 / 2) and per_type["PER"]["r"] == pytest.approx(
        1 / 2
    )
    assert per_type["ORG"]["f"] == 0.0 and per_type["LOC"]["f"] == 0.0


def test_score_linker_when_all_gold_first():
    install_span_extension()
    nlp = spacy.blank("en")
    eg = make_example(
        nlp,
        TEXT_A,
        gold=[("Jordan", "PER", "Q1"), ("Kastrel", "ORG", "Q3")],
        predicted=[("Jordan", "PER", "Q1", ["Q1", "Q2"]), ("Kastrel", "ORG", "Q3", ["Q3"])],
    )
    scores = score_linker([eg])
    assert (
        scores["nel_mrr"] == 1.0 and scores["nel_hits@1"] == 1.0 and scores["nel_n_mentions"] == 2
    )
    assert (
        scores["nel_micro_p"] == 1.0
        and scores["nel_micro_r"] == 1.0
        and scores["nel_micro_f"] == 1.0
    )


def test_unranked_and_unlabelled_mentions():
    install_span_extension()
    nlp = spacy.blank("en")
    eg = make_example(
        nlp,
        TEXT_A,
        gold=[("Jordan", "PER", "Q1"), ("Kastrel", "ORG", ""), ("Velmora", "LOC", "Q5")],
        predicted=[
            ("Jordan", "PER", "Q1", None),  # no candidates stored: counted, not ranked
            ("Kastrel", "ORG", "Q3", ["Q3"]),  # gold without a KB ID: skipped
            ("Velmora", "LOC", "Q5", []),  # an empty ranking: counted, not ranked
        ],
    )
    assert candidate_ranks([eg]) == [None, None]
    scores = score_linker([eg])
    assert (
        scores["nel_n_mentions"] == 2 and scores["nel_mrr"] == 0.0 and scores["nel_hits@5"] == 0.0
    )


def test_score_linker_with_no_examples():
    scores = score_linker([])
    assert scores["nel_n_mentions"] == 0 and scores["nel_mrr"] == 0.0
    assert scores["nel_micro_f"] == 0.0


def test_candidate_ranks_survive_docbin(examples):
    """Rankings stored on spans survive DocBin (tuples come back as lists)."""
    nlp = spacy.blank("en")
    docs = DocBin(docs=[eg.predicted for eg in examples], store_user_data=True).to_bytes()
    restored = list(DocBin().from_bytes(docs).get_docs(nlp.vocab))
    restored_examples = [Example(doc, eg.reference) for doc, eg in zip(restored, examples)]
    assert candidate_ranks(restored_examples) == [1, 3, None, 2]
    assert score_linker(restored_examples)["nel_mrr"] == pytest.approx(
        score_linker(examples)["nel_mrr"]
    )


def test_score_linker_accepts_a_generator(examples):
    assert score_linker(eg for eg in examples)["nel_n_mentions"] == 4


def test_end_to_end_linking_counts_a_link_only_on_the_gold_span():
    import spacy
    from spacy.training import Example

    from spacy_m3el.scoring import score_end_to_end

    nlp = spacy.blank("en")
    reference = nlp("Jordan met Kastrel in Velmora")
    reference.ents = [
        reference.char_span(0, 6, "ENT", kb_id="Q1"),
        reference.char_span(11, 18, "ENT", kb_id="Q3"),
        reference.char_span(22, 29, "ENT", kb_id="Q5"),
    ]
    predicted = nlp("Jordan met Kastrel in Velmora")
    predicted.ents = [
        predicted.char_span(0, 6, "ENT", kb_id="Q1"),  # right
        predicted.char_span(11, 18, "ENT", kb_id="Q4"),  # wrong entity
        predicted.char_span(7, 10, "ENT", kb_id="Q9"),  # not a gold span
    ]
    scores = score_end_to_end([Example(predicted, reference)])
    assert (scores["link_correct"], scores["link_predicted"], scores["link_gold"]) == (1, 3, 3)
    assert scores["link_p"] == pytest.approx(1 / 3) and scores["link_r"] == pytest.approx(1 / 3)
    assert scores["link_f"] == pytest.approx(1 / 3)
