"""Fleet signals: normal readings stay inside the domain levels; injected breaches are detected."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from cityagent.batch import decode_batch, encode_batch
from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig, SensorProfiles
from cityagent.detectors.levels import traffic_index
from cityagent.pipeline import Detector
from cityagent.readings import VALUE_FIELDS, parse_reading
from cityagent.regions import default_regions
from cityagent.state import NO_TS
from sensors_sim.fleet import make_fleet
from sensors_sim.generators import NORMAL_RANGES, FleetSignals, InjectedBreach
from sensors_sim.registry import registry_rows

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a boundary of every window size used here


@pytest.fixture(scope="module")
def regions():
    return default_regions()


@pytest.fixture(scope="module")
def fleet(regions):
    return make_fleet(600, 5, regions)


def _run(signals: FleetSignals, ticks: int, step_ms: int = 1000):
    return [signals.tick(T0 + k * step_ms) for k in range(ticks)]


def _engine(signals: FleetSignals, regions, interval_s: float, window_s: float,
            grace_s: float = 0) -> DetectionEngine:
    """The engine with the packaged settings, small windows, and the fleet's registry."""
    config = DetectionConfig.load(window_s=window_s, grace_s=grace_s)
    profiles = SensorProfiles.from_rows(registry_rows(signals, interval_s, regions, config))
    return DetectionEngine(config, profiles)


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


def test_normal_values_in_range_and_noisy(fleet, regions):
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
    # Through the engine (2 s windows of two readings): nothing at all, and no open episode.
    engine = _engine(signals, regions, 1, window_s=2)
    state = engine.new_state()
    windows = 0
    for batch in batches:
        result = engine.process(state, batch, 0)
        assert result.anomalies == [] and result.late == 0
        windows += result.windows
    assert windows == len(fleet) * 9  # the windows of 0-18 s have closed and were judged
    assert (state.cols["ep_since"] == NO_TS).all()
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


def _past_level(kind: str, values: dict[str, float], levels: dict[str, float],
                config: DetectionConfig) -> bool:
    """Is one reading past its sensor's domain level (what the level detector fires on)?"""
    if kind == "water_level":
        return values["level_m"] >= levels.get("warning_m", config.kind(kind).warning_m)
    if kind == "pipe_pressure":
        p = values["pressure_mpa"]
        return (p < levels.get("floor_mpa", config.kind(kind).floor_mpa)
                or p > levels.get("high_mpa", config.kind(kind).high_mpa))
    free_flow = levels.get("free_flow_kmh", config.kind(kind).free_flow_kmh)
    tpi = float(traffic_index(np.array([values["speed_kmh"]]), np.array([free_flow]))[0])
    return tpi >= config.kind(kind).congestion_tpi[0]


def test_breach_schedule(fleet, regions):
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
    assert {b.kind for b in signals.injected} == {"traffic", "water_level", "pipe_pressure"}
    # A breached sensor reads past its own level (the registry's 警戒 level, the pressure
    # floor, congestion against its road's free flow) exactly while held, and normal after.
    config = DetectionConfig.load()
    profiles = SensorProfiles.from_rows(registry_rows(signals, 1, regions, config))
    ids = [s.sensor_id for s in fleet]
    for breach in signals.injected:
        row = ids.index(breach.sensor_id)
        levels = profiles.get(breach.sensor_id)
        for batch in batches:
            ts = int(batch.ts_ms[row])
            held = breach.start_ms <= ts < breach.end_ms
            values = {name: float(column[row]) for name, column in batch.values.items()}
            assert _past_level(breach.kind, values, levels, config) == held, (breach, ts)


