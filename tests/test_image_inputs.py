"""Images on Docs: accepted inputs, rejections, decoding of every mode, round trips."""
import io
from pathlib import Path

import numpy
import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from spacy.tokens import Doc, DocBin

from spacy_m3el.images import (
    ImageLoadError,
    copy_image,
    get_image,
    install_image_extension,
    load_image,
    normalize_image_value,
)

NLP = spacy.blank("en")
install_image_extension()


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def gradient(width=12, height=8) -> numpy.ndarray:
    y, x = numpy.mgrid[0:height, 0:width]
    return numpy.stack([x * 20, y * 30, (x + y) * 10], axis=-1).astype(numpy.uint8)


@pytest.mark.parametrize("kind", ["str", "path", "bytes", "bytearray", "memoryview", "pil", "array3", "array2", "array1"])
def test_accepted_inputs(kind, tmp_path):
    data = encode(Image.fromarray(gradient()), "PNG")
    (tmp_path / "a.png").write_bytes(data)
    value = {
        "str": str(tmp_path / "a.png"),
        "path": tmp_path / "a.png",
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "pil": Image.fromarray(gradient()),
        "array3": gradient(),
        "array2": gradient()[:, :, 0],
        "array1": gradient()[:, :, :1],
    }[kind]
    doc = NLP("text")
    doc._.image = value
    stored = doc._.image
    assert isinstance(stored, (str, bytes, numpy.ndarray))
    image = load_image(stored)
    assert image.mode == "RGB" and image.size == (12, 8)
    doc._.image = None
    assert doc._.image is None and get_image(doc) is None


@pytest.mark.parametrize(
    "value,error",
    [
        (gradient().astype("float32"), ValueError),
        (gradient().astype("int32"), ValueError),
        (numpy.zeros((4, 4, 4), numpy.uint8), ValueError),
        (numpy.zeros((2, 4, 4, 3), numpy.uint8), ValueError),
        (numpy.zeros((0, 4, 3), numpy.uint8), ValueError),
        ("", ValueError),
        (b"", ValueError),
        (42, TypeError),
        ([1, 2, 3], TypeError),
        ({"path": "x"}, TypeError),
    ],
)
def test_rejected_inputs_name_the_doc(value, error):
    doc = NLP("A caption about Jordan")
    with pytest.raises(error, match="A caption about Jordan"):
        doc._.image = value


