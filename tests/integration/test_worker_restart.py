"""A worker killed with SIGKILL mid-stream comes back with its state, the same episode ids
and the same incident alert.

This is the test the embedded broker's short end offsets make necessary: Faust recovers a
table from its changelog up to the reported end offset, and on Tansu that offset can fall
short of the last batch's tail (docs/architecture.md). If state were lost, the breaches that
continue after the restart would open new episodes, and their alerts would get new ids.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

import cityagent
from api.commands import CommandPublisher, command_topic
from cityagent.batch import ReadingBatch, bucket_key, bucket_of, encode_batch
from cityagent.detection import Anomaly, anomaly_id
from cityagent.incident_alert import Command
from cityagent.incidents import AlertingConfig, IncidentEngine, ScopeState
from cityagent.readings import parse_reading
from cityagent.regions import default_regions
from cityagent.routing import Router
from cityagent.state import BucketState
from cityagent.zones import ZoneIndex, demo_zones
from control.topics import ensure_topics, pipeline_topics
from streams.partitions import partition_of_key
from tests.helpers import ChildProcess, consume_all, consume_records, pipeline_env, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BREACHING = [f"jn-wl-restart-{i:03d}" for i in range(60)]
NORMAL = [f"jn-wl-calm-{i:03d}" for i in range(300)]


def readings(sensors: list[str], level: float, ts: float) -> list:
    return [parse_reading({"sensor_id": s, "kind": "water_level", "ts": ts, "lon": 117.0197,
                           "lat": 36.6614, "level_m": level}) for s in sensors]


def send(producer: KafkaProducer, topic: str, rows: list) -> int:
    """Send the readings a message per bucket, as producers do; the messages sent."""
    sent = 0
    for key, part in ReadingBatch.from_readings(rows, [370102] * len(rows)).split_by_bucket():
        producer.send(topic, key=key.encode(), value=encode_batch(part))
        sent += 1
    producer.flush()
    return sent


def level_events_by_sensor(values: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = defaultdict(list)
    for v in values:
        if v["detector"] == "level":
            found[v["sensor_id"]].append(v)
    return found


def started(values: list[dict]) -> set[str]:
    return {v["sensor_id"] for v in values if v["detector"] == "level" and v["phase"] == "start"}


def silent(values: list[dict]) -> set[str]:
    return {v["sensor_id"] for v in values if v["detector"] == "silence" and v["phase"] == "start"}


def breach(settings, producer: KafkaProducer, t0: float, watch) -> tuple[dict[str, str], int]:
    """Phase 1: sixty gauges spread over many buckets go over the red line; wait for their
    episodes and the flood alert; return each gauge's anomaly id, and the readings messages
    sent."""
    sent = send(producer, settings.readings_topic, readings(NORMAL + BREACHING, 2.0, t0))
    sent += send(producer, settings.readings_topic,
                 readings(BREACHING, 5.5, t0 + 10) + readings(NORMAL, 2.1, t0 + 10))
    opened = consume_all(settings.bootstrap, settings.anomalies_topic, timeout_s=90,
                         until=lambda v: len(started(v)) >= len(BREACHING), watch=watch)
    assert started(opened) == set(BREACHING), "\n".join(w.log_tail() for w in watch)
    consume_all(settings.bootstrap, settings.alerts_topic, timeout_s=60,
                until=lambda v: any(e["type"] == "opened" for e in v), watch=watch)
    return {a["sensor_id"]: a["anomaly_id"] for a in opened if a["detector"] == "level"}, sent


def await_committed(settings, watch, partitions: set[int] | None = None, **least: int) -> None:
    """Wait until the worker's group has committed every record of the topics named (the
    readings, anomalies or scopes topic: ``readings=120``), the first that many at least
    (each test's topics are its own), of every partition or of ``partitions`` only (those of
    one of two workers): a worker started after a kill is handed none of them again. Faust
    commits what the agents acknowledged every 2.8 s (``broker_commit_interval``), and they
    acknowledge what a checkpoint holds; the tests slept 4 s for it."""
    ends: dict[TopicPartition, int] = {}
    for name, count in least.items():
        topic = getattr(settings, f"{name}_topic")
        records = consume_records(settings.bootstrap, topic, timeout_s=60, watch=watch,
                                  until=lambda rs, count=count: len(rs) >= count)
        assert len(records) >= count, (topic, len(records), count)
        for r in records:
            if partitions is not None and r.partition not in partitions:
                continue
            tp = TopicPartition(topic, r.partition)
            ends[tp] = max(ends.get(tp, 0), r.offset + 1)
    group = KafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=settings.app_id,
                          enable_auto_commit=False)  # asks for offsets; never joins the group
    try:
        def behind() -> dict[TopicPartition, tuple[int | None, int]]:
            return {tp: (done, end) for tp, end in ends.items()
                    if (done := group.committed(tp)) is None or done < end}
        wait_until(lambda: not behind(), 60, f"commits still behind: {behind()}", watch)
    finally:
        group.close()


def recede(settings, producer: KafkaProducer, t0: float, watch) -> tuple[list, list]:
    """Last phase: the gauges recede (two normal windows end an episode); wait until every
    episode has ended and the alert has no active sensor; (anomalies, alert events)."""
    send(producer, settings.readings_topic,
         readings(BREACHING, 1.0, t0 + 30) + readings(BREACHING, 1.0, t0 + 32))
    values = consume_all(
        settings.bootstrap, settings.anomalies_topic, timeout_s=120,
        until=lambda v: {s for s, evs in level_events_by_sensor(v).items()
                         if evs[-1]["phase"] == "end"} >= set(BREACHING), watch=watch)
    events = consume_all(
        settings.bootstrap, settings.alerts_topic, timeout_s=60,
        until=lambda v: any(e["alert"] and e["alert"]["active_sensor_count"] == 0
                            for e in v), watch=watch)
    return values, events


#: A worker sends its first JoinGroup at least this long after its process starts: Faust's
#: TableManager sleeps 1 s before the consumer subscribes (and the imports take more).
JOIN_AFTER_START_S = 1.0


def await_the_killed_members_half_session(killed_at: float, session_timeout_s: float) -> None:
    """Return when a worker started now joins the group no sooner than half the session
    timeout after the SIGKILL at ``killed_at`` (``time.monotonic()``).

    The embedded broker holds a JoinGroup for about half the session timeout and then forms
    the generation with every member whose session has not expired. A join that comes
    sooner after a SIGKILL ends while the killed member still counts; the new worker then
    waits in that generation, and in a second join, ~8 s longer. Measured with plain
    consumers (6 s sessions): joining 2.5 s after the kill, assigned 11.2 s later; 3 s
    after, 3.2 s later. Starting the new worker sooner was a race that the worker's start-up
    time decided, and lost once it took under ~3 s."""
    time.sleep(max(0.0, killed_at + session_timeout_s / 2 - JOIN_AFTER_START_S
                   - time.monotonic()))


def assert_one_episode_and_alert_each(values: list, events: list, first_ids: dict[str, str],
                                      t0: float, log: str) -> None:
    """Every gauge's episode ended under the id it began with, from its first breach; and
    the sixty stayed one flood incident, opened once: the same alert all along."""
    by_sensor = level_events_by_sensor(values)
    ended = {s for s, evs in by_sensor.items() if evs[-1]["phase"] == "end"}
    assert ended == set(BREACHING), log
    for sensor in BREACHING:
        evs = by_sensor[sensor]
        assert {a["anomaly_id"] for a in evs} == {first_ids[sensor]}, f"{sensor}: {evs}"
        assert evs[-1]["since_ms"] == int(t0 + 10) * 1000, f"{sensor}: {evs}"
        assert evs[-1]["severity"] == "orange", f"{sensor}: {evs}"  # 5.5 m: over 保证
    floods = [e for e in events if e["alert"] and e["alert"]["family"] == "flood"]
    assert len({e["alert_id"] for e in floods}) == 1, {e["alert_id"] for e in floods}
    assert [e["type"] for e in floods].count("opened") == 1
    assert floods[-1]["alert"]["sensor_count"] == len(BREACHING)
    assert floods[-1]["alert"]["correlated"] is True


def test_state_and_alert_identity_survive_sigkill(settings_factory, tmp_path) -> None:
    settings = settings_factory(session_timeout_s=6)
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    t0 = float(int(time.time()) // 2 * 2 - 600)  # on a boundary of the tests' 2 s windows
    worker = start_worker(settings, tmp_path / "worker-1.log")
    try:
        first_ids, sent = breach(settings, producer, t0, watch=(worker,))  # 1. sixty gauges breach
        # Committed: the restart must not replay phase 1.
        await_committed(settings, (worker,), readings=sent, anomalies=len(BREACHING),
                        scopes=len(BREACHING))
        worker.kill()
        killed_at = time.monotonic()
    finally:
        worker.stop()

    # 2. While no worker runs, the breaches continue; then a new worker starts.
    send(producer, settings.readings_topic, readings(BREACHING, 5.8, t0 + 20))
    await_the_killed_members_half_session(killed_at, settings.session_timeout_s)
    worker = start_worker(settings, tmp_path / "worker-2.log")
    try:
        # 3. The gauges recede: every episode must end as the alert it began as.
        values, events = recede(settings, producer, t0, watch=(worker,))
    finally:
        worker.stop()
        producer.close()
    assert_one_episode_and_alert_each(values, events, first_ids, t0, worker.log_tail())


def test_sigterm_checkpoints_acknowledges_and_exits(settings_factory, tmp_path) -> None:
    """A worker stopped with SIGTERM writes the state it has applied and acknowledges those
    messages before it exits. The agent acknowledges only what a checkpoint holds, and
    Faust's shutdown waits, with no time limit, for every message a stream took to be
    acknowledged, after stopping the timer that checkpoints: without a final checkpoint
    the worker waited there until it was killed (exit code -9 here, after 60 s)."""
    settings = settings_factory(checkpoint_s=600.0)  # no checkpoint but the final one
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    gauges = [f"jn-wl-stop-{i:03d}" for i in range(40)]
    buckets = {bucket_key(bucket_of(s)) for s in gauges}
    t0 = float(int(time.time()) // 2 * 2 - 600)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        send(producer, settings.readings_topic, readings(gauges, 5.5, t0))
        send(producer, settings.readings_topic, readings(gauges, 5.5, t0 + 10))
        opened = consume_all(settings.bootstrap, settings.anomalies_topic, timeout_s=90,
                             until=lambda v: started(v) >= set(gauges), watch=(worker,))
        assert started(opened) == set(gauges), worker.log_tail()
    finally:
        worker.stop(timeout_s=60)
        producer.close()
    assert worker.proc.returncode == 0, worker.log_tail()
    log = worker.log_path.read_text("utf-8", "replace")
    assert "stopping: checkpointing" in log and "wait_empty" not in log, worker.log_tail()
    changelog = f"{settings.app_id}-detector_state-changelog"
    checkpointed = consume_records(settings.bootstrap, changelog, timeout_s=30,
                                   until=lambda rs: {r.key.decode() for r in rs} >= buckets)
    assert {r.key.decode() for r in checkpointed} == buckets
    # Every readings message was acknowledged, so the group's committed offsets reach the
    # end of each partition: a restarted worker is handed nothing again.
    sent = defaultdict(int)
    for record in consume_records(settings.bootstrap, settings.readings_topic, timeout_s=10,
                                  until=lambda rs: len(rs) >= 2 * len(buckets)):
        sent[record.partition] += 1
    group = KafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=settings.app_id,
                          enable_auto_commit=False)  # asks for offsets; never joins the group
    try:
        committed = {p: group.committed(TopicPartition(settings.readings_topic, p))
                     for p in range(settings.partitions)}
    finally:
        group.close()
    assert {p: o for p, o in committed.items() if o} == dict(sent), (committed, dict(sent))


#: ``python -m streams`` with one more stop hook, after the others, that awaits 0.2 s: the
#: feeds' stop (the last hook) awaits a few milliseconds, and an agent given the loop then
#: took another message, in one stop in four to two in three under load. 0.2 s (under the
#: test's checkpoint interval, after which the agent would checkpoint itself) makes it
#: certain, so the test fails every time on the code it guards against.
SLOW_STOP_HOOK_WORKER = """
import asyncio
from streams import __main__ as worker_main

