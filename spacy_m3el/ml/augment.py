"""Random jitter of image inputs, for training only.

A KB entity used as a mention of itself (``n_kb_mentions``) would otherwise show
the model the very pixels it is matched against, so it learns to recognise an
identical file instead of another photo of the entity: framed differently, of
another size, noisier. :class:`ImageJitter` zooms, shifts and adds noise to the
encoder's input pixels, whatever the image's source (a decoded file or the image
store's prepared pixels).
"""

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple

import numpy
import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class ImageJitter:
    """Zoom, shift and pixel noise, drawn per image from numpy's global generator
    (which spaCy seeds, so training stays deterministic).

    scale_range (Tuple[float, float]): Range of the zoom factor (above 1 enlarges).
    max_shift (float): Largest shift of the content, as a share of the image side.
    noise (float): Standard deviation of Gaussian pixel noise, as a share of the
        intensity range (0.04 is about 10 of 255).
    """

    scale_range: Tuple[float, float] = (0.8, 1.2)
    max_shift: float = 0.1
    noise: float = 0.04

    def __post_init__(self) -> None:
        scale = tuple(float(value) for value in self.scale_range)
        if len(scale) != 2:
            raise ValueError(f"ImageJitter scale_range must be [low, high], got {list(scale)}.")
        object.__setattr__(self, "scale_range", scale)  # a config's list, as a tuple
        low, high = scale
        if not 0.0 < low <= high:
            raise ValueError(
                f"ImageJitter scale_range must be two zoom factors 0 < low <= high, "
                f"got {list(self.scale_range)}."
            )
        if not 0.0 <= self.max_shift < 1.0:
            raise ValueError(f"ImageJitter max_shift must be in [0, 1), got {self.max_shift}.")
        if self.noise < 0.0:
            raise ValueError(f"ImageJitter noise must be at least 0, got {self.noise}.")

    def __call__(
        self,
        pixels: numpy.ndarray,
        pixel_std: Sequence[float],
        rng: Optional[numpy.random.RandomState] = None,
    ) -> numpy.ndarray:
        """Jittered copies of normalised images.

        pixels (numpy.ndarray[n, C, H, W]): The encoder's float32 input pixels.
        pixel_std (Sequence[float]): The image processor's per-channel standard
            deviation (the noise is drawn in intensity units, then normalised).
        rng (Optional[numpy.random.RandomState]): Draw from this generator (a stored
            view's own seed) instead of numpy's global one.
        RETURNS (numpy.ndarray[n, C, H, W]): float32; areas shifted into view repeat
            the border pixels.
        """
        n = len(pixels)
        if n == 0:
            return pixels
        rng = numpy.random if rng is None else rng
        scale = rng.uniform(*self.scale_range, size=n)
        shift = rng.uniform(-self.max_shift, self.max_shift, size=(n, 2))
        noise = rng.standard_normal(pixels.shape).astype("float32")
        std = numpy.asarray(pixel_std, dtype="float32").reshape(1, -1, 1, 1)
        # affine_grid maps output to input coordinates in [-1, 1] (a side is 2 long):
        # content at the input's centre appears at 2 * shift, zoomed by scale.
        theta = numpy.zeros((n, 2, 3), dtype="float32")
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
        theta[:, :, 2] = -2.0 * shift / scale[:, None]
        inputs = torch.from_numpy(numpy.ascontiguousarray(pixels, dtype="float32"))
        grid = F.affine_grid(torch.from_numpy(theta), list(inputs.shape), align_corners=False)
        moved = F.grid_sample(
            inputs, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        return moved.numpy() + noise * (self.noise / std)


def jitter_items(
    features: dict, items: Sequence[int], jitter: ImageJitter, pixel_std: Sequence[float]
) -> None:
    """Jitter, in place, the pixels of some items of a featurized batch.

    features (dict): ``pixel_values`` (one row per item with an image) and ``has_image``.
    items (Sequence[int]): Indices of batch items; those without an image are skipped.
    """
    has_image = numpy.asarray(features["has_image"], dtype=bool)
    pixel_row = numpy.cumsum(has_image) - 1
    rows = [int(pixel_row[i]) for i in items if has_image[i]]
    if rows:
        pixels = features["pixel_values"]
        pixels[rows] = jitter(pixels[rows], pixel_std)


JitterGroups = Iterable[Tuple[Sequence[int], ImageJitter]]


def jitter_groups(
    features: dict,
    groups: JitterGroups,
    pixel_std: Sequence[float],
) -> None:
    """Jitter, in place, each group of items of a featurized batch with its own jitter,
    in order (so the draws, and training, stay deterministic)."""
    for items, jitter in groups:
        jitter_items(features, items, jitter, pixel_std)
