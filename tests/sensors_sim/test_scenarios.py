"""Scenarios: the file format, the built-ins, what each anomaly does, and the labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig, SensorProfiles
from cityagent.regions import default_regions
from cityagent.state import NO_TS
from sensors_sim.fleet import make_fleet
from sensors_sim.generators import FleetSignals
from sensors_sim.registry import registry_rows
from sensors_sim.scenario import (
    ScenarioError,
    builtin_names,
    load_scenario,
    parse_duration_s,
    parse_scenario,
)

H = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01 08:00 China Standard Time


@pytest.fixture(scope="module")
def fleet():
    return make_fleet(3000, 5, default_regions())


def _signals(fleet, anomalies, seed=1):
    scenario = parse_scenario({"name": "t", "anomalies": anomalies})
    return FleetSignals(fleet, seed, breach_every_s=0, scenario=scenario)


def _engine(signals, interval_s, **windows):
    """The engine with the packaged settings (``windows`` overrides) and the fleet's registry."""
    config = DetectionConfig.load(**windows)
    profiles = SensorProfiles.from_rows(
        registry_rows(signals, interval_s, default_regions(), config))
    return DetectionEngine(config, profiles)


def _run(signals, seconds, step_s=10):
    return [signals.tick(T0 + k * step_s * 1000) for k in range(seconds // step_s)]


def test_builtins_load():
    assert {"rainstorm-jinan", "pipe-burst-qingdao", "sensor-faults", "quiet-day"} <= set(
        builtin_names())
    for name in builtin_names():
        assert load_scenario(name).name == name
    assert load_scenario("quiet-day").anomalies == ()


def test_scenario_file_and_errors(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "anomalies": [
        {"type": "spike", "sensors": ["jn-tr-000000"], "start": "1m"}]}))
    (spec,) = load_scenario(str(path)).anomalies
    assert spec.type == "spike" and spec.start_s == 60 and spec.duration_s == 1.0
    assert parse_duration_s("1.5h", "x") == 5400 and parse_duration_s(30, "x") == 30
    for bad, says in [
        ({"anomalies": [{"type": "flood", "place": "370100"}]}, "'type' must be one of"),
        ({"anomalies": [{"type": "leak"}]}, "give a 'place'"),
        ({"anomalies": [{"type": "leak", "place": "370100", "start": "soon"}]}, "duration"),
        ({"anomalies": [{"type": "leak", "place": "370100", "magnitude": -1}]}, "magnitude"),
        # NaN (as Python's JSON reads it) made the leaking sensors' readings NaN: null in a file.
        ({"anomalies": [{"type": "leak", "place": "370100", "magnitude": float("nan")}]},
         "'magnitude' must be a positive number; got nan"),
        ({"anomalies": [{"type": "leak", "place": "370100", "magnitude": float("inf")}]},
         "'magnitude' must be a positive number; got inf"),
        ({"anomalies": [{"type": "leak", "place": "370100", "colour": 1}]}, "unknown key"),
        # Misspelt, it made a quiet scenario: nothing injected, nothing said.
        ({"anomalys": [{"type": "leak", "place": "370100"}]},
         "scenario: unknown key 'anomalys'; a scenario has 'name', 'description' and "
         "'anomalies'"),
        # Its labels' end time did not fit in 64 bits: a TypeError traceback as they were written.
        ({"anomalies": [{"type": "leak", "place": "370100", "duration": 1e300}]},
         r"anomalies\[0\].duration: a duration must be at most 36525d \(100 years"),
        ({"anomalies": [{"type": "leak", "place": "370100", "start": 1e300}]},
         r"anomalies\[0\].start: a duration must be at most 36525d"),
        ({"anomalies": [{"type": "burst", "place": "370100", "kinds": ["traffic"]}]}, "cannot"),
        # A string was read letter by letter: "a burst cannot affect kind 'p'".
        ({"anomalies": [{"type": "burst", "place": "370100", "kinds": "pipe_pressure"}]},
         "'kinds' must be a list of sensor kinds like \\[\"water_level\"\\]; got 'pipe_pressure'"),
    ]:
        with pytest.raises(ScenarioError, match=says):
            parse_scenario(bad)
    with pytest.raises(ScenarioError, match="built-ins"):
        load_scenario("no-such-scenario")


