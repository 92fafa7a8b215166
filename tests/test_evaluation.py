"""Full-KB evaluation: ranks, metrics, chunking, output."""

import numpy
import pytest
import srsly

from spacy_m3el.evaluation import (
    evaluate_pipeline,
    exhaustive_ranks,
    format_comparison,
    format_metrics,
    gold_mentions,
)

from .util import ENTITIES, make_examples


def test_ranks_match_hand_computed_scores(build_nlp, monkeypatch):
    nlp = build_nlp()
    linker = nlp.get_pipe("m3el_linker")
    examples = make_examples(nlp, per_entity=1)[:3]  # golds Q1, Q2, Q3
    spans, gold_ids, _ = gold_mentions(examples, linker)
    kb_ids = linker.entity_cache.kb_ids
    assert kb_ids == [e[0] for e in ENTITIES]
    # Gold Q1 best (rank 1); gold Q2 tied with two others (rank 3, ties count against
    # the model); gold Q3 below four entities (rank 5).
    fixed = numpy.array(
        [
            [9.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            [1.0, 5.0, 5.0, 5.0, 0.0, 0.0],
            [6.0, 6.0, 1.0, 7.0, 8.0, 0.0],
        ],
        dtype="float32",
    )
    monkeypatch.setattr(
        linker, "score_all_entities", lambda batch, images, entity_chunk_size: fixed[: len(batch)]
    )
    ranks, _ = exhaustive_ranks(linker, spans, gold_ids, batch_size=3)
    assert ranks == [1, 3, 5]


def test_chunking_does_not_change_ranks(build_nlp):
    nlp = build_nlp()
    linker = nlp.get_pipe("m3el_linker")
    spans, gold_ids, _ = gold_mentions(make_examples(nlp), linker)
    images = linker.load_images([s.doc for s in spans])[0]
    whole = linker.score_all_entities(spans, images, entity_chunk_size=1000)
    chunked = linker.score_all_entities(spans, images, entity_chunk_size=4)
    numpy.testing.assert_allclose(whole, chunked, rtol=1e-5, atol=1e-5)
    ranks_a, _ = exhaustive_ranks(linker, spans, gold_ids, batch_size=5, entity_chunk_size=2)
    ranks_b, _ = exhaustive_ranks(linker, spans, gold_ids, batch_size=64, entity_chunk_size=64)
    assert ranks_a == ranks_b


def test_evaluate_pipeline_keys_and_skips(build_nlp):
    nlp = build_nlp()
    examples = make_examples(nlp)
    nil = examples[0].reference
    nil.ents = [nil.char_span(0, 6, label="ENT", kb_id="NIL")]
    unknown = examples[1].reference
    unknown.ents = [unknown.char_span(0, 6, label="ENT", kb_id="Q404")]
    metrics = evaluate_pipeline(nlp, examples, batch_size=4, entity_chunk_size=3)
    for key in (
        "mrr",
        "hits@1",
        "hits@3",
        "hits@5",
        "hits@10",
        "hits@20",
        "mean_rank",
        "n_mentions",
    ):
        assert key in metrics
    assert metrics["n_mentions"] == len(examples) - 2
    assert metrics["skipped"] == {"nil": 1, "gold_not_in_kb": 1}
    assert metrics["n_entities"] == len(ENTITIES)
    assert metrics["images"] == {"ok": len(examples) - 2}
    assert 1.0 <= metrics["mean_rank"] <= len(ENTITIES)
    assert "nel_micro_f" in metrics["candidates"]
    srsly.json_dumps(metrics)  # serializable as written to metrics/<dataset>.json
    assert "hits@1" in format_metrics(metrics)
    assert "n_mentions" in format_comparison({"a": metrics, "b": metrics})


def test_trained_linker_ranks_gold_first(build_nlp):
    from .util import train

    nlp = build_nlp()
    train(nlp, make_examples(nlp), steps=60)
    metrics = evaluate_pipeline(nlp, make_examples(nlp, seed=500))
    assert metrics["hits@1"] == pytest.approx(1.0)
    assert metrics["mrr"] == pytest.approx(1.0)
