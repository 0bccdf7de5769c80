"""Small helpers shared by the tests (plain functions, importable as ``tests.helpers``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from cityagent.settings import ENV_VARS, Settings
from control.procs import die_with_parent
from control.topics import ensure_topics, pipeline_topics
from control.up import api_argv

__all__ = ("free_port", "pid_alive", "ChildProcess", "pipeline_env", "start_worker", "start_api",
           "consume_all", "consume_records", "ADMIN_KEY", "OPERATOR_KEY", "INTEGRATOR_KEY",
           "TEST_API_KEYS", "AUTH", "Pipeline", "running_pipeline")

#: API keys of the API that start_api starts, unless the settings name their own.
ADMIN_KEY = "test-admin-key"
OPERATOR_KEY = "test-operator-key"
INTEGRATOR_KEY = "test-integrator-key"
TEST_API_KEYS = f"admin:{ADMIN_KEY},operator:{OPERATOR_KEY},integrator:{INTEGRATOR_KEY}"
#: Headers of a request made with the admin key: ``httpx.post(url, json=..., headers=AUTH)``.
AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


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


class ChildProcess:
    """A process a test started: output to a log file, stopped by its own PID only."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: the crash a worker must survive."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text("utf-8", "replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_for_log(self, text: str, timeout_s: float = 20.0) -> None:
        """Wait until ``text`` is in the process's log (it is running meanwhile): a line the
        process writes when it has done something, rather than a sleep that guesses how long."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log_path.read_text("utf-8", "replace"):
            self.assert_running()
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.log_path.name}: no {text!r} within {timeout_s:g} s:\n"
                                     f"{self.log_tail()}")
            time.sleep(0.2)

    def assert_running(self) -> None:
        """Fail now, with the end of its log, if the process has exited: a test waiting for
        its output would otherwise wait out its whole timeout and report only that."""
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"{self.log_path.name}: the process exited with code {code}:\n"
                                 f"{self.log_tail()}")


_child_tmpdir: Path | None = None


def child_tmpdir() -> Path:
    """The temp directory of the tests' child processes (each worker's Faust data directory,
    an ``up``'s logs), made on first use and removed when the session ends (tests/conftest.py):
    they used to leave ~1,000 directories in /tmp over a few dozen test runs. Made lazily, so a
    process that starts no child (pytest-xdist's controller) leaves none behind."""
    global _child_tmpdir
    if _child_tmpdir is None:
        _child_tmpdir = Path(tempfile.mkdtemp(prefix="cityagent-test-children-"))
    return _child_tmpdir


def remove_child_tmpdir() -> None:
    if _child_tmpdir is not None:
        shutil.rmtree(_child_tmpdir, ignore_errors=True)


def pipeline_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a child process (worker, API, simulator) use these settings:
    every one of them (``settings.ENV_VARS``), the sensor registry, zones and alerting files
    included, which were left out; the broker's address always, and :data:`TEST_API_KEYS`
    unless the settings name keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYAGENT_")}
    for var, (name, _meaning) in ENV_VARS.items():
        value = getattr(settings, name)
        if value is not None:
            env[var] = str(value)
    env.update({
        "CITYAGENT_KAFKA": settings.bootstrap,
        "CITYAGENT_API_KEYS": settings.api_keys or TEST_API_KEYS,
        "PYTHONUNBUFFERED": "1",
        "TMPDIR": str(child_tmpdir()),
    })
    return env


def start_worker(settings: Settings, log_path: Path) -> ChildProcess:
    return ChildProcess([sys.executable, "-m", "streams"], pipeline_env(settings), log_path)


def start_api(settings: Settings, log_path: Path, timeout_s: float = 30.0) -> ChildProcess:
    """Start the API with uvicorn, as `cityagent up` does, and wait until /healthz answers."""
    api = ChildProcess(api_argv("127.0.0.1", settings.api_port), pipeline_env(settings), log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{settings.api_port}/healthz", timeout=1).status_code == 200:
                return api
        except httpx.HTTPError:
            pass
        if api.proc.poll() is not None:
            break
        time.sleep(0.2)
    api.stop()
    raise AssertionError(f"the API did not come up:\n{api.log_tail()}")


def consume_records(bootstrap: str, topic: str, until, timeout_s: float = 60.0,
                    watch: Iterable[ChildProcess] = ()) -> list:
    """Records of a topic from its start until ``until(records)`` is true or time runs out;
    fails at once if a process in ``watch`` (the worker that should write them) exits."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    records: list = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not until(records):
            for process in watch:
                process.assert_running()
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def consume_to_end(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list:
    """Every record of a topic, from its start to its end as it is now: what a producer had
    stored when Kafka acknowledged it (the API answers 202 only then) is all there, so a
    count of it needs no wait "for any late one to arrive"."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        assert parts, f"no topic {topic!r}"
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        records: list = []
        deadline = time.monotonic() + timeout_s
        while behind := {tp: end for tp, end in ends.items() if consumer.position(tp) < end}:
            assert time.monotonic() < deadline, f"{topic}: not read to its end {behind}"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def consume_all(bootstrap: str, topic: str, until, timeout_s: float = 60.0,
                watch: Iterable[ChildProcess] = ()) -> list[dict]:
    """JSON values of a topic from its start until ``until(values)`` is true or time runs out
    (or a process in ``watch`` exits: see consume_records)."""
    records = consume_records(
        bootstrap, topic, lambda rs: until([orjson.loads(r.value) for r in rs]), timeout_s,
        watch)
    return [orjson.loads(r.value) for r in records]


@dataclass
class Pipeline:
    """A running worker and API on their own topics of the test broker."""

    settings: Settings
    url: str
    worker: ChildProcess
    api: ChildProcess


@contextmanager
def running_pipeline(kafka_bootstrap: str, logs: Path, prefix: str,
                     api_keys: str | None = None) -> Iterator[Pipeline]:
    """Topics, a worker and the API (2 s windows, 1 s grace, 6 s session timeout), stopped by
    PID on the way out.
    ``api_keys``: the API's keys (``CITYAGENT_API_KEYS``) instead of :data:`TEST_API_KEYS`."""
    tag = uuid.uuid4().hex[:10]
    settings = Settings(kafka=kafka_bootstrap, topic_prefix=f"{prefix}{tag}",
                        app_id=f"{prefix}-{tag}", partitions=4, api_port=free_port(),
                        window_s=2.0, grace_s=1.0, checkpoint_s=0.5, api_keys=api_keys,
                        session_timeout_s=6)  # joins in ~3 s, not ~5 (tests/conftest.py)
    ensure_topics(kafka_bootstrap, pipeline_topics(settings))
    worker = start_worker(settings, logs / "worker.log")
    try:
        api = start_api(settings, logs / "api.log")
    except BaseException:
        worker.stop()
        raise
    try:
        yield Pipeline(settings, f"http://127.0.0.1:{settings.api_port}", worker, api)
    finally:
        api.stop()
        worker.stop()
