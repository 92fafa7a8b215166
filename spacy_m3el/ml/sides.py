"""Side features: what the network computes for a batch of mentions or entities.

A side is a flat dict of arrays with one row per item. Its keys and shapes
are the network's business (:class:`~spacy_m3el.ml.network.M3ELNet`); code
outside ``ml/`` only stores, pads and slices sides, by dtype and shape:
2-dimensional boolean arrays are right-padded token masks, 1-dimensional
boolean arrays are per-item flags, float arrays are features.
"""

from typing import Dict, Sequence

import numpy

SideArrays = Dict[str, numpy.ndarray]


def is_mask(array: numpy.ndarray) -> bool:
    """Whether a side array is a token mask ([n, L] booleans, True = real token)."""
    return array.dtype == bool and array.ndim == 2


def pad_axis1(array: numpy.ndarray, length: int) -> numpy.ndarray:
    """Right-pad the token axis (axis 1) of an array with zeros (False for masks)."""
    extra = length - array.shape[1]
    if extra == 0:
        return array
    widths = [(0, 0)] * array.ndim
    widths[1] = (0, extra)
    return numpy.pad(array, widths)


def concat_sides(parts: Sequence[SideArrays]) -> SideArrays:
    """Concatenate sides of several batches along the item axis.

    Token arrays of different lengths (texts are padded per batch) are padded
    with zeros, which their boolean masks read as padding.

    parts (Sequence[SideArrays]): Sides with the same keys.
    RETURNS (SideArrays): One side with the items of all parts, in order.
    """
    if len(parts) == 1:
        return dict(parts[0])
    merged: SideArrays = {}
    for key in parts[0]:
        arrays = [part[key] for part in parts]
        if arrays[0].ndim >= 2:
            length = max(a.shape[1] for a in arrays)
            arrays = [pad_axis1(a, length) for a in arrays]
        merged[key] = numpy.concatenate(arrays)
    return merged
