"""Turning docs, spans and KB entities into the model's text and image inputs."""

import logging
import threading
from collections import Counter, OrderedDict
from itertools import chain
from pathlib import Path
from typing import Any, Hashable, Iterable, Iterator, List, Optional, Tuple, Union

from spacy.tokens import Doc, DocBin, Span
from spacy.training.corpus import walk_corpus

from ..image_store import ImageStore
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
from ..ml.text_tower import SEPARATOR, MentionWindow

logger = logging.getLogger("spacy_m3el")
Corpora = Union[None, str, Path, Iterable[Union[None, str, Path]]]


def mention_text(span: Span, max_context_tokens: int) -> str:
    """``"<mention> [SEP] <context>"`` as in M3EL.

    The context is the span's sentence when the doc has sentence boundaries,
    else the whole doc; a context longer than ``max_context_tokens`` tokens is
    cut to a window centred on the mention so the mention's surroundings
    survive the encoder's truncation.
    """
    return window_text(mention_window(span, max_context_tokens))


def window_text(window: MentionWindow) -> str:
    return window.span.text + SEPARATOR + window.span.doc[window.start : window.end].text


def mention_window(span: Span, max_context_tokens: int) -> MentionWindow:
    """The span and its context (what :func:`mention_text` writes out, for a text tower)."""
    doc = span.doc
    if doc.has_annotation("SENT_START"):
        start, end = span.sent.start, span.sent.end
    else:
        start, end = 0, len(doc)
    if end - start > max_context_tokens:
        half = max(0, (max_context_tokens - len(span)) // 2)
        start = max(start, span.start - half)
        end = min(end, start + max_context_tokens)
    return MentionWindow(span, start, end)


def mention_inputs(
    model: Any, spans: List[Span], max_context_tokens: int
) -> Tuple[List[str], Optional[List[MentionWindow]]]:
    """The spans' texts (:func:`mention_text`) and, when the model has a text tower, which
    reads them, their windows (None otherwise)."""
    windows = [mention_window(span, max_context_tokens) for span in spans]
    return [window_text(w) for w in windows], windows if model.text_tower is not None else None


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
        self.store: Optional[ImageStore] = None
        self._lock = threading.Lock()  # the prefetch worker loads images too
        self._items: "OrderedDict[Hashable, Tuple[object, Optional[str]]]" = OrderedDict()

    def load(self, value: ImageValue) -> Tuple[object, Optional[str]]:
        """Decode one stored value.

        RETURNS (Tuple[Optional[PIL.Image.Image], Optional[str]]): the image
            (:class:`~spacy_m3el.ml.pixels.PreparedPixels` when it comes from the
            image store) and None, or None and the reason it cannot be read.
        """
        if self.store is not None:
            found = self.store.get(value)
            if found is not None:
                return found
        if not isinstance(value, (str, bytes)) or self.size <= 0:
            return _decode(value)
        with self._lock:
            if value in self._items:
                self._items.move_to_end(value)
                return self._items[value]
        result = _decode(value)
        with self._lock:
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

    def warm(self, docs: Iterable[Doc], attr: str) -> None:
        """Load the docs' images into the cache now (no warnings: they come when used)."""
        for doc in docs:
            value = get_image(doc, attr)
            if value is not None:
                self.load(value)

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


def build_image_store(
    component: Any, path: Union[str, Path], docs: Iterable[Doc], corpora: Corpora
) -> ImageStore:
    """Build (or bring up to date) the image store at ``path`` with the images of the
    docs, of the docs in ``corpora`` (a ``.spacy`` file or folder, a list of them, or
    None) and of every KB entity, and make ``component``'s image loader read from it.

    component (M3ELLinker): Gives the KB, the image attribute, the model's image
        processor and the loader.
    """
    if corpora is None or isinstance(corpora, (str, Path)):
        corpora = [corpora]
    for corpus in corpora:
        if corpus is not None and not Path(corpus).exists():
            raise ValueError(
                f"{component.name}: image_store_corpora names {corpus}, which does not "
                "exist. Give .spacy files or folders (or null)."
            )

    def values() -> Iterator[object]:
        for doc in chain(docs, corpus_docs(component, corpora)):
            yield get_image(doc, component.image_attr)
        kb = component.kb
        for record in kb.records():
            yield from (kb.resolve_image(ref) for ref in record.images)

    component.images.store = ImageStore.build(path, component.model.image_processor, values())
    return component.images.store


def corpus_docs(component: Any, corpora: Corpora) -> Iterator[Doc]:
    """The docs (in ``component``'s vocab) of ``.spacy`` files or folders (None, a path
    or a list of them)."""
    if corpora is None or isinstance(corpora, (str, Path)):
        corpora = [corpora]
    for corpus in corpora:
        if corpus is None:
            continue
        for file in walk_corpus(corpus, ".spacy"):
            yield from DocBin().from_disk(file).get_docs(component.vocab)


def _decode(value: ImageValue) -> Tuple[object, Optional[str]]:
    try:
        return load_image(value), None
    except ImageLoadError as err:
        return None, str(err)
