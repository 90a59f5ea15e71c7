"""Ctrl-C that never splits a write from its journal entry.

A write the tenant accepted must reach the journal before anything else happens. Inside :func:`deferred`
the first Ctrl-C (SIGINT) is held until the block ends: the request in flight finishes and is journaled,
then the interrupt takes effect. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Self


@contextmanager
def deferred() -> Iterator[None]:
    """Hold the first SIGINT until the block is over (in the main thread; elsewhere signals never arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


class StopSignals:
    """Ctrl-C and SIGTERM routed to :meth:`handle` while the block runs (in the main thread; elsewhere signals
    never arrive), the previous handlers put back afterwards. Subclasses say what a stop means."""

    def __init__(self) -> None:
        self.count = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._signalled)
        return self

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.handle(signum)

    def handle(self, signum: int) -> None:
        raise NotImplementedError

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
