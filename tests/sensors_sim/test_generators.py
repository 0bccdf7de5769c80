"""Fleet signals: normal readings stay inside the thresholds; injected breaches are detected."""

from __future__ import annotations

import numpy as np
import pytest

from cityagent.batch import decode_batch, encode_batch
from cityagent.detection import Thresholds, detect_breaches
from cityagent.pipeline import Detector
from cityagent.readings import VALUE_FIELDS, parse_reading
from cityagent.regions import default_regions
from sensors_sim.fleet import make_fleet
from sensors_sim.generators import NORMAL_RANGES, FleetSignals, InjectedBreach

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.fixture(scope="module")
def regions():
    return default_regions()


@pytest.fixture(scope="module")
def fleet(regions):
    return make_fleet(600, 5, regions)


@pytest.fixture(scope="module")
def thresholds():
    return Thresholds.load()


def _run(signals: FleetSignals, ticks: int, step_ms: int = 1000):
    return [signals.tick(T0 + k * step_ms) for k in range(ticks)]


def test_tick_shape_and_tags(fleet):
    signals = FleetSignals(fleet, 1)
    batch = signals.tick(T0)
    assert len(batch) == len(fleet)
    assert batch.sensor_id.tolist() == [s.sensor_id for s in fleet]
    assert batch.district.tolist() == [s.district_code for s in fleet]
    assert (batch.ts_ms == T0).all()
    for kind, fields in VALUE_FIELDS.items():
        rows = batch.kind == kind
        for name, column in batch.values.items():
            assert np.isnan(column[rows]).all() != (name in fields)
    # Every reading is valid, and the batch survives the wire format.
    for reading in batch.take(np.arange(30)).readings():
        parse_reading(reading.to_dict())
    back = decode_batch(encode_batch(batch))
    assert back.sensor_id.tolist() == batch.sensor_id.tolist()
    assert back.district.tolist() == batch.district.tolist()


def test_normal_values_in_range_and_noisy(fleet, thresholds):
    signals = FleetSignals(fleet, 2, breaches=0)
    batches = _run(signals, 20)
    for name, (low, high) in NORMAL_RANGES.items():
        column = np.concatenate([b.values[name] for b in batches])
        column = column[~np.isnan(column)]
        assert column.size and column.min() >= low and column.max() <= high
    a, b = batches[0].values["level_m"], batches[1].values["level_m"]
    rows = ~np.isnan(a)
    assert not np.array_equal(a[rows], b[rows])  # noise
    assert np.abs(a[rows] - b[rows]).max() < 0.5  # but small
    state: dict = {}
    for batch in batches:
        state, anomalies = detect_breaches(batch, state, thresholds, 0)
        assert anomalies == [] and state == {}
    assert signals.injected == []


def test_deterministic_for_a_seed(fleet):
    def run(seed):
        signals = FleetSignals(fleet, seed, breach_every_s=3, breaches=4, breach_duration_s=2)
        batches = _run(signals, 12)
        return signals.injected, [b.values["level_m"] for b in batches]

    (breaches1, levels1), (breaches2, levels2) = run(9), run(9)
    assert breaches1 == breaches2 and len(breaches1) > 0
    for x, y in zip(levels1, levels2, strict=True):
        np.testing.assert_array_equal(x, y)
    assert run(10)[0] != breaches1


def test_breach_schedule(fleet, thresholds):
    signals = FleetSignals(fleet, 3, breach_every_s=10, breaches=5, breach_duration_s=4)
    batches = _run(signals, 35)  # ticks at 0..34 s: injections at 10, 20 and 30 s
    starts = sorted({b.start_ms for b in signals.injected})
    assert starts == [T0 + 10_000, T0 + 20_000, T0 + 30_000]
    assert len(signals.injected) == 15
    assert all(b.end_ms == b.start_ms + 4000 for b in signals.injected)
    by_id = {s.sensor_id: s for s in fleet}
    for breach in signals.injected:
        assert isinstance(breach, InjectedBreach)
        assert by_id[breach.sensor_id].kind == breach.kind
    # A breached sensor reads past its threshold exactly while held, and normal after.
    for breach in signals.injected:
        row = [s.sensor_id for s in fleet].index(breach.sensor_id)
        for batch in batches:
            ts = int(batch.ts_ms[row])
            held = breach.start_ms <= ts < breach.end_ms
            past = False
            for rule in thresholds.rules:
                if rule.kind != breach.kind:
                    continue
                value = batch.values[rule.field][row]
                past |= value > rule.above if rule.above is not None else value < rule.below
            assert past == held, (breach, ts)


def test_detector_sees_each_injected_breach(fleet, regions, thresholds):
    signals = FleetSignals(fleet, 4, breach_every_s=5, breaches=3, breach_duration_s=3)
    detector = Detector(thresholds, regions)
    states: dict[str, dict] = {}
    starts, ends = set(), set()
    for batch in _run(signals, 40, step_ms=500):
        for key, piece in batch.split_by_bucket():
            outcome = detector.process_batch(piece, states.get(key, {}), 0)
            assert outcome.outside == 0
            states[key] = dict(outcome.state)
            for anomaly in outcome.anomalies:
                fleet_sensor = next(s for s in fleet if s.sensor_id == anomaly.sensor_id)
                assert anomaly.district_code == fleet_sensor.district_code
                assert anomaly.city_code == fleet_sensor.city_code
                if anomaly.phase == "start":
                    starts.add((anomaly.sensor_id, anomaly.since_ms))
                elif anomaly.phase == "end":
                    ends.add((anomaly.sensor_id, anomaly.ts_ms))
    injected = signals.injected
    assert len(injected) == 3 * 3  # at 5, 10 and 15 s of the 20 s run
    assert starts == {(b.sensor_id, b.start_ms) for b in injected}
    assert ends == {(b.sensor_id, b.end_ms) for b in injected}


def test_breaches_do_not_overlap_and_disable(fleet):
    signals = FleetSignals(fleet, 6, breach_every_s=1, breaches=200, breach_duration_s=10)
    _run(signals, 6)
    held = [b.sensor_id for b in signals.injected]
    assert len(held) == len(set(held)) == 600  # 200 at 1 s, 2 s, 3 s; then none free
    off = FleetSignals(fleet, 6, breach_every_s=0)
    _run(off, 5)
    assert off.injected == []
    with pytest.raises(ValueError):
        FleetSignals(fleet, 6, breach_duration_s=0)
