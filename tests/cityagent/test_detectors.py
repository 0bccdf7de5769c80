"""Each detector through the engine: levels, spike, deviation, change, flatline, silence."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig, SensorProfiles
from cityagent.state import BucketState
from tests.cityagent.test_detection import (
    PROFILES,
    SIZE,
    SMALL,
    T0,
    events,
    feed,
    level,
    noisy,
    packaged_doc,
    readings,
    series,
    window_of,
)


def engine_with(profiles: SensorProfiles = PROFILES, config: DetectionConfig = SMALL):
    engine = DetectionEngine(config, profiles)
    return engine, engine.new_state()


def restore_without(state: BucketState, column: str) -> BucketState:
    """``state`` through a checkpoint written before ``column`` existed."""
    head_size = int.from_bytes(state.to_bytes()[:4], "little")
    head = orjson.loads(state.to_bytes()[4:4 + head_size])
    head["columns"].remove(column)
    body = b"".join(np.ascontiguousarray(state.cols[n]).tobytes() for n in head["columns"])
    raw = orjson.dumps(head)
    return BucketState.from_bytes(len(raw).to_bytes(4, "little") + raw + body)


# -- levels ---------------------------------------------------------------------------------


def test_water_levels_climb_the_ladder_of_the_gauges_own_levels() -> None:
    # jn-wl-1: 警戒 3.5, 保证 4.2 → blue from 3.15, yellow 3.5, orange 4.2, red (record) 4.9
    engine, state = engine_with()
    found = feed(engine, state, "jn-wl-1", "water_level",
                 [level(2.0), level(3.0), level(3.2), level(3.6), level(4.3), level(5.0),
                  level(4.6), level(2.0), level(2.0), level(2.0)])
    assert events(found, "level") == [
        ("level", "start", "water.approaching", "blue", 2),
        ("level", "escalate", "water.warning", "yellow", 3),
        ("level", "escalate", "water.guaranteed", "orange", 4),
        ("level", "escalate", "water.record", "red", 5),
        ("level", "end", "water.record", "red", 8),  # after 2 normal windows (7 and 8)
    ]
    passed = [a.expected for a in found if a.detector == "level" and a.phase != "end"]
    assert passed == [3.15, 3.5, 4.2, 4.9]


def test_a_gauge_without_a_profile_uses_the_kind_defaults() -> None:
    # defaults: 警戒 4.0, 保证 5.0 → blue from 3.5, yellow 4.0, orange 5.0, red 6.0
    engine, state = engine_with()
    found = feed(engine, state, "jn-wl-2", "water_level",
                 [level(3.4), level(3.6), level(4.3), level(5.2), level(6.1), level(6.1)])
    assert [(a.phase, a.severity, a.window_start_ms) for a in found if a.detector == "level"] == [
        ("start", "blue", T0 + SIZE), ("escalate", "yellow", T0 + 2 * SIZE),
        ("escalate", "orange", T0 + 3 * SIZE), ("escalate", "red", T0 + 4 * SIZE)]


@pytest.mark.parametrize(("sensor", "kind", "peak", "normal", "reason", "observed", "expected"), [
    # the high side's 0.80 MPa limit and the window's high end (0.29875) were reported
    ("jn-pp-3", "pipe_pressure", 0.10, 0.30, "pressure.low", 0.30075, 0.14),
    ("jn-pp-3", "pipe_pressure", 0.05, 0.30, "pressure.critical", 0.30075, 0.14),
    ("jn-pp-3", "pipe_pressure", 0.90, 0.30, "pressure.high", 0.29875, 0.8),
    # expected was NaN, so 0.0 in the event: now the blue rung (警戒 4 - ½ x 1) and TPI 9.5
    ("jn-wl-2", "water_level", 4.5, 2.0, "water.warning", 1.99875, 3.5),
    ("jn-tr-3", "traffic", 2.0, 60.0, "traffic.congestion", None, 9.5),
])
def test_a_level_episode_ends_with_its_own_side_and_the_limit_it_is_back_within(
        sensor: str, kind: str, peak: float, normal: float, reason: str,
        observed: float | None, expected: float) -> None:
    engine, state = engine_with(SensorProfiles())
    found = feed(engine, state, sensor, kind,
                 [level(normal)] * 2 + [level(peak)] * 6 + [level(normal)] * 8)
    (end,) = [a for a in found if a.detector == "level" and a.phase == "end"]
    assert (end.reason, end.expected) == (reason, expected)
    if observed is not None:  # traffic: the hopping mean still holds the jam's windows
        assert end.observed == pytest.approx(observed)
    assert 0.0 <= end.score < 0.5


@pytest.mark.parametrize("end_after", [1, 3])
def test_an_episode_ends_after_end_after_windows_normal_windows(end_after: int) -> None:
    doc = packaged_doc()
    doc["episodes"]["end_after_windows"] = end_after
    config = DetectionConfig.from_dict(doc, window_s=10, grace_s=2)
    engine, state = engine_with(config=config)
    found = feed(engine, state, "jn-wl-1", "water_level",
                 [level(3.7), level(3.7), level(2.0), level(3.7)] + [level(2.0)] * 5)
    lv = [(a.phase, window_of(a)) for a in found if a.detector == "level"]
    if end_after == 1:  # the normal window 2 ends the first episode, window 3 starts another
        assert lv == [("start", 0), ("end", 2), ("start", 3), ("end", 4)]
    else:  # one episode across the normal window 2
        assert lv == [("start", 0), ("end", 6)]


def test_one_spike_is_not_a_flood_but_a_spike_once_the_baseline_is_warm() -> None:
    engine, state = engine_with()
    spiky = [2.0, 2.003, 4.5, 1.998, 2.001]  # one reading above 保证 (4.2)
    cold = feed(engine, state, "jn-wl-1", "water_level", [level(2.0), spiky, level(2.0)])
    assert cold == []  # no baseline yet: no spike, and never a water level alarm

    rng = np.random.default_rng(11)
    feed(engine, state, "jn-wl-1", "water_level", noisy(rng, 2.0, 0.005, 8), first=3)
    found = feed(engine, state, "jn-wl-1", "water_level", [spiky, level(2.0), level(2.0)],
                 first=11)
    assert events(found) == [("spike", "start", "fault.spike_up", "blue", 11)]
    (a,) = [x for x in found if x.phase == "start"]
    assert a.observed == 4.5 and 1.9 < a.expected < 2.1 and a.field == "level_m"


def test_a_spike_episode_ends_reporting_its_own_side() -> None:
    """The end of an upward spike reported the window's lowest reading when it was further
    from the baseline than its highest (the downward side)."""
    engine, state = engine_with()
    rng = np.random.default_rng(11)
    feed(engine, state, "jn-wl-1", "water_level", noisy(rng, 2.0, 0.005, 11))
    dip = [2.0, 2.001, 1.95, 1.999, 2.0]  # 5 cm down: no spike (the 2 cm floor x 15)
    found = feed(engine, state, "jn-wl-1", "water_level",
                 [[2.0, 2.003, 4.5, 1.998, 2.001], level(2.0), dip, level(2.0), level(2.0)],
                 first=11)
    assert events(found, "spike") == [("spike", "start", "fault.spike_up", "blue", 11),
                                      ("spike", "end", "fault.spike_up", "blue", 13)]
    (end,) = [a for a in found if a.detector == "spike" and a.phase == "end"]
    assert end.observed == 2.001 and 1.9 < end.expected < 2.1


def _dense_day(kind: str, mean: float, sd: float, seed: int, spike_at: int = -1,
               spike: float = 0.0) -> list:
    """A day of one sensor reporting every second (60 readings a 60 s window, the packaged
    settings), fed in batches of ten minutes; every anomaly."""
    engine = DetectionEngine(DetectionConfig.load(), SensorProfiles())
    state = engine.new_state()
    x = np.clip(mean + np.random.default_rng(seed).normal(0.0, sd, 86_400), 0.0, None)
    if spike_at >= 0:
        x[spike_at] = spike
    found = []
    for a in range(0, len(x), 600):
        pts = [(T0 + (a + i) * 1000, float(v)) for i, v in enumerate(x[a:a + 600])]
        found += engine.process(state, series("s-1", kind, pts), now_ms=pts[-1][0]).anomalies
    return found


@pytest.mark.parametrize(("kind", "mean", "sd"), [
    ("traffic", 60.0, 9.0), ("water_level", 2.0, 0.1), ("pipe_pressure", 0.3, 0.02)])
def test_a_noisy_sensor_reporting_every_second_raises_no_spike(kind: str, mean: float,
                                                               sd: float) -> None:
    # Readings this noisy lie above the kind's floors: the window values' scale is learned,
    # ~7.6 times smaller than a reading's spread; judged in it, the largest of a window's 60
    # readings was a spike in ~150 windows a day.
    found = _dense_day(kind, mean, sd, seed=1)
    assert [a for a in found if a.detector == "spike"] == []


def test_a_spike_from_a_sensor_reporting_every_second_is_still_found() -> None:
    at = 43_217
    found = _dense_day("traffic", 60.0, 2.0, seed=2, spike_at=at, spike=2.0)
    spikes = [a for a in found if a.detector == "spike" and a.phase == "start"]
    assert [(a.reason, a.observed) for a in spikes] == [("fault.spike_down", 2.0)]
    assert spikes[0].window_start_ms == T0 + at * 1000 // 60_000 * 60_000


def test_pressure_below_the_floor_is_orange_and_below_critical_red() -> None:
    engine, state = engine_with()
    found = feed(engine, state, "jn-pp-1", "pipe_pressure",
                 [level(0.30), level(0.15), level(0.10), level(0.05), level(0.05)])
    lv = [(a.phase, a.reason, a.severity, a.expected, window_of(a)) for a in found
          if a.detector == "level"]
    assert lv == [("start", "pressure.low", "orange", 0.14, 2),
                  ("escalate", "pressure.critical", "red", 0.07, 3)]


def test_pressure_above_the_high_limit_is_yellow() -> None:
    engine, state = engine_with()
    found = feed(engine, state, "jn-pp-2", "pipe_pressure", [level(0.85), level(0.85)])
    assert [(a.reason, a.severity) for a in found if a.detector == "level"] == [
        ("pressure.high", "yellow")]


def _level_start(sensor: str, value: float):
    engine, state = engine_with(SensorProfiles())
    found = feed(engine, state, sensor, "pipe_pressure", [[0.3] * 6, [value] * 6, [value] * 6])
    (a,) = [x for x in found if x.detector == "level" and x.phase == "start"]
    return a.severity, a.score


def test_pressure_scores_rise_with_severity_and_high_pressure_never_outranks_red() -> None:
    """Above the high limit the score jumped to 1.0 (a one-rung ladder has no gap to climb
    over): a yellow 0.81 MPa outranked a red 0.05 MPa (0.96) in score order."""
    high = [_level_start("jn-pp-h", v) for v in (0.81, 0.85, 1.2, 5.0)]
    assert [sev for sev, _ in high] == ["yellow"] * 4
    scores = [score for _, score in high]
    assert 0.7 < scores[0] < scores[1] < scores[2] == scores[3] == 0.85  # 0.07 MPa above: flat
    orange = _level_start("jn-pp-o", 0.10)
    red = _level_start("jn-pp-r", 0.05)
    assert (orange[0], red[0]) == ("orange", "red")
    assert max(scores) <= orange[1] < red[1] <= 1.0


@pytest.mark.parametrize(("value", "expected"), [
    (0.14, []),  # at the service floor: the network meets it (it was orange)
    (0.1399, [("pressure.low", "orange")]),
    (0.07, [("pressure.low", "orange")]),  # at the critical level: orange, not red
    (0.0699, [("pressure.critical", "red")]),
    (0.80, []),  # at the high limit (it was yellow)
    (0.8001, [("pressure.high", "yellow")]),
])
def test_pressure_limits_fire_below_the_floor_and_above_the_high_limit_not_at_them(
        value: float, expected: list[tuple[str, str]]) -> None:
    engine, state = engine_with(SensorProfiles())
    found = feed(engine, state, "jn-pp-3", "pipe_pressure", [[0.3] * 6, [value] * 6,
                                                             [value] * 6, [value] * 6])
    assert [(a.reason, a.severity) for a in found if a.detector == "level"] == expected


def test_traffic_congestion_uses_the_roads_free_flow_speed() -> None:
    profiles = SensorProfiles.from_rows([{"sensor_id": "jn-tr-1", "free_flow_kmh": 80}])
    engine = DetectionEngine(SMALL, profiles)
    slow = [[25.0, 24.0, 26.0, 25.0]] * 3
    # 25 km/h is 31 % of 80 km/h (TPI 9.8, orange), 42 % of the default 60 km/h (TPI 8.3)
    states = [engine.new_state() for _ in range(3)]  # kept alive: see the params-cache test
    fast_road = feed(engine, states[0], "jn-tr-1", "traffic", slow)
    default_road = feed(engine, states[1], "jn-tr-2", "traffic", slow)
    (a,) = [x for x in fast_road if x.detector == "level"]
    assert (a.reason, a.severity, a.field) == ("traffic.congestion", "orange", "traffic_index")
    assert 9.7 <= a.observed < 9.9
    assert [x for x in default_road if x.detector == "level"] == []
    jam = feed(engine, states[2], "jn-tr-2", "traffic", [[3.0, 2.0, 4.0, 3.0]] * 2)
    assert [(x.reason, x.severity, x.observed) for x in jam if x.detector == "level"] == [
        ("traffic.congestion", "red", 10.0)]


# -- deviation and change ------------------------------------------------------------------


def test_deviation_fires_on_a_level_shift_after_warm_up() -> None:
    engine, state = engine_with()
    rng = np.random.default_rng(5)
    found = feed(engine, state, "jn-wl-3", "water_level",
                 noisy(rng, 1.0, 0.01, 10) + noisy(rng, 1.3, 0.01, 3))
    dev = [(a.phase, a.reason, window_of(a)) for a in found if a.detector == "deviation"]
    assert dev[0] == ("start", "deviation.high", 10)


def test_deviation_does_not_fire_before_warm_up() -> None:
    engine, state = engine_with()
    rng = np.random.default_rng(5)
    warmup = SMALL.kinds["water_level"].deviation_warmup
    found = feed(engine, state, "jn-wl-3", "water_level",
                 noisy(rng, 1.0, 0.01, 2) + noisy(rng, 1.3, 0.01, warmup - 1))
    assert found == []


def _one_reading_windows(rng: np.random.Generator, windows: int) -> list[list[float]]:
    """A junction reporting once a minute (the kinds' default interval): 0.30 MPa, noise
    0.003 MPa, one reading a window."""
    return [[0.30 + rng.normal(0.0, 0.003)] for _ in range(windows)]


def test_a_one_reading_transient_raises_no_deviation_but_a_lasting_change_does() -> None:
    # A pump transient of +0.04 MPa is ten scales of the 0.004 MPa floor: with one reading a
    # window it was the whole window, and it raised a deviation (0.20 false alarms per
    # sensor-day in `cityagent eval --tick 60`). It needs the next window to confirm it now.
    engine, state = engine_with()
    rng = np.random.default_rng(21)
    found = feed(engine, state, "jn-pp-7", "pipe_pressure", _one_reading_windows(rng, 40))
    assert events(found) == []
    row = state.index["jn-pp-7"]
    transient = feed(engine, state, "jn-pp-7", "pipe_pressure",
                     [[0.34]] + _one_reading_windows(rng, 5), first=40)
    assert events(transient) == []  # 10 scales: no spike either (15 reading scales)
    assert np.isnan(state.cols["dev_pend"][row])
    shift = feed(engine, state, "jn-pp-7", "pipe_pressure", [[0.34 + rng.normal(0.0, 0.003)]
                                                             for _ in range(4)], first=46)
    # The first window of the shift is not enough; the second confirms it, and one window
    # of the shift on its own side then keeps the episode open without more confirmation.
    assert events(shift, "deviation") == [("deviation", "start", "deviation.high", "blue", 47)]
    assert np.isnan(state.cols["dev_pend"][row])  # confirmed, nothing held


def test_a_generic_series_is_not_confirmed_a_point_anomaly_is_one_reading() -> None:
    # deviation_confirm is off for the generic profile (cityagent replay of a series of
    # unknown kind): its first one-reading window out raises the deviation.
    engine, state = engine_with()
    rng = np.random.default_rng(23)
    windows = [[10.0 + rng.normal(0.0, 1.0)] for _ in range(40)] + [[22.0], [10.1], [9.9]]
    found = feed(engine, state, "series", "generic", windows)
    assert [(e[1], e[4]) for e in events(found, "deviation")] == [("start", 40)]


def test_one_reading_of_a_gauge_far_up_is_a_spike_not_a_flood() -> None:
    # At a reading a minute a gauge's glitch of +4 m was the whole window: it raised the red
    # `water.record` level (and a city-wide flood alert routed to emergency) in `cityagent
    # eval --tick 60`. Its window is held; the next reading is back, so it is a spike then.
    engine, state = engine_with()
    rng = np.random.default_rng(24)
    gauge = [[2.0 + rng.normal(0.0, 0.01)] for _ in range(30)]
    found = feed(engine, state, "jn-wl-1", "water_level",
                 gauge + [[6.0]] + [[2.0 + rng.normal(0.0, 0.01)] for _ in range(4)])
    assert [e for e in events(found) if e[1] == "start"] == [
        ("spike", "start", "fault.spike_up", "blue", 31)]
    (start,) = [a for a in found if a.phase == "start"]
    assert start.observed == 6.0 and 1.9 < start.expected < 2.1


def test_a_gauge_that_jumps_and_stays_is_a_level_one_window_later() -> None:
    # The same jump, lasting: the second window confirms it and the levels fire then.
    engine, state = engine_with()
    rng = np.random.default_rng(24)
    gauge = [[2.0 + rng.normal(0.0, 0.01)] for _ in range(30)]
    found = feed(engine, state, "jn-wl-1", "water_level",
                 gauge + [[6.0 + rng.normal(0.0, 0.01)] for _ in range(4)])
    starts = [e for e in events(found) if e[1] == "start"]
    assert ("level", "start", "water.record", "red", 31) in starts
    assert ("deviation", "start", "deviation.high", "orange", 31) in starts
    assert [e for e in starts if e[0] in ("spike", "level", "deviation") and e[4] == 30] == []


def test_a_window_of_three_readings_is_judged_alone() -> None:
    # Three or more readings have a robust value (one transient is dropped from it): a
    # lasting change raises a deviation in its first window, as before.
    engine, state = engine_with()
    rng = np.random.default_rng(21)
    found = feed(engine, state, "jn-pp-7", "pipe_pressure",
                 noisy(rng, 0.30, 0.003, 30, n=3) + [[0.34, 0.35, 0.34]] * 3)
    assert [e[4] for e in events(found, "deviation")] == [30]


def test_a_checkpoint_from_before_the_confirmation_column_restores_it_as_unconfirmed() -> None:
    engine, state = engine_with()
    rng = np.random.default_rng(21)
    # A window closes at the batch two windows on (grace): after windows 40-42 of the shift,
    # window 40 is closed and unconfirmed, 41 and 42 are open.
    feed(engine, state, "jn-pp-7", "pipe_pressure",
         _one_reading_windows(rng, 40) + [[0.340], [0.342], [0.341]])
    row = state.index["jn-pp-7"]
    assert state.cols["dev_pend"][row] == 0.340  # the held window's value, kept
    restored = restore_without(state, "dev_pend")
    assert np.isnan(restored.cols["dev_pend"]).all()
    # Restored without it, window 41 is a first one again: it waits for window 42, where
    # the state that kept the column is confirmed by window 41.
    more = [[0.343], [0.339]]
    found = feed(engine, restored, "jn-pp-7", "pipe_pressure", more, first=43)
    assert [e[4] for e in events(found, "deviation")] == [42]
    found = feed(engine, state, "jn-pp-7", "pipe_pressure", more, first=43)
    assert [e[4] for e in events(found, "deviation")] == [41]


def test_a_spike_in_a_window_of_two_readings_is_a_spike() -> None:
    # One reading of 2 km/h beside a normal one: the window has no robust value, so it could
    # hold no spike, and only the deviation of its mean found it (which now needs the next
    # window's confirmation: `cityagent eval --tick 30` missed one spike in 15).
    engine, state = engine_with()
    rng = np.random.default_rng(22)
    found = feed(engine, state, "jn-tr-9", "traffic", noisy(rng, 40.0, 0.8, 30, n=2))
    assert events(found) == []
    found = feed(engine, state, "jn-tr-9", "traffic",
                 [[40.3, 2.0]] + noisy(rng, 40.0, 0.8, 3, n=2), first=30)
    assert events(found, "spike") == [("spike", "start", "fault.spike_down", "blue", 30),
                                      ("spike", "end", "fault.spike_down", "blue", 32)]
    assert events(found, "deviation") == []
    (start,) = [a for a in found if a.detector == "spike" and a.phase == "start"]
    assert start.observed == 2.0


def test_cusum_catches_a_sudden_drop_within_two_windows() -> None:
    engine, state = engine_with()
    rng = np.random.default_rng(8)
    found = feed(engine, state, "jn-pp-1", "pipe_pressure",
                 noisy(rng, 0.30, 0.002, 12) + noisy(rng, 0.20, 0.002, 3))
    change = [(a.phase, a.reason, window_of(a)) for a in found if a.detector == "change"]
    assert change and change[0][:2] == ("start", "change.drop")
    assert change[0][2] in (12, 13)
    assert not [a for a in found if a.detector == "level"]  # 0.20 MPa is above the floor


def test_slow_drift_is_not_a_sudden_change() -> None:
    engine, state = engine_with()
    rng = np.random.default_rng(9)
    drift = [list(1.0 + 0.002 * w + rng.normal(0, 0.005, 5)) for w in range(40)]
    found = feed(engine, state, "jn-wl-4", "water_level", drift)
    assert [a for a in found if a.detector == "change"] == []


# -- constant and quantised series ----------------------------------------------------------


@pytest.mark.parametrize("kind, base, quantum", [
    ("water_level", 2.0, 0.01),
    ("pipe_pressure", 0.30, 0.01),
    ("traffic", 40.0, 1.0),
    ("generic", 5.0, 0.01),
])
def test_a_constant_series_raises_nothing_on_its_smallest_step(kind: str, base: float,
                                                                 quantum: float) -> None:
    engine, state = engine_with()
    up = base + quantum
    windows = ([[base] * 5] * 40 + [[up] * 5] * 5 + [[base] * 5] * 3
               + [[base, up, base, up, base]] * 10 + [[up] * 5] * 5)
    found = feed(engine, state, f"s-{kind}", kind, windows)
    assert events(found) == []


@pytest.mark.parametrize("kind, base, jump", [
    ("water_level", 2.0, 1.0),
    ("pipe_pressure", 0.35, -0.1),
    ("traffic", 60.0, -30.0),
    ("generic", 5.0, 1.0),
    ("generic", 5.0, 100.0),
])
def test_a_constant_sensor_that_jumps_raises_a_deviation(kind: str, base: float,
                                                         jump: float) -> None:
    # Its first step was taken for its resolution (the quantum that floors the scale): the
    # jump itself became one scale, and no jump of a constant sensor raised anything. Now the
    # jump is judged first and only then becomes the sensor's step, so that its baseline can
    # follow the new level and the deviation episode ends.
    engine, state = engine_with()
    found = feed(engine, state, f"s-{kind}", kind, [[base] * 5] * 80 + [[base + jump] * 5] * 20)
    deviation = [(a.phase, window_of(a)) for a in found if a.detector == "deviation"]
    assert deviation[0] == ("start", 80) and deviation[-1][0] == "end"
    assert state.cols["quantum"][state.index[f"s-{kind}"]] == pytest.approx(abs(jump))


def test_a_quantised_series_flipping_between_two_values_never_flatlines() -> None:
    # 5 readings of 2.00 or 2.01 per window: ~6 % of its windows are flat by chance, more
    # than flat_max_fraction (2 %), so flatline must learn that this sensor is quantised.
    engine, state = engine_with()
    rng = np.random.default_rng(1)
    windows = [list(2.0 + 0.01 * rng.integers(0, 2, 5)) for _ in range(200)]
    flat = sum(len(set(w)) == 1 for w in windows[:50])
    assert flat >= 3  # the premise: flat windows do occur early
    found = feed(engine, state, "jn-wl-5", "water_level", windows)
    assert [window_of(a) for a in found if a.detector == "flatline" and a.phase == "start"
            and window_of(a) >= 50] == []
    assert [a for a in found if a.detector != "flatline"] == []


@pytest.mark.parametrize("stuck_windows", [4, 60])
def test_flatline_fires_when_a_noisy_sensor_becomes_exactly_constant(stuck_windows: int) -> None:
    """One episode however long the fault: 60 windows is the case a live run found, where the
    flat fraction, still learned (ten times slower) during the episode, passed
    flat_max_fraction and ended the episode ~5 windows in, the sensor still stuck."""
    engine, state = engine_with()
    rng = np.random.default_rng(4)
    found = feed(engine, state, "jn-wl-6", "water_level",
                 noisy(rng, 2.0, 0.01, 15) + [[2.0] * 5] * stuck_windows
                 + noisy(rng, 2.0, 0.01, 3))
    # Found at its 4th identical reading (flat_min_readings), not at the window's close; the
    # episode (window_start_ms = the run's first reading) ends at the first differing reading.
    assert events(found, "flatline") == [
        ("flatline", "start", "fault.flatline", "blue", 15),
        ("flatline", "end", "fault.flatline", "blue", 15),
    ]
    start, end = [a for a in found if a.detector == "flatline"]
    assert start.since_ms == T0 + 15 * SIZE
    # One batch per window here: raised at the batch's event time (its newest reading).
    assert start.ts_ms == T0 + 15 * SIZE + 4 * (SIZE // 5)
    noisy_again = 15 + stuck_windows
    assert end.ts_ms == T0 + noisy_again * SIZE + 4 * (SIZE // 5)
    assert events(found, "deviation") == events(found, "change") == []


def test_a_flatline_reports_the_stuck_value_when_the_run_ends_within_the_batch() -> None:
    # One batch per window, as a replay feeds it: the run of 2.123 ends before the window's
    # last readings. The start reported the batch's last reading (1.95) as the stuck value.
    engine, state = engine_with()
    rng = np.random.default_rng(4)
    found = feed(engine, state, "jn-wl-6", "water_level",
                 noisy(rng, 2.0, 0.01, 15, n=6) + [[2.123] * 4 + [2.01, 1.95]]
                 + noisy(rng, 2.0, 0.01, 3, n=6))
    start = [a for a in found if a.detector == "flatline" and a.phase == "start"]
    assert [(a.observed, a.expected) for a in start] == [(2.123, 2.123)]


def _stuck_then_back(engine, state, stuck: float = 2.3) -> list:
    """A noisy gauge stuck at ``stuck`` for 6 windows; then 2.05 and varying readings."""
    rng = np.random.default_rng(4)
    return feed(engine, state, "jn-wl-6", "water_level",
                noisy(rng, 2.0, 0.01, 15) + [[stuck] * 5] * 6
                + [[2.05, 2.01, 1.99, 2.02, 1.98]] + noisy(rng, 2.0, 0.01, 2))


def test_a_flatline_end_says_the_stuck_value_and_what_the_sensor_reads_now() -> None:
    # Before, the end event's expected was its observed, the batch's latest reading: the
    # value the sensor had been stuck at was lost once the run ended.
    engine, state = engine_with()
    start, end = [a for a in _stuck_then_back(engine, state) if a.detector == "flatline"]
    assert (start.phase, start.observed, start.expected) == ("start", 2.3, 2.3)
    assert (end.phase, end.anomaly_id, end.field) == ("end", start.anomaly_id, "level_m")
    assert (end.expected, end.observed) == (2.3, 1.98)  # stuck at; reads now (the batch's last)
    assert np.isnan(state.cols["flat_x"][state.index["jn-wl-6"]])  # kept only while open


def test_a_flatline_restored_from_a_checkpoint_without_its_stuck_value_still_ends() -> None:
    # A checkpoint written before the flat_x column restores it as NaN: the end event then
    # reports the latest reading as expected, as it did before.
    engine, state = engine_with()
    rng = np.random.default_rng(4)
    feed(engine, state, "jn-wl-6", "water_level", noisy(rng, 2.0, 0.01, 15) + [[2.3] * 5] * 6)
    restored = restore_without(state, "flat_x")
    assert np.isnan(restored.cols["flat_x"]).all()
    found = feed(engine, restored, "jn-wl-6", "water_level", [[2.05, 2.01, 1.99, 2.02, 1.98]],
                 first=21)
    (end,) = [a for a in found if a.detector == "flatline"]
    assert (end.phase, end.expected, end.observed) == ("end", 1.98, 1.98)


def test_a_sensor_stuck_again_soon_after_a_fault_is_found_again() -> None:
    """A flaky sensor stuck for 30 windows, varying for 5, then stuck again. The stuck
    windows taught the flat fraction (ten times slower) to 0.058, past flat_max_fraction
    (0.02), and the second fault went unreported for ~50 windows of varying readings."""
    engine, state = engine_with()
    rng = np.random.default_rng(8)
    found = feed(engine, state, "jn-wl-10", "water_level",
                 noisy(rng, 2.0, 0.01, 15) + [[2.0] * 5] * 30 + noisy(rng, 2.0, 0.01, 5)
                 + [[2.1] * 5] * 10 + noisy(rng, 2.0, 0.01, 3))
    assert [(a.phase, window_of(a)) for a in found if a.detector == "flatline"] == [
        ("start", 15), ("end", 15), ("start", 50), ("end", 50)]
    assert state.cols["flat_frac"][state.index["jn-wl-10"]] <= 0.02


def test_a_sensor_that_has_become_constant_is_learned_as_such_after_the_first_hour() -> None:
    # A gauge gone dry: one long episode, of which the windows after flat_learn_after_s (an
    # hour, 360 windows here) teach that it is flat; stuck again after a brief change, it
    # does not start another.
    engine, state = engine_with()
    rng = np.random.default_rng(9)
    found = feed(engine, state, "jn-wl-11", "water_level",
                 noisy(rng, 2.0, 0.01, 15) + [[0.5] * 5] * 600 + noisy(rng, 2.0, 0.01, 2)
                 + [[0.6] * 5] * 20)
    assert [(a.phase, window_of(a)) for a in found if a.detector == "flatline"] == [
        ("start", 15), ("end", 15)]
    assert state.cols["flat_frac"][state.index["jn-wl-11"]] > 0.3


def _one_by_one(engine, state, sensor: str, kind: str, values: list[float], step: int,
                first_ts: int = T0) -> list:
    """One batch per reading, ``step`` ms apart (a live stream)."""
    out = []
    for i, v in enumerate(values):
        out += engine.process(state, series(sensor, kind, [(first_ts + i * step, v)]),
                              now_ms=0).anomalies
    return out


def test_a_freeze_mid_window_is_found_at_the_run_not_after_the_next_whole_window() -> None:
    # Two readings per 10 s window (5 s apart); the sensor freezes at the *second* reading of
    # window 30: its run crosses two window boundaries and reaches 4 readings 15 s later.
    engine, state = engine_with()
    rng = np.random.default_rng(5)
    values = list(2.0 + rng.normal(0.0, 0.01, 61)) + [2.5] * 8 + list(2.0 + rng.normal(0.0, 0.01, 4))
    found = _one_by_one(engine, state, "jn-wl-7", "water_level", values, SIZE // 2)
    flat = [a for a in found if a.detector == "flatline"]
    assert [(a.phase, a.since_ms, a.ts_ms) for a in flat] == [
        ("start", T0 + 61 * 5_000, T0 + 64 * 5_000),
        ("end", T0 + 61 * 5_000, T0 + 69 * 5_000),
    ]


def test_a_constant_series_never_flatlines_and_a_short_repeat_is_not_a_run() -> None:
    # Constant from its first reading (a dry or quantised sensor): every window holds a run,
    # so flat_frac learns that this is normal and flatline never fires.
    engine, state = engine_with()
    assert _one_by_one(engine, state, "jn-wl-8", "water_level", [1.0] * 300, SIZE // 5) == []
    assert state.cols["flat_frac"][state.index["jn-wl-8"]] > 0.9
    # A noisy sensor repeating one value three times (under flat_min_readings = 4): no run.
    engine, state = engine_with()
    rng = np.random.default_rng(6)
    values = list(2.0 + rng.normal(0.0, 0.01, 100)) + [2.2] * 3 + list(2.0 + rng.normal(0.0, 0.01, 20))
    found = _one_by_one(engine, state, "jn-wl-9", "water_level", values, SIZE // 5)
    assert [a for a in found if a.detector == "flatline"] == []
    row = state.index["jn-wl-9"]
    assert state.cols["run_n"][row] == 1 and state.cols["flat_frac"][row] == 0.0


@pytest.mark.parametrize(("varying_windows", "found"), [(60, False), (250, True)])
def test_a_sensor_stuck_from_birth_is_learned_as_flat_until_it_has_varied_for_hours(
        varying_windows: int, found: bool) -> None:
    """Documented, not a fault: stuck from its first reading, a sensor cannot be told from a
    dry or quantised one (flat_frac learns 1.0 and it never flatlines); once it varies,
    flat_frac decays and a new fault is found only ~150 windows later (docs/detection.md)."""
    engine, state = engine_with()
    rng = np.random.default_rng(11)
    anomalies = feed(engine, state, "jn-wl-12", "water_level",
                     [[2.0] * 5] * 10 + noisy(rng, 2.0, 0.01, varying_windows)
                     + [[2.3] * 5] * 10 + noisy(rng, 2.0, 0.01, 3))
    starts = [window_of(a) for a in anomalies if a.detector == "flatline" and a.phase == "start"]
    assert starts == ([10 + varying_windows] if found else [])


def test_a_run_inside_one_batch_is_found_even_when_it_ends_in_that_batch() -> None:
    # A replay slice holds a whole window: a stuck spell of 4 readings inside it starts an
    # episode (at the run) and the next batch, normal again, ends it.
    engine, state = engine_with()
    rng = np.random.default_rng(7)
    windows = noisy(rng, 2.0, 0.01, 15, n=8)
    windows.append([2.01, 2.3, 2.3, 2.3, 2.3, 1.99, 2.0, 2.02])
    windows += noisy(rng, 2.0, 0.01, 2, n=8)
    found = feed(engine, state, "jn-wl-10", "water_level", windows)
    flat = [(a.phase, a.since_ms) for a in found if a.detector == "flatline"]
    assert flat == [("start", T0 + 15 * SIZE + SIZE // 8), ("end", T0 + 15 * SIZE + SIZE // 8)]


# -- silence --------------------------------------------------------------------------------


def test_silence_is_found_by_other_sensors_event_time_and_ends_on_the_next_reading() -> None:
    profiles = SensorProfiles.from_rows([{"sensor_id": "quiet", "expected_interval_s": 10}])
    engine, state = engine_with(profiles)
    # "quiet" reports every 10 s up to T0 + 20 s; silent once quiet for > max(3 x 10 s, 30 s)
    last = T0 + 20_000
    engine.process(state, readings([("quiet", "water_level", t, 1.0)
                                    for t in range(T0, last + 1, 10_000)]), 0)

    def busy(t: int):
        return engine.process(state, series("busy", "water_level", [(t, 1.0)]), now_ms=t + 5)

    assert [a for t in range(T0 + 25_000, last + 30_001, 5_000) for a in busy(t).anomalies
            if a.detector == "silence"] == []
    (start,) = busy(last + 30_001).anomalies
    assert (start.detector, start.phase, start.reason, start.severity, start.sensor_id) == (
        "silence", "start", "fault.silence", "blue", "quiet")
    assert (start.since_ms, start.field, start.observed) == (last, "quiet_s", 30.001)
    assert [a for a in busy(last + 60_000).anomalies if a.detector == "silence"] == []
    assert engine.advance(state, last + 90_000, 0).anomalies == []  # one episode, not one a tick

    back = engine.process(state, series("quiet", "water_level", [(last + 91_000, 1.0)]), 0)
    assert [(a.phase, a.anomaly_id) for a in back.anomalies if a.detector == "silence"] == [
        ("end", start.anomaly_id)]
    # The end says how long the silence lasted, from the last reading before it to the one
    # that ended it; it said how long the sensor had been quiet at that reading (0.0 s).
    (end,) = [a for a in back.anomalies if a.detector == "silence"]
    assert (end.since_ms, end.field, end.observed, end.expected) == (last, "quiet_s", 91.0, 10.0)


def test_a_silence_ended_by_a_batch_of_readings_lasted_until_its_newest() -> None:
    profiles = SensorProfiles.from_rows([{"sensor_id": "quiet", "expected_interval_s": 10}])
    engine, state = engine_with(profiles)
    engine.process(state, series("quiet", "water_level", [(T0, 1.0)]), 0)
    (start,) = engine.advance(state, T0 + 40_000, 0).anomalies
    assert (start.phase, start.observed) == ("start", 40.0)
    # Two readings in one batch (the first 112 s after the last one): the silence lasted
    # until the newest, the sensor's latest reading when it ended; the quiet time then, by
    # the other sensor's clock, was 1 s.
    engine.process(state, series("busy", "water_level", [(T0 + 121_000, 1.0)]), 0)
    back = engine.process(state, series("quiet", "water_level",
                                        [(T0 + 112_000, 1.1), (T0 + 120_000, 1.2)]), 0)
    (end,) = [a for a in back.anomalies if a.detector == "silence"]
    assert (end.phase, end.anomaly_id, end.observed) == ("end", start.anomaly_id, 120.0)


def test_silence_of_a_learned_interval_reports_that_interval_as_expected() -> None:
    """A generic series has no configured interval (0): its start and end events said
    expected 0.0; they now carry the learned interval the silence was judged against."""
    engine, state = engine_with(SensorProfiles())
    for t in range(T0, T0 + 100_000, 10_000):
        engine.process(state, series("pump-1", "generic", [(t, 1.0 + t % 7)]), 0)
    last = T0 + 90_000
    (start,) = engine.advance(state, last + 30_001, 0).anomalies  # 3 x 10 s, at least 30 s
    back = engine.process(state, series("pump-1", "generic", [(last + 40_000, 2.0)]), 0)
    (end,) = [a for a in back.anomalies if a.detector == "silence"]
    # the end's too: the 40 s gap that ended the silence is not learned as an interval
    assert [(a.phase, a.field, a.expected) for a in (start, end)] == [
        ("start", "quiet_s", 10.0), ("end", "quiet_s", 10.0)]


def _interval_s(state, sensor: str) -> float:
    return float(state.cols["gap_ms"][state.index[sensor]]) / 1000.0


def _every_10_s(engine, state, sensor: str, first: int, count: int) -> int:
    """``count`` readings of a generic ``sensor`` 10 s apart from ``first``, one a batch (as
    the API sends a lone request); the last one's time."""
    for i in range(count):
        t = first + i * 10_000
        engine.process(state, series(sensor, "generic", [(t, 1.0 + i % 3)]), 0)
    return t


def test_one_reading_hours_older_than_the_others_does_not_stretch_the_silence_limit() -> None:
    """A sensor's first reading came 9.7 h old (a buffered reading, accepted in a fresh
    bucket's first batch): its first gap, 9.7 h, was taken whole as the learned interval, and
    the silence timer waited 29 h (3 intervals), decaying 10 % a reading."""
    engine, state = engine_with(SensorProfiles())
    engine.process(state, readings([("other", "generic", T0, 1.0),
                                    ("pump-1", "generic", T0 - 34_920_000, 1.0)]), 0)
    last = _every_10_s(engine, state, "pump-1", T0 + 10_000, 6)
    assert _interval_s(state, "pump-1") == 10.0
    assert engine.advance(state, last + 30_000, 0).anomalies == []
    assert [a.reason for a in engine.advance(state, last + 30_001, 0).anomalies] == [
        "fault.silence"]


def test_an_outage_or_an_older_reading_is_not_learned_as_the_report_interval() -> None:
    engine, state = engine_with(SensorProfiles())
    last = _every_10_s(engine, state, "pump-1", T0, 10)
    # An hour without readings, then every 10 s again: the hour was a silence, not an interval
    # (it was learned at 10 %: 369 s, and the sensor was silent only after 18 min).
    last = _every_10_s(engine, state, "pump-1", last + 3_600_000, 3)
    assert _interval_s(state, "pump-1") == 10.0
    # A reading older than the sensor's latest (its window is open still, within grace) sent
    # with the next one: the gap was shared between the two (5 s).
    engine.process(state, series("pump-1", "generic", [(last - 1_000, 7.0),
                                                       (last + 10_000, 2.0)]), 0)
    assert state.late_total == 0 and _interval_s(state, "pump-1") == 10.0


def test_a_sensor_that_reports_less_often_is_learned_at_its_new_interval() -> None:
    engine, state = engine_with(SensorProfiles())
    last = _every_10_s(engine, state, "pump-1", T0, 10)
    for i in range(1, 31):
        engine.process(state, series("pump-1", "generic", [(last + i * 60_000, 1.0 + i % 3)]), 0)
    assert 55.0 < _interval_s(state, "pump-1") < 60.0


def test_without_a_profile_silence_waits_for_three_expected_intervals() -> None:
    engine, state = engine_with(SensorProfiles())
    engine.process(state, series("quiet", "water_level", [(T0, 1.0)]), 0)
    assert engine.advance(state, T0 + 180_000, 0).anomalies == []  # water: 3 x 60 s
    assert [a.reason for a in engine.advance(state, T0 + 180_001, 0).anomalies] == [
        "fault.silence"]


# -- time of day ----------------------------------------------------------------------------


def _daily_pressure(t_ms: int) -> float:
    """0.40 MPa at night, 0.22 MPa by day, two-hour ramps from 06:00 and 18:00 (CST)."""
    hour = ((t_ms + 8 * 3_600_000) % 86_400_000) / 3_600_000
    hi, lo = 0.40, 0.22
    if 6 <= hour < 8:
        return hi - (hi - lo) * (hour - 6) / 2
    if 8 <= hour < 18:
        return lo
    if 18 <= hour < 20:
        return lo + (hi - lo) * (hour - 18) / 2
    return hi


@pytest.mark.parametrize("time_of_day", [True, False])
def test_a_daily_pattern_raises_nothing_after_a_day_of_history(time_of_day: bool) -> None:
    doc = packaged_doc()
    doc["kind"]["pipe_pressure"]["time_of_day"] = time_of_day
    doc["defaults"]["deviation_warmup"] = 3  # an hour's baseline is used after 9 windows
    config = DetectionConfig.from_dict(doc, window_s=300, grace_s=30)
    engine, state = engine_with(config=config)
    size = 300_000
    midnight = (T0 + 8 * 3_600_000) // 86_400_000 * 86_400_000 - 8 * 3_600_000
    per_day = 86_400_000 // size
    wiggle = (0.002, -0.0015, 0.0005)
    day2 = []
    for w in range(2 * per_day):
        start = midnight + w * size
        pts = [(start + i * 100_000, _daily_pressure(start + i * 100_000) + wiggle[i]
                + 0.001 * np.sin(w)) for i in range(3)]
        found = engine.process(state, series("jn-pp-9", "pipe_pressure", pts), 0).anomalies
        day2 += [a for a in found if a.window_start_ms >= midnight + 86_400_000]
    if time_of_day:
        assert day2 == []
    else:  # the check has teeth: without the hour's baseline the morning ramp is a deviation
        # (and the trend CUSUM of that deviation sees the ramp too)
        assert [a.reason for a in day2 if a.phase == "start"
                and a.detector != "trend"] == ["deviation.low"]
        assert {a.reason for a in day2 if a.detector == "trend"} <= {"trend.down"}


# -- trend ----------------------------------------------------------------------------------


def test_trend_finds_a_slow_ramp_before_the_deviation_detector_does() -> None:
    # A noisy junction (no time-of-day history yet: judged on the recent baseline), then a
    # leak-like ramp of 0.002 MPa per window (about half a scale): the trend CUSUM sums it.
    engine, state = engine_with()
    rng = np.random.default_rng(8)
    quiet = noisy(rng, 0.35, 0.002, 40)
    ramp = [list(0.35 - 0.002 * (i + 1) + rng.normal(0.0, 0.002, 5)) for i in range(60)]
    found = feed(engine, state, "jn-pp-5", "pipe_pressure", quiet + ramp)
    assert [a for a in found if a.window_start_ms < T0 + 40 * SIZE] == []  # quiet: nothing
    first = {}
    for a in found:
        if a.phase == "start":
            first.setdefault(a.detector, window_of(a) - 40)
    assert first["trend"] <= 12, first
    assert first["trend"] < first.get("deviation", 99), first
    (reason,) = {a.reason for a in found if a.detector == "trend"}
    assert reason == "trend.down"


def test_trend_is_quiet_on_a_constant_and_on_a_noisy_flat_series() -> None:
    engine, state = engine_with()
    assert feed(engine, state, "jn-pp-6", "pipe_pressure", [[0.3] * 5] * 200) == []
    assert state.cols["tr_pos"][0] == state.cols["tr_neg"][0] == 0.0
    rng = np.random.default_rng(9)
    engine, state = engine_with()
    found = feed(engine, state, "jn-pp-7", "pipe_pressure", noisy(rng, 0.3, 0.003, 500))
    assert [a for a in found if a.detector == "trend"] == []
