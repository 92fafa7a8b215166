"""Images attached to Docs: the extension, validation and loading.

A Doc carries its image in ``doc._.<image_attr>`` (``doc._.image`` by default).
The value is stored in ``doc.user_data`` in a msgpack-friendly form so that it
survives ``DocBin(store_user_data=True)``, ``Doc.to_bytes`` and
``nlp.pipe(..., n_process=2)``:

- ``str`` or ``pathlib.Path`` -> the path, as ``str``
- ``bytes``/``bytearray``/``memoryview`` -> encoded image bytes, as ``bytes``
- a PIL image -> an ``HxWx3`` uint8 array (EXIF orientation applied, RGB)
- an ``HxW``, ``HxWx1`` or ``HxWx3`` uint8 numpy array -> a read-only
  ``HxW``/``HxWx3`` copy (so later changes to the caller's buffer do not leak
  into the doc, and arrays behave the same before and after serialization,
  which also returns read-only arrays)
- ``None`` -> no image (removes a stored one)

Error policy:

- A value of a wrong Python type, an empty path or empty bytes, and an array
  of another dtype or shape are user errors: assignment raises ``TypeError``
  (wrong type) or ``ValueError`` (wrong content) with a message that quotes
  the doc's text and says what to pass instead.
- Whether an accepted path or bytes value can be *read* (the file exists and
  is a non-empty regular file, the bytes decode, the image is not a
  decompression bomb) is only known when it is loaded: ``load_image`` raises
  ``ImageLoadError`` (a ``ValueError``) with the reason, and never another
  exception type. The linker then falls back to text-only scoring for that
  doc and records the reason in ``doc._.m3el_image_status``. A PIL image is
  decoded at assignment, so a PIL image that cannot be decoded raises
  ``ImageLoadError`` there, naming the doc.

Every readable mode is converted to RGB: alpha (RGBA, LA, PA, RGBa, and P, L
or RGB with a ``transparency`` entry) is composited onto white; 16/32-bit
integer modes (I;16*, I) are scaled so that their maximum maps to 255 when it
exceeds 255 (else kept as is); float mode F is min-max stretched to 0..255;
CMYK, L, 1, P, YCbCr etc. use Pillow's conversion. Animated images give their
first frame.
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

_ACCEPTED = (
    "a file path (str or pathlib.Path), encoded image bytes, a PIL image, an HxW "
    "or HxWx3 uint8 numpy array, or None for no image"
)


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
    RAISES (TypeError, ValueError): For unsupported types and bad arrays;
        ImageLoadError (a ValueError) for a PIL image that cannot be decoded.
    """
    where = f" (doc {describe_doc(doc)})" if doc is not None else ""
    if value is None:
        return None
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(
                f"Empty image path {value!r}{where}. Set the image to None for no image, "
                f"or to {_ACCEPTED}."
            )
        return value
    if isinstance(value, memoryview) and value.ndim > 1:
        raise TypeError(
            f"Image given as a {value.ndim}-dimensional memoryview{where}, which looks like "
            "raw pixels. Pass encoded image bytes (1-dimensional), or the pixels as an HxW "
            "or HxWx3 uint8 numpy array (numpy.asarray(view))."
        )
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if not data:
            raise ValueError(
                f"Empty bytes given as image{where}. Set the image to None for no image, "
                "or to the encoded image (e.g. the contents of a PNG or JPEG file)."
            )
        return data
    if isinstance(value, numpy.ndarray):
        return _validate_array(value, where)
    if _is_pil_image(value):
        try:
            array = numpy.asarray(_pil_to_rgb(value), dtype=numpy.uint8)
        except Exception as err:  # lazily opened files decode here
            raise ImageLoadError(
                f"Cannot decode the PIL image{where}: {type(err).__name__}: {err}. "
                "Pass a readable image, or the file path/bytes to defer decoding."
            ) from err
        return _validate_array(array, where)
    raise TypeError(
        f"Unsupported image type {type(value).__name__}{where}. Set the image to {_ACCEPTED}."
    )


