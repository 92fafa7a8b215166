"""Hard negatives from the whole KB for training.

In-batch negatives differ from a mention's gold entity in everything, and
alias-table siblings share its name, so neither teaches the model that an
entity with the gold's picture but another name is wrong. The miner keeps a
snapshot of the whole KB encoded with recent weights and gives, for each
training mention, the entities nearest to it by the retrieval score (the
bi-encoder part of the model's score) other than its gold entity and the
gold's exact duplicates. The snapshot is re-encoded every ``refresh_every``
updates, which costs one full encoding of the KB each time.
"""

from typing import Callable, Dict, List, Optional, Sequence

import numpy

from ..kb import EntityRecord, MultimodalKB, feed_record, tagged_digest
from ..ml.sides import SideArrays
from .entity_cache import EntityCache
from .entity_index import EntityIndex


def content_key(record: EntityRecord) -> str:
    """A hash of what the model sees of an entity: two entities with one key are duplicates."""
    digest, add = tagged_digest()
    feed_record(add, record, with_id=False, fold_name=True)
    return digest.hexdigest()


class NegativeMiner:
    """The ``n_negatives`` KB entities nearest to each mention, other than its gold.

    index (EntityIndex): Builds the KB snapshot with the current weights.
    n_negatives (int): Negatives per mention (0 turns mining off).
    refresh_every (int): Re-encode the KB after this many weight updates.
    """

    def __init__(self, index: EntityIndex, n_negatives: int, refresh_every: int):
        if n_negatives < 0 or refresh_every < 1:
            raise ValueError(
                "mined negatives must be at least 0 and their refresh interval at least 1 "
                f"update, got {n_negatives} and {refresh_every}."
            )
        self.index = index
        self.n_negatives = n_negatives
        self.refresh_every = refresh_every
        self._snapshot: Optional[EntityCache] = None
        self._duplicates: Dict[str, str] = {}
        self._kb_key: Optional[tuple] = None
        self._updates_since = 0
        self.refreshes = 0

    @property
    def enabled(self) -> bool:
        return self.n_negatives > 0

    def model_updated(self) -> None:
        """Count one weight update; the snapshot is refreshed when it is due."""
        self._updates_since += 1

    def snapshot(self, kb: MultimodalKB) -> EntityCache:
        """The KB encoded with weights at most ``refresh_every`` updates old."""
        kb_key = (id(kb), len(kb))
        if kb_key != self._kb_key:  # the duplicates depend on the KB only, not the weights
            self._duplicates = {r.kb_id: content_key(r) for r in kb.records()}
        if (
            self._snapshot is None
            or self._updates_since >= self.refresh_every
            or kb_key != self._kb_key
        ):
            self._snapshot = self.index.build(kb)
            self._kb_key = kb_key
            self._updates_since = 0
            self.refreshes += 1
        return self._snapshot

    def mine(
        self,
        kb: MultimodalKB,
        mentions: SideArrays,
        gold_ids: Sequence[str],
        queries_of: Callable[[SideArrays], numpy.ndarray],
    ) -> List[List[str]]:
        """KB IDs of the hard negatives of each mention, hardest first.

        mentions (SideArrays): The mentions' side features (current weights).
        gold_ids (Sequence[str]): Each mention's gold KB ID.
        queries_of (Callable[[SideArrays], numpy.ndarray]): The model's query
            retrieval vectors of a side.
        RETURNS (List[List[str]]): Up to ``n_negatives`` IDs per mention.
        """
        if not self.enabled:
            return [[] for _ in gold_ids]
        cache = self.snapshot(kb)
        # The gold's duplicates are found among the nearest too; ask for enough rows.
        nearest = cache.nearest(queries_of(mentions), self.n_negatives + 8)
        negatives = []
        for gold, rows in zip(gold_ids, nearest):
            gold_key = self._duplicates.get(gold)
            picked = [
                cache.kb_ids[row]
                for row in rows
                if cache.kb_ids[row] != gold and self._duplicates.get(cache.kb_ids[row]) != gold_key
            ]
            negatives.append(picked[: self.n_negatives])
        return negatives
