"""Images attached to Docs: the extension, validation and loading.

A Doc carries its image in ``doc._.<image_attr>`` (``doc._.image`` by default).
The value is stored in ``doc.user_data`` in a msgpack-friendly form so that it
survives ``DocBin(store_user_data=True)``, ``Doc.to_bytes`` and
``nlp.pipe(..., n_process=2)``:

- ``str`` or ``pathlib.Path`` -> the path, as ``str``
- ``bytes``/``bytearray``/``memoryview`` -> encoded image bytes, as ``bytes``
- a PIL image -> an ``HxWx3`` uint8 array (EXIF orientation applied, RGB)
- an ``HxW`` or ``HxWx3`` uint8 numpy array -> the array
- ``None`` -> no image

Values of any other type, and arrays of another dtype or shape, are user
errors and raise at assignment. Whether an accepted value can be *read* (the
file exists, the bytes decode) is only known when the linker loads it; an
unreadable image makes the linker fall back to text-only scoring for that doc
and records the reason in ``doc._.m3el_image_status``.
"""
import io
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy
from spacy.tokens import Doc

ImageValue = Union[str, bytes, numpy.ndarray, None]

DEFAULT_IMAGE_ATTR = "image"
STATUS_ATTR = "m3el_image_status"

# Image statuses written by the linker.
STATUS_OK = "ok"
STATUS_NONE = "none"
STATUS_UNREADABLE = "unreadable"


class ImageLoadError(ValueError):
    """An image value of an accepted type that cannot be decoded."""


def _user_data_key(attr: str):
    return ("._.", attr, None, None)


def describe_doc(doc: Doc, width: int = 40) -> str:
    """A short, readable reference to a doc for error messages."""
    text = doc.text if len(doc.text) <= width else doc.text[: width - 3] + "..."
    return repr(text)


def normalize_image_value(value: Any, *, doc: Optional[Doc] = None) -> ImageValue:
    """Convert a user-supplied image to the form stored on the Doc.

    value (Any): A path, encoded bytes, a PIL image, a uint8 array or None.
    doc (Optional[Doc]): The doc, only used to name it in error messages.
    RETURNS (ImageValue): The value to store.
    RAISES (TypeError, ValueError): For unsupported types and bad arrays.
    """
    where = f" (doc {describe_doc(doc)})" if doc is not None else ""
    if value is None:
        return None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        if not value:
            raise ValueError(f"Empty string given as image path{where}. Use None for no image.")
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if not data:
            raise ValueError(f"Empty bytes given as image{where}. Use None for no image.")
        return data
    if isinstance(value, numpy.ndarray):
        return _validate_array(value, where)
    if _is_pil_image(value):
        return numpy.asarray(_pil_to_rgb(value), dtype=numpy.uint8)
    raise TypeError(
        f"Unsupported image type {type(value).__name__}{where}. Set the image to a "
        "file path (str or Path), encoded bytes, a PIL image, an HxW or HxWx3 uint8 "
        "numpy array, or None."
    )


def _validate_array(array: numpy.ndarray, where: str) -> numpy.ndarray:
    if array.dtype != numpy.uint8:
        raise ValueError(
            f"Image arrays must have dtype uint8, got {array.dtype}{where}. Convert "
            "float images with (array * 255).clip(0, 255).astype('uint8')."
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(
            f"Image arrays must have shape HxW or HxWx3, got {array.shape}{where}."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"Image array has an empty side: {array.shape}{where}.")
    return numpy.ascontiguousarray(array)


def _is_pil_image(value: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(value, Image.Image)


def _pil_to_rgb(image):
    """Apply EXIF orientation and convert any PIL mode to RGB."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = numpy.asarray(image, dtype=numpy.float64)
        top = array.max() if array.size else 0
        scale = 255.0 / top if top > 255 else 1.0
        image = Image.fromarray((array * scale).clip(0, 255).astype(numpy.uint8), "L")
    elif image.mode == "F":
        array = numpy.asarray(image, dtype=numpy.float64)
        lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 1.0)
        scaled = (array - lo) / (hi - lo) * 255.0 if hi > lo else array * 0
        image = Image.fromarray(scaled.clip(0, 255).astype(numpy.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels become white rather than whatever colour they hold.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(value: ImageValue):
    """Decode a stored image value into an RGB PIL image.

    value (ImageValue): A path, encoded bytes or a uint8 array (not None).
    RETURNS (PIL.Image.Image): The image in RGB mode, EXIF orientation applied.
    RAISES (ImageLoadError): If the image cannot be read or decoded.
    """
    from PIL import Image

    if isinstance(value, numpy.ndarray):
        array = _validate_array(value, "")
        mode = "L" if array.ndim == 2 else "RGB"
        return Image.fromarray(array, mode).convert("RGB")
    if isinstance(value, str):
        path = Path(value)
        if not path.exists():
            raise ImageLoadError(f"image file not found: {value}")
        if not path.is_file():
            raise ImageLoadError(f"image path is not a file: {value}")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ImageLoadError(f"cannot read image file {value}: {err}") from err
    elif isinstance(value, bytes):
        data = value
    else:
        raise ImageLoadError(f"not an image value: {type(value).__name__}")
    if not data:
        raise ImageLoadError("image data is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns, then raises, for decompression bombs; treat both as errors.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.seek(0)  # first frame of an animation
                image.load()
                return _pil_to_rgb(image).copy()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageLoadError(f"image refused as a decompression bomb: {err}") from err
    except Exception as err:  # PIL raises many types for corrupt data
        raise ImageLoadError(f"cannot decode image: {type(err).__name__}: {err}") from err


def get_image(doc: Doc, attr: str = DEFAULT_IMAGE_ATTR) -> ImageValue:
    """Return the image value stored on a doc (None if there is none)."""
    return doc.user_data.get(_user_data_key(attr))


def set_image(doc: Doc, value: Any, attr: str = DEFAULT_IMAGE_ATTR) -> None:
    """Validate and store an image on a doc."""
    stored = normalize_image_value(value, doc=doc)
    key = _user_data_key(attr)
    if stored is None:
        doc.user_data.pop(key, None)
    else:
        doc.user_data[key] = stored


def install_image_extension(attr: str = DEFAULT_IMAGE_ATTR) -> None:
    """Register ``doc._.<attr>`` (validating setter) and ``doc._.m3el_image_status``.

    Safe to call repeatedly. If ``attr`` is already registered by something
    else, it is left alone as long as it stores its value in ``user_data``.
    """
    if not Doc.has_extension(attr):
        Doc.set_extension(
            attr,
            getter=lambda doc: get_image(doc, attr),
            setter=lambda doc, value: set_image(doc, value, attr),
        )
    if not Doc.has_extension(STATUS_ATTR):
        Doc.set_extension(STATUS_ATTR, default=None)


def copy_image(source: Doc, target: Doc, attr: str = DEFAULT_IMAGE_ATTR) -> None:
    """Copy the image of ``source`` to ``target`` if ``target`` has none."""
    key = _user_data_key(attr)
    if key not in target.user_data and key in source.user_data:
        target.user_data[key] = source.user_data[key]