def test_burst_drops_pressure_at_the_nearest_sensors(fleet):
    signals = _signals(fleet, [{"type": "burst", "place": "370200", "start": "60s",
                                "duration": "10m", "count": 3}])
    before = signals.tick(T0)
    after = signals.tick(T0 + 60_000)
    labels = signals.labels
    assert len(labels) == 3 and {lab.anomaly for lab in labels} == {"burst"}
    rows = [signals.sensor_id.tolist().index(lab.sensor_id) for lab in labels]
    assert all(fleet[r].kind == "pipe_pressure" and fleet[r].city_code == 370200 for r in rows)
    p0, p1 = before.values["pressure_mpa"], after.values["pressure_mpa"]
    # All at once, at least two below the 0.14 MPa minimum service pressure.
    assert (p1[rows] < p0[rows] - 0.15).all() and (p1[rows] < 0.14).sum() >= 2
    others = np.setdiff1d(signals.rows["pipe_pressure"], rows)
    assert (p1[others] > 0.25).all()
    # They are the nearest pipe sensors to the first one (the epicentre).
    pp = signals.rows["pipe_pressure"][signals.city[signals.rows["pipe_pressure"]] == 370200]
    centre = rows[0]  # labels list the epicentre first
    d = np.hypot((signals.lon[pp] - signals.lon[centre]) * np.cos(np.radians(36.0)),
                 signals.lat[pp] - signals.lat[centre])
    nearest = set(pp[np.argsort(d)[:3]].tolist())
    assert nearest == set(rows)
    # It ends: pressure back to normal after its window.
    later = signals.tick(T0 + 60_000 + 600_000)
    assert (later.values["pressure_mpa"][rows] > 0.25).all()


def test_leak_is_gradual(fleet):
    signals = _signals(fleet, [{"type": "leak", "place": "370100", "duration": "1h"}])
    batches = [signals.tick(T0 + k * 600_000) for k in range(6)]
    rows = [signals.sensor_id.tolist().index(lab.sensor_id) for lab in signals.labels]
    assert len(rows) == 2
    series = np.array([b.values["pressure_mpa"][rows[0]] for b in batches])
    assert (np.diff(series) < 0).all() and series[-1] < series[0] - 0.12


def test_rainstorm_raises_levels_with_lag_and_slows_traffic(fleet):
    signals = _signals(fleet, [{"type": "rainstorm", "place": "370100", "duration": "3h",
                                "magnitude": 1.3}])
    ticks = [signals.tick(T0 + k * 600_000) for k in range(20)]  # every 10 min for 3h20
    wl = signals.rows["water_level"][signals.city[signals.rows["water_level"]] == 370100]
    levels = np.array([b.values["level_m"][wl] for b in ticks])
    peak = int(np.argmax(levels.mean(axis=1)))
    assert 3 <= peak <= 9  # a lag, then the peak about an hour in
    assert (levels[peak] > signals.water.guaranteed[np.searchsorted(
        signals.rows["water_level"], wl)]).all()
    assert (levels[-1] < levels[peak]).all() and (levels[-1] < 3.5).all()  # recedes
    tr = signals.rows["traffic"][signals.city[signals.rows["traffic"]] == 370100]
    assert ticks[peak].values["speed_kmh"][tr].mean() < 0.8 * ticks[0].values["speed_kmh"][tr].mean()
    kinds = {(lab.kind, lab.anomaly) for lab in signals.labels}
    assert kinds == {("water_level", "rainstorm"), ("traffic", "rainstorm")}
    assert len(signals.labels) == wl.size + tr.size


def test_incident_spills_to_neighbours(fleet):
    signals = _signals(fleet, [{"type": "incident", "place": "370100", "start": "10s",
                                "duration": "30m"}])
    base = signals.tick(T0)
    hit = signals.tick(T0 + 20_000)
    rows = [signals.sensor_id.tolist().index(lab.sensor_id) for lab in signals.labels]
    assert len(rows) == 3
    speed0, speed1 = base.values["speed_kmh"], hit.values["speed_kmh"]
    occ0, occ1 = base.values["occupancy_pct"], hit.values["occupancy_pct"]
    centre = signals.labels[0].sensor_id
    weights = {lab.sensor_id: lab for lab in signals.labels}
    assert centre in weights
    assert min(speed1[rows]) < 10 and all(speed1[rows] < speed0[rows])
    assert all(occ1[rows] > occ0[rows])
    assert sum(speed1[rows] < 10) == 1  # the incident itself; neighbours slowed, not stopped


