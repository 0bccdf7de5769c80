"""`cityagent bench --alerting`: anomalies/s through one worker's alerting agents.

What a rainstorm asks of alerting: thousands of water-level anomalies starting within a
minute all over a city, each joining the city's flood incident (floods are scoped per city,
docs/alerting.md) and publishing an alert event. One scope is the hardest case: every
anomaly goes through the same partition of ``alert-scopes`` and of the alerts topic, in
order. Each run, on its own topics (uuid prefix, 8 partitions):

1. **Produce** ``anomalies`` level anomalies (one sensor each, at random positions in
   Jinan's districts, keyed by district as the detection agent keys them) to the anomalies
   topic, before anything is timed.
2. **Raw baseline**: an aiokafka consumer ``getmany``s every message and ``orjson.loads``
   it: the best a Python consumer does on this topic, in the same run.
3. **Domain** (extra): the same anomalies through ``IncidentEngine`` in this process (scope,
   apply, alert events as JSON), no Kafka.
4. **Agent**: ``python -m streams`` is started on the topics and timed by its own clock:
   every alert event carries ``at_ms``, the worker's wall clock when it applied the anomaly,
   so the rate is (anomalies − 1) / (last ``at_ms`` − first ``at_ms``). The worker's start
   and the bench's reading of the alerts are outside the interval. A run ends when the
   incidents' sensor counts add up to the anomalies sent.

The median of ``runs`` runs is reported; ``ratio`` = agent ÷ raw consume.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from cityagent.detection import Anomaly, anomaly_id
from cityagent.incidents import AlertingConfig, IncidentEngine, ScopeState
from cityagent.regions import default_regions
from cityagent.routing import Router
from cityagent.settings import Settings
from cityagent.zones import ZoneIndex, demo_zones
from control.bench import (
    WORKER_TIMEOUT_S,
    BenchError,
    _consumer_from_start,
    _raw_consume,
    _Worker,
    bench_logs,
)
from control.broker import broker_for_bench
from control.topics import ensure_topics, pipeline_topics

__all__ = ("run_alerting_bench", "build_anomalies")

PARTITIONS = 8
JINAN = "370100"
_T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _say(text: str) -> None:
    print(f"cityagent bench --alerting: {text}", file=sys.stderr, flush=True)


def build_anomalies(count: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """``count`` water-level anomaly starts over Jinan's districts, as (key, value) messages
    in the order a storm would raise them (districts interleaved)."""
    regions = default_regions()
    codes = [i for i, d in enumerate(regions.districts) if d.city_code == JINAN]
    districts = len(codes)
    rng = np.random.default_rng(seed)
    per = [count // districts + (1 if i < count % districts else 0) for i in range(districts)]
    points = [regions.random_points(d, n, rng) for d, n in zip(codes, per, strict=True)]
    out = []
    for i in range(count):
        slot, j = i % districts, i // districts
        district = regions.districts[codes[slot]]
        lon, lat = points[slot][0][j], points[slot][1][j]
        sensor = f"bench-wl-{district.code}-{j:06d}"
        since = _T0_MS + int(rng.integers(0, 60)) * 1000
        anomaly = Anomaly(
            anomaly_id=anomaly_id(sensor, "level", since), phase="start", sensor_id=sensor,
            kind="water_level", detector="level", reason="water.warning", score=0.7,
            peak_score=0.7, severity="yellow", field="level_m", observed=3.2, expected=3.0,
            window_start_ms=since, window_end_ms=since + 60_000, since_ms=since,
            ts_ms=since + 75_000, detected_at_ms=since + 75_000, lon=float(lon), lat=float(lat),
            district_code=int(district.code), city_code=int(district.city_code))
        out.append((district.code.encode(), orjson.dumps(anomaly.to_dict())))
    return out


async def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                client_id="cityagent-bench-alerting")
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _one(_doc: Any) -> int:
    return 1


def _domain_rate(messages: list[tuple[bytes, bytes]], config: AlertingConfig) -> float:
    """The same anomalies through the alerting domain in this process: anomalies/s."""
    regions = default_regions()
    engine = IncidentEngine(config, Router.load(), regions)
    zones = ZoneIndex(demo_zones(regions))
    states: dict[str, ScopeState] = {}
    started = time.perf_counter()
    for _key, value in messages:
        anomaly = Anomaly.from_dict(orjson.loads(value))
        scope = engine.scope_key(anomaly, zones)
        state = states.setdefault(scope, ScopeState())
        for event in engine.on_anomaly(state, anomaly, zones, _T0_MS + 120_000):
            orjson.dumps(event.to_dict())
    return len(messages) / (time.perf_counter() - started)


async def _await_alerts(bootstrap: str, topic: str, count: int, worker: _Worker) -> list[int]:
    """Read alert events until the incidents hold every anomaly; their ``at_ms``."""
    consumer = await _consumer_from_start(bootstrap, topic, PARTITIONS, "cityagent-bench-alerts")
    members: dict[str, int] = {}
    stamps: list[int] = []
    try:
        started = time.monotonic()
        next_note = started + 10.0
        while sum(members.values()) < count:
            now = time.monotonic()
            code = worker.exited()
            if code is not None:
                raise BenchError(f"the worker exited with code {code}{worker.tail()}")
            if now - started > WORKER_TIMEOUT_S:
                raise BenchError(f"the worker did not apply every anomaly within "
                                 f"{WORKER_TIMEOUT_S:g}s ({sum(members.values())}/{count})"
                                 + worker.tail())
            if now >= next_note:
                _say(f"  worker running… {sum(members.values()):,}/{count:,} anomalies in "
                     f"incidents after {now - started:.0f}s")
                next_note = now + 10.0
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for record in records:
                    event = orjson.loads(record.value)
                    alert = event.get("alert") or {}
                    if "alert_id" in alert:
                        members[alert["alert_id"]] = max(members.get(alert["alert_id"], 0),
                                                         int(alert["sensor_count"]))
                    if event.get("type") in ("opened", "updated"):
                        stamps.append(int(event["at_ms"]))
    finally:
        await consumer.stop()
    return stamps


def _one_run(base: Settings, bootstrap: str, messages: list[tuple[bytes, bytes]], index: int,
             runs: int, log_dir: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:12]
    settings = dataclasses.replace(base, kafka=bootstrap, topic_prefix=f"bench-{tag}",
                                   app_id=f"bench-{tag}", partitions=PARTITIONS)
    ensure_topics(bootstrap, pipeline_topics(settings))
    count = len(messages)
    _say(f"run {index}/{runs}: producing {count:,} anomalies to {settings.anomalies_topic}…")
    asyncio.run(_produce(bootstrap, settings.anomalies_topic, messages))
    _say("  raw consume (aiokafka getmany + orjson)…")
    raw_count, raw_s = asyncio.run(_raw_consume(bootstrap, settings.anomalies_topic, PARTITIONS,
                                                count, WORKER_TIMEOUT_S, items=_one))
    raw_rate = raw_count / raw_s
    _say("  domain (IncidentEngine in this process, no Kafka)…")
    domain_rate = _domain_rate(messages, AlertingConfig.load(settings.alerting_path))
    _say("  worker running (python -m streams)…")
    worker = _Worker(settings, log_dir / f"worker-{index}.log")
    try:
        stamps = asyncio.run(_await_alerts(bootstrap, settings.alerts_topic, count, worker))
    finally:
        worker.stop()
    if len(stamps) < count:
        raise BenchError(f"{len(stamps)} alert events for {count} anomalies: some were not "
                         f"applied one by one")
    agent_s = max(max(stamps) - min(stamps), 1) / 1000.0
    agent_rate = (count - 1) / agent_s
    _say(f"  agent {agent_rate:,.0f} anomalies/s, raw {raw_rate:,.0f}/s, "
         f"domain {domain_rate:,.0f}/s")
    return {"run": index, "anomalies_per_s": round(agent_rate, 1),
            "raw_consume_per_s": round(raw_rate, 1), "ratio": round(agent_rate / raw_rate, 6),
            "domain_per_s": round(domain_rate, 1), "agent_seconds": round(agent_s, 3),
            "topic_prefix": settings.topic_prefix}


def run_alerting_bench(settings: Settings, *, anomalies: int = 5000, runs: int = 3,
                       as_json: bool = False) -> int:
    """Run the benchmark; print the result table (or one JSON object); return the exit code."""
    if anomalies < 2 or runs < 1:
        raise BenchError("anomalies must be at least 2 and runs above 0")
    messages = build_anomalies(anomalies)
    with bench_logs("cityagent-bench-alerting-", _say) as log_dir, \
            broker_for_bench(settings.kafka, log_dir, _say) as bootstrap:
        results = [_one_run(settings, bootstrap, messages, i, runs, log_dir)
                   for i in range(1, runs + 1)]

    def median(name: str) -> float:
        return float(statistics.median(r[name] for r in results))

    summary: dict[str, Any] = {
        "anomalies_per_s": median("anomalies_per_s"),
        "raw_consume_per_s": median("raw_consume_per_s"),
        "ratio": median("ratio"),
        "domain_per_s": median("domain_per_s"),
        "anomalies": anomalies,
        "partitions": PARTITIONS,
        "runs": results,
    }
    if as_json:
        print(orjson.dumps(summary).decode())
    else:
        print(f"cityagent bench --alerting: {anomalies:,} water-level anomaly starts over "
              f"Jinan (one flood incident), {PARTITIONS} partitions, one worker")
        print(f"{'run':>6} {'agent anomalies/s':>18} {'raw consume/s':>14} {'ratio':>7} "
              f"{'domain/s':>10}")
        for r in [*results, {**summary, "run": "median"}]:
            print(f"{r['run']:>6} {r['anomalies_per_s']:>18,.0f} {r['raw_consume_per_s']:>14,.0f} "
                  f"{r['ratio']:>7.4f} {r['domain_per_s']:>10,.0f}")
    return 0