def _validate_array(array: numpy.ndarray, where: str) -> numpy.ndarray:
    """Check dtype and shape; return a read-only, C-contiguous HxW/HxWx3 copy."""
    if array.dtype != numpy.uint8:
        raise ValueError(
            f"Image arrays must have dtype uint8, got {array.dtype}{where}. Scale to "
            "0..255 and convert, e.g. (array * 255).clip(0, 255).astype('uint8') for "
            "floats in 0..1 or array.clip(0, 255).astype('uint8') for integers."
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        hint = (
            " Drop the alpha channel with array[..., :3]."
            if array.ndim == 3 and array.shape[2] == 4
            else ""
        )
        raise ValueError(
            f"Image arrays must have shape HxW (grey) or HxWx3 (RGB), got "
            f"{array.shape}{where}.{hint}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"Image array has an empty side: {array.shape}{where}. Set the image to "
            "None for no image."
        )
    copy = numpy.array(array, dtype=numpy.uint8, order="C", copy=True)
    copy.setflags(write=False)
    return copy


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
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = numpy.asarray(image).astype(numpy.float32)
        top = float(array.max()) if array.size else 0.0
        scale = 255.0 / top if top > 255 else 1.0
        image = Image.fromarray((array * scale).clip(0, 255).astype(numpy.uint8))
    elif image.mode == "F":
        array = numpy.asarray(image, dtype=numpy.float64)
        array = numpy.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 1.0)
        scaled = (array - lo) / (hi - lo) * 255.0 if hi > lo else array * 0
        image = Image.fromarray(scaled.clip(0, 255).astype(numpy.uint8))
    if "transparency" in image.info and image.mode in ("P", "L", "RGB"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa"):
        # Transparent pixels become white rather than whatever colour they hold.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def load_image(value: Any):
    """Decode a stored image value into an RGB PIL image.

    value (ImageValue): A path, encoded bytes or a uint8 array (not None).
        Anything ``normalize_image_value`` accepts (pathlib.Path, bytearray,
        memoryview, a PIL image) is normalized first.
    RETURNS (PIL.Image.Image): The image in RGB mode, EXIF orientation applied.
    RAISES (ImageLoadError): If the image cannot be read or decoded. No other
        exception type is raised for any value.
    """
    from PIL import Image

    if value is None:
        raise ImageLoadError("no image (None)")
    if not isinstance(value, (str, bytes, numpy.ndarray)):
        try:
            value = normalize_image_value(value)
        except ImageLoadError:
            raise
        except (TypeError, ValueError) as err:
            raise ImageLoadError(f"not an image value: {err}") from err
    if isinstance(value, numpy.ndarray):
        try:
            array = _validate_array(value, "")
        except ValueError as err:
            raise ImageLoadError(f"bad image array: {err}") from err
        return Image.fromarray(array).convert("RGB")
    if isinstance(value, str):
        source = _checked_path(value)
    else:
        if not value:
            raise ImageLoadError("image data is empty (0 bytes)")
        source = io.BytesIO(value)
    try:
        with warnings.catch_warnings():
            # Pillow warns, then raises, for decompression bombs; treat both as errors.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                image.seek(0)  # first frame of an animation
                image.load()
                return _pil_to_rgb(image).copy()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageLoadError(f"image refused as a decompression bomb: {err}") from err
    except Exception as err:  # PIL raises many types for corrupt data
        raise ImageLoadError(f"cannot decode image: {type(err).__name__}: {err}") from err


def _checked_path(value: str) -> Path:
    """The path of an image file that exists and is a non-empty regular file."""
    hint = ""
    if value.lower().startswith(("http://", "https://")):
        hint = " (URLs are not downloaded; pass the downloaded file's path or bytes)"
    path = Path(value)
    try:
        exists, is_file = path.exists(), path.is_file()
        size = path.stat().st_size if is_file else None
    except (OSError, ValueError) as err:  # name too long, no permission, symlink loop, ...
        raise ImageLoadError(f"cannot access image file {value}: {err}") from err
    if not exists:
        raise ImageLoadError(f"image file not found: {value}{hint}")
    if not is_file:
        raise ImageLoadError(f"image path is not a file: {value}")
    if size == 0:
        raise ImageLoadError(f"image file is empty (0 bytes): {value}")
    return path


def get_image(doc: Doc, attr: str = DEFAULT_IMAGE_ATTR) -> ImageValue:
    """Return the image value stored on a doc (None if there is none)."""
    return doc.user_data.get(_user_data_key(attr))


def set_image(doc: Doc, value: Any, attr: str = DEFAULT_IMAGE_ATTR) -> None:
    """Validate and store an image on a doc (None removes it)."""
    stored = normalize_image_value(value, doc=doc)
    key = _user_data_key(attr)
    if stored is None:
        doc.user_data.pop(key, None)
    else:
        doc.user_data[key] = stored


def _image_accessors(attr: str):
    def getter(doc: Doc) -> ImageValue:
        return get_image(doc, attr)

    def setter(doc: Doc, value: Any) -> None:
        set_image(doc, value, attr)

    getter._m3el_image_attr = attr  # type: ignore[attr-defined]
    setter._m3el_image_attr = attr  # type: ignore[attr-defined]
    return getter, setter


def install_image_extension(attr: str = DEFAULT_IMAGE_ATTR) -> None:
    """Register ``doc._.<attr>`` (validating setter) and ``doc._.m3el_image_status``.

    Safe to call repeatedly. If ``attr`` is already registered as a plain
    attribute with default None (which stores its value in the same
    ``user_data`` slot), it is replaced by the validating one. Any other
    existing extension of that name (with a getter, method or another
    default) raises ValueError, as the linker would not see its images.
    """
    if not isinstance(attr, str) or not attr:
        raise ValueError(f"The image attribute must be a non-empty string, got {attr!r}.")
    if attr == STATUS_ATTR:
        raise ValueError(
            f"The image attribute cannot be {STATUS_ATTR!r}: the linker uses it for statuses."
        )
    getter, setter = _image_accessors(attr)
    if Doc.has_extension(attr):
        default, method, old_getter, old_setter = Doc.get_extension(attr)
        if getattr(old_getter, "_m3el_image_attr", None) == attr:
            pass  # already ours (possibly from an earlier import of this module)
        elif old_getter is None and old_setter is None and method is None and default is None:
            Doc.set_extension(attr, getter=getter, setter=setter, force=True)
        else:
            raise ValueError(
                f"Doc extension {attr!r} is already registered by other code (with a "
                "getter, method or non-None default), so images cannot be stored in it. "
                "Choose another image attribute (image_attr) or remove that extension "
                f"with Doc.remove_extension({attr!r})."
            )
    else:
        Doc.set_extension(attr, getter=getter, setter=setter)
    if not Doc.has_extension(STATUS_ATTR):
        Doc.set_extension(STATUS_ATTR, default=None)


def copy_image(source: Doc, target: Doc, attr: str = DEFAULT_IMAGE_ATTR) -> None:
    """Copy the image of ``source`` to ``target`` if ``target`` has none."""
    key = _user_data_key(attr)
    if key not in target.user_data and key in source.user_data:
        target.user_data[key] = source.user_data[key]
