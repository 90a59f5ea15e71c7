"""Ctrl-C that never splits a write from its journal entry.

A write the tenant accepted must reach the journal before anything else happens. Inside :func:`deferred`
the first Ctrl-C (SIGINT) is held until the block ends: the request in flight finishes and is journaled,
then the interrupt takes effect. A second Ctrl-C stops at once.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator


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
