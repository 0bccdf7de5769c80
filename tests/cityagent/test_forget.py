"""Sensors not heard from for ``forget_after_s`` are forgotten: their state rows removed.

The state must not grow for ever as sensor ids churn, and removing rows must leave every
other sensor exactly as it was: the rows move, so whatever is aligned with them (columns,
ids and index, row offsets, parameters, a replay's map of its sensors to rows) moves too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cityagent.batch import ReadingBatch
from cityagent.detection import Anomaly, DetectionEngine
from cityagent.detectors.config import DetectionConfig
from cityagent.detectors.params import param_matrix
from cityagent.errors import ConfigError
from cityagent.replay import read_replay_file, replay
from cityagent.settings import Settings
from cityagent.state import NO_TS, BucketState
from tests.cityagent.test_detection import PROFILES, SIZE, T0, level, packaged_doc, readings
from tests.cityagent.test_state import assert_same_state

DAY = 86_400_000
PACKAGED_TOML = (Path(__file__).resolve().parents[2] / "cityagent" / "data" /
                 "detection.toml").read_text("utf-8")
HOUR = 3_600_000  # detection.FORGET_CHECK_MS: how often forgetting is looked at


def config(forget_after_s: float = 86_400) -> DetectionConfig:
    """The tests' 10 s windows (baselines warm after 5) forgetting after ``forget_after_s``."""
    doc = packaged_doc()
    doc["defaults"]["deviation_warmup"] = 5
    doc["state"] = {"forget_after_s": forget_after_s}
    return DetectionConfig.from_dict(doc, window_s=10, grace_s=2)


def engine(forget_after_s: float = 86_400) -> DetectionEngine:
    return DetectionEngine(config(forget_after_s), PROFILES)


#: Sensors of three kinds in the order they first report: each one that leaves sits before
#: one that stays, so forgetting moves every staying row. jn-wl-1 has its own levels in the
#: registry (PROFILES: 警戒 3.5 m), which only its own parameter row gives it.
LEAVING = ("jn-wl-0", "jn-tr-0", "jn-pp-0")
STAYING = ("jn-wl-1", "jn-tr-1", "jn-pp-1")
ORDER = ("jn-wl-0", "jn-wl-1", "jn-tr-0", "jn-tr-1", "jn-pp-0", "jn-pp-1")
KIND = {"wl": "water_level", "tr": "traffic", "pp": "pipe_pressure"}
NORMAL = {"wl": 2.0, "tr": 50.0, "pp": 0.3}


def window_rows(sensors, t: int, values: dict[str, float] | None = None) -> list[tuple]:
    """Five readings of each sensor from ``t`` on, 2 s apart, around its kind's normal value
    (or ``values[sensor]``), with a small fixed wiggle."""
    rows = []
    for s in sensors:
        kind = s.split("-")[1]
        base = (values or {}).get(s, NORMAL[kind])
        rows += [(s, KIND[kind], t + i * 2_000, v) for i, v in enumerate(level(base))]
    return rows


def window(sensors, t: int, values: dict[str, float] | None = None) -> ReadingBatch:
    return readings(window_rows(sensors, t, values))


def learned_state(eng: DetectionEngine, sensors, windows: int = 12) -> BucketState:
    """A state whose sensors reported for ``windows`` windows from T0: baselines warm, and
    the leaving gauge's last window is over its 警戒 level (an open episode it takes along)."""
    state = eng.new_state()
    for w in range(windows):
        values = {"jn-wl-0": 4.2} if w == windows - 1 else None
        eng.process(state, window(sensors, T0 + w * SIZE, values), now_ms=0)
    return state


def assert_equal_columns(a: BucketState, b: BucketState) -> None:
    """Bit for bit: the same ids in the same rows, every column of the same dtype and bytes."""
    assert a.ids == b.ids and a.index == b.index
    assert (a.watermark, a.late_total, a.forget_checked_ms) == (
        b.watermark, b.late_total, b.forget_checked_ms)
    assert set(a.cols) == set(b.cols)
    for name, column in a.cols.items():
        assert column.dtype == b.cols[name].dtype, name
        assert column.tobytes() == b.cols[name].tobytes(), name


