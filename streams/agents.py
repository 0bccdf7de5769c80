"""The agents: readings → detection → anomalies, and anomalies → alerts.

Adapters only: decode, call the domain, encode and send. Detection state is a Faust table
keyed by sensor bucket, holding the bucket's open breach episodes; it is written only when
it changes, so the changelog stays small and recovery is fast.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from cityagent.alerts import alert_from_anomaly
from cityagent.batch import decode_batch
from cityagent.detection import Anomaly
from cityagent.errors import InvalidBatch
from cityagent.pipeline import Detector
from streams.metrics import WorkerCounters
from streams.topics import Topics

__all__ = ("register_agents", "STATE_TABLE")

#: Table name; its changelog topic is "<app_id>-detector_state-changelog".
STATE_TABLE = "detector_state"

log = logging.getLogger("cityagent.streams")


def register_agents(
    app: faust.App, topics: Topics, detector: Detector, counters: WorkerCounters
) -> faust.Table:
    """Attach the detection and alerting agents to ``app``; return the state table."""
    state_table = app.Table(
        STATE_TABLE, default=dict, partitions=topics.readings.partitions, key_type=str
    )

    @app.agent(topics.readings, name="detect")
    async def detect(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                batch = decode_batch(event.value)
            except InvalidBatch as exc:
                counters.batches_rejected_total += 1
                log.warning(
                    "skipped a bad batch at %s[%d]@%d: %s",
                    message.topic, message.partition, message.offset, exc,
                )
                continue
            bucket = _text(event.key)
            state = state_table[bucket]
            outcome = detector.process_batch(batch, state, _now_ms())
            if outcome.state is not state:
                state_table[bucket] = outcome.state
            counters.batches_total += 1
            counters.readings_total += outcome.readings
            counters.readings_outside_total += outcome.outside
            for anomaly in outcome.anomalies:
                counters.anomalies_total += 1
                await topics.anomalies.send(key=str(anomaly.district_code), value=anomaly.to_dict())

    @app.agent(topics.anomalies, name="alert")
    async def alert(stream: faust.StreamT) -> None:
        async for value in stream:
            anomaly = _anomaly_or_none(value)
            if anomaly is None:
                continue
            district = detector.regions.district(str(anomaly.district_code))
            made = alert_from_anomaly(anomaly, district.name, district.city_name)
            counters.alerts_total += 1
            await topics.alerts.send(key=made.district_code, value=made.to_dict())

    @app.timer(10.0)
    async def log_rates() -> None:
        counters.log_rates()

    return state_table


def _anomaly_or_none(value: Any) -> Anomaly | None:
    try:
        return Anomaly.from_dict(value)
    except (KeyError, TypeError) as exc:
        log.warning("skipped a malformed anomaly %r: %s", value, exc)
        return None


def _text(key: bytes | str | None) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
