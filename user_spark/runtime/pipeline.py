"""Run a producer one step ahead of its consumer, in a background thread: CPU work overlapping GPU work.

On a GPU the encoder's loop is: tokenize and pack a batch (CPU), run it (GPU). Done in turn, the GPU idles while
the CPU tokenizes and the CPU idles while the GPU runs. :class:`Prefetcher` runs the CPU side (a generator) in a
thread that stays up to ``depth`` items ahead. This pays because the expensive CPU parts release the GIL: the Rust
tokenizer's ``encode_batch`` and numpy's copies do, and so do CUDA kernel launches and waits on the consumer's side.

Guarantees the encoder relies on: items arrive in the generator's order; an exception in the generator is raised
in the consumer (with its traceback) at the point where the item would have come; closing the prefetcher (or
leaving its ``with`` block, also by an exception) stops the producer and joins its thread, so no thread outlives
the Arrow batch that started it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

__all__ = ["Prefetcher"]

T = TypeVar("T")

_DONE = object()
_POLL_SECONDS = 0.05


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetcher(Generic[T]):
    """Iterate ``source`` in a background thread, at most ``depth`` items ahead of the consumer.

    >>> with Prefetcher(iter(range(5)), depth=2) as items:
    ...     [i * i for i in items]
    [0, 1, 4, 9, 16]
    """

    def __init__(self, source: Iterable[T], depth: int = 2, *, name: str = "user_spark-prefetch") -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(source,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        """Put ``item``, waiting for room; False when the consumer closed the prefetcher first."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, source: Iterable[T]) -> None:
        iterator = iter(source)
        try:
            for item in iterator:
                if not self._put(item):
                    break
            else:
                self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # a generator's cleanup (finally blocks) runs here, in its own thread

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _DONE:
            self._finished = True
            self._thread.join()
            raise StopIteration
        if isinstance(item, _Failure):
            self._finished = True
            self._thread.join()
            raise item.error
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the producer (after the item it is working on) and wait for its thread to end."""
        self._stop.set()
        self._finished = True
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):  # unblock a producer waiting for room
                self._queue.get(timeout=_POLL_SECONDS)
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
