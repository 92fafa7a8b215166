"""The entity feature cache: every KB entity encoded once, stored compactly.

Linking a mention needs, for each candidate entity, its side of the M3EL
score (global vectors, projected token queries, cross-modal contexts). They
depend only on the weights and the KB, so they are computed once and kept in
a compact form: token queries and vectors as int8 with one float16 scale per
vector (or float16/float32), padding masks as lengths. The cache records
fingerprints of the weights and the KB it was computed from; a cache whose
fingerprints do not match is never used.

Stage 1 of linking (retrieval) searches the cache's retrieval matrix
(:mod:`.retrieval`); stage 2 reranks the retrieved candidates with the full
score, dequantizing only their rows.
"""

from pathlib import Path
from typing import Collection, Dict, Iterable, List, Optional, Sequence, Union

import numpy

from ..ml.bi_encoder import RetrievalSpec
from ..ml.sides import SideArrays, concat_sides, is_mask
from .mapped_file import map_safetensors, save_atomically
from .retrieval import RetrievalMatrix, quantize_int8

PRECISIONS = ("int8", "float16", "float32")
RETRIEVAL_CHUNK = 32768  # entities decoded at a time when the retrieval matrix is built
CACHE_FORMAT = "spacy_m3el.entity_cache.v1"


def check_precision(precision: str) -> str:
    """Return ``precision`` if it is a storage precision; else a ValueError naming them."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"Unknown entity cache precision {precision!r}; use one of {', '.join(PRECISIONS)}."
        )
    return precision


def concat_stored(parts: Sequence[Dict[str, numpy.ndarray]]) -> Dict[str, numpy.ndarray]:
    """Concatenate batches of stored features (:func:`encode_side`) along the item axis.

    Token arrays are padded to the longest batch, and the stored mask width is
    the longest; padded positions lie beyond every item's length.
    """
    if not parts:
        return {}
    merged = concat_sides(
        [{k: v for k, v in part.items() if not k.endswith(":width")} for part in parts]
    )
    for name in parts[0]:
        if name.endswith(":width"):
            merged[name] = numpy.max([part[name] for part in parts], axis=0)
    return merged


def encode_side(side: SideArrays, precision: str) -> Dict[str, numpy.ndarray]:
    """Compact storage of a side: masks as lengths, flags as uint8, floats at ``precision``."""
    check_precision(precision)
    stored: Dict[str, numpy.ndarray] = {}
    for key, value in side.items():
        if is_mask(value):
            if value.size and not (numpy.diff(value.astype("int8"), axis=1) <= 0).all():
                raise ValueError(f"{key} is not a right-padding mask; cannot store it as lengths.")
            stored[f"{key}:len"] = value.sum(axis=1).astype("int32")
            stored[f"{key}:width"] = numpy.array([value.shape[1]], dtype="int32")
        elif value.dtype == bool:
            stored[key] = value.astype("uint8")
        elif precision == "int8":
            stored[f"{key}:int8"], stored[f"{key}:scale"] = quantize_int8(
                value.astype("float32"), "float16"
            )
        else:
            stored[key] = value.astype(precision)
    return stored


def decode_rows(
    stored: Dict[str, numpy.ndarray],
    rows: Union[None, slice, Sequence[int]] = None,
    keys: Optional[Collection[str]] = None,
) -> SideArrays:
    """Float32 side features of some rows (all if ``rows`` is None), of ``keys`` only if given."""
    index = (
        slice(None)
        if rows is None
        else rows
        if isinstance(rows, slice)
        else numpy.asarray(rows, dtype="int64")
    )
    side: SideArrays = {}
    for name, value in stored.items():
        key, _, part = name.partition(":")
        if part in ("scale", "width") or (keys is not None and key not in keys):
            continue
        if part == "len":
            width = int(stored[f"{key}:width"][0])
            side[key] = numpy.arange(width)[None, :] < value[index][:, None]
        elif part == "int8":
            side[key] = value[index].astype("float32") * stored[f"{key}:scale"][index].astype(
                "float32"
            )
        elif value.dtype == numpy.uint8:  # a per-item flag
            side[key] = value[index].astype(bool)
        else:
            side[key] = value[index].astype("float32")
    return side


class EntityCache:
    """Encoded entity sides of a whole KB, with a retrieval matrix (``retrieval``).

    kb_ids (List[str]): one row per entity, in KB order.
    stored (Dict[str, numpy.ndarray]): compact side features (see :func:`encode_side`).
    precision (str): "int8", "float16" or "float32".
    model_fingerprint (str): fingerprint of the weights the features come from.
    kb_fingerprint (str): fingerprint of the KB they come from.
    retrieval_spec (RetrievalSpec): which stored features form the retrieval
        vectors (given by the model, see ``M3ELModel.retrieval_spec``).
    """

    def __init__(
        self,
        kb_ids: List[str],
        stored: Dict[str, numpy.ndarray],
        precision: str,
        model_fingerprint: str,
        kb_fingerprint: str,
        retrieval_spec: RetrievalSpec,
    ):
        self.kb_ids = list(kb_ids)
        self.stored = stored
        self.precision = check_precision(precision)
        self.retrieval_spec = retrieval_spec
        self.model_fingerprint = model_fingerprint
        self.kb_fingerprint = kb_fingerprint
        self.rows = {kb_id: i for i, kb_id in enumerate(self.kb_ids)}
        chunks = (
            slice(start, start + RETRIEVAL_CHUNK)
            for start in range(0, len(self.kb_ids), RETRIEVAL_CHUNK)
        )
        # An int8 cache's retrieval matrix is as coarse as its features; a float one's
        # shortlist is rescored with the stored floats (decoding costs ~0.1 ms/mention).
        exact = None if precision == "int8" else self.retrieval_vectors
        self.retrieval = RetrievalMatrix.from_chunks(
            (self.retrieval_vectors(rows) for rows in chunks), exact=exact
        )

    @classmethod
    def from_side(
        cls,
        kb_ids: List[str],
        side: SideArrays,
        precision: str,
        model_fingerprint: str,
        kb_fingerprint: str,
        retrieval_spec: RetrievalSpec,
    ) -> "EntityCache":
        """A cache of float side features (as the model computes them), stored at ``precision``."""
        stored = encode_side(side, precision)
        return cls(kb_ids, stored, precision, model_fingerprint, kb_fingerprint, retrieval_spec)

    def __len__(self) -> int:
        return len(self.kb_ids)

    def converted(self, precision: str, batch_size: int = 64) -> "EntityCache":
        """The same features stored at another precision, converted ``batch_size`` rows
        at a time (from float32, the result equals encoding the KB at that precision)."""
        parts = [
            encode_side(decode_rows(self.stored, slice(start, start + batch_size)), precision)
            for start in range(0, len(self), batch_size)
        ]
        return EntityCache(
            self.kb_ids,
            concat_stored(parts),
            precision,
            self.model_fingerprint,
            self.kb_fingerprint,
            self.retrieval_spec,
        )

    def matches(
        self, model_fingerprint: str, kb_fingerprint: str, precision: Optional[str] = None
    ) -> bool:
        """Whether the cache holds these weights' features of this KB (at ``precision``)."""
        return (
            self.model_fingerprint == model_fingerprint
            and self.kb_fingerprint == kb_fingerprint
            and (precision is None or self.precision == precision)
        )

    @property
    def nbytes(self) -> int:
        """Bytes of stored features (excluding the in-memory retrieval matrix)."""
        return int(sum(value.nbytes for value in self.stored.values()))

    @property
    def bytes_per_entity(self) -> float:
        return self.nbytes / max(1, len(self))

    def side_rows(self, rows: Optional[Sequence[int]]) -> SideArrays:
        return decode_rows(self.stored, rows)

    def retrieval_vectors(self, rows: Union[slice, Sequence[int]]) -> numpy.ndarray:
        """Float32 retrieval vectors of some rows, from the stored (possibly int8) features."""
        side = decode_rows(self.stored, rows, self.retrieval_spec.keys)
        return self.retrieval_spec.vectors(side)

    def rows_of(self, kb_ids: Iterable[str]) -> List[int]:
        return [self.rows[kb_id] for kb_id in kb_ids if kb_id in self.rows]

    def nearest(self, query_vectors: numpy.ndarray, k: int) -> List[List[int]]:
        """Rows of the k entities with the highest retrieval score for each query."""
        if len(self) == 0:
            return [[] for _ in range(len(query_vectors))]
        return self.retrieval.nearest(query_vectors, k)

    def most_similar(self, query_vector: numpy.ndarray, rows: Sequence[int], n: int) -> List[int]:
        """The n of ``rows`` with the highest retrieval score for one query, best first."""
        return self.retrieval.most_similar(query_vector, rows, n)

    # Serialization ----------------------------------------------------------

    def to_disk(self, path: Union[str, Path]) -> None:
        """Write the cache as safetensors; atomically, since processes may have it mapped."""
        from safetensors.numpy import save_file

        metadata = {
            "format": CACHE_FORMAT,
            "precision": self.precision,
            "model_fingerprint": self.model_fingerprint,
            "kb_fingerprint": self.kb_fingerprint,
        }
        tensors = {key: numpy.ascontiguousarray(value) for key, value in self.stored.items()}
        tensors["kb_ids"] = numpy.frombuffer(
            "\n".join(self.kb_ids).encode("utf8"), dtype="uint8"
        ).copy()
        save_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @classmethod
    def from_disk(
        cls, path: Union[str, Path], retrieval_spec: RetrievalSpec, mmap: bool = True
    ) -> "EntityCache":
        """Read a saved cache. With ``mmap`` (the default) the stored features stay in
        the file's pages, which the processes of one machine share (see
        :mod:`.mapped_file`); else they are copied into this process's memory."""
        try:
            metadata, tensors = map_safetensors(path)
            if metadata.get("format") != CACHE_FORMAT:
                raise ValueError(f"unknown format {metadata.get('format')!r}")
        except Exception as err:
            raise ValueError(
                f"The entity cache {path} cannot be read ({err}). "
                "Delete it; it is rebuilt when needed."
            ) from err
        if not mmap:
            tensors = {key: value.copy() for key, value in tensors.items()}
        text = tensors.pop("kb_ids").tobytes().decode("utf8")
        kb_ids = text.split("\n") if text else []
        return cls(
            kb_ids,
            tensors,
            metadata["precision"],
            metadata["model_fingerprint"],
            metadata["kb_fingerprint"],
            retrieval_spec,
        )
