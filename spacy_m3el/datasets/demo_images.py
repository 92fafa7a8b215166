"""The drawn emblems of the demo entities: visual signatures and their images.

Each demo entity has a visual signature (a shape in one colour on a background
of another, the shape plain or filled with a pattern) that a tiny vision
transformer trained from scratch can learn. Entity images are clean or slightly
jittered drawings of it; mention images are noisy variants of the gold entity's
signature, in the hard demo with small emblems of other entities around it.
"""

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

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
# The shapes that are an object in the image (stripes span it): the hard demo's.
OBJECT_SHAPES = tuple(shape for shape in SHAPES if shape != "stripes")
# Fills of the shape: holes in the background colour, coarse enough (a period of
# about 8 pixels at 64x64) to survive the tiny CLIP's downscaling to 32x32.
PATTERNS = ("plain", "dotted", "hatched", "checkered", "ringed")
PATTERN_PERIOD = 1 / 8  # of the image side
# Clutter of the hard demo's mention images: this many small emblems of other
# entities, each a square tile of this share of the image side.
CLUTTER_COUNT = (2, 4)
CLUTTER_SCALE = (1 / 4, 1 / 3)


@dataclass(frozen=True)
class Signature:
    """The visual identity of an entity: a shape in one colour on another.

    background (str): Colour name of the background, a key of ``COLOURS``.
    foreground (str): Colour name of the shape.
    shape (str): One of ``SHAPES``.
    pattern (str): One of ``PATTERNS``; "plain" (a solid shape) draws as before patterns existed.
    """

    background: str
    foreground: str
    shape: str
    pattern: str = "plain"

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(
                f"Signature pattern must be one of {', '.join(PATTERNS)}, got {self.pattern!r}."
            )


def describe_signature(signature: Signature, *, with_pattern: bool = False) -> str:
    """Words for a signature, e.g. "an orange circle on blue" or "dotted red stripes on white".

    signature (Signature): What to describe.
    with_pattern (bool): Name the pattern even when it is "plain" ("a plain red
        circle on blue"); other patterns are always named.
    RETURNS (str): The words.
    """
    words = [signature.foreground]
    if with_pattern or signature.pattern != "plain":
        words.insert(0, signature.pattern)
    if signature.shape == "stripes":
        return f"{' '.join(words)} stripes on {signature.background}"
    article = "an" if words[0][0] in "aeiou" else "a"
    return f"{article} {' '.join(words)} {signature.shape} on {signature.background}"


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


def _draw_shape(draw, shape: str, cx: float, cy: float, r: float, size: int, fill) -> None:
    # ``draw`` is a PIL ImageDraw of the image (fill: a colour) or of a mask (fill: 255).
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "cross":
        w = r / 2.5
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    elif shape == "stripes":
        band = size / 8
        for top in numpy.arange(cy % (2 * band) - 2 * band, size, 2 * band):
            draw.rectangle([0, top, size, top + band], fill=fill)
    else:
        draw.polygon(_shape_polygon(shape, cx, cy, r), fill=fill)


def _draw_pattern_holes(draw, pattern: str, cx: float, cy: float, size: int) -> None:
    # Marks (fill 255) the pixels of the pattern's holes, on a grid anchored at the
    # shape's centre so that the pattern moves with the shape.
    period = max(2.0, size * PATTERN_PERIOD)
    steps = numpy.arange(-size, size + 1, period)
    if pattern == "dotted":
        dot = period / 4
        for x in cx + steps:
            for y in cy + steps:
                draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=255)
    elif pattern == "hatched":
        for offset in steps:
            start, end = (cx + offset - size, cy - size), (cx + offset + size, cy + size)
            draw.line([start, end], fill=255, width=max(1, round(period / 4)))
    elif pattern == "checkered":
        cell = period * 3 / 4
        for i, x in enumerate(cx + numpy.arange(-size, size + 1, cell)):
            for j, y in enumerate(cy + numpy.arange(-size, size + 1, cell)):
                if (i + j) % 2:
                    draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=255)
    elif pattern == "ringed":
        for radius in steps[steps > 0] - period / 2:
            box = [cx - radius, cy - radius, cx + radius, cy + radius]
            draw.ellipse(box, outline=255, width=max(1, round(period * 3 / 8)))


def _draw_patterned_shape(
    image, signature: Signature, background, foreground, cx: float, cy: float, r: float
) -> None:
    # The shape's area in the background colour (hiding any clutter beneath), then
    # the shape without the pattern's holes in the foreground colour.
    from PIL import Image, ImageChops, ImageDraw

    size = image.size[0]
    shape = Image.new("L", image.size, 0)
    _draw_shape(ImageDraw.Draw(shape), signature.shape, cx, cy, r, size, 255)
    holes = Image.new("L", image.size, 0)
    _draw_pattern_holes(ImageDraw.Draw(holes), signature.pattern, cx, cy, size)
    image.paste(background, (0, 0, *image.size), shape)
    image.paste(foreground, (0, 0, *image.size), ImageChops.subtract(shape, holes))


