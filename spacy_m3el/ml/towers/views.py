"""Stored jittered views: how a jittered image is served by a frozen vision tower.

A jittered image would be a new input at every step, so each image has ``n_views``
views, each jittered with a seed of its own (the image's pixels and the view number);
a jittered item gets one of them at random from numpy's global generator, so training
stays deterministic. View 0 is the image itself.
"""

from typing import List, Optional, Sequence, Tuple

import numpy

from ..augment import ImageJitter, JitterGroups
from .store import content_key

ImageView = Tuple[Optional[ImageJitter], int]


def choose_views(
    has_image: numpy.ndarray, jitter: Optional[JitterGroups], n_views: int
) -> List[ImageView]:
    """Per image row: the jitter and view number it gets ((None, 0): the image itself),
    drawn in the groups' order."""
    row_of = numpy.cumsum(has_image) - 1
    views: List[ImageView] = [(None, 0)] * int(has_image.sum())
    for items, jit in jitter or ():
        for i in items:
            if has_image[i]:
                views[int(row_of[i])] = (jit, 1 + int(numpy.random.randint(n_views)))
    return views


def every_view(n_images: int, jitter: ImageJitter, n_views: int) -> List[ImageView]:
    """The views of a store build: each image itself, then its ``n_views`` jittered views
    (images repeated in that order)."""
    return [(None, 0)] * n_images + [
        (jitter, view) for view in range(1, n_views + 1) for _ in range(n_images)
    ]


def view_key(prepared: numpy.ndarray, view: ImageView) -> str:
    """The feature store key of a prepared image in a view."""
    jitter, number = view
    tag = "" if jitter is None else f"{jitter!r}#{number}"
    return content_key("image", prepared.tobytes(), repr(prepared.shape), tag)


def jitter_views(
    pixels: numpy.ndarray,
    prepared: Sequence[numpy.ndarray],
    views: Sequence[ImageView],
    pixel_std: Sequence[float],
) -> numpy.ndarray:
    """``pixels`` (the finished ``prepared`` images, one row each) with each row in its
    view, jittered with the view's own seed."""
    for row, (image, (jitter, number)) in enumerate(zip(prepared, views)):
        if jitter is not None:
            seed = int(content_key(image.tobytes(), str(number))[:8], 16)
            rng = numpy.random.RandomState(seed)
            pixels[row : row + 1] = jitter(pixels[row : row + 1], pixel_std, rng)
    return pixels
