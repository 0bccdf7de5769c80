"""`cityagent audit` exports the alert events of a time range from the alerts topic.

Events go onto a two-partition alerts topic with explicit Kafka timestamps (their ``at_ms``),
from 40 days ago to an hour ago, as a topic that keeps months holds them. The command must
write the events whose ``at_ms`` is in the range (and of the alerts asked for) as JSON lines,
sum them up in one line on stderr, and change nothing on the broker.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from cityagent.readings import format_ts
from control.cli import main as cli_main
from control.topics import TopicSpec, ensure_topics
from tests.api.test_alert_book import alert_event
from tests.helpers import free_port

pytestmark = [pytest.mark.integration]

DAY_MS = 86_400_000
NOW_MS = int(time.time() * 1000)


def ago(days: float) -> int:
    return NOW_MS - round(days * DAY_MS)


def event(alert_id: str, at_ms: int, seq: int, type: str, actor: str = "system",
          **fields) -> dict:
    return alert_event(alert_id, seq=seq, type=type, actor=actor, first_seen_ms=ago(41),
                       last_seen_ms=at_ms, **fields)


#: (partition, event); each is sent with its ``at_ms`` as its Kafka timestamp.
EVENTS = [
    (0, event("flood-lixia", ago(40), 1, "opened")),
    (0, event("flood-lixia", ago(39), 2, "acknowledged", actor="王工",
              status="acknowledged", acknowledged_by="王工", acknowledged_at_ms=ago(39))),
    (0, event("flood-lixia", ago(38), 3, "resolved", actor="王工", status="resolved",
              resolved_by="王工", resolved_at_ms=ago(38))),
    (1, event("pipe-shinan", ago(35), 1, "opened")),
    (1, event("pipe-shinan", ago(2), 2, "commented", actor="李工", detail="阀门已关")),
    (0, event("flood-new", ago(1 / 24), 1, "opened")),
]


@pytest.fixture(scope="module")
def audited(kafka_bootstrap: str) -> dict[str, str]:
    """The environment of a filled alerts topic of its own."""
    prefix = f"audit{NOW_MS % 10**9}"
    topic = f"{prefix}.alerts"
    ensure_topics(kafka_bootstrap, [TopicSpec(topic, 2)])

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for partition, doc in EVENTS:
                await producer.send_and_wait(topic, orjson.dumps(doc), partition=partition,
                                             timestamp_ms=doc["at_ms"])
            await producer.send_and_wait(topic, b"not an event", partition=1,
                                         timestamp_ms=ago(3))
        finally:
            await producer.stop()

    asyncio.run(publish())
    return {"CITYAGENT_KAFKA": kafka_bootstrap, "CITYAGENT_TOPIC_PREFIX": prefix}


def audit(monkeypatch, env: dict[str, str], capsys, *args: str) -> tuple[int, list, list[str]]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = cli_main(["audit", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err.strip().splitlines()


def test_a_range_gives_the_events_of_that_range_and_a_summary(audited, monkeypatch,
                                                              capsys) -> None:
    code, events, err = audit(monkeypatch, audited, capsys, "--since", "45d", "--until", "30d")
    assert code == 0
    assert sorted((e["alert_id"], e["type"]) for e in events) == [
        ("flood-lixia", "acknowledged"), ("flood-lixia", "opened"), ("flood-lixia", "resolved"),
        ("pipe-shinan", "opened")]
    ack = next(e for e in events if e["type"] == "acknowledged")
    assert ack["actor"] == "王工" and ack["at_ms"] == ago(39) and ack["at"] == format_ts(ago(39))
    assert ack["alert"]["acknowledged_by"] == "王工"
    assert [e["type"] for e in events if e["alert_id"] == "flood-lixia"] == [
        "opened", "acknowledged", "resolved"]  # one alert's events in order
    topic = re.escape(f"{audited['CITYAGENT_TOPIC_PREFIX']}.alerts")
    (line,) = err
    assert re.fullmatch(rf"cityagent audit: 4 events of 2 alerts, {format_ts(ago(40))} to "
                        rf"{format_ts(ago(35))} \(read \d+ messages of {topic} in [\d.]+ s\)", line), line


def test_rfc3339_times_and_an_alert_filter_to_a_file(audited, monkeypatch, capsys,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "flood.jsonl"
    since = format_ts(ago(39.5)).replace("Z", "+00:00")
    code, printed, err = audit(monkeypatch, audited, capsys, "--since", since,
                               "--alert", "flood-lixia", "--out", str(out))
    assert code == 0 and printed == [] and [p.name for p in tmp_path.iterdir()] == [out.name]
    events = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert [(e["type"], e["actor"]) for e in events] == [("acknowledged", "王工"),
                                                         ("resolved", "王工")]
    assert len(err) == 1 and err[0].startswith("cityagent audit: 2 events of 1 alert, ")


def test_out_dash_is_stdout(audited, monkeypatch, capsys, tmp_path: Path) -> None:
    """`--out -` wrote a file named '-' in the working folder."""
    monkeypatch.chdir(tmp_path)
    code, events, err = audit(monkeypatch, audited, capsys, "--alert", "flood-lixia", "--out", "-")
    assert code == 0 and list(tmp_path.iterdir()) == []
    assert [e["type"] for e in events] == ["opened", "acknowledged", "resolved"]
    assert len(err) == 1 and err[0].startswith("cityagent audit: 3 events of 1 alert")


def test_by_default_everything_the_retention_holds(audited, monkeypatch, capsys) -> None:
    code, events, err = audit(monkeypatch, audited, capsys)
    assert code == 0 and len(events) == len(EVENTS)
    assert len(err) == 1 and "6 events of 3 alerts" in err[0]
    assert "1 malformed message skipped" in err[0]
    code, events, err = audit(monkeypatch, audited, capsys, "--since", "20m")
    assert code == 0 and events == [] and "no events in the range" in err[0]


def test_a_missing_topic_is_one_line_and_stays_missing(audited, monkeypatch, capsys) -> None:
    env = {**audited, "CITYAGENT_TOPIC_PREFIX": f"none{NOW_MS}"}
    for _ in range(2):  # the first run created no topic either
        code, events, err = audit(monkeypatch, env, capsys)
        assert code == 2 and events == []
        assert err == [f"cityagent audit: topic 'none{NOW_MS}.alerts' does not exist at "
                       f"{audited['CITYAGENT_KAFKA']} (CITYAGENT_TOPIC_PREFIX is "
                       f"'none{NOW_MS}'); nothing to audit"]


@pytest.mark.parametrize("args, words", [
    (["--since", "yesterday"], "--since must be an RFC 3339 time like"),
    (["--until", "2026-10-01T00:00:00"], "--until needs a UTC offset (Z or +08:00)"),
    (["--since", "1d", "--until", "2d"], "must be after --since"),
    (["--alert", " "], "--alert needs an alert id"),
    (["--reorder-window", "an hour"], "--reorder-window must be a duration like 30m, 1h or 2d; "
                                      "got 'an hour'"),
])
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], words: str, monkeypatch,
                                               capsys) -> None:
    monkeypatch.setenv("CITYAGENT_KAFKA", f"127.0.0.1:{free_port()}")
    assert cli_main(["audit", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("cityagent audit: ") and words in line


def test_an_unreachable_broker_is_one_line_and_exit_2(monkeypatch, capsys,
                                                    tmp_path: Path) -> None:
    port = free_port()
    monkeypatch.setenv("CITYAGENT_KAFKA", f"127.0.0.1:{port}")
    out = tmp_path / "audit.jsonl"
    assert cli_main(["audit", "--since", "30d", "--out", str(out)]) == 2
    assert list(tmp_path.iterdir()) == []  # no empty file that looks like an answer
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"cityagent audit: cannot reach the Kafka brokers at 127.0.0.1:{port}")


#: Minutes after ``TIMELINE_T0`` of each partition's events, in the order they are sent:
#: partition 0 every 10 min (its 50 comes before its 40: a command processed late), partition
#: 1 hourly (its 60 ties partition 0's, its two 185s tie each other), partition 2 sparse and
#: far ahead of the others (its 240 comes after its 270). All within the 1 h reorder window.
TIMELINE = {
    0: [0, 10, 20, 30, 50, 40, *range(60, 300, 10)],
    1: [5, 60, 125, 185, 185, 245],
    2: [90, 270, 240, 280],
}
TIMELINE_T0 = ago(5)


@pytest.fixture(scope="module")
def timeline(kafka_bootstrap: str) -> dict[str, str]:
    """A three-partition alerts topic whose partitions' times interleave."""
    prefix = f"audit-order{NOW_MS % 10**9}"
    topic = f"{prefix}.alerts"
    ensure_topics(kafka_bootstrap, [TopicSpec(topic, 3)])

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for partition, minutes in TIMELINE.items():
                for offset, minute in enumerate(minutes):
                    at_ms = TIMELINE_T0 + minute * 60_000
                    doc = event(f"p{partition}-{offset}", at_ms, 1, "opened")
                    await producer.send_and_wait(topic, orjson.dumps(doc), partition=partition,
                                                 timestamp_ms=at_ms)
        finally:
            await producer.stop()

    asyncio.run(publish())
    return {"CITYAGENT_KAFKA": kafka_bootstrap, "CITYAGENT_TOPIC_PREFIX": prefix}


