"""The simulator's HTTP sink is the client docs/api.md asks integrators to be: a retry of a
body carries that body's Idempotency-Key, and another body gets another key.

A small HTTP server on loopback records what it was sent and fails the first request with a
503, as an API that is just starting does for keyed requests.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import orjson
import pytest

from cityagent.batch import ReadingBatch
from cityagent.readings import Reading
from sensors_sim.sinks import HttpSink
from tests.sensors_sim.fake_api import FakeApi, serving


class Recorder(FakeApi):
    seen: list[tuple[str | None, int]] = []  # (Idempotency-Key, readings in the body)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.read_body()
        self.seen.append((self.headers.get("idempotency-key"), len(orjson.loads(body))))
        if len(self.seen) == 1:
            self.answer(503, {"detail": "starting"}, {"retry-after": "1"})
        else:
            self.answer(202, {"accepted": self.seen[-1][1], "rejected": []})


@pytest.fixture
def server() -> Iterator[str]:
    Recorder.seen = []
    with serving(Recorder) as url:
        yield url


def test_a_retried_body_keeps_its_idempotency_key_and_another_body_gets_its_own(
        server: str) -> None:
    readings = [Reading(f"jn-wl-{i:03d}", "water_level", 1_795_307_400_000 + i, 117.02, 36.66,
                        {"level_m": 1.5}) for i in range(3)]
    sink = HttpSink(server, batch_rows=2, give_up_s=10)
    try:
        sink.send(ReadingBatch.from_readings(readings), np.zeros(3, dtype=np.int64))
    finally:
        sink.close()
    keys = [key for key, _ in Recorder.seen]
    assert [n for _, n in Recorder.seen] == [2, 2, 1]  # the first body, refused then retried
    assert keys[0] and keys[0] == keys[1] and keys[2] and keys[2] != keys[0]
    assert (sink.acked, sink.retries, sink.errors) == (3, 1, 0)


class Unavailable(FakeApi):
    """503 to the first ``fails`` requests (an API restarting), then 202."""

    fails = 0
    seen = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.read_body()
        type(self).seen += 1
        self.answer(503 if type(self).seen <= self.fails else 202, b"")


def test_the_last_retry_comes_at_the_give_up_time_not_a_whole_wait_before() -> None:
    """Tries at 0, 0.2, 0.6, 1.4 and 3.0 s: with --give-up 4.5 the sink gave up after the 5th
    (its next wait, 3.2 s, would pass 4.5), though 1.5 s were left. Now the 6th try is at
    4.5 s, and an API back by then takes the readings."""
    Unavailable.fails, Unavailable.seen = 5, 0
    said: list[str] = []
    reading = Reading("jn-wl-000", "water_level", 1_795_307_400_000, 117.02, 36.66,
                      {"level_m": 1.5})
    with serving(Unavailable) as url:
        sink = HttpSink(url, give_up_s=4.5, on_retry=said.append)
        try:
            sink.send(ReadingBatch.from_readings([reading]), np.zeros(1, dtype=np.int64))
        finally:
            sink.close()
    assert (Unavailable.seen, sink.acked, sink.retries, sink.errors) == (6, 1, 5, 0)
    # Each retry is told (the progress line is not printed while a request is retried).
    assert len(said) == 5 and all(line.startswith(f"retrying {sink.url} (HTTP 503: ")
                                  for line in said), said


class Scoped(FakeApi):
    """The API to a key scoped to 济南 (jn-): 202, storing only the jn- readings."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        docs = orjson.loads(self.read_body())
        rejected = [{"index": i, "field": "sensor_id", "sensor_id": d["sensor_id"],
                     "reason": "outside this key's scope (jn-)"}
                    for i, d in enumerate(docs) if not d["sensor_id"].startswith("jn-")]
        self.answer(202, {"accepted": len(docs) - len(rejected), "rejected": rejected})


def test_readings_a_202_rejects_are_not_counted_as_acknowledged() -> None:
    """Every row of a 2xx counted as acknowledged: into a key scoped to one city, 91 % of a
    run was refused and the run said all acknowledged, 0 errors, exit 0."""
    readings = [Reading(sid, "water_level", 1_795_307_400_000, 117.02, 36.66, {"level_m": 1.5})
                for sid in ("jn-wl-000", "qd-wl-001", "qd-wl-002")]
    with serving(Scoped) as url:
        sink = HttpSink(url, give_up_s=10)
        try:
            sink.send(ReadingBatch.from_readings(readings), np.zeros(3, dtype=np.int64))
        finally:
            sink.close()
    assert (sink.sent, sink.acked, sink.errors) == (3, 1, 1)
    assert sink.last_error == ("HTTP 202: 2 of 3 readings rejected, e.g. outside this key's "
                               "scope (jn-)")


class OutOfScope(FakeApi):
    """The API's other 403: every reading of the request outside a scoped key's cities."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        docs = orjson.loads(self.read_body())
        self.answer(403, {
            "detail": "every reading is outside the scope of this integrator key; none was "
                      "accepted", "accepted": 0,
            "rejected": [{"index": i, "field": "sensor_id", "sensor_id": d["sensor_id"],
                          "reason": "outside this key's scope (jn-)"} for i, d in enumerate(docs)]})


def test_a_403_of_readings_outside_the_keys_scope_does_not_stop_the_run() -> None:
    """A 401, or a 403 of the key's role, stops the run (SinkRefused); a 403 listing the
    readings it refused is of those readings only: the next request's may be in scope."""
    reading = Reading("qd-wl-001", "water_level", 1_795_307_400_000, 120.38, 36.07,
                      {"level_m": 1.5})
    with serving(OutOfScope) as url:
        sink = HttpSink(url, give_up_s=10)
        try:
            sink.send(ReadingBatch.from_readings([reading]), np.zeros(1, dtype=np.int64))
            sink.send(ReadingBatch.from_readings([reading]), np.zeros(1, dtype=np.int64))
        finally:
            sink.close()
    assert (sink.sent, sink.acked, sink.errors, sink.retries) == (2, 0, 2, 0)
    assert sink.last_error.startswith("HTTP 403: ")
