"""Training batches prepared ahead, on a background thread.

``spacy_m3el.PrefetchBatcher.v1`` wraps any batcher: a worker thread takes the next
batches from it and lets each registered component prepare what does not depend on the
weights (for ``m3el_linker``: the gold spans copied onto the predicted docs, the images
attached and loaded), while the training thread runs the current step. Components
register with :func:`register` (the linker does at ``initialize``); they must keep the
step's results identical to preparing on the training thread, so a run with prefetching
gives the same weights as one without. The worker uses no random generator.
"""

import threading
import weakref
from queue import Empty, Full, Queue
from typing import Any, Callable, Iterable, Iterator, List

_PREPARERS: "weakref.WeakSet[Any]" = weakref.WeakSet()
_POLL_SECONDS = 0.1


def register(component: Any) -> None:
    """Prepare every prefetched batch with ``component.prepare_batch(examples)``."""
    _PREPARERS.add(component)


def unregister(component: Any) -> None:
    _PREPARERS.discard(component)


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()


def prefetched(batches: Iterable[List[Any]], ahead: int) -> Iterator[List[Any]]:
    """Yield ``batches`` in order, each prepared (and taken from the inner batcher) on a
    worker thread up to ``ahead`` batches before it is needed. An error in the worker is
    raised here; closing the generator stops the worker."""
    queue: Queue = Queue(maxsize=max(1, ahead))
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=_POLL_SECONDS)
                return True
            except Full:
                continue
        return False

    def work() -> None:
        try:
            for batch in batches:
                for component in list(_PREPARERS):
                    component.prepare_batch(batch)
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as err:  # handed to the training thread
            put(_Failure(err))

    worker = threading.Thread(target=work, name="m3el-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            try:
                item = queue.get(timeout=_POLL_SECONDS)
            except Empty:
                if not worker.is_alive() and queue.empty():
                    raise RuntimeError("The prefetch worker stopped without finishing.") from None
                continue
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()


def prefetch_batcher(batcher: Callable[[Iterable[Any]], Iterable[List[Any]]], ahead: int):
    """A batcher that runs ``batcher`` ``ahead`` batches in advance on a worker thread."""
    if ahead < 1:
        raise ValueError(f"spacy_m3el.PrefetchBatcher.v1: ahead must be at least 1, got {ahead}.")

    def batch(items: Iterable[Any]) -> Iterator[List[Any]]:
        return prefetched(batcher(items), ahead)

    return batch
