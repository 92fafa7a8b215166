"""Encoded entity sides of a whole KB, for retrieval and reranking."""
from typing import Dict, Iterable, List, Sequence

import numpy

SideArrays = Dict[str, numpy.ndarray]
RETRIEVAL_KEYS = ("retrieval.text", "retrieval.image", "cross.t2v", "cross.v2t")


def concat_sides(parts: Sequence[SideArrays]) -> SideArrays:
    """Concatenate side features of several batches along the item axis.

    Token arrays of different lengths (texts are padded per batch) are padded
    with zeros, which their boolean masks read as padding.
    """
    if len(parts) == 1:
        return dict(parts[0])
    merged: SideArrays = {}
    for key in parts[0]:
        arrays = [part[key] for part in parts]
        if arrays[0].ndim >= 2:
            length = max(a.shape[1] for a in arrays)
            arrays = [_pad_axis1(a, length) for a in arrays]
        merged[key] = numpy.concatenate(arrays)
    return merged


def _pad_axis1(array: numpy.ndarray, length: int) -> numpy.ndarray:
    extra = length - array.shape[1]
    if extra == 0:
        return array
    widths = [(0, 0)] * array.ndim
    widths[1] = (0, extra)
    return numpy.pad(array, widths)


def take_rows(side: SideArrays, rows: Sequence[int]) -> SideArrays:
    index = numpy.asarray(rows, dtype="int64")
    return {key: value[index] for key, value in side.items()}


def retrieval_vectors(side: SideArrays) -> numpy.ndarray:
    """Vectors whose dot products sum the bi-encoder parts of the M3EL score.

    Global text similarity always counts; the image and cross-modal parts only
    count when both sides have an image (they are zeroed otherwise).
    """
    has_image = side["has_image"].astype("float32")[:, None]
    parts = []
    for key in RETRIEVAL_KEYS:
        if key in side:
            vectors = side[key].astype("float32")
            parts.append(vectors if key == "retrieval.text" else vectors * has_image)
    return numpy.concatenate(parts, axis=1)


class EntityIndex:
    """Entity sides for every KB entity, in ``kb_ids`` order.

    kb_ids (List[str]): the entities, one row each.
    side (SideArrays): the encoded entity side features.
    """

    def __init__(self, kb_ids: List[str], side: SideArrays):
        self.kb_ids = list(kb_ids)
        self.side = side
        self.rows = {kb_id: i for i, kb_id in enumerate(self.kb_ids)}
        self.vectors = retrieval_vectors(side)

    def __len__(self) -> int:
        return len(self.kb_ids)

    def nearest(self, mention_vectors: numpy.ndarray, k: int) -> List[List[int]]:
        """Rows of the k entities with the highest retrieval score for each mention."""
        if k <= 0 or len(self) == 0:
            return [[] for _ in range(mention_vectors.shape[0])]
        k = min(k, len(self))
        scores = mention_vectors @ self.vectors.T
        top = numpy.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = numpy.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        return numpy.take_along_axis(top, order, axis=1).tolist()

    def rows_of(self, kb_ids: Iterable[str]) -> List[int]:
        return [self.rows[kb_id] for kb_id in kb_ids if kb_id in self.rows]
