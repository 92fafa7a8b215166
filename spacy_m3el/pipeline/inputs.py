"""Turning docs, spans and KB entities into the model's text and image inputs."""

import logging
from collections import Counter, OrderedDict
from typing import Hashable, List, Optional, Tuple

from spacy.tokens import Doc, Span

from ..images import (
    STATUS_NONE,
    STATUS_OK,
    STATUS_UNREADABLE,
    ImageLoadError,
    ImageValue,
    get_image,
    load_image,
)
from ..kb import EntityRecord, MultimodalKB

logger = logging.getLogger("spacy_m3el")
SEPARATOR = " [SEP] "


def mention_text(span: Span, max_context_tokens: int) -> str:
    """``"<mention> [SEP] <context>"`` as in M3EL.

    The context is the span's sentence when the doc has sentence boundaries,
    else the whole doc; a context longer than ``max_context_tokens`` tokens is
    cut to a window centred on the mention so the mention's surroundings
    survive the encoder's truncation.
    """
    doc = span.doc
    if doc.has_annotation("SENT_START"):
        start, end = span.sent.start, span.sent.end
    else:
        start, end = 0, len(doc)
    if end - start > max_context_tokens:
        half = max(0, (max_context_tokens - len(span)) // 2)
        start = max(start, span.start - half)
        end = min(end, start + max_context_tokens)
    return span.text + SEPARATOR + doc[start:end].text


def entity_text(record: EntityRecord) -> str:
    """``"<name> [SEP] <description>"`` as in M3EL."""
    return record.name + SEPARATOR + record.description if record.description else record.name


class ImageLoader:
    """Decodes the images of docs and KB entities for a component.

    The one place where the linker turns stored image values into pictures:
    decoding is :func:`~spacy_m3el.images.load_image`; paths and bytes are
    kept decoded in a least-recently-used cache, failures too, so a broken
    file is reported once per batch, not re-read.

    size (int): How many decoded images to keep (0 keeps none).
    component (str): The component name, for warnings.
    """

    def __init__(self, size: int = 512, component: str = "m3el_linker"):
        self.size = size
        self.component = component
        self._items: "OrderedDict[Hashable, Tuple[object, Optional[str]]]" = OrderedDict()

    def load(self, value: ImageValue) -> Tuple[object, Optional[str]]:
        """Decode one stored value.

        RETURNS (Tuple[Optional[PIL.Image.Image], Optional[str]]): the image
            and None, or None and the reason it cannot be read.
        """
        if not isinstance(value, (str, bytes)) or self.size <= 0:
            return _decode(value)
        if value in self._items:
            self._items.move_to_end(value)
            return self._items[value]
        result = _decode(value)
        self._items[value] = result
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return result

    def doc_images(self, docs: List[Doc], attr: str) -> Tuple[List[object], List[str]]:
        """Load each doc's image; unreadable images become None with a status.

        Logs one warning per call with counts, not one per doc.

        docs (List[Doc]): The docs.
        attr (str): The Doc extension holding the image.
        RETURNS (Tuple[List[Optional[PIL.Image.Image]], List[str]]): images and statuses.
        """
        images, statuses = [], []
        failures: Counter = Counter()
        for doc in docs:
            value = get_image(doc, attr)
            if value is None:
                images.append(None)
                statuses.append(STATUS_NONE)
                continue
            image, error = self.load(value)
            images.append(image)
            if error is None:
                statuses.append(STATUS_OK)
            else:
                statuses.append(f"{STATUS_UNREADABLE}: {error}")
                failures[error.split(":")[0]] += 1
        if failures:
            summary = ", ".join(f"{count} x {reason}" for reason, count in failures.most_common())
            logger.warning(
                "%s: %d of %d images in this batch could not be read and were linked "
                "with text only (%s). See doc._.m3el_image_status.",
                self.component,
                sum(failures.values()),
                len(docs),
                summary,
            )
        return images, statuses

    def entity_image(self, kb: MultimodalKB, record: EntityRecord, choice: int = 0):
        """One image of an entity (``choice`` indexes its images); None if none or unreadable."""
        if not record.images:
            return None
        ref = kb.resolve_image(record.images[choice % len(record.images)])
        image, error = self.load(ref)
        if error is not None:
            logger.debug("Image of entity %s unreadable: %s", record.kb_id, error)
        return image

    def clear(self) -> None:
        self._items.clear()


def _decode(value: ImageValue) -> Tuple[object, Optional[str]]:
    try:
        return load_image(value), None
    except ImageLoadError as err:
        return None, str(err)