build = worker_main.build_worker

def build_with_a_slow_stop_hook(settings, say):
    worker = build(settings, say)

    async def slow() -> None:
        await asyncio.sleep(0.2)

    worker.app.before_stop.append(slow)
    return worker

worker_main.build_worker = build_with_a_slow_stop_hook
worker_main.main()
"""


def test_a_stopping_worker_takes_no_message_after_its_final_checkpoint(settings_factory,
                                                                        tmp_path) -> None:
    """A worker told to stop (SIGTERM) with messages still queued for its agents takes none
    after its final checkpoint, however long its stop hooks await, so Faust's wait for
    unacknowledged messages ends at once and the worker exits 0. Before, the detection agent
    went on taking messages while a stop hook awaited (the feeds' stop); nothing
    acknowledged them, and Faust waited for them until the worker was killed (4 SIGTERMs in
    6 under a steady stream, killed after 30 s; `cityagent up` kills after 15 s). The next
    worker is handed the rest of the backlog: the gauges that breach only at its end are
    found, and those breaching all along keep their episodes (one anomaly id each)."""
    settings = settings_factory(checkpoint_s=600.0)  # no checkpoint but the final one
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    early = [f"jn-wl-early-{i:03d}" for i in range(40)]
    late = [f"jn-wl-late-{i:03d}" for i in range(20)]
    t0 = float(int(time.time()) // 2 * 2 - 3600)  # on a boundary of the tests' 2 s windows
    steps = 60
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    try:
        for step in range(steps):  # a backlog: ~220 messages (one per bucket) a step
            ts = t0 + 2 * step
            rows = readings(early, 5.5, ts) + readings(NORMAL, 2.0, ts)
            # The late gauges breach in the last two steps: a window of one reading that
            # jumps alone is held until the next one confirms it (detectors.deviation).
            rows += readings(late, 5.5 if step >= steps - 2 else 2.0, ts)
            send(producer, settings.readings_topic, rows)
    finally:
        producer.close()
    worker = ChildProcess([sys.executable, "-c", SLOW_STOP_HOOK_WORKER],
                          pipeline_env(settings), tmp_path / "worker-1.log")
    try:
        opened = consume_all(settings.bootstrap, settings.anomalies_topic, timeout_s=120,
                             until=lambda v: bool(started(v)), watch=(worker,))
        assert started(opened) <= set(early), opened  # the backlog's end is still to read
    finally:
        worker.stop(timeout_s=60)  # SIGTERM; SIGKILL (exit code -9) only after 60 s
    log = worker.log_path.read_text("utf-8", "replace")
    assert worker.proc.returncode == 0, worker.log_tail()
    assert "wait_empty" not in log and "still not acknowledged" not in log, worker.log_tail()

    successor = start_worker(replace(settings, checkpoint_s=0.5), tmp_path / "worker-2.log")
    try:
        values = consume_all(settings.bootstrap, settings.anomalies_topic, timeout_s=180,
                             until=lambda v: started(v) >= set(early) | set(late),
                             watch=(successor,))
    finally:
        successor.stop()
    assert started(values) == set(early) | set(late), successor.log_tail()
    by_sensor = level_events_by_sensor(values)
    for gauge in early:
        assert len({a["anomaly_id"] for a in by_sensor[gauge]}) == 1, by_sensor[gauge]


def gauges_in_one_bucket(count: int) -> tuple[str, list[str]]:
    """``count`` gauge ids that all fall in one sensor bucket; (its key, the ids)."""
    ids = [f"jn-wl-crowd-{i:06d}" for i in range(400 * count)]  # 256 buckets
    target = bucket_of(ids[0])
    return bucket_key(target), [s for s in ids if bucket_of(s) == target][:count]


def test_a_bucket_larger_than_a_kafka_record_is_checkpointed_in_parts_and_recovered(
        settings_factory, tmp_path) -> None:
    """1,500 gauges in one bucket: its state (~1.3 MB) is more than Kafka and Faust's
    producer take in one record (1 MB). Written as one record, the worker crashed at its
    first checkpoint (a fleet of ~300k sensors fills buckets that far). In parts, all sent
    to the bucket's partition, it checkpoints, and a worker started after a SIGKILL recovers
    every part: the episodes go on under the ids they began with.

    And a bucket that forgot sensors is checkpointed smaller: 700 more gauges of the bucket
    last reported 31 days ago (history sent late, four parts with the crowd), the crowd
    also 29 days ago and then now; the worker forgets the 700 (30 days of event time),
    writes three parts, deletes the fourth, and the restarted worker recovers the state
    without them."""
    settings = settings_factory(session_timeout_s=6)
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    bucket, everyone = gauges_in_one_bucket(2200)
    crowd, gone = everyone[:1500], everyone[1500:]
    assert len(crowd) == 1500 and len(gone) == 700
    rising, calm = crowd[:20], crowd[20:]
    t0 = float(int(time.time()) // 2 * 2 - 600)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all",
                             max_request_size=8 << 20)
    changelog = f"{settings.app_id}-detector_state-changelog"
    worker = start_worker(settings, tmp_path / "worker-1.log")
    try:
        sent = send(producer, settings.readings_topic, readings(everyone, 2.0, t0 - 31 * 86_400))
        consume_records(settings.bootstrap, changelog, timeout_s=60, watch=(worker,),
                        until=lambda rs: f"{bucket}/3" in {r.key.decode() for r in rs})
        # The crowd is not silent for 30 days by then: their readings come in several
        # messages, and the first of a new hour of event time looks for sensors to forget.
        sent += send(producer, settings.readings_topic, readings(crowd, 2.0, t0 - 29 * 86_400))
        sent += send(producer, settings.readings_topic, readings(crowd, 2.0, t0))
        sent += send(producer, settings.readings_topic,
                     readings(rising, 5.5, t0 + 10) + readings(calm, 2.1, t0 + 10))
        opened = consume_all(settings.bootstrap, settings.anomalies_topic, timeout_s=90,
                             until=lambda v: started(v) >= set(rising), watch=(worker,))
        first_ids = {a["sensor_id"]: a["anomaly_id"] for a in opened if a["detector"] == "level"}
        parts = consume_records(
            settings.bootstrap, changelog, timeout_s=60, watch=(worker,),
            until=lambda rs: any(r.key.decode() == f"{bucket}/3" and r.value is None
                                 for r in rs))
        # Committed: the restart must not replay the breach.
        await_committed(settings, (worker,), readings=sent, anomalies=len(rising))
        worker.kill()
        killed_at = time.monotonic()
    finally:
        worker.stop()
    log = worker.log_path.read_text("utf-8", "replace")
    assert f"bucket {bucket}: forgot 700 sensors not heard from for 30 days" in log, log[-2000:]
    keys = {r.key.decode() for r in parts}
    assert keys == {bucket} | {f"{bucket}/{n}" for n in range(1, len(keys))}, keys
    assert {r.partition for r in parts} == {partition_of_key(bucket, settings.partitions)}
    latest = {r.key: r.value for r in sorted(parts, key=lambda r: r.offset)}
    assert latest.pop(f"{bucket}/3".encode()) is None  # deleted after the smaller checkpoint
    assert max(len(r.value) for r in parts if r.value) < 1_000_000 < sum(map(len, latest.values()))
    assert sorted(BucketState.from_parts(list(latest.values())).ids) == sorted(crowd)

    send(producer, settings.readings_topic, readings(rising, 5.8, t0 + 20))
    await_the_killed_members_half_session(killed_at, settings.session_timeout_s)
    worker = start_worker(settings, tmp_path / "worker-2.log")
    try:
        send(producer, settings.readings_topic,
             readings(rising, 1.0, t0 + 30) + readings(rising, 1.0, t0 + 32))
        values = consume_all(
            settings.bootstrap, settings.anomalies_topic, timeout_s=120, watch=(worker,),
            until=lambda v: {s for s, evs in level_events_by_sensor(v).items()
                             if evs[-1]["phase"] == "end"} >= set(rising))
    finally:
        worker.stop()
        producer.close()
    log = worker.log_path.read_text("utf-8", "replace")
    assert "checkpoint unreadable" not in log, worker.log_tail()
    by_sensor = level_events_by_sensor(values)
    for sensor in rising:
        evs = by_sensor[sensor]
        assert {a["anomaly_id"] for a in evs} == {first_ids[sensor]}, f"{sensor}: {evs}"
        assert evs[-1]["phase"] == "end" and evs[-1]["since_ms"] == int(t0 + 10) * 1000, evs
    assert not started(values) - set(rising), "a calm gauge lost its baseline and alarmed"


def flood_anomaly(sensor: str, phase: str, since_ms: int, ts_ms: int) -> bytes:
    """A gauge's orange water-level anomaly, as the detection agent publishes it."""
    anomaly = Anomaly(
        anomaly_id=anomaly_id(sensor, "level", since_ms), phase=phase, sensor_id=sensor,
        kind="water_level", detector="level", reason="water.guarantee", score=0.8,
        peak_score=0.8, severity="orange", field="level_m", observed=5.5, expected=2.0,
        window_start_ms=ts_ms - 2000, window_end_ms=ts_ms, since_ms=since_ms, ts_ms=ts_ms,
        detected_at_ms=ts_ms, lon=117.0197, lat=36.6614, district_code=370102,
        city_code=370100)
    return orjson.dumps(anomaly.to_dict())


def alert_events(records: list) -> list[dict]:
    return [orjson.loads(r.value) for r in records]


def test_an_incident_larger_than_a_kafka_record_is_checkpointed_in_parts_and_recovered(
        settings_factory, tmp_path) -> None:
    """A flood incident of 3,500 gauges: its state (~1.2 MB) is more than Kafka and Faust's
    producer take in one record (1 MB). Read and written whole for every anomaly, as until
    2026-11-23, each anomaly cost more as the incident grew and the worker crashed once the
    record passed 1 MB. Kept in memory and checkpointed in parts, the worker takes the
    anomalies in seconds; a worker started after a SIGKILL recovers the incident: the ends of
    a hundred gauges update the same alert, with every member, and nothing opens another."""
    settings = settings_factory(session_timeout_s=6)
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    gauges = [f"jn-wl-crowd-{i:05d}-".ljust(64, "x") for i in range(3500)]
    since = (int(time.time()) - 600) * 1000
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=20)
    changelog = f"{settings.app_id}-incidents-changelog"

    def send_all(sensors: list[str], phase: str, ts_ms: int) -> None:
        for sensor in sensors:
            producer.send(settings.anomalies_topic, key=b"370102",
                          value=flood_anomaly(sensor, phase, since, ts_ms))
        producer.flush()

    def last_alert(records: list) -> dict:
        return orjson.loads(records[-1].value)["alert"] if records else {}

    worker = start_worker(settings, tmp_path / "worker-1.log")
    try:
        send_all(gauges, "start", since)
        opened = consume_records(
            settings.bootstrap, settings.alerts_topic, timeout_s=120, watch=(worker,),
            until=lambda rs: last_alert(rs).get("sensor_count") == len(gauges))
        scope = last_alert(opened)["scope"]
        head = scope.encode()
        marker = b"cityagent-parts:"

        def whole(r) -> bool:  # the head of the full incident: an earlier checkpoint, of a
            # still growing one (2,985 of the gauges in a CI run), has only two parts
            return (r.key == head and r.value is not None and r.value.startswith(marker)
                    and orjson.loads(r.value[len(marker):])["parts"] >= 3)

        stored = consume_records(settings.bootstrap, changelog, timeout_s=60, watch=(worker,),
                                 until=lambda rs: any(whole(r) for r in rs))
        # Committed: the restart must not replay the starts.
        await_committed(settings, (worker,), anomalies=len(gauges), scopes=len(gauges))
        worker.kill()
        killed_at = time.monotonic()
    finally:
        worker.stop()
    latest = {r.key: r.value for r in sorted(stored, key=lambda r: r.offset)}
    parts = {k: v for k, v in latest.items() if k.startswith(head + b"/") and v is not None}
    assert len(parts) >= 3 and set(parts) <= {f"{scope}/{s}{n}".encode()
                                              for s in "ab" for n in range(len(parts))}
    assert {r.partition for r in stored} == {partition_of_key(scope, settings.partitions)}
    assert max(len(r.value or b"") for r in stored) < 1_000_000 < sum(map(len, parts.values()))

    receded = gauges[:100]
    send_all(receded, "end", since + 60_000)  # while no worker runs, a hundred gauges recede
    # Only the events the new worker writes: while the incident grew, one event had 3,400
    # active members too, and a poll that happened to end on it satisfied the wait at once.
    seen = (opened[-1].partition, opened[-1].offset)

    def new(records: list) -> list:
        return [r for r in records if (r.partition, r.offset) > seen
                and r.partition == seen[0]]

    await_the_killed_members_half_session(killed_at, settings.session_timeout_s)
    worker = start_worker(settings, tmp_path / "worker-2.log")
    try:
        events = alert_events(new(consume_records(
            settings.bootstrap, settings.alerts_topic, timeout_s=120, watch=(worker,),
            until=lambda rs: last_alert(new(rs)).get("active_sensor_count") == len(gauges) - 100)))
    finally:
        worker.stop()
        producer.close()
    log = worker.log_path.read_text("utf-8", "replace")
    assert "unreadable" not in log, worker.log_tail()
    before = alert_events(opened)
    assert [e["type"] for e in before].count("opened") == 1
    floods = [e for e in events if e["alert"] and e["alert"]["family"] == "flood"]
    # The new worker only updated the alert the first one opened.
    assert {e["alert_id"] for e in floods} == {before[-1]["alert_id"]}
    assert "opened" not in {e["type"] for e in floods}, [e["type"] for e in floods]
    # Every member came back, still active: the hundred ends found their gauges' episodes.
    assert floods[-1]["alert"]["sensor_count"] == len(gauges)
    assert floods[-1]["alert"]["active_sensor_count"] == len(gauges) - len(receded)


