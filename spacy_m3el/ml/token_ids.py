"""Token IDs of texts, padded into a batch, with each text's IDs kept (the KB entities
that training meets again and again are tokenized once)."""

from typing import Dict, Sequence, Tuple

import numpy

TOKEN_CACHE_SIZE = 200_000


class TokenIds:
    """A tokenizer's padded IDs and attention mask, as its padded call gives them.

    max_size (int): How many texts' IDs are kept (the cache is cleared when full).
    """

    def __init__(self, max_size: int = TOKEN_CACHE_SIZE):
        self.max_size = max_size
        self._ids: Dict[str, Tuple[int, ...]] = {}

    def clear(self) -> None:
        self._ids = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self):
        """The texts whose IDs are kept."""
        return iter(self._ids)

    def __call__(
        self, tokenizer, texts: Sequence[str], max_length: int
    ) -> Tuple[numpy.ndarray, numpy.ndarray]:
        """int64 ``[n, L]`` IDs and mask, padded to the longest text, truncated to
        ``max_length`` (on the tokenizer's padding side)."""
        cache = self._ids
        missing = list(dict.fromkeys(text for text in texts if text not in cache))
        if missing:
            if len(cache) + len(missing) > self.max_size:
                cache.clear()
            encoded = tokenizer(missing, truncation=True, max_length=max_length)
            cache.update(zip(missing, map(tuple, encoded["input_ids"])))
        ids = [cache[text] for text in texts]
        length = max((len(i) for i in ids), default=0)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = numpy.full((len(ids), length), pad, dtype="int64")
        attention_mask = numpy.zeros((len(ids), length), dtype="int64")
        left = tokenizer.padding_side == "left"
        for row, item in enumerate(ids):
            span = slice(length - len(item), length) if left else slice(0, len(item))
            input_ids[row, span] = item
            attention_mask[row, span] = 1
        return input_ids, attention_mask
