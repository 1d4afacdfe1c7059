"""Work handed off the request path: a bounded queue drained by one daemon thread.

``submit`` never blocks: when the queue is full the item is dropped and ``on_drop("queue_full")``
counts it. The thread starts with the first item and handles items in batches.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """Subclasses implement ``_handle(items)``; it runs on the thread, never raises."""

    thread_name = "flowport-background"
    batch = 512

    def __init__(self, on_drop: Callable[[str], None], queue_size: int) -> None:
        self.on_drop = on_drop
        self._queue: queue.Queue[T | None] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, item: T) -> None:
        """Queue an item, or drop (and count) it when the queue is full. Never blocks."""
        if self._thread is None:
            self._start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.on_drop("queue_full")

    def _handle(self, items: list[T]) -> None:
        raise NotImplementedError

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._drain, name=self.thread_name, daemon=True)
                thread.start()
                self._thread = thread

    def _drain(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            items = [item for item in batch if item is not None]
            try:
                if items:
                    self._handle(items)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if len(items) < len(batch):
                return

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued item is handled or dropped; False on timeout."""
        if self._thread is None:
            return True
        done = threading.Event()
        waiter = threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True)
        waiter.start()
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Handle what is queued, then stop the thread."""
        thread = self._thread
        if thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        thread.join(timeout)
        self._thread = None
