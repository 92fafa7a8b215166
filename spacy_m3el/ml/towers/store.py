"""The feature store: a frozen tower's outputs, computed once per input and kept.

A frozen tower (or the frozen part of one) is a fixed function of its input, so its
output for a text or an image never changes: it is computed once, stored as float16,
and training, the entity cache and evaluation read it back. Items are keyed by their
content (a text's characters, an image's prepared pixels and its view) and the store
by the tower's fingerprint (its frozen weights, preprocessing and split), so a changed
input gets a new key and a changed tower a new store.

On disk (``FeatureStore(path=...)``) a store is a folder per tower fingerprint:
``index.json`` (key -> shard, offset, length) and ``shard-NNNNN.npy`` files of
concatenated float16 values, memory-mapped when read. New items are written as a new
shard, atomically, when :meth:`FeatureStore.flush` runs (every ``flush_every`` new
items and at :meth:`save`). Without a path the store is an in-memory cache of the
``max_memory_items`` most recent items.
"""

import hashlib
import json
import os
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy

STORE_FORMAT = 1
INDEX_FILE = "index.json"
DTYPE = numpy.float16


def content_key(*parts: Union[str, bytes]) -> str:
    """A key from an item's content: a SHA-1 of its parts (text as UTF-8)."""
    digest = hashlib.sha1()
    for part in parts:
        data = part.encode("utf8") if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


class FeatureStore:
    """Flat float16 vectors by content key, for one tower fingerprint.

    fingerprint (str): The tower's fingerprint; a folder of another one is replaced.
    path (Optional[Path]): The store's root folder (the tower's folder is made under it);
        None keeps items in memory only.
    max_memory_items (int): Without a path, how many items the cache keeps (most recent).
    flush_every (int): With a path, new items written to disk once this many are pending.
    """

    def __init__(
        self,
        fingerprint: str,
        path: Optional[Union[str, Path]] = None,
        *,
        max_memory_items: int = 50_000,
        flush_every: int = 4096,
    ):
        self.fingerprint = fingerprint
        self.root = None if path is None else Path(path)
        self.max_memory_items = max_memory_items
        self.flush_every = flush_every
        self._pending: "OrderedDict[str, numpy.ndarray]" = OrderedDict()
        self._index: Dict[str, Tuple[int, int, int]] = {}
        self._shards: List[numpy.ndarray] = []
        if self.root is not None:
            self._open()

    @property
    def folder(self) -> Optional[Path]:
        """The folder of this fingerprint's items (None in memory)."""
        return None if self.root is None else self.root / self.fingerprint

    def __len__(self) -> int:
        return len(self._index) + len(self._pending)

    def __contains__(self, key: str) -> bool:
        return key in self._pending or key in self._index

    @property
    def nbytes(self) -> int:
        """Bytes of the stored values (on disk and pending)."""
        stored = sum(shard.nbytes for shard in self._shards)
        return stored + sum(item.nbytes for item in self._pending.values())

    def get(self, keys: Sequence[str]) -> List[Optional[numpy.ndarray]]:
        """The stored float16 vector of each key (read-only views on disk), or None."""
        found: List[Optional[numpy.ndarray]] = []
        for key in keys:
            item = self._pending.get(key)
            if item is not None:
                if self.root is None:
                    self._pending.move_to_end(key)
            elif key in self._index:
                shard, start, stop = self._index[key]
                item = self._shards[shard][start:stop]
            found.append(item)
        return found

    def put(self, keys: Sequence[str], values: Sequence[numpy.ndarray]) -> None:
        """Add items (flattened and rounded to float16); keys already stored are kept."""
        for key, value in zip(keys, values):
            if key in self:
                continue
            self._pending[key] = numpy.ascontiguousarray(value, dtype=DTYPE).reshape(-1)
        if self.root is None:
            while len(self._pending) > self.max_memory_items:
                self._pending.popitem(last=False)
        elif len(self._pending) >= self.flush_every:
            self.flush()

    def rows(
        self, keys: Sequence[str], compute: Callable[[List[int]], Sequence], batch: int = 32
    ) -> List[numpy.ndarray]:
        """The stored row of each key; the missing ones computed ``batch`` at a time by
        ``compute(indices)`` (one key each, a repeated key once), rounded to float16 like
        the stored ones, and stored."""
        rows = self.get(keys)
        waiting: Dict[str, List[int]] = {}
        for i, (key, row) in enumerate(zip(keys, rows)):
            if row is None:
                waiting.setdefault(key, []).append(i)
        missing = [indices[0] for indices in waiting.values()]
        for start in range(0, len(missing), batch):
            part = missing[start : start + batch]
            computed = [numpy.asarray(row, dtype=DTYPE) for row in compute(part)]
            self.put([keys[i] for i in part], computed)
            for i, row in zip(part, computed):
                for j in waiting[keys[i]]:
                    rows[j] = row
        return rows

    def flush(self) -> None:
        """Write the pending items as a new shard and the index, atomically (a no-op in
        memory or with nothing pending)."""
        if self.root is None or not self._pending:
            return
        folder = self.folder
        number = len(self._shards)
        values = numpy.concatenate(list(self._pending.values()))
        shard_path = folder / f"shard-{number:05d}.npy"
        _write_atomically(shard_path, lambda f: numpy.save(f, values))
        offset = 0
        index = dict(self._index)
        for key, item in self._pending.items():
            index[key] = (number, offset, offset + item.size)
            offset += item.size
        meta = {"format": STORE_FORMAT, "fingerprint": self.fingerprint, "shards": number + 1}
        text = json.dumps({"meta": meta, "items": index})
        _write_atomically(folder / INDEX_FILE, lambda f: f.write(text.encode("utf8")))
        self._index = index
        self._shards.append(numpy.load(shard_path, mmap_mode="r"))
        self._pending.clear()

    save = flush

    def _open(self) -> None:
        """Read this fingerprint's folder; remove the folders of other fingerprints."""
        self.root.mkdir(parents=True, exist_ok=True)
        for other in self.root.iterdir():
            if other.is_dir() and other.name != self.fingerprint and (other / INDEX_FILE).exists():
                shutil.rmtree(other)
        folder = self.folder
        folder.mkdir(exist_ok=True)
        index_path = folder / INDEX_FILE
        if not index_path.exists():
            return
        try:
            data = json.loads(index_path.read_text("utf8"))
            meta = data["meta"]
            if meta["format"] != STORE_FORMAT or meta["fingerprint"] != self.fingerprint:
                raise ValueError("another format or tower")
            shards = [
                numpy.load(folder / f"shard-{n:05d}.npy", mmap_mode="r")
                for n in range(meta["shards"])
            ]
            index = {key: tuple(entry) for key, entry in data["items"].items()}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"The feature store in {folder} cannot be read ({err}). Delete that folder; "
                "it is rebuilt at the next initialize."
            ) from err
        self._shards, self._index = shards, index


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as file:
        write(file)
    os.replace(tmp, path)
