"""`cityagent up`'s children stopped: last started first, peers together, SIGKILL after the
timeout. Real child processes that ignore SIGTERM, as workers whose broker is gone do."""

from __future__ import annotations

import io
import os
import sys
import threading
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


def _wait_for(condition, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_a_second_ctrl_c_kills_what_is_left_at_once_by_pid() -> None:
    """A second Ctrl-C while `up` was stopping was ignored: a stuck worker kept it waiting
    its whole timeout. Now `up`'s handler kills the children by PID (kill_remaining) and sets
    ``forced``, and stop_all stops waiting."""
    out = io.StringIO()
    supervisor = Supervisor(out)
    children = [supervisor.spawn(name, [sys.executable, "-c", STUCK], dict(os.environ))
                for name in ("worker-1", "api")]
    assert _wait_for(lambda: out.getvalue().count("| ready") == 2), out.getvalue()

    def second_ctrl_c() -> None:  # what control.up's handler does, once the stop is under way
        if _wait_for(lambda: "api | told to stop" in out.getvalue()):
            supervisor.forced = True
            assert supervisor.kill_remaining() == children

    threading.Thread(target=second_ctrl_c, daemon=True).start()
    started = time.monotonic()
    supervisor.stop_all(timeout_s=60)
    assert time.monotonic() - started < 30  # not the 60 s timeout of the api, then the worker's
    assert "did not stop" not in out.getvalue()
    assert "worker-1 | told to stop" not in out.getvalue()  # killed before it was told
    assert not any(pid_alive(child.pid) for child in children)
    assert supervisor.kill_remaining() == []  # reaped: their PIDs are left alone


def test_a_reader_that_goes_away_stops_the_output_not_the_supervisor() -> None:
    """`cityagent up | tee log` and Ctrl-C, which stops tee too: the next line raised
    BrokenPipeError, `up` exited 141 and the pump threads died in tracebacks, leaving the
    children blocked on a full pipe. Now nothing more is written and the output is read."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    out = os.fdopen(write_end, "w")
    supervisor = Supervisor(out)
    # More than a pipe holds: a child whose output is not read blocks and never ends.
    child = supervisor.spawn("chatty", [sys.executable, "-c",
                                        "for i in range(20000): print('line', i, '.' * 40)"],
                             dict(os.environ))
    supervisor.say("cityagent", "SIGINT: stopping")
    assert supervisor.output_lost
    assert _wait_for(lambda: not child.alive(), 30), "the child's output was not read"
    assert child.proc.returncode == 0
    child._pump.join(5)
    supervisor.say("cityagent", "stopped; no process left running")  # raises no more
    out.close()  # /dev/null by now: flushes without a BrokenPipeError
