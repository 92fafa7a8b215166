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
    seen_breakdown,
    training_entities,
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
        linker,
        "score_all_entities",
        lambda batch, images, entity_chunk_size, cache=None: fixed[: len(batch)],
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


def test_seen_breakdown_splits_hits_and_mrr_by_training_mentions():
    split = seen_breakdown(["Q1", "Q2", "Q1", "Q3"], [1, 2, 4, 1], seen={"Q1"})
    assert (split["n_seen"], split["n_unseen"]) == (2, 2)
    assert split["hits@1_seen"] == pytest.approx(0.5)
    assert split["mrr_seen"] == pytest.approx(0.625)
    assert split["hits@1_unseen"] == pytest.approx(0.5)
    assert split["mrr_unseen"] == pytest.approx(0.75)
    nothing_seen = seen_breakdown(["Q1"], [1], seen=set())
    assert nothing_seen["hits@1_seen"] is None and nothing_seen["n_seen"] == 0


def test_evaluation_reports_seen_and_zero_shot_golds(build_nlp, tmp_path):
    from spacy.tokens import DocBin

    nlp = build_nlp()
    examples = make_examples(nlp)
    train = [eg.reference for eg in examples if eg.reference.ents[0].kb_id_ != "Q2"]
    DocBin(docs=train, store_user_data=True).to_disk(tmp_path / "train.spacy")
    seen = training_entities(nlp, tmp_path / "train.spacy")
    assert seen == {e[0] for e in ENTITIES} - {"Q2"}
    metrics = evaluate_pipeline(nlp, examples, seen=seen, candidates=False)
    split = metrics["by_training"]
    assert split["n_unseen"] == sum(eg.reference.ents[0].kb_id_ == "Q2" for eg in examples) > 0
    assert split["n_seen"] + split["n_unseen"] == metrics["n_mentions"]
    assert "zero-shot" in format_metrics(metrics)
    assert "by_training" not in evaluate_pipeline(nlp, examples, candidates=False)


def test_trained_linker_ranks_gold_first(build_nlp):
    from .util import train

    nlp = build_nlp()
    train(nlp, make_examples(nlp), steps=60)
    metrics = evaluate_pipeline(nlp, make_examples(nlp, seed=500))
    assert metrics["hits@1"] == pytest.approx(1.0)
    assert metrics["mrr"] == pytest.approx(1.0)


def test_evaluation_scores_equal_the_float_network_on_every_pair(build_nlp):
    """The papers' protocol scores float32 entity features, not the int8 linking cache."""
    from spacy_m3el.pipeline.inputs import entity_text

    from .util import train

    nlp = build_nlp()
    train(nlp, make_examples(nlp), steps=5)
    linker = nlp.get_pipe("m3el_linker")
    assert linker.entity_cache_precision == "int8"
    spans, _, _ = gold_mentions(make_examples(nlp, seed=300), linker)
    images = linker.load_images([s.doc for s in spans])[0]
    cache = linker.exact_entity_cache()
    assert cache.precision == "float32"
    evaluated = linker.score_all_entities(spans, images, entity_chunk_size=4, cache=cache)
    records = list(linker.kb.records())
    entities = linker.model.encode(
        "entity",
        [entity_text(r) for r in records],
        [linker.images.entity_image(linker.kb, r) for r in records],
    )
    mentions = linker.encode_mentions(spans, images)
    every = numpy.broadcast_to(numpy.arange(len(records)), (len(spans), len(records)))
    direct = linker.model.score(mentions, entities, every)
    numpy.testing.assert_allclose(evaluated, direct, rtol=0, atol=1e-5)
    quantized = linker.score_all_entities(spans, images, entity_chunk_size=4)
    assert numpy.abs(quantized - direct).max() > 1e-5  # the int8 cache is not what is reported
    metrics = evaluate_pipeline(nlp, make_examples(nlp, seed=300))
    assert metrics["entity_precision"] == "float32"
    assert metrics["candidates"]["entity_precision"] == "int8"


