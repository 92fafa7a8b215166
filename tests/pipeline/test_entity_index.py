"""The entity index: stage 1 agrees with the model's score, the cache's life cycle."""

import logging
from types import SimpleNamespace

import numpy
import pytest

from spacy_m3el.pipeline.entity_index import EntityIndex, retrieve_candidates
from spacy_m3el.pipeline.inputs import ImageLoader

from ..util import ENTITIES, color_image, make_doc, make_examples, train


@pytest.fixture(scope="module")
def float_linker(tiny_clip):
    """A trained linker whose entity cache is stored in float32 (retrieval is then exact)."""
    import spacy
    from thinc.api import fix_random_seed

    from ..util import create_kb, linker_config

    fix_random_seed(0)
    nlp = spacy.blank("en")
    config = dict(linker_config(tiny_clip), entity_cache_precision="float32", top_k=6)
    nlp.add_pipe("m3el_linker", config=config).set_kb(create_kb)
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    train(nlp, examples, steps=10)
    return nlp


def mention_sides(nlp, kb_ids):
    linker = nlp.get_pipe("m3el_linker")
    colors = {kb_id: color for kb_id, _, _, color in ENTITIES}
    docs = [
        make_doc(nlp, kb_id, color_image(colors[kb_id], noise=30, seed=i))
        for i, kb_id in enumerate(kb_ids)
    ]
    docs[-1]._.image = None  # one mention without an image
    spans = [doc.ents[0] for doc in docs]
    images, _ = linker.load_images(docs)
    return linker, spans, linker.encode_mentions(spans, images)


def test_stage_1_scores_are_the_bi_encoder_part_of_the_model_score(float_linker):
    """Retrieval over the cache ranks by exactly the model's own dot-product terms."""
    linker, spans, mentions = mention_sides(float_linker, ["Q1", "Q3", "Q5", "Q2"])
    cache = linker.entity_cache
    every = numpy.broadcast_to(numpy.arange(len(cache)), (len(spans), len(cache)))
    expected = linker.model.bi_encoder_score(mentions, cache.side_rows(None), every)
    queries = linker.model.retrieval_vectors(mentions, query=True)
    got = queries @ cache.retrieval_vectors(slice(None)).T
    numpy.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # ... and nearest() returns the entities with the highest such score, in order.
    for row, nearest in zip(expected, cache.nearest(queries, 3)):
        assert nearest == numpy.argsort(-row, kind="stable")[:3].tolist()


def test_retrieve_puts_alias_candidates_first_and_caps_by_similarity(float_linker):
    linker, spans, mentions = mention_sides(float_linker, ["Q1", "Q3"])
    cache = linker.entity_cache
    queries = linker.model.retrieval_vectors(mentions, query=True)
    aliases = [[SimpleNamespace(entity_="Q6", prior_prob=0.25)], []]
    rows = retrieve_candidates(cache, queries, aliases, top_k=2, max_candidates=None)
    nearest = cache.nearest(queries, 2)
    assert rows[0].rows == list(dict.fromkeys([cache.rows["Q6"]] + nearest[0]))
    assert rows[0].alias_priors == {cache.rows["Q6"]: 0.25}
    assert rows[1].rows == nearest[1] and rows[1].alias_priors == {}
    capped = retrieve_candidates(cache, queries, aliases, top_k=2, max_candidates=1)
    assert [c.rows for c in capped] == [nearest[0][:1], nearest[1][:1]]
    assert linker.retrieve(spans, mentions) == retrieve_candidates(
        cache, queries, linker.get_candidates_batch(linker.kb, spans), top_k=6, max_candidates=16
    )


def test_cache_is_reused_until_the_weights_or_kb_change(build_nlp):
    nlp = build_nlp()
    linker = nlp.get_pipe("m3el_linker")
    first = linker.entity_cache
    assert linker.entity_cache is first and linker.index.is_current(linker.kb)
    train(nlp, make_examples(nlp), steps=1)
    assert not linker.index.is_current(linker.kb)
    retrained = linker.entity_cache
    assert retrained is not first and retrained.model_fingerprint != first.model_fingerprint
    linker.kb.add_multimodal_entity("Q9", "Jordan", "one more")
    grown = linker.entity_cache
    assert grown is not retrained and len(grown) == len(retrained) + 1