def _with_idle(tmp_path, seconds: int, silence_min_s: int = 30):
    """The packaged detection settings with 2 s windows, 1 s grace, the idle timer's period
    set to ``seconds``, report intervals learned (not 60 s per kind) and sensors silent
    after ``silence_min_s``. (In the file, not the environment: a window size given in the
    environment also caps the idle period at one window.)"""
    text = (Path(cityagent.__file__).parent / "data" / "detection.toml").read_text("utf-8")
    changed = text
    for key, value in (("size_s", 2), ("grace_s", 1), ("idle_s", seconds),
                       ("silence_min_s", silence_min_s)):
        changed, found = re.subn(rf"(?m)^{key} = \S+", f"{key} = {value}", changed, count=1)
        assert found == 1, key
    changed, found = re.subn(r"(?m)^expected_interval_s = 60\b", "expected_interval_s = 0", changed)
    assert found == 3, "expected_interval_s"
    path = tmp_path / f"detection-idle-{seconds}-silence-{silence_min_s}.toml"
    path.write_text(changed, "utf-8")
    return path


def test_buckets_without_readings_after_a_restart_still_close_their_windows(
        settings_factory, tmp_path) -> None:
    """Gauges breach once and then fall silent while their worker is down. The next worker
    gets no reading of theirs, so it must load their buckets from the checkpoints itself
    and close the open windows by its clock: the breach is reported all the same. And the
    time no worker ran counts: the gauges, quiet for longer than the silence limit by then,
    are found silent at once, quiet for all that time, not after the limit has passed again."""
    settings = settings_factory(session_timeout_s=6, window_s=None, grace_s=None)
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    quiet = [f"jn-wl-quiet-{i:03d}" for i in range(40)]
    buckets = {bucket_key(bucket_of(s)) for s in quiet}
    t0 = float(int(time.time()) // 2 * 2 - 600)  # on a boundary of the tests' 2 s windows
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    changelog = f"{settings.app_id}-detector_state-changelog"
    # The first worker's idle timer would close the window itself within seconds: give it
    # ten minutes, so that only the restarted worker (one second) can.
    limit_s = 10  # the silence limit; the second worker starts after more than that
    first = start_worker(replace(settings, detection_path=_with_idle(tmp_path, 600, limit_s)),
                         tmp_path / "worker-1.log")
    try:
        # Three readings each, in three messages: a report interval is learned between
        # batches, from two gaps at least (one gap alone may be a very old reading's).
        send(producer, settings.readings_topic, readings(quiet, 2.0, t0 - 4))
        send(producer, settings.readings_topic, readings(quiet, 2.0, t0 - 2))
        send(producer, settings.readings_topic, readings(quiet, 5.5, t0))
        # Until each bucket's latest checkpoint holds the last message: checkpoints roll, so
        # a bucket may have been written between the messages too.
        checkpointed = consume_records(
            settings.bootstrap, changelog, timeout_s=90,
            until=lambda rs: _hold_time(rs, buckets, int(t0 * 1000)), watch=(first,))
        assert _hold_time(checkpointed, buckets, int(t0 * 1000)), first.log_tail()
        # Each checkpoint sits in the changelog partition numbered like its bucket's readings
        # partition, the one Faust recovers on the worker that owns those readings.
        assert all(r.partition == partition_of_key(r.key.decode(), settings.partitions)
                   for r in checkpointed)
        first.kill()
    finally:
        first.stop()
        producer.close()
    before = consume_all(settings.bootstrap, settings.anomalies_topic, timeout_s=2,
                         until=lambda v: False)
    assert not started(before), "the first worker closed the window: nothing left to test"

    # The downtime counts from when the first worker last moved each bucket's clock, at the
    # latest when it checkpointed (the records' times): waiting from the send instead left it
    # under limit_s + 2 once, when the first worker took seconds to start under load.
    last_checkpoint_s = max(r.timestamp for r in checkpointed) / 1000
    time.sleep(max(0.0, last_checkpoint_s + limit_s + 2 - time.time()))
    second = start_worker(replace(settings, detection_path=_with_idle(tmp_path, 1, limit_s)),
                          tmp_path / "worker-2.log")
    try:
        values = consume_all(settings.bootstrap, settings.anomalies_topic, timeout_s=90,
                             until=lambda v: started(v) >= set(quiet)
                             and silent(v) >= set(quiet), watch=(second,))
        log = second.log_path.read_text("utf-8", "replace")
    finally:
        second.stop()
    assert started(values) == set(quiet), log
    level = [v for v in values if v["detector"] == "level" and v["phase"] == "start"]
    assert {v["window_start_ms"] for v in level} == {int(t0) * 1000}
    assert {v["severity"] for v in level} == {"orange"}  # 5.5 m: over 保证
    assert "checkpointed buckets of the" in log, log
    # Found at the first tick after the load, quiet for the whole downtime (over limit_s + 2
    # s); without it they would be found once quiet for just over limit_s, by the new
    # worker's clock alone.
    silence = [v for v in values if v["detector"] == "silence" and v["phase"] == "start"]
    assert {v["sensor_id"] for v in silence} == set(quiet)
    assert min(v["observed"] for v in silence) > limit_s + 2, silence


def _hold_time(records: list, buckets: set[str], ts_ms: int) -> bool:
    """Does the latest checkpoint of every bucket in ``records`` hold readings up to ``ts_ms``?"""
    latest = {r.key.decode(): r.value for r in records}
    return all(bucket in latest and BucketState.from_bytes(latest[bucket]).watermark >= ts_ms
               for bucket in buckets)


_OWNS = re.compile(r"this worker now reads partitions \[([\d, ]*)\]")


def owned_partitions(worker) -> set[int] | None:
    """The readings partitions a worker said it read last (None: no assignment logged yet)."""
    found = _OWNS.findall(worker.log_path.read_text("utf-8", "replace"))
    return {int(p) for p in found[-1].split(",") if p.strip()} if found else None


def wait_until(condition, timeout_s: float, what: str, watch=()) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        for process in watch:
            process.assert_running()
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s:g} s")
        time.sleep(0.5)


