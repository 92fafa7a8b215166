"""Image jitter of training inputs: zoom, shift and noise, deterministic with the seed."""

import numpy
import pytest

from spacy_m3el.ml.augment import ImageJitter, jitter_items

STD = [0.5, 0.25, 0.5]


def centred_square(size: int = 32, half: int = 4) -> numpy.ndarray:
    image = numpy.zeros((1, 3, size, size), dtype="float32")
    image[:, :, size // 2 - half : size // 2 + half, size // 2 - half : size // 2 + half] = 1.0
    return image


def extent(image: numpy.ndarray) -> tuple:
    ys, xs = numpy.nonzero(image[0, 0] > 0.5)
    return xs.min(), xs.max(), ys.min(), ys.max()


def test_no_zoom_shift_or_noise_leaves_the_pixels_as_they_are():
    pixels = numpy.random.default_rng(0).normal(size=(4, 3, 16, 16)).astype("float32")
    out = ImageJitter((1.0, 1.0), 0.0, 0.0)(pixels, STD)
    numpy.testing.assert_allclose(out, pixels, atol=1e-5)
    assert out.dtype == numpy.float32


def test_shift_moves_the_content_and_zoom_scales_it():
    numpy.random.seed(0)
    shifted = ImageJitter((1.0, 1.0), 0.25, 0.0)(centred_square(), STD)
    x0, x1, y0, y1 = extent(shifted)
    assert x1 - x0 == y1 - y0 == 7  # the square keeps its size ...
    assert (x0, y0) != (12, 12)  # ... somewhere else
    assert max(abs(x0 - 12), abs(y0 - 12)) <= 8  # at most a quarter of 32 pixels away
    zoomed = ImageJitter((2.0, 2.0), 0.0, 0.0)(centred_square(), STD)
    x0, x1, y0, y1 = extent(zoomed)
    assert (x1 - x0 + 1, y1 - y0 + 1) == (16, 16) and (x0, y0) == (8, 8)


def test_noise_is_drawn_in_intensity_units_per_channel():
    numpy.random.seed(0)
    flat = numpy.zeros((8, 3, 32, 32), dtype="float32")
    out = ImageJitter((1.0, 1.0), 0.0, 0.04)(flat, STD)
    measured = out.std(axis=(0, 2, 3))
    numpy.testing.assert_allclose(measured, [0.08, 0.16, 0.08], rtol=0.05)


def test_jitter_is_deterministic_with_numpy_seed():
    pixels = numpy.random.default_rng(1).normal(size=(3, 3, 16, 16)).astype("float32")
    jitter = ImageJitter()
    numpy.random.seed(7)
    first = jitter(pixels, STD)
    numpy.random.seed(7)
    numpy.testing.assert_array_equal(jitter(pixels, STD), first)
    assert not numpy.allclose(jitter(pixels, STD), first)  # the next draw differs


def test_jitter_items_changes_only_the_named_items_with_images():
    pixels = numpy.ones((3, 3, 8, 8), dtype="float32")
    features = {"pixel_values": pixels.copy(), "has_image": numpy.array([1, 0, 1, 1], bool)}
    jitter_items(features, [1, 2], ImageJitter((1.0, 1.0), 0.0, 0.1), STD)
    changed = [not numpy.array_equal(row, pixels[0]) for row in features["pixel_values"]]
    assert changed == [False, True, False]  # item 2 is pixel row 1; item 1 has no image


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"scale_range": (0.0, 1.0)}, "scale_range"),
        ({"scale_range": (1.2, 0.8)}, "scale_range"),
        ({"max_shift": 1.0}, "max_shift"),
        ({"noise": -0.1}, "noise"),
    ],
)
def test_bad_settings_say_which(settings, message):
    with pytest.raises(ValueError, match=message):
        ImageJitter(**settings)


def test_registered_jitter_is_built_from_config_values():
    from spacy.util import registry

    build = registry.misc.get("spacy_m3el.ImageJitter.v1")
    assert build([0.9, 1.1], 0.05, 0.02) == ImageJitter((0.9, 1.1), 0.05, 0.02)
    with pytest.raises(ValueError, match=r"\[low, high\]"):
        build([1.0], 0.1, 0.0)
