"""The drawn emblems of the demo entities: visual signatures and their images.

Each demo entity has a visual signature (a shape in one colour on a background
of another) that a tiny vision transformer trained from scratch can learn.
Entity images are clean or slightly jittered drawings of it; mention images are
noisy variants of the gold entity's signature.
"""

from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy

IMAGE_SIZE = 64

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 75, 215),
    "yellow": (235, 210, 40),
    "purple": (135, 45, 170),
    "orange": (240, 130, 30),
    "cyan": (40, 200, 210),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle", "stripes", "cross", "diamond")


@dataclass(frozen=True)
class Signature:
    """The visual identity of an entity: a shape in one colour on another."""

    background: str
    foreground: str
    shape: str


def describe_signature(signature: Signature) -> str:
    """Words for a signature, e.g. "an orange circle on blue" or "red stripes on white"."""
    if signature.shape == "stripes":
        shape = f"{signature.foreground} stripes"
    else:
        article = "an" if signature.foreground[0] in "aeiou" else "a"
        shape = f"{article} {signature.foreground} {signature.shape}"
    return f"{shape} on {signature.background}"


def _jitter_colour(
    colour: Tuple[int, int, int], rng: numpy.random.Generator, amount: int
) -> Tuple[int, ...]:
    if amount == 0:
        return colour
    return tuple(int(numpy.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> List[Tuple[float, float]]:
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    raise ValueError(f"not a polygon shape: {shape}")


def draw_signature(
    signature: Signature,
    rng: numpy.random.Generator,
    *,
    size: int = IMAGE_SIZE,
    colour_jitter: int = 0,
    position_jitter: float = 0.0,
    scale_range: Tuple[float, float] = (1.0, 1.0),
    noise: float = 0.0,
):
    """Draw a signature, optionally with jittered colours, position, size and pixel noise.

    signature (Signature): What to draw.
    rng (numpy.random.Generator): Source of the jitter.
    size (int): Side of the square image in pixels.
    colour_jitter (int): Maximum change per colour channel.
    position_jitter (float): Maximum shift of the shape, as a fraction of ``size``.
    scale_range (Tuple[float, float]): Range of the shape's size factor.
    noise (float): Standard deviation of the Gaussian pixel noise.
    RETURNS (PIL.Image.Image): The RGB image.
    """
    from PIL import Image, ImageDraw

    background = _jitter_colour(COLOURS[signature.background], rng, colour_jitter)
    foreground = _jitter_colour(COLOURS[signature.foreground], rng, colour_jitter)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    shift = (
        rng.uniform(-position_jitter, position_jitter, size=2) * size
        if position_jitter
        else (0.0, 0.0)
    )
    cx, cy = size / 2 + shift[0], size / 2 + shift[1]
    r = size * 0.28 * rng.uniform(*scale_range)
    if signature.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=foreground)
    elif signature.shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=foreground)
    elif signature.shape == "cross":
        w = r / 2.5
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=foreground)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=foreground)
    elif signature.shape == "stripes":
        band = size / 8
        for top in numpy.arange(cy % (2 * band) - 2 * band, size, 2 * band):
            draw.rectangle([0, top, size, top + band], fill=foreground)
    else:
        draw.polygon(_shape_polygon(signature.shape, cx, cy, r), fill=foreground)
    if noise:
        pixels = numpy.asarray(image, dtype=numpy.float32) + rng.normal(0, noise, (size, size, 3))
        image = Image.fromarray(pixels.clip(0, 255).astype(numpy.uint8), "RGB")
    return image


def entity_image(signature: Signature, rng: numpy.random.Generator, variant: int):
    """A clean entity image; later variants are slightly jittered."""
    if variant == 0:
        return draw_signature(signature, rng)
    return draw_signature(
        signature, rng, colour_jitter=10, position_jitter=0.05, scale_range=(0.9, 1.1)
    )


def mention_image(signature: Signature, rng: numpy.random.Generator):
    """A noisy variant of the gold entity's signature, as a mention image."""
    return draw_signature(
        signature, rng, colour_jitter=30, position_jitter=0.15, scale_range=(0.7, 1.2), noise=12.0
    )
