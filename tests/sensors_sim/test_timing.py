"""Event time and late delivery."""

from __future__ import annotations

import numpy as np

from cityagent.regions import default_regions
from sensors_sim.fleet import make_fleet
from sensors_sim.generators import FleetSignals
from sensors_sim.timing import EventClock, LateBuffer


def test_event_clock_is_exact():
    clock = EventClock(1_000_000, 0.1, accelerate=600)
    assert [clock.at(k) for k in range(3)] == [1_000_000, 1_060_000, 1_120_000]
    assert clock.at(1000) == 1_000_000 + 1000 * 60_000


def test_late_buffer_delays_a_fraction_and_loses_nothing():
    signals = FleetSignals(make_fleet(500, 1, default_regions()), 1, breach_every_s=0)
    late = LateBuffer(0.1, seed=3)
    out = []
    for k in range(20):
        batch = signals.tick(1_767_225_600_000 + k * 1000)
        out += late.push(batch, np.arange(len(batch)))
    out += late.drain()
    ts = np.concatenate([b.ts_ms for b, _ in out])
    assert ts.size == 20 * 500 and 700 < late.delayed < 1300
    assert (np.diff(ts) < 0).any()  # out of order
    pairs = {(s, t) for b, _ in out for s, t in zip(b.sensor_id.tolist(), b.ts_ms.tolist(),
                                                     strict=True)}
    assert len(pairs) == 20 * 500
    again = LateBuffer(0.1, seed=3)
    assert [len(b) for b, _ in again.push(batch, np.arange(500))] == [
        len(b) for b, _ in LateBuffer(0.1, seed=3).push(batch, np.arange(500))]
