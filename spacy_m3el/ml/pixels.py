"""An image processor's work split in two: the slow geometric part (resize and crop, done
once per image by the image store) and the cheap arithmetic part (rescale and normalise,
done per batch), with the same numbers as the processor's single call."""

import hashlib
import json
from typing import Dict, List, Sequence

import numpy

# The processor settings that decide the pixels an image becomes.
PIXEL_SETTINGS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)


class PreparedPixels:
    """An image already resized and cropped by a processor: uint8 ``[3, H, W]``.

    The image loader returns these for images found in an image store; the encoder's
    ``featurize`` then only rescales and normalises them.
    """

    __slots__ = ("array",)

    def __init__(self, array: numpy.ndarray):
        self.array = array

    @property
    def shape(self) -> tuple:
        return self.array.shape


def processor_fingerprint(processor) -> str:
    """A digest of the processor settings that decide the pixels (type and values)."""
    settings: Dict[str, object] = {"type": type(processor).__name__}
    for name in PIXEL_SETTINGS:
        value = getattr(processor, name, None)
        settings[name] = value.tolist() if isinstance(value, numpy.ndarray) else value
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf8")).hexdigest()[:16]


def prepare_pixels(processor, images: Sequence[object]) -> List[numpy.ndarray]:
    """Resize and crop RGB PIL images as ``processor`` does: uint8 ``[3, H, W]`` each.

    RAISES (ValueError): If the processor does not give uint8 pixels at this point (its
        resizing is then not separable from its arithmetic, and a store cannot be used).
    """
    if not images:
        return []
    pixels = processor(
        images=list(images), do_rescale=False, do_normalize=False, return_tensors="np"
    )["pixel_values"]
    if pixels.dtype != numpy.uint8:
        raise ValueError(
            f"{type(processor).__name__} gives {pixels.dtype} pixels before rescaling; an "
            "image store needs uint8 pixels after resizing and cropping."
        )
    return list(pixels)


def finish_pixels(processor, prepared: Sequence[numpy.ndarray]) -> numpy.ndarray:
    """Rescale and normalise prepared uint8 ``[3, H, W]`` images as the processor does:
    the float32 ``[n, 3, H, W]`` batch its single call would return."""
    batch = numpy.stack([numpy.asarray(p) for p in prepared])
    if getattr(processor, "do_rescale", True):
        # As transformers' rescale: in float64, then cast.
        batch = (batch.astype(numpy.float64) * processor.rescale_factor).astype(numpy.float32)
    else:
        batch = batch.astype(numpy.float32)
    if getattr(processor, "do_normalize", True):
        mean = numpy.asarray(processor.image_mean, dtype=numpy.float32)[:, None, None]
        std = numpy.asarray(processor.image_std, dtype=numpy.float32)[:, None, None]
        batch = (batch - mean) / std
    return batch.astype(numpy.float32, copy=False)