@pytest.mark.parametrize("poll_records", [500, 2])
def test_events_come_out_by_time_then_partition_then_offset(timeline, poll_records, monkeypatch,
                                                            capsys) -> None:
    """Sorted by at_ms across partitions, ties by partition then offset, the late events in
    their place; also when each poll brings two records, so partition 2 is paused while it is
    more than the window ahead of the others (the order then holds about two hours of events)."""
    monkeypatch.setattr("control.audit.POLL_RECORDS", poll_records)
    code, events, err = audit(monkeypatch, timeline, capsys)
    assert code == 0
    expected = sorted((TIMELINE_T0 + minute * 60_000, partition, offset)
                      for partition, minutes in TIMELINE.items()
                      for offset, minute in enumerate(minutes))
    assert [e["alert_id"] for e in events] == [f"p{p}-{o}" for _, p, o in expected]
    assert [e["at_ms"] for e in events] == [at for at, _, _ in expected]
    (line,) = err
    assert re.fullmatch(rf"cityagent audit: {len(expected)} events of {len(expected)} alerts, "
                        rf"{re.escape(format_ts(expected[0][0]))} to "
                        rf"{re.escape(format_ts(expected[-1][0]))} \(read {len(expected)} "
                        r"messages of \S+ in [\d.]+ s\)", line), line