def docs(anomalies: list[Anomaly]) -> list[dict]:
    return [a.to_dict() for a in anomalies]


# -- when -----------------------------------------------------------------------------------


def test_a_sensor_is_forgotten_once_quiet_for_forget_after_s_and_not_before() -> None:
    eng = engine()
    state = learned_state(eng, ORDER)
    last = int(state.cols["last_ts"][state.index["jn-wl-0"]])
    assert (state.cols["last_ts"] == last).all()  # every sensor's last reading, at once
    # Exactly forget_after_s quiet: not yet (a check runs: a new hour of event time).
    assert eng.advance(state, last + DAY, 0).forgotten == []
    assert state.forget_checked_ms == last + DAY and len(state) == 6
    # Past it, but in the same hour of event time: not looked at again.
    assert eng.advance(state, last + DAY + 1, 0).forgotten == []
    assert len(state) == 6
    # The next hour: all six, in their row order.
    next_hour = (last + DAY) // HOUR * HOUR + HOUR
    assert eng.advance(state, next_hour, 0).forgotten == list(ORDER)
    assert len(state) == 0 and state.ids == [] and state.index == {}
    assert all(len(c) == 0 for c in state.cols.values())


def test_readings_within_forget_after_s_keep_a_sensor() -> None:
    eng = engine()
    state = learned_state(eng, ORDER)
    for hours in range(6, 24 * 5, 6):  # five days, one window every 6 h
        t = T0 + 12 * SIZE + hours * HOUR
        assert eng.process(state, window(STAYING, t), now_ms=0).forgotten in (
            [], list(LEAVING))
    assert state.ids == list(STAYING)


