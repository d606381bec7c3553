"""Ctrl-C and SIGTERM stop a build even where a library swallows the KeyboardInterrupt (a training loop,
a runtime's own signal handling): the signal is remembered, and the build checks it between steps and
before a run is moved into place."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

_received: int | None = None


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so the build cleans up like it does on Ctrl-C."""


def _raise(signum: int) -> None:
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handler(signum: int, frame: Any) -> None:
    global _received
    _received = signum
    _raise(signum)


def check() -> None:
    """Raise again if a stop signal arrived since install(), whatever swallowed the first exception."""
    if _received is not None:
        _raise(_received)


def install() -> Callable[[], None]:
    """Handle SIGINT and SIGTERM (main thread only); returns a function that restores the old handlers."""
    global _received
    _received = None
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, _handler)
        except ValueError:  # not the main thread
            pass

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)

    return restore
