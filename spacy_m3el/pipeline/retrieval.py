"""Stage 1 of linking: top-k retrieval by dot product over every KB entity.

The entity vectors are held as int8, one float32 scale per row (a quarter of
float32's memory), and searched exhaustively with int8 matrix products, which
CPUs with int8 dot-product instructions (VNNI, AMX) run several times faster
than float32 ones. The search is not approximate in the index sense: every
entity is scored. Quantizing costs precision (most for a query or entity
whose values differ widely in size), so a shortlist of ``2k + 16`` rows per
query is rescored in float32 (against the stored float vectors of a float16
or float32 entity cache) before the top k are returned. On the tiny demo
model's vectors at 100K entities the result equals the float32 search
(``bench/approximate_index.py``).
"""

from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy

# Entities scored at a time. Score buffers of [queries, CHUNK_ROWS] are reused across
# chunks: one large matrix per batch would be fresh memory (page faults) every time.
CHUNK_ROWS = 32768
_int_mm_works: Optional[bool] = None


def quantize_int8(
    array: numpy.ndarray, scale_dtype: str = "float32"
) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Symmetric int8 quantization with one scale per vector (along the last axis).

    array (numpy.ndarray[..., D]): Float vectors, D > 0.
    scale_dtype (str): dtype of the scales; values are rounded with the stored scale.
    RETURNS (Tuple[numpy.ndarray, numpy.ndarray]): int8 values [..., D] and scales [..., 1];
        ``values * scales`` approximates ``array``.
    """
    scale = numpy.abs(array).max(axis=-1, keepdims=True) / 127.0
    scale = numpy.where(scale == 0, 1.0, scale).astype(scale_dtype)
    values = numpy.clip(numpy.rint(array / scale.astype("float32")), -127, 127).astype("int8")
    return values, scale


def quantize_rows(vectors: numpy.ndarray) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Symmetric int8 quantization with one float32 scale per row.

    vectors (numpy.ndarray[N, D]): Float vectors.
    RETURNS (Tuple[numpy.ndarray, numpy.ndarray]): int8 values [N, D] and scales [N];
        ``values * scales[:, None]`` approximates ``vectors``.
    """
    vectors = numpy.asarray(vectors, dtype="float32")
    if vectors.ndim != 2:
        raise ValueError(f"Expected a 2-dimensional array of vectors, got shape {vectors.shape}.")
    if vectors.size and not numpy.isfinite(vectors).all():
        raise ValueError(
            "Retrieval vectors contain NaN or infinite values; the encoder output is broken."
        )
    if not vectors.shape[1]:
        return numpy.zeros(vectors.shape, "int8"), numpy.ones(len(vectors), "float32")
    values, scales = quantize_int8(vectors)
    return values, scales[:, 0]


def int_mm_works() -> bool:
    """Whether torch's int8 matrix product exists here and gives exact results (checked once)."""
    global _int_mm_works
    if _int_mm_works is None:
        import torch

        generator = torch.Generator().manual_seed(0)
        a = torch.randint(-127, 128, (17, 24), dtype=torch.int8, generator=generator)
        b = torch.randint(-127, 128, (9, 24), dtype=torch.int8, generator=generator)
        try:
            _int_mm_works = bool(torch.equal(torch._int_mm(a, b.T), a.int() @ b.int().T))
        except (AttributeError, RuntimeError):
            _int_mm_works = False
    return _int_mm_works


def int8_dot(queries, values, out=None):
    """``queries @ values.T`` of two int8 torch matrices, as a torch tensor.

    Uses torch's int8 kernel where it works (writing into the int32 tensor
    ``out`` if given), and float32 otherwise (exact for widths up to 1,040).
    """
    import torch

    # torch 2.13's CPU kernel returns garbage for an inner dimension of 1
    if queries.shape[1] >= 2 and int_mm_works():
        try:
            return (
                torch._int_mm(queries, values.T)
                if out is None
                else torch._int_mm(queries, values.T, out=out)
            )
        except RuntimeError:  # shapes or layouts this kernel refuses
            pass
    return queries.float() @ values.float().T