def test_pil_image_is_stored_with_exif_orientation_applied():
    image = Image.fromarray(gradient(12, 8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    rotated = Image.open(io.BytesIO(encode(image, "JPEG", exif=exif, quality=95)))
    doc = NLP("x")
    doc._.image = rotated
    assert doc._.image.shape == (12, 8, 3)  # height and width swapped


def test_exif_rotation_when_decoding_bytes():
    image = Image.fromarray(gradient(12, 8))
    exif = Image.Exif()
    exif[0x0112] = 8
    decoded = load_image(encode(image, "JPEG", exif=exif, quality=95))
    assert decoded.size == (8, 12)
    expected = numpy.asarray(image.transpose(Image.Transpose.ROTATE_90), dtype=float)
    assert numpy.abs(numpy.asarray(decoded, dtype=float) - expected).mean() < 12  # JPEG loss only


def rgba():
    array = numpy.zeros((6, 6, 4), numpy.uint8)
    array[..., 0] = 200
    array[:3, :, 3] = 255  # top half opaque red, bottom half transparent
    return Image.fromarray(array, "RGBA")


@pytest.mark.parametrize(
    "make,fmt",
    [
        (lambda: Image.fromarray(gradient()).convert("CMYK"), "JPEG"),
        (lambda: Image.fromarray(gradient()).convert("L"), "PNG"),
        (lambda: Image.fromarray(gradient()).convert("LA"), "PNG"),
        (lambda: Image.fromarray(gradient()).convert("P"), "PNG"),
        (lambda: Image.fromarray(gradient()).convert("1"), "PNG"),
        (lambda: Image.fromarray(gradient()[:, :, 0].astype(numpy.uint16) * 250), "PNG"),
        (lambda: Image.fromarray(gradient()[:, :, 0].astype(numpy.int32) * 1000, "I"), "TIFF"),
        (lambda: Image.fromarray(gradient()[:, :, 0].astype(numpy.float32) / 7, "F"), "TIFF"),
        (rgba, "PNG"),
        (lambda: Image.fromarray(gradient()), "BMP"),
        (lambda: Image.fromarray(gradient()), "GIF"),
    ],
)
def test_every_mode_decodes_to_rgb(make, fmt):
    image = load_image(encode(make(), fmt))
    assert image.mode == "RGB"


def test_transparency_becomes_white():
    image = numpy.asarray(load_image(encode(rgba(), "PNG")))
    assert tuple(image[0, 0]) == (200, 0, 0)
    assert tuple(image[5, 5]) == (255, 255, 255)


def test_p_mode_with_transparency():
    palette = Image.fromarray(gradient()).convert("P")
    palette.info["transparency"] = 0
    assert load_image(encode(palette, "PNG", transparency=0)).mode == "RGB"


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    first = numpy.asarray(load_image(data))
    assert first[0, 0, 0] > 200 and first[0, 0, 2] < 50


@pytest.mark.parametrize(
    "make_value",
    [
        lambda tmp: str(tmp / "missing.jpg"),
        lambda tmp: str(tmp),
        lambda tmp: str(_write(tmp / "empty.jpg", b"")),
        lambda tmp: encode(Image.fromarray(gradient(64, 64)), "JPEG")[:200],
        lambda tmp: b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        lambda tmp: b"definitely not an image",
    ],
)
def test_unreadable_values_raise_image_load_error(make_value, tmp_path):
    with pytest.raises(ImageLoadError):
        load_image(make_value(tmp_path))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_decompression_bomb_is_refused(monkeypatch):
    data = encode(Image.fromarray(gradient(64, 64)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(data)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_image_load_error(data):
    try:
        image = load_image(data)
    except ImageLoadError:
        return
    assert image.mode == "RGB"


@settings(max_examples=40, deadline=None)
@given(arrays(numpy.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9)) | st.tuples(st.integers(1, 9), st.integers(1, 9), st.just(3))))
def test_arrays_round_trip_through_doc_bytes(array):
    doc = NLP("x")
    doc._.image = array
    restored = Doc(NLP.vocab).from_bytes(doc.to_bytes())
    numpy.testing.assert_array_equal(restored._.image, array)
    assert load_image(restored._.image).size == (array.shape[1], array.shape[0])


def test_docbin_round_trip(tmp_path):
    values = [str(tmp_path / "a.jpg"), b"raw-bytes-are-kept", gradient(), None]
    docs = []
    for value in values:
        doc = NLP("caption")
        doc._.image = value
        docs.append(doc)
    data = DocBin(docs=docs, store_user_data=True).to_bytes()
    restored = list(DocBin().from_bytes(data).get_docs(NLP.vocab))
    assert restored[0]._.image == values[0]
    assert restored[1]._.image == values[1]
    numpy.testing.assert_array_equal(restored[2]._.image, values[2])
    assert restored[3]._.image is None


def test_custom_attribute_name():
    install_image_extension("photo")
    doc = NLP("x")
    doc._.photo = gradient()
    assert doc._.image is None
    assert get_image(doc, "photo").shape == (8, 12, 3)


def test_n_process_2_keeps_images_in_order():
    docs = []
    for i in range(6):
        doc = NLP.make_doc(f"doc {i}")
        doc._.image = numpy.full((4, 4, 3), i * 40, numpy.uint8)
        docs.append(doc)
    out = list(NLP.pipe(docs, n_process=2, batch_size=2))
    assert [d.text for d in out] == [d.text for d in docs]
    for original, copy in zip(docs, out):
        numpy.testing.assert_array_equal(copy._.image, original._.image)


def test_copy_image_only_fills_missing():
    source, target, other = NLP("a"), NLP("b"), NLP("c")
    source._.image = "a.jpg"
    other._.image = "c.jpg"
    copy_image(source, target)
    copy_image(source, other)
    assert target._.image == "a.jpg" and other._.image == "c.jpg"


def test_normalize_without_doc_has_no_doc_in_message():
    with pytest.raises(TypeError, match="Unsupported image type int"):
        normalize_image_value(3)