def test_save_writes_only_a_current_cache_and_load_checks_it(build_nlp, tmp_path, caplog):
    nlp = build_nlp()
    linker = nlp.get_pipe("m3el_linker")
    index = linker.index
    index.save(tmp_path / "never_built", linker.kb)
    assert not (tmp_path / "never_built").exists()
    cache = linker.entity_cache
    index.save(tmp_path / "cache", linker.kb)
    other = EntityIndex(linker.model, ImageLoader(), precision="int8")
    other.load(tmp_path / "cache")
    assert other.cache(linker.kb).kb_ids == cache.kb_ids
    assert other.is_current(linker.kb)
    (tmp_path / "broken").write_bytes(b"not a cache")
    with caplog.at_level(logging.WARNING, logger="spacy_m3el"):
        other.load(tmp_path / "broken")
    assert any("ignoring the saved entity cache" in r.getMessage() for r in caplog.records)
    assert not other.is_current(linker.kb) and len(other.cache(linker.kb)) == len(cache)


def test_a_cache_saved_by_other_units_is_rebuilt(build_nlp, tmp_path, caplog):
    """A cache whose features lack the retrieval terms of this model is never used."""
    full = build_nlp().get_pipe("m3el_linker")
    assert len(full.entity_cache) == len(full.kb)
    full.index.save(tmp_path / "cache", full.kb)
    linker = build_nlp(use_text_unit=False).get_pipe("m3el_linker")
    with caplog.at_level(logging.WARNING, logger="spacy_m3el"):
        linker.index.load(tmp_path / "cache")
    assert any("ignoring the saved entity cache" in r.getMessage() for r in caplog.records)
    assert "retrieval.text" in linker.entity_cache.retrieval_spec.keys


def test_a_cache_saved_at_another_precision_is_refused(build_nlp, tmp_path, caplog):
    """entity_cache_precision is part of the cache's validity, not only weights and KB."""
    linker = build_nlp().get_pipe("m3el_linker")
    int8 = linker.entity_cache
    linker.index.save(tmp_path / "cache", linker.kb)
    exact = EntityIndex(linker.model, ImageLoader(), precision="float32")
    exact.load(tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="spacy_m3el"):
        cache = exact.cache(linker.kb)
    assert cache.precision == "float32" and int8.precision == "int8"
    assert any("precision (int8" in r.getMessage() for r in caplog.records)
    same = EntityIndex(linker.model, ImageLoader(), precision="int8")
    same.load(tmp_path / "cache")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spacy_m3el"):
        assert same.cache(linker.kb).precision == "int8"
    assert not caplog.records


@pytest.mark.parametrize("precision", ["int8", "float16"])
def test_a_cache_converted_from_float32_equals_encoding_at_that_precision(build_nlp, precision):
    linker = build_nlp().get_pipe("m3el_linker")
    linker.index.batch_size = 3  # several batches, each padded to its own longest text
    direct = linker.index.build(linker.kb, precision=precision)
    converted = linker.index.build(linker.kb, precision="float32").converted(precision, 3)
    assert converted.precision == precision and converted.kb_ids == direct.kb_ids
    from spacy_m3el.pipeline.entity_cache import decode_rows

    # Stored alike except the int8 scale of padding positions, which decode to zeros in both.
    assert set(converted.stored) == set(direct.stored)
    decoded = decode_rows(converted.stored)
    for key, value in decode_rows(direct.stored).items():
        numpy.testing.assert_array_equal(decoded[key], value, err_msg=key)
    queries = numpy.random.default_rng(0).normal(size=(4, direct.retrieval.values.shape[1]))
    assert converted.nearest(queries.astype("float32"), 3) == direct.nearest(
        queries.astype("float32"), 3
    )


def test_an_evaluation_encodes_the_kb_once(build_nlp, monkeypatch):
    """The full-KB scorer's float32 features also give linking's int8 cache (converted),
    and they are dropped after the evaluation."""
    nlp = build_nlp(component_overrides={"scorer": {"@scorers": "spacy_m3el.full_kb_scorer.v1"}})
    linker = nlp.get_pipe("m3el_linker")
    examples = make_examples(nlp, per_entity=1)
    train(nlp, examples, steps=1)  # the weights changed: every cache is stale
    builds = []
    build = linker.index.build
    monkeypatch.setattr(
        linker.index,
        "build",
        lambda kb, *a, **k: builds.append(k.get("precision")) or build(kb, *a, **k),
    )
    scores = nlp.evaluate(examples)
    assert builds == ["float32"] and scores["nel_kb_mrr"] > 0 and "nel_micro_f" in scores
    assert linker.index.is_current(linker.kb) and linker.entity_cache.precision == "int8"
    assert linker.index._exact is None
