"""A wall-clock bound on one case: past it, the case fails with a clear error instead of holding the run.

The bound is a SIGALRM timer in the process that runs the case (a worker process, or the caller's main thread).
Python runs the handler between bytecodes and system calls return early when it fires, so a read that waits
(slow network share) or a long Python loop is cut short; a single call into C (one SimpleITK read of a large
regular file) finishes first. Where no timer can be set (a thread other than the main one, Windows) the case runs
without a bound. Inputs that could block forever (devices, FIFOs, sockets) are refused before, by
:mod:`site_client.imaging.inputs`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from site_client.imaging.errors import CaseInputError

# Default per-case bound: far above the minutes a large CT case takes, far below "hangs for ever".
CASE_TIME_LIMIT_S = 1800.0


class CaseTimeout(CaseInputError):
    """The case ran past its time bound."""


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str) -> Iterator[None]:
    """Raise :class:`CaseTimeout` naming ``what`` when the body runs longer than ``seconds`` (None: no bound)."""
    usable = (
        seconds is not None
        and seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    message = f"{what}: gave up after {seconds:g} s (the per-case time limit); is a file on a slow or hung network share?"
    expired = False

    def expire(signum, frame):  # noqa: ARG001 - signal handler signature
        nonlocal expired
        expired = True
        raise CaseTimeout(message)

    # The handler's exception surfaces wherever the body happens to be, and code there may swallow it: CaseTimeout
    # is a ValueError (a CaseInputError), so ``os.path.lexists`` / ``Path.exists`` turn it into "False" and the
    # case would fail as "file not found". Once the timer has fired the case fails with the time-limit reason,
    # whatever the body raised or returned meanwhile.
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except BaseException as exc:
        if expired and not isinstance(exc, CaseTimeout):
            raise CaseTimeout(message) from None
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if expired:
        raise CaseTimeout(message)
