"""Child processes that cannot outlive us: the kernel stops them if their parent dies."""

from __future__ import annotations

import ctypes
import signal
import sys

__all__ = ("die_with_parent",)

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for Popen: on Linux, SIGTERM this child when its parent dies.

    Without it, a `cityagent up` or a test run killed with SIGKILL would leave its broker and
    workers running. Elsewhere (macOS) it does nothing: orderly shutdown still stops them.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
