"""Starts and stops the pipeline's child processes, showing their output with a name prefix.

Only the PIDs started here are ever signalled. Children run in their own sessions so that
Ctrl-C reaches this supervisor alone, which then stops them in order: producers first, the
broker last, so nothing accepted is left unsent.

The output may be a pipe whose reader goes away (``cityagent up | tee log``: Ctrl-C stops
``tee`` too). Then nothing more is written, the children's output is still read (a child
blocked on a full pipe would not stop), and :attr:`Supervisor.output_lost` says so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from control.procs import die_with_parent

__all__ = ("Child", "Supervisor")


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    _pump: threading.Thread | None = field(default=None, repr=False)
    argv: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


class Supervisor:
    """The children of one `cityagent up`, in start order."""

    def __init__(self, out: object = None) -> None:
        self.children: list[Child] = []
        self._out = out or sys.stdout
        self._lock = threading.Lock()
        #: The output's reader went away (a broken pipe): nothing more is written.
        self.output_lost = False
        #: Set (from a signal handler) to stop waiting: :meth:`stop_all` then kills at once.
        self.forced = False

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        child = Child(name, proc, argv=tuple(argv), env=dict(env))
        child._pump = threading.Thread(target=self._pump, args=(child,), daemon=True)
        child._pump.start()
        self.children.append(child)
        return child

    def respawn(self, child: Child) -> Child:
        """Start a child that exited again, as it was started, in its place in the order."""
        index = self.children.index(child)
        if child._pump:
            child._pump.join(timeout=2.0)
        new = self.spawn(child.name, child.argv, child.env)
        self.children.remove(new)
        self.children[index] = new
        return new

    def say(self, name: str, line: str) -> None:
        with self._lock:
            if self.output_lost:
                return
            try:
                print(f"{name:>9} | {line}", file=self._out, flush=True)
            except OSError as exc:
                if not isinstance(exc, BrokenPipeError) and exc.errno != errno.EPIPE:
                    raise
                self._lose_output()

    def _lose_output(self) -> None:
        """The reader of the output is gone: write no more. A BrokenPipeError here ended
        `up | tee log` stopped with Ctrl-C (which stops tee too) in exit code 141, and in
        the pump threads in tracebacks. Standard output is pointed at /dev/null, so that
        what is left in its buffer and the interpreter's last flush do not raise again."""
        self.output_lost = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = self._out.fileno()  # type: ignore[attr-defined]
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)

    def say_at_once(self, name: str, line: str) -> None:
        """Write a line with one ``os.write``, from a signal handler: ``print`` there could
        wait for the lock the interrupted code holds, or re-enter its buffered writer."""
        if self.output_lost:
            return
        try:
            os.write(self._out.fileno(), f"{name:>9} | {line}\n".encode())  # type: ignore[attr-defined]
        except (OSError, ValueError, AttributeError):
            pass  # a lost output is found by the next say

    def kill_remaining(self) -> list[Child]:
        """SIGKILL, by PID, every child not yet reaped; the children killed. Safe in a signal
        handler: no wait, no lock. A reaped child's PID may be another process's by now,
        so it is left alone."""
        killed = []
        for child in self.children:
            if child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                    killed.append(child)
        return killed

    def _pump(self, child: Child) -> None:
        assert child.proc.stdout is not None
        for raw in child.proc.stdout:
            self.say(child.name, raw.decode("utf-8", "replace").rstrip())

    def first_dead(self, skip: Collection[str] = ()) -> Child | None:
        """A child that exited on its own, if any, but none named in ``skip`` (those waiting
        to be started again)."""
        return next((c for c in self.children if c.name not in skip and not c.alive()), None)

    def stop_all(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the children, last started first; SIGKILL whatever is left after the timeout,
        or at once once :attr:`forced` is set (a second Ctrl-C, which kills them itself).

        Peers (``worker-1``, ``worker-2``, ...) are stopped together: one at a time, each
        stuck one (its broker gone) kept `up` waiting its own timeout, 15 s per worker, while
        Ctrl-C was ignored."""
        for wave in _waves(list(reversed(self.children))):
            alive = [child for child in wave if child.alive()]
            for child in alive:
                child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            for child in alive:
                self._wait(child, deadline - time.monotonic())
            for child in wave:
                if child.alive() and self.forced:  # killed by the second Ctrl-C: dying
                    _wait(child, 5.0)
                if child.alive():
                    self.say("cityagent", f"{child.name} (pid {child.pid}) did not stop; killing it")
                    os.kill(child.pid, signal.SIGKILL)
                    _wait(child, 5.0)
                if child._pump:
                    child._pump.join(timeout=2.0)


    def _wait(self, child: Child, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while child.alive() and time.monotonic() < deadline and not self.forced:
            time.sleep(0.05)


def _waves(children: list[Child]) -> list[list[Child]]:
    """Runs of children of one kind (the name before its ``-N``), in the order given."""
    waves: list[list[Child]] = []
    for child in children:
        if waves and _kind(waves[-1][0].name) == _kind(child.name):
            waves[-1].append(child)
        else:
            waves.append([child])
    return waves


def _kind(name: str) -> str:
    return name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name


def _wait(child: Child, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while child.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
