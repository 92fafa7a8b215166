"""The entity feature cache: compact storage, fingerprints, persistence, retrieval."""

import logging

import numpy
import pytest
import spacy

from spacy_m3el.ml.bi_encoder import RetrievalPart, RetrievalSpec
from spacy_m3el.pipeline.entity_cache import (
    EntityCache,
    concat_sides,
    concat_stored,
    decode_rows,
    encode_side,
)

from ..util import ENTITIES, color_image, make_doc, make_examples, train, unlabeled

# What the full M3EL model declares for the keys of random_side.
SPEC = RetrievalSpec(
    (
        RetrievalPart("text.g", 0.5),
        RetrievalPart("image.g", 0.5, needs_image=True),
        RetrievalPart("cross.t2v", 1.0, needs_image=True),
    )
)
retrieval_vectors = SPEC.vectors


def random_side(n=7, length=5, width=4, seed=0):
    rng = numpy.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, n)
    return {
        "has_image": rng.random(n) > 0.3,
        "text.g": rng.normal(size=(n, width)).astype("float32"),
        "text.q": rng.normal(size=(n, length, width)).astype("float32"),
        "text.mask": numpy.arange(length)[None, :] < lengths[:, None],
        "image.g": rng.normal(size=(n, width)).astype("float32"),
        "cross.t2v": rng.normal(size=(n, width)).astype("float32"),
    }


@pytest.mark.parametrize(
    "precision,tolerance", [("float32", 0.0), ("float16", 1e-2), ("int8", 2e-2)]
)
def test_encode_decode(precision, tolerance):
    side = random_side()
    decoded = decode_rows(encode_side(side, precision))
    assert set(decoded) == set(side)
    numpy.testing.assert_array_equal(decoded["text.mask"], side["text.mask"])
    numpy.testing.assert_array_equal(decoded["has_image"], side["has_image"])
    for key in ("text.g", "text.q", "image.g", "cross.t2v"):
        scale = numpy.abs(side[key]).max()
        numpy.testing.assert_allclose(decoded[key], side[key], atol=tolerance * scale)
    rows = decode_rows(encode_side(side, precision), [4, 1])
    numpy.testing.assert_array_equal(rows["text.mask"], side["text.mask"][[4, 1]])


def test_compact_sizes():
    side = random_side(n=10, length=40, width=96)
    sizes = {
        p: EntityCache.from_side(
            [str(i) for i in range(10)], side, p, "m", "k", SPEC
        ).bytes_per_entity
        for p in ("int8", "float16", "float32")
    }
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    # 40x96 int8 token queries + scales, three int8 vectors + scales, a length and a flag.
    assert sizes["int8"] == pytest.approx(40 * 96 + 40 * 2 + 3 * (96 + 2) + 4 + 4 / 10 + 1)


def test_non_prefix_mask_is_refused():
    side = random_side()
    side["text.mask"][0] = [False, True, True, False, False]
    with pytest.raises(ValueError, match="right-padding"):
        encode_side(side, "int8")


def test_unknown_precision():
    with pytest.raises(ValueError, match="precision"):
        encode_side(random_side(), "int4")


def test_disk_round_trip_and_corrupt_file(tmp_path):
    ids = [f"Q{i}" for i in range(7)]
    cache = EntityCache.from_side(ids, random_side(), "int8", "model-fp", "kb-fp", SPEC)
    cache.to_disk(tmp_path / "cache.safetensors")
    loaded = EntityCache.from_disk(tmp_path / "cache.safetensors", SPEC)
    assert loaded.kb_ids == ids and loaded.precision == "int8"
    assert loaded.matches("model-fp", "kb-fp") and not loaded.matches("other", "kb-fp")
    for key, value in cache.stored.items():
        numpy.testing.assert_array_equal(loaded.stored[key], value)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="cannot be read"):
        EntityCache.from_disk(tmp_path / "bad.safetensors", SPEC)


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_nearest_matches_brute_force_over_the_stored_vectors(precision):
    side = random_side(n=3000, width=16, seed=3)
    cache = EntityCache.from_side([str(i) for i in range(3000)], side, precision, "m", "k", SPEC)
    stored = retrieval_vectors(decode_rows(cache.stored))  # float32 ones are the encoder's own
    queries = retrieval_vectors(random_side(n=6, width=16, seed=4), query=True)
    expected = numpy.argsort(-(queries @ stored.T), axis=1)[:, :5]
    assert cache.nearest(queries, 5) == expected.tolist()
    assert cache.nearest(queries, 0) == [[]] * 6