def _first(fleet, prefix):
    return next(s.sensor_id for s in fleet if s.sensor_id.startswith(prefix))


def test_sensor_faults(fleet):
    wl, tr = _first(fleet, "jn-wl-"), _first(fleet, "jn-tr-")
    pp, sp, dr = _first(fleet, "qd-pp-"), _first(fleet, "jn-pp-"), _first(fleet, "zb-wl-")
    signals = _signals(fleet, [
        {"type": "stuck", "sensors": [wl, tr], "start": "10s", "duration": "100s"},
        {"type": "dropout", "sensors": [pp], "start": "10s", "duration": "30s"},
        {"type": "spike", "sensors": [sp], "start": "20s"},
        {"type": "drift", "sensors": [dr], "duration": "100s"},
    ])
    ids = signals.sensor_id.tolist()
    batches = _run(signals, 100)
    stuck_wl = np.array([b.values["level_m"][ids.index(wl)] for b in batches])
    assert len(set(stuck_wl[1:].tolist())) == 1 and stuck_wl[0] != stuck_wl[1]
    stuck_tr = [b.values["speed_kmh"][b.sensor_id.tolist().index(tr)]
                for b in batches]
    assert len(set(stuck_tr[1:])) == 1
    present = [pp in b.sensor_id.tolist() for b in batches]
    assert present == [True, False, False, False] + [True] * 6
    spike = [b.values["pressure_mpa"][b.sensor_id.tolist().index(sp)]
             for b in batches]
    assert spike[2] > 0.8 and max(spike[:2] + spike[3:]) < 0.5
    drift = [b.values["level_m"][b.sensor_id.tolist().index(dr)] for b in batches]
    assert drift[-1] > drift[0] + 2.0
    assert {lab.anomaly for lab in signals.labels} == {"stuck", "dropout", "spike", "drift"}


def test_labels_match_what_was_injected_and_detected(fleet):
    signals = FleetSignals(fleet, 3, breach_every_s=0,
                           scenario=load_scenario("pipe-burst-qingdao"))
    # The packaged 60 s windows (15 s grace), a reading every 20 s: three per window.
    step_s = 20
    engine = _engine(signals, step_s)
    size_ms, grace_ms = engine.config.windows.size_ms, engine.config.windows.grace_ms
    state = engine.new_state()
    anomalies = []
    for k in range(0, 140 * 60, step_s):  # until 10 minutes after the leak
        result = engine.process(state, signals.tick(T0 + k * 1000), 0)
        assert result.late == 0
        anomalies += result.anomalies
    labels = signals.labels
    assert [(lab.anomaly, lab.end_ms - lab.start_ms) for lab in labels] == (
        [("burst", H)] * 3 + [("leak", 2 * H)] * 2)
    assert labels[0].start_ms == T0 + 120_000 and labels[3].start_ms == T0 + 600_000
    labelled = {lab.sensor_id for lab in labels}
    # Every burst sensor falls below the service floor: a level anomaly from the burst's first
    # window, raised when that window closes (its end plus grace, at the next reading).
    levels = [a for a in anomalies if a.detector == "level"]
    starts = {a.sensor_id: a for a in levels if a.phase == "start"}
    burst = labels[0].start_ms
    assert set(starts) == {lab.sensor_id for lab in labels if lab.anomaly == "burst"}
    for a in starts.values():
        assert a.reason in ("pressure.low", "pressure.critical") and a.since_ms == burst
        assert burst + size_ms + grace_ms <= a.ts_ms < burst + size_ms + grace_ms + step_s * 1000
    # ... and it ends once pressure is back, after the burst.
    ends = {a.sensor_id: a for a in levels if a.phase == "end"}
    assert set(ends) == set(starts) and all(a.ts_ms > labels[0].end_ms for a in ends.values())
    # Every labelled sensor is alerted on (the leak, by the time its pressure is restored);
    # every alert of any detector is on a labelled sensor, but for a rare false alarm of the
    # statistical detectors on this fleet of 3000 sensors over 2 h 20 min.
    alerted = {a.sensor_id for a in anomalies if a.phase == "start"}
    assert labelled <= alerted
    false_alarms = [a for a in anomalies if a.phase == "start" and a.sensor_id not in labelled]
    assert all(a.detector in ("deviation", "change") for a in false_alarms)
    assert len(false_alarms) <= len(fleet) // 1000, false_alarms


