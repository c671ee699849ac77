"""A wall-clock bound on work in the main thread (SIGALRM), for code that may not return: hostile templates, fuzzed files."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Timeout(Exception):
    """Raised inside the bounded block when its time is up."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise Timeout in this (main) thread after `seconds`; elsewhere, no bound (signals need the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise Timeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
