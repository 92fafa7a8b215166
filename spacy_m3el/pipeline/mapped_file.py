"""Memory-mapped safetensors files: arrays that share the page cache across processes.

``safetensors``' own loaders copy each tensor into process memory. An entity
cache read that way costs every worker process its full size; mapped, the
workers of one machine share the same physical pages (the page cache), and
only the pages a worker touches are read at all. The arrays are read-only.

A mapped file must never be rewritten in place (a process reading it would
crash with SIGBUS): :func:`save_atomically` writes a new file and renames it
over the old one, which leaves existing mappings on the old contents.
"""

import json
import mmap
import os
import struct
import uuid
from pathlib import Path
from typing import Callable, Dict, Tuple, Union

import numpy

DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def map_safetensors(
    path: Union[str, Path],
) -> Tuple[Dict[str, str], Dict[str, numpy.ndarray]]:
    """The metadata and the read-only, memory-mapped arrays of a safetensors file.

    RAISES (ValueError): The file is not a safetensors file, or holds a dtype
        numpy cannot map.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < 8:
            raise ValueError("file too short for a safetensors header")
        (header_size,) = struct.unpack("<Q", handle.read(8))
        if header_size > size - 8:
            raise ValueError("safetensors header length exceeds the file")
        header = json.loads(handle.read(header_size))
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    metadata = header.pop("__metadata__", {}) or {}
    data_start = 8 + header_size
    arrays: Dict[str, numpy.ndarray] = {}
    for name, info in header.items():
        dtype = DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"tensor {name!r} has dtype {info['dtype']}, which cannot be mapped")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        count = int(numpy.prod(shape, dtype="int64")) if shape else 1
        if data_start + end > size or end - begin != count * numpy.dtype(dtype).itemsize:
            raise ValueError(f"tensor {name!r} lies outside the file or has a wrong size")
        array = numpy.frombuffer(mapped, dtype=dtype, count=count, offset=data_start + begin)
        arrays[name] = array.reshape(shape)
    return metadata, arrays


def save_atomically(path: Union[str, Path], write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary file beside ``path`` (``.<name>.<random>.tmp``), flush
    it to disk, then rename it to ``path``: readers see the old file or the whole new one,
    also after a power cut."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    finally:
        if tmp.exists():
            tmp.unlink()
