"""The Kafka client's repeated log lines: the first of each kind at once, then one per interval
that counts those held back (a broker that did not answer made ~400 lines a second)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from streams.log_repeats import RepeatFilter
from tests.helpers import child_tmpdir, free_port


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(message: str, *args: object, name: str = "aiokafka",
           level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


def test_a_kind_is_said_once_per_interval_with_the_count_held_back() -> None:
    clock = Clock()
    repeats = RepeatFilter(10.0, clock)
    said = []
    for node in range(25):  # one every half second, node ids and ports differing
        clock.now += 0.5
        line = record("Unable connect to node with id %s: [Errno 111] %s", node, f"port {node}")
        if repeats.filter(line):
            said.append(line.getMessage())
    assert said == [
        "Unable connect to node with id 0: [Errno 111] port 0",
        "Unable connect to node with id 20: [Errno 111] port 20 (and 19 more like it in the "
        "last 10 s)",
    ]


def test_kinds_are_told_apart_by_words_logger_and_level() -> None:
    repeats = RepeatFilter(10.0, Clock())
    assert repeats.filter(record("Unable to update metadata from [111]"))
    assert repeats.filter(record("Failed fetch messages from 111: NodeNotReadyError"))
    assert repeats.filter(record("Unable to update metadata from [111]", name="aiokafka.conn"))
    assert repeats.filter(record("Unable to update metadata from [111]", level=logging.WARNING))
    assert not repeats.filter(record("Unable to update metadata from [112]"))


def test_info_records_all_pass() -> None:
    """A rebalance's joins and assignments come seconds apart and each one tells something."""
    repeats = RepeatFilter(10.0, Clock())
    assert all(repeats.filter(record("Joined group 'cityagent' (generation %s)", n,
                                     level=logging.INFO)) for n in range(5))


def test_a_kind_quiet_for_an_interval_is_said_at_once_without_a_count() -> None:
    clock = Clock()
    repeats = RepeatFilter(10.0, clock)
    assert repeats.filter(record("Unable to update metadata from [1]"))
    clock.now += 60
    line = record("Unable to update metadata from [1]")
    assert repeats.filter(line) and line.getMessage() == "Unable to update metadata from [1]"


def test_the_api_and_the_worker_count_the_clients_repeated_lines(tmp_path) -> None:
    """Both processes against a port nobody answers: the client's failed connections, which
    repeat, are counted (the API's publisher retries every second for 30 s, the worker's
    zones, maintenance and routing followers every 5 s while it waits 30 s for them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYAGENT_")}
    env.update(CITYAGENT_KAFKA=f"127.0.0.1:{free_port()}", CITYAGENT_API_KEYS="admin:k1",
               PYTHONUNBUFFERED="1", TMPDIR=str(child_tmpdir()))
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory",
                            "api.main:create_app_from_env", "--port", str(free_port())],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    worker = subprocess.Popen([sys.executable, "-m", "streams"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        said = {name: proc.communicate(timeout=120)[0].decode("utf-8", "replace")
                for name, proc in (("api", api), ("worker", worker))}
    finally:
        for proc in (api, worker):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, output in said.items():
        assert "Unable connect to " in output, (name, output[-3000:])
        assert "more like it in the last 1" in output, (name, output[-3000:])
