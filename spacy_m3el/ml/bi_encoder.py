"""The bi-encoder part of the M3EL score, as vectors for stage-1 retrieval.

Some terms of the score are dot products of one vector per mention and one
per entity (the global-to-global terms of the intra-modal units, the
cross-modal contexts). Concatenated, with the term weights applied on the
query side, they give vectors whose dot product is exactly that part of the
score, so every KB entity can be searched by a matrix product. The network
declares the terms (:attr:`M3ELNet.retrieval_spec`); the entity cache and
the linker only apply the spec.
"""

from dataclasses import dataclass
from typing import FrozenSet, Tuple

import numpy

from .sides import SideArrays

HAS_IMAGE = "has_image"


@dataclass(frozen=True)
class RetrievalPart:
    """One dot-product term of the score.

    key (str): The side key of the term's vectors ([n, d]).
    weight (float): Its weight in the score, applied to the query.
    needs_image (bool): The term counts only when both items have an image.
    in_score (bool): False for a term used for retrieval only (the text
        vector when the text unit is switched off).
    """

    key: str
    weight: float
    needs_image: bool = False
    in_score: bool = True


@dataclass(frozen=True)
class RetrievalSpec:
    """The terms of the score that retrieval vectors are made of, in order."""

    parts: Tuple[RetrievalPart, ...]

    @property
    def keys(self) -> FrozenSet[str]:
        """The side keys the vectors are computed from."""
        return frozenset([part.key for part in self.parts] + [HAS_IMAGE])

    def vectors(self, side: SideArrays, query: bool = False) -> numpy.ndarray:
        """Retrieval vectors of a side's items.

        Image terms are zeroed for items without an image, so they count only
        when both sides have one, as in the score.

        side (SideArrays): Mention or entity side features (float32 or lower).
        query (bool): Apply the term weights (mentions); entities are unweighted.
        RETURNS (numpy.ndarray[n, D]): float32 vectors.
        """
        missing = [part.key for part in self.parts if part.key not in side]
        if missing:
            raise ValueError(f"The side features have no {missing}; were they made by this model?")
        has_image = side[HAS_IMAGE].astype("float32")[:, None]
        columns = []
        for part in self.parts:
            vectors = side[part.key].astype("float32")
            if part.needs_image:
                vectors = vectors * has_image
            columns.append(vectors * part.weight if query else vectors)
        return numpy.ascontiguousarray(numpy.concatenate(columns, axis=1))