def test_a_surviving_worker_takes_over_a_dead_workers_sensors_with_their_state(
        settings_factory, tmp_path) -> None:
    """Two workers split the partitions; one is killed. The other takes its partitions over,
    restores their checkpoints and incidents from the changelogs, and ends every episode as
    the alert it began as: no sensor's breach opens a second episode or a second alert.

    The survivor's checkpoint interval is ten minutes, so when the rebalance begins it holds
    unacknowledged messages, and Faust lets no partition go until they are acknowledged: it
    takes over only because its timer checkpoints as soon as a rebalance is under way."""
    settings = settings_factory(session_timeout_s=6)
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    everything = set(range(settings.partitions))
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    topic = settings.readings_topic
    t0 = float(int(time.time()) // 2 * 2 - 600)  # on a boundary of the tests' 2 s windows
    doomed = start_worker(settings, tmp_path / "worker-a.log")
    survivor = start_worker(replace(settings, checkpoint_s=600.0), tmp_path / "worker-b.log")
    try:
        def split() -> bool:
            a, b = owned_partitions(doomed), owned_partitions(survivor)
            return bool(a and b) and a | b == everything and not a & b
        wait_until(split, 120, "the two workers did not split the partitions "
                               f"(a: {owned_partitions(doomed)}, b: {owned_partitions(survivor)})",
                   watch=(doomed, survivor))
        first_ids, sent = breach(settings, producer, t0, watch=(doomed, survivor))
        lost = owned_partitions(doomed)
        assert lost and owned_partitions(survivor) == everything - lost  # no rebalance since
        orphans = [s for s in BREACHING
                   if partition_of_key(bucket_key(bucket_of(s)), settings.partitions) in lost]
        assert orphans, "no breaching gauge on the doomed worker's partitions: nothing to test"
        # The doomed worker has checkpointed what it applied of its partitions (it commits
        # only what a checkpoint holds): its state is in the changelogs when it dies. (The
        # test slept 2 s for "a few checkpoint intervals".)
        await_committed(settings, (doomed, survivor), partitions=lost, readings=sent,
                        anomalies=len(BREACHING), scopes=len(BREACHING))
        doomed.kill()

        # The breaches go on while the survivor notices (session timeout 6 s) and takes over.
        send(producer, topic, readings(BREACHING, 5.8, t0 + 20))
        wait_until(lambda: owned_partitions(survivor) == everything, 90,
                   "the survivor did not take over every partition", watch=(survivor,))
        # The gauges recede: every episode must end as the alert it began as.
        values, events = recede(settings, producer, t0, watch=(survivor,))
    finally:
        doomed.stop()
        survivor.stop()
        producer.close()
    # The orphans above all: their state came from the changelog.
    assert_one_episode_and_alert_each(values, events, first_ids, t0, survivor.log_tail())


def test_a_command_is_applied_after_the_anomalies_ahead_of_it_also_when_applied_again(
        settings_factory, tmp_path) -> None:
    """A worker that starts, or restarts after a crash, applies a backlog of its scopes'
    anomalies and operators' commands: in the order they were written, as the worker that
    first applied them did. Commands on a topic of their own were read in no fixed order with
    the anomalies, and a SIGKILL within a second of an operator's resolve of a 60-gauge flood
    made the restarted worker apply the resolve to the one gauge of its last checkpoint, and
    open a second flood alert with the other 59. Here the backlog is 40 anomalies and then
    the resolve, published as the API publishes it: one alert, resolved with all 40."""
    settings = settings_factory()
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    since = (int(time.time()) - 600) * 1000
    gauges = [f"jn-wl-order-{i:03d}" for i in range(40)]
    anomalies = [Anomaly.from_dict(orjson.loads(flood_anomaly(g, "start", since, since)))
                 for g in gauges]
    regions = default_regions()
    zones = ZoneIndex(demo_zones(regions))
    engine = IncidentEngine(AlertingConfig.load(), Router.load(), regions)
    scope = engine.scope_key(anomalies[0], zones)
    assert {engine.scope_key(a, zones) for a in anomalies} == {scope}
    alert_id = engine.on_anomaly(ScopeState(), anomalies[0], zones, since)[0].alert_id
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    try:
        for anomaly in anomalies:  # as the scope agent writes them
            producer.send(settings.scopes_topic, key=scope.encode(),
                          value=orjson.dumps({"anomaly": anomaly.to_dict()}))
        producer.flush()
    finally:
        producer.close()

    async def resolve() -> None:  # as the API publishes an operator's resolve
        publisher = CommandPublisher(settings.bootstrap, command_topic(settings))
        await publisher.start()
        try:
            await publisher.send(Command(command_id="kop:order:1", alert_id=alert_id,
                                         action="resolve", actor="kop", at_ms=since + 60_000),
                                 scope)
        finally:
            await publisher.stop()

    asyncio.run(resolve())

    def members(values: list[dict]) -> int:
        counts: dict[str, int] = {}
        for event in values:
            if event["alert"]:
                counts[event["alert_id"]] = max(counts.get(event["alert_id"], 0),
                                                event["alert"]["sensor_count"])
        return sum(counts.values())

    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        events = consume_all(
            settings.bootstrap, settings.alerts_topic, timeout_s=120, watch=(worker,),
            until=lambda v: members(v) == len(gauges) and any(e["type"] == "resolved" for e in v))
    finally:
        worker.stop()
    summary = [(e["type"], e["alert_id"], e["alert"] and e["alert"]["sensor_count"]) for e in events]
    assert {e["alert_id"] for e in events} == {alert_id}, summary
    assert [e["type"] for e in events].count("opened") == 1, summary
    assert events[-1]["type"] == "resolved", summary
    assert events[-1]["alert"]["sensor_count"] == len(gauges), summary