@pytest.mark.parametrize(("step_s", "warm_up_s", "found"),
                         [(20, 0, False), (2, 0, False), (20, 600, True)])
def test_a_new_pipeline_finds_stuck_sensors_only_after_a_warm_up(fleet, step_s, warm_up_s,
                                                                 found):
    """A chaos run (2026-11-24: a fresh `cityagent up`, `sensor-faults`, x10) found none of
    its 3 stuck sensors, while `cityagent eval`, which runs a quiet day first, finds them all.
    Not the acceleration (a reading every 20 s of event time, as `up`'s fleet at x10, or
    every 2 s, as at x1): flatline judges a sensor only after ``flat_warmup`` windows of its
    readings and learns meanwhile how often it is flat, so a sensor stuck 1 min into its
    life is learned as one that is always flat. ``warm_up_s`` of normal readings first
    (``cityagent sim --warm-up``) puts the fault where flatline judges it."""
    signals = FleetSignals(fleet, 1, breach_every_s=0, scenario=load_scenario("sensor-faults"),
                           warm_up_s=warm_up_s)
    engine = _engine(signals, step_s)
    state = engine.new_state()
    flagged = set()
    for k in range(0, warm_up_s + 15 * 60, step_s):
        result = engine.process(state, signals.tick(T0 + k * 1000), 0)
        flagged |= {a.sensor_id for a in result.anomalies
                    if a.detector == "flatline" and a.phase == "start"}
    stuck = [lab for lab in signals.labels if lab.anomaly == "stuck"]
    assert len(stuck) == 3 and {lab.start_ms for lab in stuck} == {T0 + (warm_up_s + 60) * 1000}
    assert flagged == ({lab.sensor_id for lab in stuck} if found else set())
    if not found:  # taken for sensors that are always flat
        rows = [state.index[lab.sensor_id] for lab in stuck]
        assert (state.cols["flat_frac"][rows] > engine.config.kinds["traffic"].flat_max_fraction).all()


def test_same_seed_same_scenario_output(fleet):
    def run(seed):
        signals = FleetSignals(fleet, seed, breach_every_s=0, scenario=load_scenario(
            "sensor-faults"))
        batches = [signals.tick(T0 + k * 30_000) for k in range(20)]
        return signals.labels, [b.sensor_id.tolist() for b in batches], [
            b.values["level_m"] for b in batches]

    a, b, c = run(4), run(4), run(5)
    assert a[0] == b[0] and a[1] == b[1]
    for x, y in zip(a[2], b[2], strict=True):
        np.testing.assert_array_equal(x, y)
    assert a[0] != c[0]


def test_quiet_day_is_quiet(fleet):
    signals = FleetSignals(fleet, 2, breach_every_s=0, scenario=load_scenario("quiet-day"))
    # A reading every 5 minutes, 15-minute windows (three readings each) for a day.
    engine = _engine(signals, 300, window_s=900, grace_s=0)
    state = engine.new_state()
    anomalies = []
    windows = 0
    for k in range(0, 24 * 3600, 300):
        result = engine.process(state, signals.tick(T0 + k * 1000), 0)
        anomalies += result.anomalies
        windows += result.windows
    assert signals.labels == []
    assert windows == len(fleet) * (24 * 4 - 1)
    # No domain level all day, and no fault: only the statistical detectors, while learning.
    assert {a.detector for a in anomalies} <= {"deviation", "change", "trend"}
    # The statistical detectors learn each sensor first: with 15-minute windows a river's
    # drift and tide need a few hours (the warm-up of 5 windows, then about 20 more for the
    # scale). Once they have them the day is quiet: no episode starts; none is left open.
    assert [a for a in anomalies if a.since_ms >= T0 + 8 * H] == []
    assert (state.cols["ep_since"] == NO_TS).all()


