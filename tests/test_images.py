"""spacy_m3el.images: accepted values, rejections, decoding every mode, failures, round trips."""

import io
import struct
import zlib
from pathlib import Path

import numpy
import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageFile
from spacy.tokens import Doc, DocBin

from spacy_m3el.images import (
    DEFAULT_IMAGE_ATTR,
    STATUS_ATTR,
    ImageLoadError,
    copy_image,
    describe_doc,
    get_image,
    install_image_extension,
    load_image,
    normalize_image_value,
    set_image,
)

install_image_extension()
NLP = spacy.blank("en")
TEXT = "A photo of the Eiffel Tower at night"
FAST = settings(max_examples=50, deadline=None)


# ---------------------------------------------------------------- helpers


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def gradient(width: int = 12, height: int = 8) -> numpy.ndarray:
    """An HxWx3 uint8 image whose pixels all differ, so rotations are visible."""
    y, x = numpy.mgrid[0:height, 0:width]
    return numpy.stack([x * 20, y * 30, (x + y) * 10], axis=-1).astype(numpy.uint8)


def halves(width: int = 40, height: int = 20) -> numpy.ndarray:
    """Left half red, right half blue, top rows green: survives JPEG, shows orientation."""
    array = numpy.zeros((height, width, 3), dtype=numpy.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    array[: height // 4] = (0, 255, 0)
    return array


def as_bytes_or_path(data: bytes, as_path: bool, path: Path):
    """The encoded image itself, or the path of a file holding it."""
    if not as_path:
        return data
    path.write_bytes(data)
    return str(path)


def pixels(image: Image.Image) -> numpy.ndarray:
    assert image.mode == "RGB"
    return numpy.asarray(image).astype(int)


def make_doc(text: str = TEXT) -> Doc:
    return NLP(text)


def png_with_declared_size(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` but holds almost nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def jpeg_with_orientation(array: numpy.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(array), "JPEG", exif=exif.tobytes(), quality=95)


def decoded_then_transposed(data: bytes, transpose) -> numpy.ndarray:
    """What an EXIF-aware decoder must return: the raw decode, rotated."""
    with Image.open(io.BytesIO(data)) as raw:
        return numpy.asarray(raw.convert("RGB").transpose(transpose))


@pytest.fixture
def png(tmp_path) -> Path:
    path = tmp_path / "gradient.png"
    path.write_bytes(encode(Image.fromarray(gradient()), "PNG"))
    return path


# ---------------------------------------------------------------- accepted values


@pytest.mark.parametrize(
    "kind,stored_type",
    [
        ("str", str),
        ("path", str),
        ("bytes", bytes),
        ("bytearray", bytes),
        ("memoryview", bytes),
        ("pil", numpy.ndarray),
        ("array_hxwx3", numpy.ndarray),
        ("array_hxw", numpy.ndarray),
        ("array_hxwx1", numpy.ndarray),
    ],
)
def test_accepted_values_are_stored_and_load(kind, stored_type, png):
    data = png.read_bytes()
    value = {
        "str": str(png),
        "path": png,
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "pil": Image.fromarray(gradient()),
        "array_hxwx3": gradient(),
        "array_hxw": gradient()[:, :, 0],
        "array_hxwx1": gradient()[:, :, :1],
    }[kind]
    doc = make_doc()
    doc._.image = value
    stored = doc._.image
    assert type(stored) is stored_type
    assert get_image(doc) is stored
    if kind in ("str", "path"):
        assert stored == str(png)
    elif stored_type is bytes:
        assert stored == data
    image = load_image(stored)
    assert image.mode == "RGB" and image.size == (12, 8)
    if kind in ("array_hxw", "array_hxwx1"):
        assert stored.shape == (8, 12)
        expected = numpy.repeat(gradient()[:, :, :1], 3, axis=2)
    else:
        expected = gradient()
    numpy.testing.assert_array_equal(numpy.asarray(image), expected)
    doc._.image = None
    assert doc._.image is None and get_image(doc) is None
    assert ("._.", DEFAULT_IMAGE_ATTR, None, None) not in doc.user_data


def test_none_on_a_doc_without_image_is_a_no_op():
    doc = make_doc()
    doc._.image = None
    assert doc._.image is None and doc.user_data == {}


def test_set_image_function_matches_extension():
    doc = make_doc()
    set_image(doc, gradient())
    numpy.testing.assert_array_equal(doc._.image, gradient())
    set_image(doc, None)
    assert doc._.image is None


def test_stored_array_is_a_read_only_copy():
    array = gradient()
    doc = make_doc()
    doc._.image = array
    array[:] = 0  # the caller reuses its buffer
    numpy.testing.assert_array_equal(doc._.image, gradient())
    assert not doc._.image.flags.writeable
    with pytest.raises(ValueError):
        doc._.image[0, 0, 0] = 1


def test_non_contiguous_array_is_stored_contiguous():
    array = gradient(16, 16)[::2, ::-1]
    doc = make_doc()
    doc._.image = array
    assert doc._.image.flags.c_contiguous
    numpy.testing.assert_array_equal(doc._.image, array)


def test_pil_image_with_exif_orientation_is_stored_upright():
    data = jpeg_with_orientation(halves(), 6)
    doc = make_doc()
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (40, 20)  # as encoded, before orientation
        doc._.image = image
    stored = doc._.image
    assert stored.shape == (40, 20, 3)
    numpy.testing.assert_array_equal(
        stored, decoded_then_transposed(data, Image.Transpose.ROTATE_270)
    )
    # Roughly the source too: green band (the top) now on the right, red on top.
    assert (stored[:, -2, 1] > 200).all() and (stored[:5, :10, 0] > 200).all()


def test_rgba_pil_image_is_stored_as_rgb_on_white():
    rgba = numpy.zeros((4, 6, 4), dtype=numpy.uint8)
    rgba[..., 0] = 200  # red everywhere ...
    rgba[:, :3, 3] = 255  # ... opaque on the left, transparent on the right
    doc = make_doc()
    doc._.image = Image.fromarray(rgba, "RGBA")
    stored = doc._.image
    assert stored.shape == (4, 6, 3)
    assert (stored[:, :3] == (200, 0, 0)).all()
    assert (stored[:, 3:] == 255).all()


# ---------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    "value,error,advice",
    [
        (gradient().astype(numpy.float32) / 255, ValueError, "uint8"),
        (gradient().astype(numpy.float64), ValueError, "uint8"),
        (gradient().astype(numpy.int32), ValueError, "uint8"),
        (gradient() > 10, ValueError, "uint8"),
        (numpy.zeros((4, 4, 4), numpy.uint8), ValueError, "[..., :3]"),
        (numpy.zeros((2, 4, 4, 3), numpy.uint8), ValueError, "HxWx3"),
        (numpy.zeros((4, 4, 2), numpy.uint8), ValueError, "HxWx3"),
        (numpy.zeros((5,), numpy.uint8), ValueError, "HxWx3"),
        (numpy.array(3, numpy.uint8), ValueError, "HxWx3"),
        (numpy.zeros((0,), numpy.uint8), ValueError, "HxWx3"),
        (numpy.zeros((0, 0), numpy.uint8), ValueError, "None"),
        (numpy.zeros((0, 5, 3), numpy.uint8), ValueError, "None"),
        (numpy.zeros((5, 0), numpy.uint8), ValueError, "None"),
        ("", ValueError, "None"),
        ("   ", ValueError, "None"),
        (b"", ValueError, "None"),
        (bytearray(), ValueError, "None"),
        (memoryview(b""), ValueError, "None"),
        (memoryview(gradient()), TypeError, "numpy"),
        (3, TypeError, "numpy"),
        (3.5, TypeError, "numpy"),
        (True, TypeError, "numpy"),
        ([[1, 2], [3, 4]], TypeError, "numpy"),
        ({"path": "a.png"}, TypeError, "file path"),
        ((1, 2), TypeError, "file path"),
        (object(), TypeError, "None"),
        (Image.new("RGB", (0, 0)), ValueError, "None"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, (str, type)) else repr(v),
)
def test_rejections_raise_at_assignment_naming_the_doc(value, error, advice):
    doc = make_doc()
    doc._.image = "kept.png"
    with pytest.raises(error) as excinfo:
        doc._.image = value
    message = str(excinfo.value)
    assert "A photo of the Eiffel Tower" in message  # quotes the doc
    assert advice in message  # says what to pass instead
    assert doc._.image == "kept.png"  # a failed assignment changes nothing


def test_long_doc_text_is_shortened_in_messages():
    doc = make_doc("word " * 100)
    assert len(describe_doc(doc)) <= 42
    with pytest.raises(TypeError, match=r"word word .*\.\.\."):
        doc._.image = 5


def test_normalize_without_doc_has_no_doc_reference():
    with pytest.raises(TypeError) as excinfo:
        normalize_image_value(5)
    assert "doc " not in str(excinfo.value)
    assert normalize_image_value(None) is None


def test_undecodable_pil_image_raises_at_assignment(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    data = encode(Image.fromarray(gradient(64, 64)), "JPEG")
    lazy = Image.open(io.BytesIO(data[: len(data) // 2]))  # header parses, pixels do not
    doc = make_doc()
    with pytest.raises(ImageLoadError, match="Eiffel"):
        doc._.image = lazy
    assert doc._.image is None


# ---------------------------------------------------------------- decoding formats and modes


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"])
@pytest.mark.parametrize("as_path", [False, True], ids=["bytes", "path"])
def test_formats_decode_from_bytes_and_paths(fmt, as_path, tmp_path):
    data = encode(Image.fromarray(halves()), fmt)
    value = as_bytes_or_path(data, as_path, tmp_path / f"image.{fmt.lower()}")
    image = load_image(value)
    assert image.mode == "RGB" and image.size == (40, 20)
    with Image.open(io.BytesIO(data)) as raw:
        numpy.testing.assert_array_equal(numpy.asarray(image), numpy.asarray(raw.convert("RGB")))
    if fmt not in ("JPEG", "WEBP"):  # lossless
        numpy.testing.assert_array_equal(numpy.asarray(image), halves())
    else:
        assert numpy.abs(pixels(image) - halves().astype(int)).mean() < 25


@pytest.mark.parametrize("as_path", [False, True], ids=["bytes", "path"])
def test_sixteen_bit_tiff_is_scaled_to_eight_bit(as_path, tmp_path):
    values = numpy.array([[0, 16384, 32768, 65535]], dtype=numpy.uint16)
    data = encode(Image.fromarray(values), "TIFF")
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode.startswith("I;16")
    value = as_bytes_or_path(data, as_path, tmp_path / "deep.tif")
    image = load_image(value)
    assert image.size == (4, 1)
    grey = pixels(image)[0, :, 0]
    assert (pixels(image)[..., 0] == pixels(image)[..., 2]).all()
    numpy.testing.assert_allclose(grey, [0, 64, 128, 255], atol=1)


def _mode_cases():
    """(name, PIL image, expected RGB pixels) for every mode the policy names."""
    cases = []
    cases.append(("RGB", Image.fromarray(gradient()), gradient()))
    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putpixel((0, 0), (0, 0, 0, 0))
    cmyk.putpixel((1, 0), (255, 0, 0, 0))
    cases.append(("CMYK", cmyk, [[(255, 255, 255), (0, 255, 255)]]))
    grey = numpy.array([[0, 100, 255]], dtype=numpy.uint8)
    cases.append(("L", Image.fromarray(grey), numpy.repeat(grey[..., None], 3, axis=2)))
    la = Image.fromarray(numpy.array([[[100, 255], [100, 0]]], dtype=numpy.uint8), "LA")
    cases.append(("LA", la, [[(100, 100, 100), (255, 255, 255)]]))
    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    palette.putdata([0, 1, 2])
    cases.append(("P", palette, [[(255, 0, 0), (0, 255, 0), (0, 0, 255)]]))
    transparent = palette.copy()
    transparent.info["transparency"] = 1
    cases.append(("P+transparency", transparent, [[(255, 0, 0), (255, 255, 255), (0, 0, 255)]]))
    rgba = Image.fromarray(
        numpy.array([[[10, 20, 30, 255], [10, 20, 30, 0]]], dtype=numpy.uint8), "RGBA"
    )
    cases.append(("RGBA", rgba, [[(10, 20, 30), (255, 255, 255)]]))
    i16 = Image.fromarray(numpy.array([[0, 32768, 65535]], dtype=numpy.uint16))
    assert i16.mode == "I;16"
    cases.append(("I;16", i16, [[(0,) * 3, (128,) * 3, (255,) * 3]]))
    i32 = Image.fromarray(numpy.array([[0, 500, 1000]], dtype=numpy.int32), "I")
    cases.append(("I", i32, [[(0,) * 3, (127,) * 3, (255,) * 3]]))
    floats = Image.fromarray(numpy.array([[0.0, 0.5, 1.0]], dtype=numpy.float32), "F")
    cases.append(("F", floats, [[(0,) * 3, (127,) * 3, (255,) * 3]]))
    bits = Image.new("1", (2, 1))
    bits.putpixel((1, 0), 1)
    cases.append(("1", bits, [[(0, 0, 0), (255, 255, 255)]]))
    return cases


MODE_CASES = _mode_cases()


@pytest.mark.parametrize("name,image,expected", MODE_CASES, ids=[case[0] for case in MODE_CASES])
def test_every_mode_becomes_rgb_at_assignment(name, image, expected):
    doc = make_doc()
    doc._.image = image
    stored = doc._.image
    assert stored.ndim == 3 and stored.shape[2] == 3
    numpy.testing.assert_allclose(stored.astype(int), numpy.asarray(expected), atol=1)


# Formats that can hold each mode (with its transparency) losslessly.
MODE_FORMATS = {
    "RGB": "PNG",
    "CMYK": "TIFF",
    "L": "PNG",
    "LA": "PNG",
    "P": "PNG",
    "P+transparency": "PNG",
    "RGBA": "PNG",
    "I;16": "PNG",
    "I": "TIFF",
    "F": "TIFF",
    "1": "PNG",
}


@pytest.mark.parametrize("name,image,expected", MODE_CASES, ids=[case[0] for case in MODE_CASES])
def test_every_mode_decodes_to_rgb_from_bytes(name, image, expected):
    fmt = MODE_FORMATS[name]
    data = encode(image, fmt)
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode.split(";")[0] == image.mode.split(";")[0]  # the mode really is exercised
    decoded = load_image(data)
    assert decoded.size == image.size
    numpy.testing.assert_allclose(pixels(decoded), numpy.asarray(expected), atol=1)


def test_cmyk_jpeg_decodes_to_rgb():
    cmyk = Image.fromarray(halves()).convert("CMYK")
    decoded = load_image(encode(cmyk, "JPEG", quality=95))
    assert decoded.size == (40, 20)
    assert numpy.abs(pixels(decoded) - halves().astype(int)).mean() < 12


def test_grey_png_with_transparency_becomes_white():
    grey = Image.fromarray(numpy.array([[7, 100]], dtype=numpy.uint8))
    data = encode(grey, "PNG", transparency=7)
    numpy.testing.assert_array_equal(
        pixels(load_image(data))[0], [(255, 255, 255), (100, 100, 100)]
    )


@pytest.mark.parametrize(
    "orientation,transpose", [(6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90)]
)
@pytest.mark.parametrize("as_path", [False, True], ids=["bytes", "path"])
def test_exif_orientation_is_applied_when_decoding(orientation, transpose, as_path, tmp_path):
    data = jpeg_with_orientation(halves(), orientation)
    value = as_bytes_or_path(data, as_path, tmp_path / "rotated.jpg")
    image = load_image(value)
    assert image.size == (20, 40)
    numpy.testing.assert_array_equal(numpy.asarray(image), decoded_then_transposed(data, transpose))
    # The green band (top of the stored image) ends up on the right (6) or left (8).
    column = pixels(image)[:, -2 if orientation == 6 else 1]
    assert (column[:, 1] > 200).all() and (column[:, 0] < 60).all()


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animation_gives_first_frame(fmt):
    frames = [Image.new("RGB", (6, 4), color) for color in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    data = encode(
        frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True
    )
    with Image.open(io.BytesIO(data)) as check:
        assert getattr(check, "n_frames", 1) == 3
    image = load_image(data)
    assert image.size == (6, 4)
    assert (pixels(image) == (255, 0, 0)).all()


def test_transparent_gif_frame_becomes_white():
    frame = Image.new("P", (4, 2))
    frame.putpalette([255, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    frame.putdata([0, 0, 1, 1, 0, 0, 1, 1])
    data = encode(frame, "GIF", transparency=1)
    numpy.testing.assert_array_equal(
        pixels(load_image(data))[0], [(255, 0, 0)] * 2 + [(255, 255, 255)] * 2
    )


@pytest.mark.parametrize("shape", [(3, 5), (3, 5, 3)])
def test_load_image_of_arrays(shape):
    array = numpy.arange(numpy.prod(shape), dtype=numpy.uint8).reshape(shape)
    image = load_image(array)
    assert image.mode == "RGB" and image.size == (5, 3)
    expected = array if array.ndim == 3 else numpy.repeat(array[..., None], 3, axis=2)
    numpy.testing.assert_array_equal(numpy.asarray(image), expected)


def test_load_image_normalizes_other_accepted_types(png):
    data = png.read_bytes()
    for value in [png, bytearray(data), memoryview(data), Image.fromarray(gradient())]:
        numpy.testing.assert_array_equal(numpy.asarray(load_image(value)), gradient())


# ---------------------------------------------------------------- unreadable values


def _truncated_jpeg(tmp_path):
    data = encode(Image.fromarray(gradient(64, 64)), "JPEG")
    return data[: len(data) // 2]


def _fifo(tmp_path):
    import os

    path = tmp_path / "pipe"
    os.mkfifo(path)
    return str(path)


UNREADABLE = {
    "missing file": (lambda tmp: str(tmp / "missing.png"), "not found"),
    "missing url": (lambda tmp: "https://example.org/x.jpg", "URLs are not downloaded"),
    "directory": (lambda tmp: str(tmp), "not a file"),
    "fifo": (_fifo, "not a file"),
    "zero-byte file": (
        lambda tmp: (tmp / "empty.png").write_bytes(b"") and None or str(tmp / "empty.png"),
        "empty",
    ),
    "name too long": (lambda tmp: str(tmp / ("x" * 5000)), "image file"),
    "nul in path": (lambda tmp: "a\0b.png", "not found"),
    "surrogate in path": (lambda tmp: "\udcff.png", "image file"),
    "truncated jpeg bytes": (_truncated_jpeg, "cannot decode"),
    "random bytes": (lambda tmp: numpy.random.default_rng(0).bytes(2000), "cannot decode"),
    "text bytes": (lambda tmp: b"definitely not an image", "cannot decode"),
    "png signature only": (lambda tmp: b"\x89PNG\r\n\x1a\n", "cannot decode"),
    "empty bytes": (lambda tmp: b"", "empty"),
    "none": (lambda tmp: None, "no image"),
    "int": (lambda tmp: 7, "not an image value"),
    "float array": (lambda tmp: numpy.zeros((2, 2), numpy.float32), "uint8"),
    "rgba array": (lambda tmp: numpy.zeros((2, 2, 4), numpy.uint8), "HxWx3"),
    "empty array": (lambda tmp: numpy.zeros((0, 3), numpy.uint8), "empty side"),
}


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_unreadable_values_raise_image_load_error(name, tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    make, reason = UNREADABLE[name]
    value = make(tmp_path)
    with pytest.raises(ImageLoadError, match=reason):
        load_image(value)


def test_truncated_jpeg_file(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    path = tmp_path / "cut.jpg"
    path.write_bytes(_truncated_jpeg(tmp_path))
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(str(path))


def test_image_load_error_is_a_value_error():
    assert issubclass(ImageLoadError, ValueError)


def test_decompression_bomb_header_is_refused_before_decoding():
    data = png_with_declared_size(100_000, 100_000)  # 10 gigapixels in 60 bytes
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(data)


@pytest.mark.parametrize("pixels_over", [1.5, 3.0], ids=["warning", "error"])
@pytest.mark.parametrize("as_path", [False, True], ids=["bytes", "path"])
def test_decompression_bomb_with_lowered_limit(pixels_over, as_path, tmp_path, monkeypatch):
    data = encode(Image.new("RGB", (20, 10)), "PNG")  # 200 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(200 / pixels_over))
    value = as_bytes_or_path(data, as_path, tmp_path / "bomb.png")
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    assert load_image(value).size == (20, 10)


def test_valid_png_with_declared_size_loads():
    assert load_image(encode(Image.new("RGB", (3, 2)), "PNG")).size == (3, 2)


# ---------------------------------------------------------------- property tests

VALID = [
    encode(Image.fromarray(gradient(5, 4)), fmt)
    for fmt in ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]
] + [
    encode(Image.fromarray(numpy.array([[0, 65535]], dtype=numpy.uint16)), "TIFF"),
    jpeg_with_orientation(gradient(5, 4), 6),
]
SIGNATURES = [data[:16] for data in VALID] + [
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"\xff\xd8\xff",
]


def _mutate(data: bytes, position: int, byte: int, cut: bool) -> bytes:
    position %= len(data)
    return data[:position] if cut else data[:position] + bytes([byte]) + data[position + 1 :]


ARBITRARY_BYTES = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda head, tail: head + tail, st.sampled_from(SIGNATURES), st.binary(max_size=300)),
    st.builds(
        _mutate, st.sampled_from(VALID), st.integers(0, 10_000), st.integers(0, 255), st.booleans()
    ),
)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pillow warns about corrupt EXIF/TIFF tags
@FAST
@given(data=ARBITRARY_BYTES)
def test_arbitrary_bytes_decode_to_rgb_or_raise_image_load_error(data):
    with pytest.MonkeyPatch.context() as patch:
        # Keep accidental "valid" headers with large sizes cheap to refuse.
        patch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
        try:
            image = load_image(data)
        except ImageLoadError as err:
            assert str(err)
            return
    assert image.mode == "RGB"
    assert image.size[0] > 0 and image.size[1] > 0


SMALL_ARRAYS = st.tuples(st.integers(1, 9), st.integers(1, 9), st.booleans()).flatmap(
    lambda hwc: arrays(numpy.uint8, (hwc[0], hwc[1], 3) if hwc[2] else (hwc[0], hwc[1]))
)


@FAST
@given(array=SMALL_ARRAYS)
def test_arrays_round_trip_through_doc_bytes_and_load(array):
    doc = make_doc("An array image")
    doc._.image = array
    restored = Doc(NLP.vocab).from_bytes(doc.to_bytes())
    value = restored._.image
    assert isinstance(value, numpy.ndarray) and value.dtype == numpy.uint8
    assert value.shape == array.shape
    numpy.testing.assert_array_equal(value, array)
    image = load_image(value)
    assert image.mode == "RGB" and image.size == (array.shape[1], array.shape[0])
    expected = array if array.ndim == 3 else numpy.repeat(array[..., None], 3, axis=2)
    numpy.testing.assert_array_equal(numpy.asarray(image), expected)


# ---------------------------------------------------------------- round trips


def _values(png: Path):
    return [str(png), png.read_bytes(), gradient(), gradient()[:, :, 1], None]


def _assert_same_image(actual, expected):
    if isinstance(expected, numpy.ndarray):
        assert isinstance(actual, numpy.ndarray)
        numpy.testing.assert_array_equal(actual, expected)
    else:
        assert type(actual) is type(expected) and actual == expected


def test_docbin_round_trip_keeps_images(png):
    install_image_extension()
    values = _values(png)
    docs = []
    for i, value in enumerate(values):
        doc = make_doc(f"Doc number {i}")
        doc._.image = value
        docs.append(doc)
    data = DocBin(docs=docs, store_user_data=True).to_bytes()
    restored = list(DocBin().from_bytes(data).get_docs(NLP.vocab))
    assert [doc.text for doc in restored] == [doc.text for doc in docs]
    for doc, value in zip(restored, values):
        _assert_same_image(doc._.image, value)
        if value is not None:
            assert load_image(doc._.image).size == (12, 8)


def test_docbin_without_user_data_drops_images(png):
    doc = make_doc()
    doc._.image = str(png)
    restored = list(
        DocBin(docs=[doc]).from_bytes(DocBin(docs=[doc]).to_bytes()).get_docs(NLP.vocab)
    )
    assert restored[-1]._.image is None


@pytest.mark.parametrize("index", range(4))
def test_doc_to_bytes_round_trip(index, png):
    value = _values(png)[index]
    doc = make_doc()
    doc._.image = value
    restored = Doc(NLP.vocab).from_bytes(doc.to_bytes())
    _assert_same_image(restored._.image, value)


def test_custom_attribute_name(png):
    install_image_extension("photo")
    install_image_extension("photo")  # idempotent
    assert Doc.has_extension("photo") and Doc.has_extension(STATUS_ATTR)
    doc = make_doc()
    doc._.photo = gradient()
    assert doc._.image is None  # a separate slot
    assert get_image(doc, "photo") is doc._.photo
    with pytest.raises(ValueError, match="Eiffel"):
        doc._.photo = numpy.zeros((2, 2, 4), numpy.uint8)
    restored = Doc(NLP.vocab).from_bytes(doc.to_bytes())
    numpy.testing.assert_array_equal(restored._.photo, gradient())
    binned = list(
        DocBin(docs=[doc], store_user_data=True)
        .from_bytes(DocBin(docs=[doc], store_user_data=True).to_bytes())
        .get_docs(NLP.vocab)
    )
    numpy.testing.assert_array_equal(binned[-1]._.photo, gradient())
    doc._.photo = str(png)
    assert get_image(doc, "photo") == str(png)
    doc._.photo = None
    assert get_image(doc, "photo") is None


def test_install_upgrades_a_plain_attribute_and_refuses_conflicts():
    try:
        Doc.set_extension("m3el_test_plain", default=None)
        install_image_extension("m3el_test_plain")
        doc = make_doc()
        with pytest.raises(TypeError, match="Eiffel"):
            doc._.m3el_test_plain = 5
        Doc.set_extension("m3el_test_getter", getter=lambda doc: None)
        with pytest.raises(ValueError, match="already registered"):
            install_image_extension("m3el_test_getter")
        Doc.set_extension("m3el_test_default", default="x")
        with pytest.raises(ValueError, match="already registered"):
            install_image_extension("m3el_test_default")
        with pytest.raises(ValueError, match="statuses"):
            install_image_extension(STATUS_ATTR)
        with pytest.raises(ValueError):
            install_image_extension("")
    finally:
        for name in ["m3el_test_plain", "m3el_test_getter", "m3el_test_default"]:
            if Doc.has_extension(name):
                Doc.remove_extension(name)


def test_status_extension_is_plain():
    doc = make_doc()
    assert doc._.get(STATUS_ATTR) is None
    doc._.set(STATUS_ATTR, "ok")
    assert doc._.get(STATUS_ATTR) == "ok"


def test_multiprocess_pipe_keeps_images_in_order(png):
    nlp = spacy.blank("en")
    values = _values(png) * 3
    docs = []
    for i, value in enumerate(values):
        doc = nlp.make_doc(f"Document {i} with an image")
        doc._.image = value
        docs.append(doc)
    out = list(nlp.pipe(docs, n_process=2, batch_size=2))
    assert [doc.text for doc in out] == [f"Document {i} with an image" for i in range(len(values))]
    for doc, value in zip(out, values):
        _assert_same_image(doc._.image, value)


# ---------------------------------------------------------------- copy_image


def test_copy_image_only_fills_a_missing_image():
    source, target = make_doc("source"), make_doc("target")
    source._.image = gradient()
    copy_image(source, target)
    numpy.testing.assert_array_equal(target._.image, gradient())

    target._.image = "mine.png"
    copy_image(source, target)
    assert target._.image == "mine.png"

    empty = make_doc("no image")
    copy_image(empty, target)
    assert target._.image == "mine.png"
    fresh = make_doc("fresh")
    copy_image(empty, fresh)
    assert fresh._.image is None and fresh.user_data == {}


def test_copy_image_with_custom_attribute():
    install_image_extension("photo")
    source, target = make_doc("source"), make_doc("target")
    source._.photo = b"\x89PNG..."
    source._.image = "default.png"
    copy_image(source, target, "photo")
    assert target._.photo == b"\x89PNG..." and target._.image is None
