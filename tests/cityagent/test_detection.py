"""The detection engine as a whole: anomaly events, their ids, replay safety, reading scores.

Also holds the small batch builders the other detection tests import.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np

from cityagent.batch import ReadingBatch
from cityagent.detection import Anomaly, DetectionEngine, anomaly_id
from cityagent.detectors.config import DetectionConfig, SensorProfiles
from cityagent.state import BucketState

T0 = 1_795_307_400_000  # 2026-11-22 08:30 China Standard Time, on a minute boundary
DISTRICT = 370102  # 济南市历下区
LON, LAT = 117.0, 36.65
FIELD = {"traffic": "speed_kmh", "water_level": "level_m", "pipe_pressure": "pressure_mpa",
         "generic": "value"}
VALUE_FIELDS = ("speed_kmh", "flow_vph", "occupancy_pct", "level_m", "pressure_mpa")

def _small() -> DetectionConfig:
    """10 s windows closing 2 s after their end; baselines warm after 5 windows (tests)."""
    doc = tomllib.loads(resources.files("cityagent.data").joinpath("detection.toml")
                        .read_text("utf-8"))
    doc["defaults"]["deviation_warmup"] = 5
    return DetectionConfig.from_dict(doc, window_s=10, grace_s=2)


SMALL = _small()
SIZE = 10_000
NOISE = (0.0, 0.004, -0.003, 0.002, -0.004)  # a fixed wiggle: a gauge that is never stuck


def readings(rows: Sequence[tuple[str, str, int, float]]) -> ReadingBatch:
    """A batch of (sensor_id, kind, ts_ms, watched value) rows; other value fields are NaN."""
    n = len(rows)
    values = {f: np.full(n, np.nan) for f in VALUE_FIELDS}
    for i, (_, kind, _, value) in enumerate(rows):
        values.setdefault(FIELD[kind], np.full(n, np.nan))[i] = value
    return ReadingBatch(
        sensor_id=np.array([r[0] for r in rows], dtype=str),
        kind=np.array([r[1] for r in rows], dtype=str),
        ts_ms=np.array([r[2] for r in rows], dtype=np.int64),
        lon=np.full(n, LON),
        lat=np.full(n, LAT),
        district=np.full(n, DISTRICT, dtype=np.int64),
        values=values,
    )


def series(sensor: str, kind: str, points: Sequence[tuple[int, float]]) -> ReadingBatch:
    """A batch of one sensor's (ts_ms, value) readings."""
    return readings([(sensor, kind, ts, v) for ts, v in points])


def feed(engine: DetectionEngine, state: BucketState, sensor: str, kind: str,
         windows: Sequence[Sequence[float]], first: int = 0, size: int = SIZE) -> list[Anomaly]:
    """One batch per window (readings spread evenly over it); every anomaly they cause."""
    out: list[Anomaly] = []
    for w, values in enumerate(windows, start=first):
        step = size // len(values)
        pts = [(T0 + w * size + i * step, v) for i, v in enumerate(values)]
        out += engine.process(state, series(sensor, kind, pts), now_ms=T0 + w * size).anomalies
    return out


def level(value: float, n: int = 5) -> list[float]:
    """A window of ``n`` readings around ``value`` with a small fixed wiggle."""
    return [value + NOISE[i % len(NOISE)] for i in range(n)]


def noisy(rng: np.random.Generator, value: float, sd: float, windows: int, n: int = 5
          ) -> list[list[float]]:
    return [list(value + rng.normal(0.0, sd, n)) for _ in range(windows)]


def window_of(a: Anomaly, size: int = SIZE) -> int:
    return (a.window_start_ms - T0) // size


def events(anomalies: Sequence[Anomaly], detector: str | None = None) -> list[tuple]:
    return [(a.detector, a.phase, a.reason, a.severity, window_of(a)) for a in anomalies
            if detector is None or a.detector == detector]


def packaged_doc() -> dict[str, Any]:
    """The packaged detection.toml as a dict (a fresh copy to modify)."""
    text = resources.files("cityagent.data").joinpath("detection.toml").read_text("utf-8")
    return tomllib.loads(text)


PROFILES = SensorProfiles.from_rows([
    {"sensor_id": "jn-wl-1", "warning_level_m": 3.5, "guaranteed_level_m": 4.2},
])


# -- identity and replay --------------------------------------------------------------------


def test_anomaly_id_is_stable_and_depends_on_sensor_detector_and_start() -> None:
    a = anomaly_id("jn-wl-1", "level", T0)
    assert a == anomaly_id("jn-wl-1", "level", T0)
    assert a == "3202519875acec5b"  # pinned: ids outlive processes (alerts, replays)
    assert len({a, anomaly_id("jn-wl-2", "level", T0), anomaly_id("jn-wl-1", "spike", T0),
                anomaly_id("jn-wl-1", "level", T0 + 1)}) == 4


def test_the_same_readings_from_the_same_state_give_the_same_anomalies() -> None:
    engine = DetectionEngine(SMALL, PROFILES)
    state = engine.new_state()
    rng = np.random.default_rng(7)
    feed(engine, state, "jn-wl-1", "water_level", noisy(rng, 2.0, 0.01, 12))
    copy = BucketState.from_bytes(state.to_bytes())
    later = [level(3.6)] * 3 + [level(4.4)] * 2 + noisy(rng, 2.0, 0.01, 4)

    first = feed(engine, state, "jn-wl-1", "water_level", later, first=12)
    again = feed(engine, copy, "jn-wl-1", "water_level", later, first=12)

    assert first, "the scenario must raise anomalies for the comparison to mean anything"
    assert [a.to_dict() for a in again] == [a.to_dict() for a in first]
    for a in first:
        assert a.anomaly_id == anomaly_id(a.sensor_id, a.detector, a.since_ms)
    level_ids = {a.anomaly_id for a in first if a.detector == "level"}
    assert len(level_ids) == 1  # start, escalation and end share the episode's id