def test_unknown_place_or_sensor_is_an_error(fleet):
    for anomaly, says in [({"type": "leak", "place": "379900"}, "no sensor of this fleet"),
                          ({"type": "spike", "sensors": ["xx-tr-1"]}, "no sensor 'xx-tr-1'")]:
        with pytest.raises(ScenarioError, match=says):
            _signals(fleet, [anomaly]).tick(T0)


def test_rainstorm_jinan_floods_streets_and_underpasses(fleet):
    signals = FleetSignals(fleet, 6, breach_every_s=0, scenario=load_scenario("rainstorm-jinan"))
    ticks = [signals.tick(T0 + k * 300_000) for k in range(40)]  # every 5 min for 3h20
    rows = signals.rows["water_level"]
    sites = signals.water.site_names()
    in_jinan = signals.city[rows] == 370100
    levels = np.array([b.values["level_m"][rows] for b in ticks])
    assert (levels[0] < 0.06)[sites != "river"].all()  # dry before the storm
    peak_at = {}
    for site in ("street", "underpass"):
        on = in_jinan & (sites == site)
        assert on.any(), site
        warning = signals.water.warning[on]
        assert (levels[:, on].max(axis=0) > warning).all()  # past 警戒 during the storm
        assert (levels[-1, on] < warning).all()  # drained afterwards
        peak_at[site] = int(np.argmax(levels[:, on].mean(axis=1)))
        other = ~in_jinan & (sites == site)
        assert (levels[:, other] < signals.water.warning[other]).all()  # dry elsewhere
    river = in_jinan & (sites == "river")
    peak_at["river"] = int(np.argmax(levels[:, river].mean(axis=1)))
    # Underpasses fill first and deepest, then streets; rivers lag.
    assert peak_at["underpass"] <= peak_at["street"] < peak_at["river"]
    under, street = in_jinan & (sites == "underpass"), in_jinan & (sites == "street")
    assert levels[:, under].max(axis=0).mean() > levels[:, street].max(axis=0).mean()


@pytest.mark.parametrize("anomaly", [
    {"type": "rainstorm", "place": "370100", "duration": "3h"},
    {"type": "leak", "place": "370100", "duration": "1h"},
    {"type": "drift", "place": "370100", "count": 6, "duration": "1h"},
])
def test_ramp_onset_is_the_first_reading_changed_by_one_noise_scale(fleet, anomaly):
    """The onset of a ramp's label is the first tick at which the sensor's watched value
    differs from what it reads without the anomaly by one noise sd (the same seed without a
    scenario reads exactly the normal values: injections draw nothing from the noise RNG)."""
    signals = _signals(fleet, [anomaly])
    quiet = FleetSignals(fleet, 1, breach_every_s=0)
    ticks = [T0 + k * 10_000 for k in range(180)]  # every 10 s for 30 min
    changed, normal = [], []
    for t in ticks:
        changed.append(signals.tick(t).values)
        normal.append(quiet.tick(t).values)
    assert signals.labels and signals.onset_ms
    field = {"traffic": "speed_kmh", "water_level": "level_m", "pipe_pressure": "pressure_mpa"}
    ids = signals.sensor_id.tolist()
    later = 0
    for index, lab in enumerate(signals.labels):
        row = ids.index(lab.sensor_id)
        name = field[lab.kind]
        scale = signals._noise[row]  # relative for traffic: the noise multiplies the speed
        first = next((t for t, c, q in zip(ticks, changed, normal, strict=True)
                      if t >= lab.start_ms and abs(c[name][row] - q[name][row])
                      >= scale * (q[name][row] if lab.kind == "traffic" else 1.0)), None)
        assert signals.onset_ms.get(index) == first, (lab, index)
        later += first is not None and first > lab.start_ms
    assert later > 0  # a ramp: some sensors cross the noise only after the start


def test_only_ramps_get_an_onset(fleet):
    signals = _signals(fleet, [{"type": "burst", "place": "370100"},
                               {"type": "spike", "place": "370100", "count": 3}])
    _run(signals, 600)
    assert signals.labels and signals.onset_ms == {}