def test_detector_sees_each_injected_breach(fleet, regions):
    # Breaches of 6 s every 5 s; 1 s windows closing at once (grace 0), a reading a second.
    # A breach outlasts the traffic index's hopping window (5 panes), so congestion is
    # certain however fast the road was before it.
    signals = FleetSignals(fleet, 4, breach_every_s=5, breaches=3, breach_duration_s=6)
    engine = _engine(signals, regions, 1, window_s=1)
    size_ms = engine.config.windows.size_ms
    panes = engine.config.windows.hopping_panes
    end_after = engine.config.windows.end_after_windows
    assert panes * size_ms <= 6000
    detector = Detector(engine, regions)
    state = engine.new_state()
    by_id = {s.sensor_id: s for s in fleet}
    anomalies = []
    batches = _run(signals, 35)  # 0..34 s
    for batch in batches:
        outcome = detector.process_batch(batch, state, int(batch.ts_ms.max()))
        assert outcome.outside == 0 and outcome.late == 0 and outcome.readings == len(fleet)
        anomalies += outcome.anomalies
    last_ms = int(batches[-1].ts_ms[0])
    for anomaly in anomalies:
        sensor = by_id[anomaly.sensor_id]
        assert anomaly.kind == sensor.kind
        assert anomaly.district_code == sensor.district_code
        assert anomaly.city_code == sensor.city_code
    injected = signals.injected
    assert len(injected) == 6 * 3  # at 5, 10, ... 30 s
    levels = [a for a in anomalies if a.detector == "level"]
    starts = Counter(a.sensor_id for a in levels if a.phase == "start")
    ends = Counter(a.sensor_id for a in levels if a.phase == "end")
    # Level anomalies only on breached sensors, one episode each.
    assert set(starts) <= {b.sensor_id for b in injected}
    assert max(starts.values()) == 1 and max(ends.values()) == 1
    # Breaches whose episode has had time to end: at 5, 10, 15 and 20 s, every kind.
    done = [b for b in injected if b.end_ms + (end_after + panes) * size_ms <= last_ms]
    assert len(done) == 4 * 3 and {b.kind for b in done} == {"traffic", "water_level",
                                                              "pipe_pressure"}
    warmup_ms = engine.config.kinds["water_level"].deviation_warmup * size_ms
    first_ms = int(batches[0].ts_ms[0])

    def held(b) -> bool:  # a jump from a warm baseline, the breach's first window alone
        return b.start_ms - first_ms >= warmup_ms

    assert {held(b) for b in done} == {False, True}  # both cases are checked
    start_of = {a.sensor_id: a for a in levels if a.phase == "start"}
    end_of = {a.sensor_id: a for a in levels if a.phase == "end"}
    expected_reason = {"water_level": "water.", "pipe_pressure": "pressure.",
                       "traffic": "traffic.congestion"}
    for b in done:
        start, end = start_of[b.sensor_id], end_of[b.sensor_id]
        assert start.reason.startswith(expected_reason[b.kind]), start
        assert start.severity in ("yellow", "orange", "red")
        if b.kind == "traffic":  # once the hopping mean speed has fallen far enough
            assert b.start_ms <= start.since_ms < b.end_ms
        else:  # from the first window of the breach, raised as soon as it closes; once the
            # sensor's baseline is warm, that window jumped alone: it is held, and the second
            # window confirms it (before 2026-11-25 the first window raised it, and a
            # one-reading glitch did too)
            first = b.start_ms + (size_ms if held(b) else 0)
            assert start.since_ms == start.window_start_ms == first
            assert start.ts_ms == first + size_ms
        assert end.anomaly_id == start.anomaly_id and end.since_ms == start.since_ms
        # Ended after ``end_after`` normal windows (the hopping index lingers a few more).
        lingers = panes if b.kind == "traffic" else 0
        assert b.end_ms + end_after * size_ms <= end.ts_ms
        assert end.ts_ms <= b.end_ms + (end_after + lingers) * size_ms
    # The later water and pressure breaches are already seen: their first window has closed.
    for b in injected:
        if b.kind != "traffic" and b.start_ms + 2 * size_ms <= last_ms:
            assert start_of[b.sensor_id].since_ms == b.start_ms + (size_ms if held(b) else 0)


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
