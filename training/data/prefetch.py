"""Prepare the next item of an iterator on a background thread: :func:`prefetched`.

A streamed split reads, decodes and encodes chunk ``k + 1`` while the training
loop consumes chunk ``k`` (:class:`training.data.streaming.StreamingSplit`).
The look-ahead is bounded: at most ``ahead`` items are being prepared or wait
to be taken, so a streamed epoch holds the chunk in use plus one more, never a
growing queue. Items arrive in the iterator's order and are the iterator's own
objects, so the result does not depend on the thread (same seed and chunk plan,
same batches).

Reading Parquet and the numpy parts of encoding release the GIL, so the thread
overlaps them with the training step's torch kernels; the object-column parts
(bags, strings) still take turns with the training thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetched(items: Iterable[T], ahead: int = 1) -> Iterator[T]:
    """Yield ``items`` in order, computing up to ``ahead`` of them in advance on a thread.

    Args:
        items: the iterator (its ``next`` is what runs on the thread).
        ahead: items prepared in advance; 0 iterates ``items`` on the caller's thread.

    Closing the returned generator early (``break``, ``islice``) stops the
    thread after the item it is preparing; an exception raised by ``items``
    is re-raised here, at the position it happened.
    """
    if ahead < 0:
        raise ValueError(f"ahead must be >= 0, got {ahead}")
    if ahead == 0:
        yield from items
        return
    slots = threading.Semaphore(ahead)  # items being prepared or waiting to be taken
    ready: queue.SimpleQueue[object] = queue.SimpleQueue()
    stop = threading.Event()

    def work() -> None:
        source = iter(items)
        try:
            while True:
                slots.acquire()
                if stop.is_set():
                    return
                try:
                    item = next(source)
                except StopIteration:
                    ready.put(_DONE)
                    return
                ready.put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put(_Failed(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="rocketrank-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            slots.release()  # the consumer took it: prepare the next one
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        slots.release()  # wake the thread if it waits for a slot
        thread.join()


__all__ = ["prefetched"]
