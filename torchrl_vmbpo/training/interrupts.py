"""SIGINT / SIGTERM during training: finish the current step, write a checkpoint, stop with one line.

The first signal only sets a flag that the loop reads after each collector batch (so a model fit in
progress finishes first); a second one stops at once, without a checkpoint (``KeyboardInterrupt``).
Exit codes follow the shell's 128 + signal number: 130 for SIGINT, 143 for SIGTERM.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Which signal asked the run to stop (None: none yet)."""

    def __init__(self):
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)


@contextmanager
def stop_on_signals():
    """Yield a :class:`StopRequest` set by SIGINT / SIGTERM while the block runs; the previous handlers
    come back afterwards. Outside the main thread (where Python cannot install handlers, e.g. inside a
    Ray worker thread) the request is never set and signals keep their usual effect."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum, frame):
        if request.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        request.signum = signum

    previous = {sig: signal.signal(sig, handle) for sig in SIGNALS}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
