"""The image store: a dataset's images decoded, resized and cropped once.

Training reads every mention image and entity image many times (once per epoch, and the
entity cache again at every evaluation), and decoding plus resizing costs more than the
tiny encoder's forward pass. The store keeps each image as the uint8 pixels its image
processor makes of it before rescaling (``[3, H, W]``), in one memory-mapped ``.npy``
file with an index; the encoder then only rescales and normalises (bitwise the numbers
of the processor's own call, see :mod:`spacy_m3el.ml.pixels`).

Layout of a store folder: ``pixels.npy`` (``[rows, 3, H, W]`` uint8) and ``index.json``
(format version, processor fingerprint, pixel shape, the row of each image, the size and
modification time of each image file, and the reason of each image that cannot be read).

Validity: a store built for other processor settings is rebuilt as a whole; an image
file whose size or modification time changed is decoded again at the next build and,
until then, never served from the store (the loader decodes it). Images are keyed by
their stored value: a path as written in the doc or KB, or the SHA-1 of encoded bytes.
Arrays are not stored (they are already decoded).
"""

import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy
from numpy.lib.format import open_memmap

from .images import ImageLoadError, load_image
from .ml.pixels import PreparedPixels, prepare_pixels, processor_fingerprint

logger = logging.getLogger("spacy_m3el")

STORE_VERSION = 1
PIXELS_FILE = "pixels.npy"
INDEX_FILE = "index.json"

Stamp = Optional[List[int]]


def image_key(value: object) -> Optional[str]:
    """The store key of a stored image value: the path, or ``sha1:<hex>`` of bytes."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "sha1:" + hashlib.sha1(bytes(value)).hexdigest()
    return None


def file_stamp(key: str) -> Stamp:
    """``[size, mtime_ns]`` of a path key (None for bytes keys and missing files)."""
    if key.startswith("sha1:"):
        return None
    try:
        stat = os.stat(key)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


class ImageStore:
    """Prepared pixels of a dataset's images, looked up by their stored value.

    Build (or bring up to date) with :meth:`build`, open with :meth:`open`. ``hits``,
    ``misses`` and ``stale`` count lookups.
    """

    def __init__(self, path: Path, index: dict, pixels: Optional[numpy.ndarray]):
        self.path = Path(path)
        self.fingerprint: str = index["fingerprint"]
        self.rows: Dict[str, int] = index["rows"]
        self.stamps: Dict[str, Stamp] = index["stamps"]
        self.failed: Dict[str, str] = index["failed"]
        self.pixels = pixels
        self.hits = self.misses = self.stale = 0

    def __len__(self) -> int:
        return len(self.rows) + len(self.failed)

    def __contains__(self, value: object) -> bool:
        key = image_key(value)
        return key in self.rows or key in self.failed

    @classmethod
    def open(cls, path: Union[str, Path]) -> "ImageStore":
        """Open a built store. RAISES (ValueError): if it is missing, damaged or of
        another format version (build it again with :meth:`build`)."""
        path = Path(path)
        try:
            index = json.loads((path / INDEX_FILE).read_text(encoding="utf8"))
            if index.get("version") != STORE_VERSION:
                raise ValueError(f"format version {index.get('version')}, not {STORE_VERSION}")
            pixels = None
            if index["rows"]:
                pixels = numpy.load(path / PIXELS_FILE, mmap_mode="r")
                too_short = len(pixels) <= max(index["rows"].values())
                if too_short or list(pixels.shape[1:]) != index["shape"]:
                    raise ValueError(f"{PIXELS_FILE} does not match {INDEX_FILE}")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"Cannot open the image store at {path}: {err}. Delete the folder to have "
                "it built again."
            ) from err
        return cls(path, index, pixels)

    def get(self, value: object) -> Optional[Tuple[Optional[PreparedPixels], Optional[str]]]:
        """``(pixels, None)``, ``(None, reason)`` for an image that cannot be read, or
        None when the store does not hold the current version of the image."""
        key = image_key(value)
        if key is None or (key not in self.rows and key not in self.failed):
            self.misses += 1
            return None
        if not self.is_current(key):
            self.stale += 1
            return None
        self.hits += 1
        if key in self.failed:
            return None, self.failed[key]
        return PreparedPixels(self.pixels[self.rows[key]]), None

    def is_current(self, key: str) -> bool:
        """Whether the store holds this key's current version."""
        known = key in self.rows or key in self.failed
        return known and (key.startswith("sha1:") or file_stamp(key) == self.stamps.get(key))

    @classmethod
    def build(
        cls,
        path: Union[str, Path],
        processor,
        values: Iterable[object],
        *,
        batch_size: int = 64,
        workers: Optional[int] = None,
    ) -> "ImageStore":
        """Open the store at ``path`` after making sure it holds the current version of
        every image in ``values`` for ``processor``: new and changed images are decoded
        and prepared, the others copied from the existing store (which is rewritten only
        if something changed). Paths and bytes are stored; None and arrays are skipped.

        processor: The encoder's Hugging Face image processor.
        values (Iterable[ImageValue]): The dataset's stored image values.
        workers (Optional[int]): Processes that decode and prepare (default: the CPU
            count, at most 4; 1 prepares in this process). The store is the same.
        RETURNS (ImageStore): The store, open.
        """
        path = Path(path)
        fingerprint = processor_fingerprint(processor)
        old = _open_if_usable(path, fingerprint)
        keyed = {}
        for value in values:
            key = image_key(value)
            if key is not None and key not in keyed:
                keyed[key] = value
        todo = [key for key in keyed if old is None or not old.is_current(key)]
        if old is not None and not todo:
            return old
        start = time.perf_counter()
        workers = min(4, os.cpu_count() or 1) if workers is None else workers
        _write(path, fingerprint, processor, keyed, old, batch_size, workers)
        logger.info(
            "Image store %s: %d images prepared, %d reused, in %.1f s",
            path,
            len(todo),
            len(keyed) - len(todo),
            time.perf_counter() - start,
        )
        return cls.open(path)