class RetrievalMatrix:
    """Entity retrieval vectors as int8 rows with a float32 scale each.

    values (numpy.ndarray[N, D]): int8 values.
    scales (numpy.ndarray[N]): float32 scale of each row.
    exact (Optional[Callable]): Maps row indices to the float32 vectors the
        shortlist is rescored with; by default the dequantized rows.
    """

    def __init__(
        self,
        values: numpy.ndarray,
        scales: numpy.ndarray,
        exact: Optional[Callable[[numpy.ndarray], numpy.ndarray]] = None,
    ):
        if values.dtype != numpy.int8 or values.ndim != 2:
            raise ValueError(
                "RetrievalMatrix values must be a 2-dimensional int8 array, "
                f"got {values.dtype} {values.shape}."
            )
        if scales.shape != (values.shape[0],):
            raise ValueError(
                f"RetrievalMatrix needs one scale per row: {scales.shape} scales "
                f"for {values.shape[0]} rows."
            )
        self.values = numpy.ascontiguousarray(values)
        self.scales = numpy.ascontiguousarray(scales, dtype="float32")
        self.exact = exact or self.vectors

    @classmethod
    def from_vectors(cls, vectors: numpy.ndarray) -> "RetrievalMatrix":
        return cls(*quantize_rows(vectors))

    @classmethod
    def from_chunks(
        cls,
        chunks: Iterable[numpy.ndarray],
        width: int = 0,
        exact: Optional[Callable[[numpy.ndarray], numpy.ndarray]] = None,
    ) -> "RetrievalMatrix":
        """Quantize float vectors chunk by chunk (so the float matrix never exists whole)."""
        parts = [quantize_rows(chunk) for chunk in chunks]
        if not parts:
            return cls(numpy.zeros((0, width), "int8"), numpy.zeros(0, "float32"), exact)
        return cls(
            numpy.concatenate([p[0] for p in parts]),
            numpy.concatenate([p[1] for p in parts]),
            exact,
        )

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def width(self) -> int:
        return self.values.shape[1]

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.scales.nbytes)

    def vectors(self, rows: Optional[Sequence[int]] = None) -> numpy.ndarray:
        """Float32 (dequantized) vectors of some rows, all rows if ``rows`` is None."""
        index = slice(None) if rows is None else numpy.asarray(rows, dtype="int64")
        return self.values[index].astype("float32") * self.scales[index][..., None]

    def nearest(self, queries: numpy.ndarray, k: int) -> List[List[int]]:
        """Rows of the k entities with the highest dot product with each query, best first.

        queries (numpy.ndarray[B, D]): Float query vectors.
        k (int): How many rows per query (fewer if the matrix has fewer).
        RETURNS (List[List[int]]): B lists of row indices.
        """
        import torch

        queries = numpy.asarray(queries, dtype="float32")
        if queries.ndim != 2 or queries.shape[1] != self.width:
            raise ValueError(
                f"Queries of shape {queries.shape} do not match retrieval vectors "
                f"of width {self.width}."
            )
        if k <= 0 or len(self) == 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        k = min(k, len(self))
        shortlist = min(len(self), 2 * k + 16)
        query_values = torch.from_numpy(
            quantize_rows(queries)[0]
        )  # a query's scale does not change its ranking
        values, scales = torch.from_numpy(self.values), torch.from_numpy(self.scales)
        size = len(queries) * min(CHUNK_ROWS, len(self))
        int_buffer, float_buffer = torch.empty(size, dtype=torch.int32), torch.empty(size)
        top_scores, top_rows = [], []
        for start in range(0, len(self), CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, len(self))
            shape = (len(queries), stop - start)
            products = int8_dot(
                query_values, values[start:stop], out=int_buffer[: shape[0] * shape[1]].view(shape)
            )
            scores = torch.mul(
                products, scales[start:stop], out=float_buffer[: shape[0] * shape[1]].view(shape)
            )
            top = torch.topk(scores, min(shortlist, stop - start), dim=1)
            top_scores.append(top.values)
            top_rows.append(top.indices + start)
        rows = torch.cat(top_rows, dim=1)
        if len(top_rows) > 1:
            rows = rows.gather(
                1, torch.topk(torch.cat(top_scores, dim=1), shortlist, dim=1).indices
            )
        candidates = rows.numpy()
        exact = numpy.einsum(
            "bsd,bd->bs", self.exact(candidates.ravel()).reshape(*candidates.shape, -1), queries
        )
        order = numpy.argsort(-exact, axis=1, kind="stable")[:, :k]
        return numpy.take_along_axis(candidates, order, axis=1).tolist()

    def most_similar(self, query: numpy.ndarray, rows: Sequence[int], n: int) -> List[int]:
        """The n of ``rows`` with the highest exact dot product with one float query, best first."""
        index = numpy.asarray(rows, dtype="int64")
        scores = self.exact(index) @ numpy.asarray(query, dtype="float32")
        return index[numpy.argsort(-scores, kind="stable")[:n]].tolist()