def test_forgetting_is_looked_at_once_an_hour_of_event_time_not_per_batch() -> None:
    eng = engine()
    state = learned_state(eng, ORDER, windows=2)
    calls = []
    forget = state.forget
    state.forget = lambda before_ms: calls.append(before_ms) or forget(before_ms)
    start = T0 + 2 * SIZE
    for w in range(2 * 360):  # two hours of 10 s windows, a batch each
        eng.process(state, window(ORDER, start + w * SIZE), now_ms=0)
    hours = {(start + w * SIZE + 8_000) // HOUR for w in range(2 * 360)}
    assert len(calls) == len(hours) - (T0 // HOUR in hours) <= 3


@pytest.mark.parametrize("off", [0, 0.0])
def test_forget_after_s_0_keeps_every_sensor_for_ever(off: float) -> None:
    eng = engine(off)
    assert eng.config.forget_after_ms == 0
    state = learned_state(eng, ORDER)
    assert eng.advance(state, T0 + 3650 * DAY, 0).forgotten == []
    assert state.ids == list(ORDER)


# -- what stays is untouched ----------------------------------------------------------------


def test_forgetting_leaves_the_other_sensors_bit_for_bit_and_their_anomalies_the_same() -> None:
    eng = engine()
    state = learned_state(eng, ORDER)  # saw the leaving sensors
    never = learned_state(eng, STAYING)  # the same readings without them
    assert len(state) == 6 and state.index["jn-wl-1"] == 1 and never.index["jn-wl-1"] == 0
    # The staying sensors report a window every 6 h for two days; the others never again.
    forgot_at = []
    for hours in range(6, 49, 6):
        t = T0 + 12 * SIZE + hours * HOUR
        batch = window(STAYING, t)
        got, want = eng.process(state, batch, now_ms=t), eng.process(never, batch, now_ms=t)
        assert docs([a for a in got.anomalies if a.sensor_id in STAYING]) == docs(want.anomalies)
        assert want.forgotten == []
        if got.forgotten:
            forgot_at.append(hours)
            assert got.forgotten == list(LEAVING)
    assert forgot_at == [24]  # the first check more than a day after their last reading
    assert_equal_columns(state, never)
    # Detection goes on the same: normal windows, then jn-wl-1 passes its own 警戒 (3.5 m)
    # and the junction's pressure falls under the floor.
    start = T0 + 12 * SIZE + 49 * HOUR
    later: list[list[Anomaly]] = [[], []]
    for w in range(12):
        values = {"jn-wl-1": 3.8, "jn-pp-1": 0.1} if w >= 8 else None
        batch = window(STAYING, start + w * SIZE, values)
        for out, st in zip(later, (state, never), strict=True):
            out += eng.process(st, batch, now_ms=start + w * SIZE).anomalies
    assert docs(later[0]) == docs(later[1])
    assert {(a.sensor_id, a.detector, a.severity) for a in later[0] if a.phase == "start"} >= {
        ("jn-wl-1", "level", "yellow"), ("jn-pp-1", "level", "orange")}
    assert not {a.sensor_id for a in later[0]} & set(LEAVING)  # their episodes just ended
    assert_equal_columns(state, never)


def test_a_forgotten_sensor_that_reports_again_starts_afresh() -> None:
    eng = engine()
    state = learned_state(eng, ORDER)
    t = T0 + 12 * SIZE + 2 * DAY
    assert eng.process(state, window(STAYING, t), now_ms=t).forgotten == list(LEAVING)
    # A day later all three are back at once (as many rows as were removed: a cache of the
    # parameters by the number of rows alone would now give each row another's), and the
    # gauge as another kind: a new sensor, its first reading decides.
    back = readings(window_rows(["jn-wl-1", "jn-tr-0", "jn-tr-1", "jn-pp-0", "jn-pp-1"], t + DAY)
                    + [("jn-wl-0", "traffic", t + DAY + i * 2_000, 50.0) for i in range(5)])
    result = eng.process(state, back, now_ms=t + DAY)
    assert result.wrong_kind == 0 and state.ids == [*STAYING, "jn-tr-0", "jn-pp-0", "jn-wl-0"]
    # Their rows are what a state that never saw them makes of the same readings.
    fresh = eng.new_state()
    eng.process(fresh, back, now_ms=0)
    for sensor in LEAVING:
        row, fresh_row = state.index[sensor], fresh.index[sensor]
        for name, column in state.cols.items():
            assert column[row].tobytes() == fresh.cols[name][fresh_row].tobytes(), (sensor, name)
        assert state.cols["rec_n"][row] == 0.0  # nothing learned: warm-up again
    # Every row has its own sensor's parameters: jn-wl-1 its 警戒 of 3.5 m (yellow at 3.8).
    assert np.array_equal(eng.param_matrix(state), param_matrix(
        eng.config, eng.profiles, state.ids, state.cols["kind"]), equal_nan=True)
    rising = []
    for w in range(1, 4):
        batch = window(["jn-wl-1"], t + DAY + w * SIZE, {"jn-wl-1": 3.8})
        rising += eng.process(state, batch, now_ms=0).anomalies
    assert [(a.sensor_id, a.severity) for a in rising if a.detector == "level"] == [
        ("jn-wl-1", "yellow")]


def test_a_sensor_never_heard_from_is_forgotten_at_the_next_check() -> None:
    # Its every reading came after its window had closed: it holds nothing learned.
    eng = engine()
    state = learned_state(eng, ORDER[:2])
    late = readings([("jn-wl-9", "water_level", T0, 2.0)])
    result = eng.process(state, late, now_ms=0)
    assert result.late == 1 and state.ids == [*ORDER[:2], "jn-wl-9"]
    assert state.cols["last_ts"][2] == NO_TS
    t = (state.watermark // HOUR + 1) * HOUR
    assert eng.process(state, window(ORDER[:2], t), now_ms=0).forgotten == ["jn-wl-9"]


# -- checkpoints ----------------------------------------------------------------------------


def compacted(sensors: int = 300, leaving_every: int = 3) -> tuple[
        DetectionEngine, BucketState, list[bytes], dict[int, ReadingBatch], BucketState]:
    """A fleet of gauges checkpointed at offset 2 (parts of 60 KB); then messages 3-5 two
    days later without every ``leaving_every``-th gauge, which message 3 forgets.
    (engine, state before, its parts, the messages, state after)."""
    eng = engine()
    gauges = [f"jn-wl-{i:05d}" for i in range(sensors)]
    staying = [g for i, g in enumerate(gauges) if i % leaving_every]
    state = eng.new_state()
    for offset in range(3):
        eng.process(state, window(gauges, T0 + offset * SIZE), now_ms=0)
        state.applied(offset)
    before = BucketState.from_parts(state.to_parts())
    older = state.to_parts(max_bytes=60_000)
    messages = {o: window(staying, T0 + 2 * DAY + o * SIZE) for o in (3, 4, 5)}
    for offset, batch in messages.items():
        result = eng.process(state, batch, now_ms=0)
        assert result.forgotten == (gauges[::leaving_every] if offset == 3 else [])
        state.applied(offset)
    assert state.layout == 1 and len(state) == len(staying)
    return eng, before, older, messages, state


def test_a_compacted_state_round_trips_through_its_checkpoint() -> None:
    eng, _before, older, _messages, state = compacted()
    newer = state.to_parts(max_bytes=60_000)
    assert len(newer) < len(older)
    copy = BucketState.from_parts(newer)
    assert_same_state(copy, state)
    assert (copy.layout, copy.forget_checked_ms) == (1, state.forget_checked_ms)
    assert copy.row_offsets is None and copy.last_offset == 5
    # Restored, it goes on as the state it was written from.
    batch = window(state.ids, T0 + 2 * DAY + 9 * SIZE, {state.ids[-1]: 4.5})
    a = eng.process(state, batch, now_ms=0).anomalies
    b = eng.process(copy, batch, now_ms=0).anomalies
    assert docs(a) == docs(b)
    assert_equal_columns(copy, state)


def test_parts_left_over_from_before_a_compaction_are_not_taken_for_the_checkpoints() -> None:
    # The worker wrote the smaller checkpoint whole, then died before it deleted the parts
    # of the larger one after it: they must not bring the forgotten sensors back.
    _eng, _before, older, _messages, state = compacted()
    newer = state.to_parts(max_bytes=60_000)
    restored = BucketState.from_parts([*newer, *older[len(newer):]])
    assert_same_state(restored, state)
    assert restored.row_offsets is None and restored.layout == 1


def test_a_compacted_checkpoint_cut_short_is_completed_from_the_parts_before_it() -> None:
    # The worker died while it sent its first checkpoint after forgetting: only part 0 of
    # it arrived; the older checkpoint's other parts hold the sensors it lacks, by id, at
    # offset 2. Messages 3-5 are redelivered and must end in the state the worker had.
    eng, before, older, messages, state = compacted()
    newer = state.to_parts(max_bytes=60_000)
    restored = BucketState.from_parts([newer[0], *older[1:]])
    assert restored.row_offsets is not None and restored.last_offset == 5
    assert set(restored.ids) >= set(state.ids)  # some forgotten ones came back with them
    assert restored.watermark == before.watermark  # the older checkpoint's event time
    for offset, batch in messages.items():
        keep = restored.unapplied(batch.sensor_id, offset)
        assert keep is not None
        eng.process(restored, batch.take(keep), now_ms=0)  # forgets them again
        restored.applied(offset)
    assert restored.row_offsets is None
    assert_same_state(restored, state)


# -- the setting ----------------------------------------------------------------------------


def test_the_packaged_setting_is_30_days() -> None:
    assert DetectionConfig.load().forget_after_ms == 30 * DAY
    doc = packaged_doc()
    del doc["state"]
    assert DetectionConfig.from_dict(doc).forget_after_ms == 30 * DAY  # the default


@pytest.mark.parametrize(("value", "message"), [
    (-1, "forget_after_s must be a number of 0 or more; got -1"),
    ("30d", "forget_after_s must be a number of 0 or more; got '30d'"),
    (True, "forget_after_s must be a number of 0 or more; got True"),
    (float("inf"), "forget_after_s must be a number of 0 or more; got inf"),
    (3600, "forget_after_s must be 0 (never forget a sensor) or between 86400 (one day) and "
           "315360000 (ten years); got 3600"),
    (1e12, "between 86400 (one day) and 315360000 (ten years); got 1e+12"),
])
def test_a_bad_forget_after_s_is_one_clear_line(value: object, message: str) -> None:
    doc = packaged_doc()
    doc["state"] = {"forget_after_s": value}
    with pytest.raises(ConfigError, match=r"^detection\.toml \[state\]: ") as err:
        DetectionConfig.from_dict(doc, "detection.toml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    """CITYAGENT_FORGET_AFTER_S reaches the engine as CITYAGENT_WINDOW_S does: it replaces the
    file's value, 0 included; unset, the file decides."""
    path = tmp_path / "detection.toml"
    path.write_text(PACKAGED_TOML.replace("forget_after_s = 2592000", "forget_after_s = 172800"),
                    "utf-8")
    for env, ms in [({}, 2 * DAY), ({"CITYAGENT_FORGET_AFTER_S": "604800"}, 7 * DAY),
                    ({"CITYAGENT_FORGET_AFTER_S": "0"}, 0)]:
        settings = Settings.from_env({"CITYAGENT_DETECTION": str(path), **env})
        loaded = DetectionConfig.load(settings.detection_path, window_s=settings.window_s,
                                      grace_s=settings.grace_s,
                                      forget_after_s=settings.forget_after_s)
        assert loaded.forget_after_ms == ms, env
        assert DetectionEngine(loaded).config.forget_after_ms == ms


def test_an_override_is_checked_as_the_file_is_and_the_file_still_is() -> None:
    with pytest.raises(ConfigError, match=r"^forget_after_s must be 0 \(never forget a sensor\) "
                                          r"or between 86400 .*; got 3600$"):
        DetectionConfig.from_dict(packaged_doc(), forget_after_s=3600)
    doc = packaged_doc()
    doc["state"] = {"forget_after_s": 3600}
    with pytest.raises(ConfigError, match=r"^detection\.toml \[state\]: forget_after_s must"):
        DetectionConfig.from_dict(doc, "detection.toml", forget_after_s=86_400)


def test_a_misspelt_state_key_is_refused() -> None:
    doc = packaged_doc()
    doc["state"] = {"forget_after": 86_400}
    with pytest.raises(ConfigError, match=r"\[state\]: unknown key 'forget_after'"):
        DetectionConfig.from_dict(doc, "detection.toml")


# -- replay ---------------------------------------------------------------------------------


def history(path: Path, away_hours: range | None) -> Path:
    """Hourly readings of two generic series over 60 days: ``b-steady`` always, and
    ``a-away`` (first in row order) in ``away_hours`` (None: never). Each hour's values are
    the same in every file."""
    lines = ["sensor_id,kind,timestamp,value"]
    hours = 60 * 24
    a = 5.0 + np.random.default_rng(3).normal(0, 0.1, hours)
    b = 10.0 + np.random.default_rng(4).normal(0, 0.2, hours)
    for hour in range(hours):
        ts = (T0 + hour * HOUR) // 1000
        if away_hours is not None and hour in away_hours:
            lines.append(f"a-away,generic,{ts},{a[hour]:.4f}")
        lines.append(f"b-steady,generic,{ts},{b[hour]:.4f}")
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def test_replay_forgets_a_series_away_for_30_days_and_scores_the_others_as_before(
        tmp_path: Path) -> None:
    # a-away reports for 5 days, is away 40, and is back for the last 15.
    away = [*range(5 * 24), *range(45 * 24, 60 * 24)]
    with_away = read_replay_file(history(tmp_path / "away.csv", away))
    alone = read_replay_file(history(tmp_path / "alone.csv", None))
    new = read_replay_file(history(tmp_path / "new.csv", range(45 * 24, 60 * 24)))
    result, reference, fresh = (replay(inp, window_s=3600) for inp in (with_away, alone, new))
    # The engine's rows moved under the replay's per-reading scorer: the steady series is
    # scored as if the other had never been there.
    steady = with_away.sensor == with_away.sensor_ids.index("b-steady")
    assert np.array_equal(result.scores[steady], reference.scores)
    # The series that came back is scored as one first seen then: its engine state and its
    # per-reading state are learned again; its first readings back are cold, as many as a
    # series' first ones (b-steady's alone), and as its own before it went away.
    back = (with_away.sensor == with_away.sensor_ids.index("a-away")) & (
        with_away.ts_ms >= T0 + 45 * DAY)
    first_seen = new.sensor == new.sensor_ids.index("a-away")
    assert back.sum() == first_seen.sum() == 15 * 24
    assert np.array_equal(result.scores[back], fresh.scores[first_seen])
    assert result.cold == 3 * reference.cold > 0