def test_image_breakdown_splits_hits_by_the_gold_image():
    from types import SimpleNamespace

    from spacy_m3el.evaluation import image_breakdown

    records = [
        SimpleNamespace(kb_id="A", images=["a.png"]),
        SimpleNamespace(kb_id="B", images=[]),
        SimpleNamespace(kb_id="C", images=[]),
        SimpleNamespace(kb_id="D", images=["d.png"]),
    ]
    kb = SimpleNamespace(records=lambda: iter(records))
    split = image_breakdown(kb, ["A", "A", "B", "B", "D"], ["A", "C", "B", "D", "B"])
    assert split["hits@1_gold_with_image"] == pytest.approx(1 / 3)
    assert split["hits@1_gold_without_image"] == pytest.approx(1 / 2)
    assert (split["n_gold_with_image"], split["n_gold_without_image"]) == (3, 2)
    assert split["kb_share_without_image"] == pytest.approx(0.5)
    assert split["wrong_top1_share_without_image"] == pytest.approx(2 / 3)  # C, D, B wrong


def test_full_kb_scorer_ranks_dev_mentions_against_a_hand_made_score_matrix(build_nlp, monkeypatch):
    """The papers' model selection: ranks among all entities (ties against the model),
    reached through the component's score(), next to the cheap candidate-mode keys."""
    from spacy.util import registry

    nlp = build_nlp(
        component_overrides={
            "scorer": {"@scorers": "spacy_m3el.full_kb_scorer.v1", "batch_size": 2}
        }
    )
    linker = nlp.get_pipe("m3el_linker")
    examples = make_examples(nlp, per_entity=1)[:3]  # golds Q1, Q2, Q3
    fixed = numpy.array(
        [
            [9.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # Q1 first: rank 1
            [1.0, 5.0, 5.0, 5.0, 0.0, 0.0],  # Q2 tied with two: rank 3
            [6.0, 6.0, 1.0, 7.0, 8.0, 0.0],  # Q3 below four: rank 5
        ],
        dtype="float32",
    )
    calls = []

    def hand_made(batch, images, entity_chunk_size, cache=None):
        start = sum(calls)
        calls.append(len(batch))
        assert cache is not None and cache.precision == "float32"
        return fixed[start : start + len(batch)]

    monkeypatch.setattr(linker, "score_all_entities", hand_made)
    scores = nlp.evaluate(examples)
    assert calls == [2, 1]
    assert scores["nel_kb_mrr"] == pytest.approx((1 + 1 / 3 + 1 / 5) / 3)
    assert scores["nel_kb_hits@1"] == pytest.approx(1 / 3)
    assert scores["nel_kb_hits@3"] == pytest.approx(2 / 3)
    assert scores["nel_kb_hits@5"] == pytest.approx(1.0)
    assert "nel_mrr" in scores and "nel_micro_f" in scores  # candidate mode, still there
    only = registry.scorers.get("spacy_m3el.full_kb_scorer.v1")(candidates=False)
    calls.clear()
    result = only(examples, component=linker)
    assert "nel_mrr" not in result and result["nel_kb_hits@1"] == pytest.approx(1 / 3)


def test_image_breakdown_counts_ties_against_the_model_like_hits_at_1():
    from types import SimpleNamespace

    from spacy_m3el.evaluation import image_breakdown

    records = [SimpleNamespace(kb_id="A", images=[]), SimpleNamespace(kb_id="B", images=[])]
    kb = SimpleNamespace(records=lambda: iter(records))
    # argmax picked the gold A, but B tied with it: rank 2, no hit, as in the overall Hits@1.
    split = image_breakdown(kb, ["A", "B"], ["A", "B"], ranks=[2, 1])
    assert split["hits@1_gold_without_image"] == pytest.approx(0.5)