def _paste_clutter(
    image, clutter: Sequence[Signature], rng: numpy.random.Generator, colour_jitter: int
) -> None:
    # Small emblems of other signatures in distinct corners of the image; no clutter
    # draws no random numbers (the default demo's images stay as they were).
    if not clutter:
        return
    size = image.size[0]
    for corner, signature in zip(rng.permutation(4), clutter):
        side = int(round(size * rng.uniform(*CLUTTER_SCALE)))
        tile = draw_signature(signature, rng, size=side, colour_jitter=colour_jitter)
        margin = int(rng.integers(0, 3))
        x = margin if corner % 2 == 0 else size - side - margin
        y = margin if corner < 2 else size - side - margin
        image.paste(tile, (x, y))


def draw_signature(
    signature: Signature,
    rng: numpy.random.Generator,
    *,
    size: int = IMAGE_SIZE,
    colour_jitter: int = 0,
    position_jitter: float = 0.0,
    scale_range: Tuple[float, float] = (1.0, 1.0),
    noise: float = 0.0,
    clutter: Sequence[Signature] = (),
):
    """Draw a signature, optionally with jittered colours, position, size and pixel noise.

    signature (Signature): What to draw.
    rng (numpy.random.Generator): Source of the jitter.
    size (int): Side of the square image in pixels.
    colour_jitter (int): Maximum change per colour channel.
    position_jitter (float): Maximum shift of the shape, as a fraction of ``size``.
    scale_range (Tuple[float, float]): Range of the shape's size factor.
    noise (float): Standard deviation of the Gaussian pixel noise.
    clutter (Sequence[Signature]): Other signatures drawn small in the corners
        (at most 4), beneath the shape, which stays the biggest object.
    RETURNS (PIL.Image.Image): The RGB image.
    """
    from PIL import Image, ImageDraw

    if len(clutter) > 4:
        raise ValueError(
            f"clutter holds at most 4 signatures (one per corner), got {len(clutter)}."
        )
    background = _jitter_colour(COLOURS[signature.background], rng, colour_jitter)
    foreground = _jitter_colour(COLOURS[signature.foreground], rng, colour_jitter)
    image = Image.new("RGB", (size, size), background)
    shift = (
        rng.uniform(-position_jitter, position_jitter, size=2) * size
        if position_jitter
        else (0.0, 0.0)
    )
    cx, cy = size / 2 + shift[0], size / 2 + shift[1]
    r = size * 0.28 * rng.uniform(*scale_range)
    _paste_clutter(image, clutter, rng, colour_jitter)
    if signature.pattern == "plain" and not clutter:
        _draw_shape(ImageDraw.Draw(image), signature.shape, cx, cy, r, size, foreground)
    else:
        _draw_patterned_shape(image, signature, background, foreground, cx, cy, r)
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


def pick_clutter(
    signature: Signature, pool: Sequence[Signature], rng: numpy.random.Generator
) -> List[Signature]:
    """A few random signatures of the pool other than ``signature``, as clutter.

    signature (Signature): The gold signature, never picked.
    pool (Sequence[Signature]): The signatures to pick from (say all entities').
    rng (numpy.random.Generator): Chooses how many (``CLUTTER_COUNT``) and which.
    RETURNS (List[Signature]): The picks; none for an empty pool.
    """
    others = [other for other in pool if other != signature]
    if not others:
        return []
    n = int(rng.integers(CLUTTER_COUNT[0], CLUTTER_COUNT[1] + 1))
    return [others[i] for i in rng.choice(len(others), size=min(n, len(others)), replace=False)]


def mention_image(
    signature: Signature,
    rng: numpy.random.Generator,
    clutter_pool: Sequence[Signature] = (),
):
    """A noisy variant of the gold entity's signature, as a mention image.

    signature (Signature): The gold entity's signature.
    rng (numpy.random.Generator): Source of the noise and clutter.
    clutter_pool (Sequence[Signature]): Signatures (of other entities) to draw a
        few of small around the emblem; empty for none, as in the default demo.
    RETURNS (PIL.Image.Image): The RGB image.
    """
    clutter = pick_clutter(signature, clutter_pool, rng) if clutter_pool else []
    return draw_signature(
        signature,
        rng,
        colour_jitter=30,
        position_jitter=0.15,
        scale_range=(0.7, 1.2),
        noise=12.0,
        clutter=clutter,
    )
