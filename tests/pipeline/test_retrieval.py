"""Stage-1 retrieval over the int8 matrix: quantization, exact top-k, fallbacks."""

import numpy
import pytest

from spacy_m3el.pipeline import retrieval
from spacy_m3el.pipeline.retrieval import RetrievalMatrix, quantize_rows


def random_vectors(n, width=24, seed=0):
    return numpy.random.default_rng(seed).normal(size=(n, width)).astype("float32")


def brute_force(matrix, queries, k):
    return numpy.argsort(-(queries @ matrix.vectors().T), axis=1, kind="stable")[:, :k].tolist()


def test_quantize_rows_error_is_half_a_step():
    vectors = random_vectors(50) * numpy.linspace(0.01, 100, 50, dtype="float32")[:, None]
    values, scales = quantize_rows(vectors)
    assert values.dtype == numpy.int8 and scales.shape == (50,)
    error = numpy.abs(values * scales[:, None] - vectors)
    assert (error <= scales[:, None] / 2 + 1e-6 * numpy.abs(vectors)).all()
    assert numpy.abs(values).max(axis=1).min() == 127  # every row uses the full range


def test_quantize_rows_zero_rows_and_bad_input():
    values, scales = quantize_rows(numpy.zeros((3, 4), "float32"))
    assert not values.any() and (scales == 1).all()
    with pytest.raises(ValueError, match="NaN"):
        quantize_rows(numpy.array([[1.0, numpy.nan]], "float32"))
    with pytest.raises(ValueError, match="2-dimensional"):
        quantize_rows(numpy.zeros(4, "float32"))


def test_from_chunks_equals_from_vectors():
    vectors = random_vectors(70, seed=1)
    whole = RetrievalMatrix.from_vectors(vectors)
    chunked = RetrievalMatrix.from_chunks([vectors[:30], vectors[30:64], vectors[64:]])
    numpy.testing.assert_array_equal(whole.values, chunked.values)
    numpy.testing.assert_array_equal(whole.scales, chunked.scales)
    assert whole.nbytes == 70 * 24 + 70 * 4
    assert len(RetrievalMatrix.from_chunks([], width=24)) == 0


@pytest.mark.parametrize("chunk_rows", [1 << 18, 64, 7])
def test_nearest_is_the_float_top_k(monkeypatch, chunk_rows):
    monkeypatch.setattr(retrieval, "CHUNK_ROWS", chunk_rows)
    matrix = RetrievalMatrix.from_vectors(random_vectors(500, seed=2))
    queries = random_vectors(9, seed=3)
    for k in (1, 10, 50):
        assert matrix.nearest(queries, k) == brute_force(matrix, queries, k)


def test_nearest_edge_cases():
    matrix = RetrievalMatrix.from_vectors(random_vectors(5, seed=4))
    queries = random_vectors(2, seed=5)
    assert matrix.nearest(queries, 0) == [[], []]
    assert sorted(matrix.nearest(queries, 99)[0]) == [0, 1, 2, 3, 4]  # k larger than the matrix
    assert matrix.nearest(numpy.zeros((0, 24), "float32"), 3) == []
    with pytest.raises(ValueError, match="width 24"):
        matrix.nearest(random_vectors(2, width=8), 3)


def test_nearest_with_width_one():
    # torch 2.13's int8 kernel returns garbage for an inner dimension of 1
    matrix = RetrievalMatrix.from_vectors(numpy.arange(1, 101, dtype="float32")[:, None])
    assert matrix.nearest(numpy.ones((1, 1), "float32"), 3) == [[99, 98, 97]]


def test_shortlist_is_rescored_with_the_exact_vectors():
    vectors = random_vectors(400, seed=12)
    matrix = RetrievalMatrix(*quantize_rows(vectors), exact=lambda rows: vectors[rows])
    queries = random_vectors(5, seed=13)
    expected = numpy.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10].tolist()
    assert matrix.nearest(queries, 10) == expected
    rows = list(range(0, 400, 7))
    assert matrix.most_similar(queries[0], rows, 5) == [
        rows[i] for i in numpy.argsort(-(vectors[rows] @ queries[0]))[:5]
    ]


def test_nearest_without_int8_kernel(monkeypatch):
    import torch

    matrix = RetrievalMatrix.from_vectors(random_vectors(300, seed=6))
    queries = random_vectors(5, seed=7)
    expected = matrix.nearest(queries, 10)

    def no_kernel(*args, **kwargs):
        raise RuntimeError("_int_mm is not supported on this platform")

    monkeypatch.setattr(retrieval, "_int_mm_works", None)
    monkeypatch.setattr(torch, "_int_mm", no_kernel, raising=False)
    assert matrix.nearest(queries, 10) == expected
    assert retrieval._int_mm_works is False  # detected once, then float32 throughout
    monkeypatch.delattr(torch, "_int_mm")
    assert matrix.nearest(queries, 10) == expected


def test_int8_dot_is_exact():
    import torch

    rng = numpy.random.default_rng(8)
    a = rng.integers(-127, 128, size=(6, 800), dtype=numpy.int8)
    b = rng.integers(-127, 128, size=(11, 800), dtype=numpy.int8)
    result = retrieval.int8_dot(torch.from_numpy(a), torch.from_numpy(b))
    numpy.testing.assert_array_equal(
        result.numpy().astype("int64"), a.astype("int64") @ b.astype("int64").T
    )


def test_most_similar_orders_the_given_rows():
    matrix = RetrievalMatrix.from_vectors(random_vectors(40, seed=9))
    query = random_vectors(1, seed=10)[0]
    rows = [33, 2, 17, 8]
    scores = matrix.vectors(rows) @ query
    assert matrix.most_similar(query, rows, 3) == [rows[i] for i in numpy.argsort(-scores)[:3]]


def test_shape_errors():
    with pytest.raises(ValueError, match="int8"):
        RetrievalMatrix(numpy.zeros((2, 3), "float32"), numpy.ones(2, "float32"))
    with pytest.raises(ValueError, match="one scale per row"):
        RetrievalMatrix(numpy.zeros((2, 3), "int8"), numpy.ones(3, "float32"))