def test_most_similar_ranks_the_given_rows_only():
    side = random_side(n=50, seed=5)
    cache = EntityCache.from_side([str(i) for i in range(50)], side, "float32", "m", "k", SPEC)
    query = retrieval_vectors(random_side(n=1, seed=6), query=True)[0]
    rows = [40, 3, 17, 8, 29, 11]
    scores = retrieval_vectors(decode_rows(cache.stored, rows)) @ query
    expected = [rows[i] for i in numpy.argsort(-scores)[:4]]
    assert cache.most_similar(query, rows, 4) == expected
    assert sorted(cache.most_similar(query, rows, 10)) == sorted(rows)


def test_retrieval_ignores_image_parts_without_image():
    side = random_side()
    side["has_image"][:] = False
    vectors = retrieval_vectors(side)
    width = side["text.g"].shape[1]
    assert not vectors[:, width:].any()


@pytest.mark.parametrize("precision", ["int8", "float16"])
def test_stored_batches_concatenate_like_the_whole(precision):
    parts = [
        random_side(n=3, length=2, seed=11),
        random_side(n=4, length=6, seed=12),
        random_side(n=2, length=4, seed=13),
    ]
    whole = decode_rows(encode_side(concat_sides(parts), precision))
    batched = decode_rows(concat_stored([encode_side(part, precision) for part in parts]))
    assert set(batched) == set(whole)
    for key in whole:
        numpy.testing.assert_array_equal(batched[key], whole[key], err_msg=key)
    assert concat_stored([]) == {}


def test_cache_is_the_same_whatever_the_batch_size(build_nlp):
    nlp = build_nlp()
    linker = nlp.get_pipe("m3el_linker")
    whole = linker.build_entity_cache()
    linker.entity_batch_size = 1
    one_by_one = linker.build_entity_cache()
    assert one_by_one.kb_ids == whole.kb_ids
    expected, got = decode_rows(whole.stored), decode_rows(one_by_one.stored)
    for key, value in expected.items():
        if value.ndim == 3:  # token features: padding positions hold whatever the encoder gave them
            mask = expected[key.split(".")[0] + ".mask"]
            value, got[key] = value * mask[..., None], got[key] * mask[..., None]
        numpy.testing.assert_allclose(got[key], value, atol=1e-5, err_msg=key)
    numpy.testing.assert_allclose(
        one_by_one.retrieval.vectors(), whole.retrieval.vectors(), atol=1e-2
    )


def test_saved_pipeline_reuses_its_cache(build_nlp, tmp_path, monkeypatch):
    nlp = build_nlp()
    train(nlp, make_examples(nlp), steps=20)
    examples = make_examples(nlp, seed=40)
    before = [nlp(unlabeled(nlp, eg)).ents[0]._.m3el_candidates for eg in examples]
    nlp.to_disk(tmp_path / "p")
    assert (tmp_path / "p" / "m3el_linker" / "entity_cache.safetensors").exists()
    loaded = spacy.load(tmp_path / "p")
    linker = loaded.get_pipe("m3el_linker")

    def refuse(*args, **kwargs):
        raise AssertionError("the KB was re-encoded although the saved cache is current")

    monkeypatch.setattr(linker.index, "build", refuse)
    assert [loaded(unlabeled(loaded, eg)).ents[0]._.m3el_candidates for eg in examples] == before


def test_stale_cache_is_rebuilt_with_a_warning(build_nlp, tmp_path, caplog):
    nlp = build_nlp()
    nlp(make_doc(nlp, "Q1", color_image(ENTITIES[0][3])))  # builds the cache
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    linker = loaded.get_pipe("m3el_linker")
    linker.kb.add_multimodal_entity("Q7", "Jordan", "a new entity")
    with caplog.at_level(logging.WARNING, logger="spacy_m3el"):
        doc = loaded(make_doc(loaded, "Q1", color_image(ENTITIES[0][3])))
    assert any(
        "does not match the current knowledge base" in r.getMessage() for r in caplog.records
    )
    assert "Q7" in linker.entity_cache.kb_ids
    assert doc.ents[0].kb_id_ in {"Q1", "Q2", "Q7"}


def test_cache_follows_training(build_nlp):
    nlp = build_nlp()
    linker = nlp.get_pipe("m3el_linker")
    first = linker.entity_cache
    assert linker.entity_cache is first  # no rebuild without a change
    train(nlp, make_examples(nlp), steps=1)
    second = linker.entity_cache
    assert second is not first and second.model_fingerprint != first.model_fingerprint


def test_unsaved_stale_cache_is_not_written(build_nlp, tmp_path):
    nlp = build_nlp()
    nlp(make_doc(nlp, "Q1", None))
    train(nlp, make_examples(nlp), steps=1)  # the cache is now behind the weights
    nlp.to_disk(tmp_path / "p")
    assert not (tmp_path / "p" / "m3el_linker" / "entity_cache.safetensors").exists()
