"""The Kafka client's repeated log lines: the first of each kind at once, then one per interval
that counts those held back (a broker that did not answer made ~400 lines a second)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from cityagent.settings import Settings
from control.broker import EmbeddedBroker
from control.topics import ensure_topics, pipeline_topics
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


@pytest.mark.integration
@pytest.mark.slow
def test_the_api_and_the_worker_count_the_clients_repeated_lines(tmp_path) -> None:
    """Both processes on a broker that then goes away: the client's errors, which repeat with
    each retry, are counted."""
    broker = EmbeddedBroker(free_port(), log_path=tmp_path / "tansu.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYAGENT_")}
    env.update(CITYAGENT_KAFKA=broker.start(), CITYAGENT_API_KEYS="admin:k1",
               CITYAGENT_SESSION_TIMEOUT_S="6", PYTHONUNBUFFERED="1", TMPDIR=str(child_tmpdir()))
    ensure_topics(env["CITYAGENT_KAFKA"], pipeline_topics(Settings.from_env(env)))
    outputs = {name: open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115
               for name in ("api", "worker")}
    procs = {
        "api": subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory",
                                 "api.main:create_app_from_env", "--port", str(free_port())],
                                env=env, stdout=outputs["api"], stderr=subprocess.STDOUT),
        "worker": subprocess.Popen([sys.executable, "-m", "streams"], env=env,
                                   stdout=outputs["worker"], stderr=subprocess.STDOUT),
    }

    def said(name: str) -> str:
        return (tmp_path / f"{name}.log").read_text("utf-8", "replace")

    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "this worker now reads partitions" not in said(
                "worker"):
            time.sleep(0.5)
        assert "this worker now reads partitions" in said("worker"), said("worker")[-3000:]
        broker.stop()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(
                "more like it in the last 1" in said(name) for name in procs):
            time.sleep(0.5)
    finally:
        broker.stop()
        for proc in procs.values():
            proc.kill()
            proc.wait()
        for out in outputs.values():
            out.close()
    for name in procs:
        assert "more like it in the last 1" in said(name), (name, said(name)[-3000:])