def _open_if_usable(path: Path, fingerprint: str) -> Optional[ImageStore]:
    if not (path / INDEX_FILE).exists():
        return None
    try:
        store = ImageStore.open(path)
    except ValueError as err:
        logger.warning("%s; building it again.", err)
        return None
    if store.fingerprint != fingerprint:
        logger.info("Image store %s was built for other processor settings; rebuilding.", path)
        return None
    return store


def _write(
    path: Path,
    fingerprint: str,
    processor,
    keyed: Dict[str, object],
    old: Optional[ImageStore],
    batch_size: int,
    workers: int,
) -> None:
    """Write the store for ``keyed`` into a fresh folder, then move it into place: the
    rows still current in ``old`` first, then the new images in order, decoded and
    prepared ``batch_size`` at a time by ``workers`` processes. Pixels go straight to
    the memory-mapped file, so memory stays at a few batches."""
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    index = {"version": STORE_VERSION, "fingerprint": fingerprint, "rows": {}, "stamps": {}}
    index["failed"], index["shape"] = {}, []
    out: List[numpy.ndarray] = []  # the memory map, once the pixel shape is known

    def put(key: str, pixels: numpy.ndarray) -> None:
        if not out:
            index["shape"] = list(pixels.shape)
            shape = (len(keyed),) + tuple(pixels.shape)
            out.append(open_memmap(tmp / PIXELS_FILE, mode="w+", dtype=numpy.uint8, shape=shape))
        elif list(pixels.shape) != index["shape"]:
            raise ValueError(
                f"The image processor gives pixels of several shapes ({index['shape']} and "
                f"{list(pixels.shape)}); an image store needs one size (CLIP processors crop)."
            )
        index["rows"][key] = row = len(index["rows"])
        out[0][row] = pixels

    todo = []
    for key, value in keyed.items():
        index["stamps"][key] = file_stamp(key)
        if old is None or not old.is_current(key):
            todo.append((key, value))
        elif key in old.failed:
            index["failed"][key] = old.failed[key]
        else:
            put(key, old.pixels[old.rows[key]])
    chunks = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    for results in _prepared_chunks(processor, chunks, workers):
        for key, pixels, error in results:
            if error is None:
                put(key, pixels)
            else:
                index["failed"][key] = error
    if out:
        out[0].flush()
        out.clear()
    (tmp / INDEX_FILE).write_text(json.dumps(index), encoding="utf8")
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


_PROCESSOR = None  # the image processor of a worker process


def _set_processor(processor) -> None:
    global _PROCESSOR
    _PROCESSOR = processor


def _prepare_chunk(chunk: List[Tuple[str, object]], processor=None) -> list:
    """``(key, pixels, None)`` or ``(key, None, reason)`` per image of a chunk, in order."""
    processor = processor if processor is not None else _PROCESSOR
    decoded, results = [], {}
    for key, value in chunk:
        try:
            decoded.append((key, load_image(value)))
        except ImageLoadError as err:
            results[key] = (key, None, str(err))
    prepared = prepare_pixels(processor, [image for _, image in decoded])
    results.update({key: (key, pixels, None) for (key, _), pixels in zip(decoded, prepared)})
    return [results[key] for key, _ in chunk]


def _prepared_chunks(processor, chunks: List[list], workers: int) -> Iterator[list]:
    """The chunks prepared in order: in this process, or by a pool of forked workers
    (which inherit the processor; on platforms without fork, in this process)."""
    if workers <= 1 or len(chunks) < 2 or "fork" not in mp.get_all_start_methods():
        yield from (_prepare_chunk(chunk, processor) for chunk in chunks)
        return
    # A fast tokenizer that already ran would warn in every forked worker; the workers
    # never tokenize, so say so instead (an explicit user setting wins).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    context = mp.get_context("fork")
    with context.Pool(min(workers, len(chunks)), _set_processor, (processor,)) as pool:
        yield from pool.imap(_prepare_chunk, chunks)