def test_an_anomaly_carries_where_and_when_and_round_trips_as_a_dict() -> None:
    engine = DetectionEngine(SMALL, PROFILES)
    state = engine.new_state()
    found = feed(engine, state, "jn-wl-1", "water_level", [level(3.7), level(3.7)])
    (a,) = [x for x in found if x.detector == "level"]
    assert (a.phase, a.reason, a.severity, a.kind, a.field) == (
        "start", "water.warning", "yellow", "water_level", "level_m")
    assert (a.district_code, a.city_code, a.lon, a.lat) == (DISTRICT, 370100, LON, LAT)
    assert (a.window_start_ms, a.window_end_ms, a.since_ms) == (T0, T0 + SIZE, T0)
    assert a.expected == 3.5 and 3.69 < a.observed < 3.71
    assert a.ts_ms == state.watermark and a.detected_at_ms == T0 + SIZE
    assert Anomaly.from_dict(a.to_dict()) == a


def test_an_episode_end_reports_the_severity_and_peak_score_it_reached() -> None:
    # Anomaly.severity / peak_score: "the highest of the episode so far". The end event is
    # what resolves the alert, so it must not report a red flood as a blue one.
    engine = DetectionEngine(SMALL, PROFILES)
    state = engine.new_state()
    found = feed(engine, state, "jn-wl-1", "water_level",
                 [level(2.0)] * 3 + [level(5.0)] * 2 + [level(2.0)] * 4)
    lv = [a for a in found if a.detector == "level"]
    assert [a.phase for a in lv] == ["start", "end"]
    start, end = lv
    assert start.severity == "red"
    assert end.anomaly_id == start.anomaly_id
    assert (end.severity, end.reason) == ("red", "water.record")
    assert end.peak_score >= start.peak_score


def test_reading_scores_are_causal_and_do_not_change_state() -> None:
    engine = DetectionEngine(SMALL, PROFILES)
    state = engine.new_state()
    rng = np.random.default_rng(3)
    feed(engine, state, "jn-wl-1", "water_level", noisy(rng, 2.0, 0.01, 10))
    before = state.to_bytes()
    t = T0 + 10 * SIZE
    batch = readings([("jn-wl-1", "water_level", t, 2.0), ("jn-wl-1", "water_level", t + 1, 2.6),
                      ("jn-wl-1", "water_level", t + 2, 4.3), ("nobody", "water_level", t, 9.0)])
    scores, expected, scale, floor = engine.reading_scores(state, batch)
    assert state.to_bytes() == before
    assert scores[0] < 0.5 < scores[1]  # 60 cm above a 1 cm-noise baseline: anomalous
    assert scores[2] > 0.5  # above 保证 as well
    assert scores[3] == 0.0  # an unseen sensor has no baseline
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.allclose(expected[:3], 2.0, atol=0.02) and np.isnan(expected[3])
    assert np.isfinite(scale[:3]).all() and np.isnan(scale[3])
    # the unlearned part of the scale: the water floor (2 cm) at least, never above the scale
    assert (floor[:3] >= 0.02).all() and (floor[:3] <= scale[:3]).all() and np.isnan(floor[3])


def test_reading_scores_judge_with_the_callers_per_reading_spread() -> None:
    engine = DetectionEngine(SMALL, PROFILES)
    state = engine.new_state()
    feed(engine, state, "jn-wl-1", "water_level", noisy(np.random.default_rng(3), 2.0, 0.01, 10))
    t = T0 + 10 * SIZE
    batch = readings([("jn-wl-1", "water_level", t, 2.3), ("jn-wl-1", "water_level", t + 1, 2.3)])
    window = engine.reading_scores(state, batch).score
    wide, _, scale, _ = engine.reading_scores(state, batch, np.array([0.2, np.nan]))
    assert window[0] > 0.5 > wide[0]  # 30 cm is 1.2 spreads of 20 cm: ordinary
    assert wide[1] == window[1]  # NaN: the window scale
    assert scale[0] > scale[1]


def test_parameters_follow_each_state_not_an_earlier_state_at_the_same_address() -> None:
    # DetectionEngine.params caches per id(state) and len(state); CPython hands the address of
    # a freed state to the next one, and a new state of the same size must not get the
    # freed state's parameters (here: a water gauge's for a pressure sensor).
    engine = DetectionEngine(SMALL)
    for _ in range(200):  # until a new state gets the address of a freed one (CPython: soon)
        water = engine.new_state()
        feed(engine, water, "jn-wl-9", "water_level", [level(1.0)] * 2)
        address = id(water)
        del water
        state = engine.new_state()
        if id(state) == address:
            break
    found = feed(engine, state, "jn-pp-1", "pipe_pressure", [[0.10] * 5] * 3)
    assert [a.reason for a in found if a.detector == "level"] == ["pressure.low"]


def test_an_engine_judges_with_its_own_profiles_whoever_used_the_state_before() -> None:
    plain = DetectionEngine(SMALL)  # 警戒 4.0 for every gauge
    profiled = DetectionEngine(SMALL, PROFILES)  # jn-wl-1: 警戒 3.5
    state = plain.new_state()
    assert feed(plain, state, "jn-wl-1", "water_level", [level(2.0)] * 2) == []
    found = feed(profiled, state, "jn-wl-1", "water_level", [level(3.7)] * 2, first=2)
    assert [(a.reason, a.severity) for a in found if a.detector == "level"] == [
        ("water.warning", "yellow")]
