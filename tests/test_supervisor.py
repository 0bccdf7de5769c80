"""`cityagent up`'s children stopped: last started first, peers together, SIGKILL after the
timeout. Real child processes that ignore SIGTERM, as workers whose broker is gone do."""

from __future__ import annotations

import io
import os
import sys
import time

from control.supervisor import Supervisor
from tests.helpers import pid_alive

#: A child that says when it is told to stop, and does not stop.
STUCK = ("import signal, sys, time\n"
         "def told(*_):\n"
         "    print('told to stop', flush=True)\n"
         "signal.signal(signal.SIGTERM, told)\n"
         "print('ready', flush=True)\n"
         "time.sleep(120)\n")


def test_stuck_workers_are_told_to_stop_together_then_killed() -> None:
    """One at a time, `up` waited the whole timeout (15 s) for each stuck worker before it
    even told the next one to stop: 30 s for two whose embedded broker had died."""
    out = io.StringIO()
    supervisor = Supervisor(out)
    children = [supervisor.spawn(name, [sys.executable, "-c", STUCK], dict(os.environ))
                for name in ("worker-1", "worker-2", "api")]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and out.getvalue().count("| ready") < 3:
        time.sleep(0.1)
    assert out.getvalue().count("| ready") == 3, out.getvalue()
    supervisor.stop_all(timeout_s=3)
    lines = [line.strip() for line in out.getvalue().splitlines() if "ready" not in line]
    assert lines[:2] == ["api | told to stop",
                         f"cityagent | api (pid {children[2].pid}) did not stop; killing it"]
    # Both workers are told before either is killed.
    assert sorted(lines[2:4]) == ["worker-1 | told to stop", "worker-2 | told to stop"], lines
    assert lines[4:] == [
        f"cityagent | worker-2 (pid {children[1].pid}) did not stop; killing it",
        f"cityagent | worker-1 (pid {children[0].pid}) did not stop; killing it"], lines
    assert not any(pid_alive(child.pid) for child in children)
