"""The entity index: the entity cache's life cycle, and stage 1 of linking.

:class:`EntityIndex` keeps one :class:`~.entity_cache.EntityCache` that
matches the current weights and KB: it reuses a loaded or built cache while
the model and KB are unchanged, checks a loaded cache's fingerprints on first
use (a stale one is rebuilt, with a warning), builds a cache a batch of
entities at a time, and saves it only when it is current.

:func:`retrieve_candidates` is stage 1: for each mention, the KB's alias
candidates plus the ``top_k`` entities nearest by the bi-encoder part of the
score, capped at ``max_candidates``.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import numpy

from ..kb import MultimodalKB, normalize_alias
from ..ml.model import M3ELModel
from .entity_cache import EntityCache, check_precision, concat_stored, encode_side
from .inputs import ImageLoader, entity_text

logger = logging.getLogger("spacy_m3el")
CACHE_FILE = "entity_cache.safetensors"


class EntityIndex:
    """Every KB entity encoded with the current weights, built or checked on first use.

    model (M3ELModel): The model whose entity sides are cached.
    images (ImageLoader): Loads the entities' images.
    precision (str): "int8", "float16" or "float32" storage.
    batch_size (int): Entities encoded at a time when the cache is built.
    component (str): The component name, for messages.
    """

    def __init__(
        self,
        model: M3ELModel,
        images: ImageLoader,
        *,
        precision: str = "int8",
        batch_size: int = 64,
        component: str = "m3el_linker",
    ):
        self.model = model
        self.images = images
        self.precision = check_precision(precision)
        self.batch_size = batch_size
        self.component = component
        self._cache: Optional[EntityCache] = None
        self._key: Optional[Tuple[Any, ...]] = None
        self._exact: Optional[Tuple[Tuple[Any, ...], EntityCache]] = None
        self._model_version = 0

    def model_changed(self) -> None:
        """Mark the weights as changed: the next use checks (and rebuilds) the cache."""
        self._model_version += 1
        self._exact = None

    def exact(self, kb: MultimodalKB) -> EntityCache:
        """The KB's features in float32 (as evaluation scores them), kept until
        :meth:`forget_exact` or the next weight change. When the index's own cache is
        stale, it is converted from these features instead of encoding the KB again."""
        if self.precision == "float32":
            return self.cache(kb)
        key = self._current_key(kb)
        if self._exact is not None and self._exact[0] == key:
            return self._exact[1]
        exact = self.build(kb, precision="float32")
        if self._key != key:
            self._cache, self._key = exact.converted(self.precision, self.batch_size), key
        self._exact = (key, exact)
        return exact

    def forget_exact(self) -> None:
        """Drop the float32 features kept by :meth:`exact` (they take 4 bytes per value)."""
        self._exact = None

    def _current_key(self, kb: MultimodalKB) -> Tuple[Any, ...]:
        return (self._model_version, id(kb), len(kb), self.model.state_key())

    def is_current(self, kb: MultimodalKB) -> bool:
        """Whether the cache in memory was made or checked for these weights and this KB."""
        return self._cache is not None and self._key == self._current_key(kb)

    def has_current_cache(self, kb: MultimodalKB) -> bool:
        """Whether the cache in memory (loaded or built) holds the current weights'
        features of ``kb``; checks fingerprints, never encodes."""
        if self.is_current(kb):
            return True
        if self._cache is None or not self._cache.matches(
            self.model.fingerprint(), kb.fingerprint(), self.precision
        ):
            return False
        self._key = self._current_key(kb)
        return True

    def cache(self, kb: MultimodalKB) -> EntityCache:
        """The cache for the current weights and ``kb``: reused, checked or built.

        Checking a loaded cache hashes the weights and the KB, which is cheap
        next to encoding the KB; while neither changes it is not repeated.
        """
        if self.has_current_cache(kb):
            return self._cache
        model_fp, kb_fp = self.model.fingerprint(), kb.fingerprint()
        if self._cache is not None and self._key is None:
            if self._cache.precision != self.precision:
                stale = (
                    f"precision ({self._cache.precision}, the component asks for {self.precision})"
                )
            elif self._cache.model_fingerprint != model_fp:
                stale = "weights"
            else:
                stale = "knowledge base"
            logger.warning(
                "%s: the saved entity cache does not match the current %s; re-encoding the KB.",
                self.component,
                stale,
            )
        self._cache = self.build(kb, model_fp, kb_fp)
        self._key = self._current_key(kb)
        return self._cache

    def build(
        self,
        kb: MultimodalKB,
        model_fingerprint: Optional[str] = None,
        kb_fingerprint: Optional[str] = None,
        precision: Optional[str] = None,
    ) -> EntityCache:
        """Encode every KB entity (its first image) with the current weights.

        Entities are decoded, encoded and compacted a batch at a time, so memory
        holds one batch of images and float features, not the whole KB's.

        precision (Optional[str]): Storage precision; the index's own by default.
            The result is returned, not kept: only the index's own cache is reused.
        """
        precision = check_precision(precision or self.precision)
        records = list(kb.records())
        stored, unreadable = self.encode_records(kb, records, precision)
        if unreadable:
            logger.warning(
                "%s: %d entity images could not be read; "
                "those entities are encoded from text only.",
                self.component,
                unreadable,
            )
        return EntityCache(
            [r.kb_id for r in records],
            stored,
            precision,
            model_fingerprint or self.model.fingerprint(),
            kb_fingerprint or kb.fingerprint(),
            self.model.retrieval_spec,
        )

    def encode_records(
        self, kb: MultimodalKB, records: Sequence[Any], precision: str
    ) -> Tuple[Dict[str, numpy.ndarray], int]:
        """The stored features of some KB records (a batch at a time, so memory holds one
        batch of images and float features), and how many had an unreadable image.

        Encoding contiguous runs of records whose lengths are multiples of the batch
        size and concatenating them (``concat_stored``) gives the features of encoding
        them all at once: how a KB is encoded on several workers.
        """
        needs_images = self.model.needs_images
        stored, unreadable = [], 0
        for start in range(0, len(records), self.batch_size):
            batch = records[start : start + self.batch_size]
            images = [self.images.entity_image(kb, r) if needs_images else None for r in batch]
            unreadable += sum(
                1 for r, image in zip(batch, images) if needs_images and r.images and image is None
            )
            texts = [entity_text(r) for r in batch]
            side = self.model.encode("entity", texts, images, batch_size=self.batch_size)
            stored.append(encode_side(side, precision))
        return concat_stored(stored), unreadable

    # Serialization ------------------------------------------------------------

    def save(self, path: Path, kb: MultimodalKB) -> None:
        """Write the cache if it is current for ``kb`` (never compute it just to save it)."""
        if self.is_current(kb):
            self._cache.to_disk(path)

    def load(self, path: Path, mmap: bool = True) -> None:
        """Read a saved cache; it is checked against the weights and KB on first use.

        A missing file leaves no cache; an unreadable one is ignored with a warning
        (it is rebuilt when needed). With ``mmap`` the features stay in the file's
        pages, shared by the processes of a machine (``EntityCache.from_disk``).
        """
        self._cache, self._key = None, None
        if not path.exists():
            return
        try:
            self._cache = EntityCache.from_disk(path, self.model.retrieval_spec, mmap=mmap)
        except ValueError as err:
            logger.warning(
                "%s: ignoring the saved entity cache, it is rebuilt when needed: %s",
                self.component,
                err,
            )


@dataclass
class CandidateSet:
    """Stage 1's candidates for one mention: entity cache rows, and where they came from.

    rows (List[int]): Cache rows, the alias candidates first, then the nearest entities.
    alias_priors (Dict[int, float]): The prior probability of each row that the alias
        table lists under the mention's name (rows only near in embedding space are absent).
    fuzzy_rows (Set[int]): The alias rows found under an alias within one edit of the
        name (a misspelt or variant name), not under the name itself.
    """

    rows: List[int]
    alias_priors: Dict[int, float] = field(default_factory=dict)
    fuzzy_rows: Set[int] = field(default_factory=set)

    def __iter__(self) -> Iterator[int]:
        return iter(self.rows)

    def evidence(self) -> Tuple[List[float], List[bool]]:
        """Per row: its alias prior (NaN if it did not come from the alias table), and
        whether it is a fuzzy alias match; the inputs of ``LinkDecision.combine``."""
        priors = [self.alias_priors.get(row, float("nan")) for row in self.rows]
        return priors, [row in self.fuzzy_rows for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)


def retrieve_candidates(
    cache: EntityCache,
    queries: numpy.ndarray,
    alias_candidates: Iterable[Iterable[Any]],
    *,
    top_k: int,
    max_candidates: Optional[int],
    mention_texts: Optional[Sequence[str]] = None,
) -> List[CandidateSet]:
    """Stage 1: the entity cache rows that stage 2 reranks, per mention.

    cache (EntityCache): The entity cache of the current weights and KB.
    queries (numpy.ndarray[n, D]): The mentions' retrieval vectors
        (``M3ELModel.retrieval_vectors(side, query=True)``).
    alias_candidates (Iterable[Iterable[Candidate]]): The KB's candidates per mention.
    top_k (int): How many nearest entities to add.
    max_candidates (Optional[int]): Keep at most this many rows, those with the
        highest retrieval score (the top_k nearest always among them).
    mention_texts (Optional[Sequence[str]]): The mentions' names; an alias candidate
        whose alias does not normalize to its mention's name is a fuzzy match.
    RETURNS (List[CandidateSet]): The alias candidates' rows (with their priors),
        then the nearest.
    """
    nearest = cache.nearest(queries, top_k)
    texts = mention_texts if mention_texts is not None else [None] * len(nearest)
    candidate_sets = []
    for query, aliases, near, text in zip(queries, alias_candidates, nearest, texts):
        priors, fuzzy = alias_evidence(cache, aliases, text)
        rows = list(dict.fromkeys(list(priors) + near))
        if max_candidates is not None and len(rows) > max_candidates:
            rows = cache.most_similar(query, rows, max_candidates)
        kept = {r: priors[r] for r in rows if r in priors}
        candidate_sets.append(CandidateSet(rows, kept, fuzzy & set(kept)))
    return candidate_sets


def alias_evidence(
    cache: EntityCache, aliases: Iterable[Any], mention_text: Optional[str] = None
) -> Tuple[Dict[int, float], Set[int]]:
    """The cache rows of a mention's alias candidates, in order, with their highest prior,
    and the rows found under an alias that is not the mention's name (a fuzzy match).

    mention_text (Optional[str]): The mention's name; None marks no row as fuzzy.
    """
    priors: Dict[int, float] = {}
    fuzzy: Set[int] = set()
    exact = None if mention_text is None else {mention_text, normalize_alias(mention_text)}
    for candidate in aliases:
        row = cache.rows.get(candidate.entity_)
        if row is None:
            continue
        priors[row] = max(priors.get(row, 0.0), float(candidate.prior_prob))
        if exact is not None and candidate.alias_ not in exact:
            if normalize_alias(candidate.alias_) not in exact:
                fuzzy.add(row)
    return priors, fuzzy
