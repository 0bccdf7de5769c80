"""Small helpers shared by the tests (plain functions, importable as ``tests.helpers``)."""

from __future__ import annotations

import os
import socket

__all__ = ("free_port", "pid_alive")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it when binding 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """True if a process with this PID exists (zombies included: they are not reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
