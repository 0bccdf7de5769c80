from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cityagent.batch import ReadingBatch
from cityagent.detection import (
    CLOSED_RETENTION_MS,
    Thresholds,
    detect_breaches,
    episode_id,
    open_episode_count,
)
from cityagent.errors import ConfigError
from cityagent.readings import parse_reading

RULES = Thresholds.load()
T0 = 1_795_307_400_000


def gauge(levels, sensor="g1", t0=T0, step_ms=1000):
    rs = [parse_reading({"sensor_id": sensor, "kind": "water_level", "ts": (t0 + i * step_ms) / 1000,
                         "lon": 117.02, "lat": 36.66, "level_m": v}) for i, v in enumerate(levels)]
    return ReadingBatch.from_readings(rs, [370102] * len(rs))


def phases(anomalies):
    return [(a.phase, a.severity, a.observed) for a in anomalies]


def test_normal_readings_raise_nothing_and_keep_the_same_state_object() -> None:
    state: dict = {}
    new, anomalies = detect_breaches(gauge([1.0, 2.0, 3.9]), state, RULES, now_ms=0)
    assert anomalies == [] and new is state


def test_an_episode_starts_escalates_and_ends_once() -> None:
    new, anomalies = detect_breaches(gauge([2.0, 4.5, 5.5, 4.2, 3.0]), {}, RULES, now_ms=7)
    assert phases(anomalies) == [("start", "yellow", 4.5), ("escalate", "red", 5.5), ("end", "red", 3.0)]
    assert {a.anomaly_id for a in anomalies} == {episode_id("g1", T0 + 1000)}
    assert anomalies[-1].peak == 5.5 and anomalies[0].detected_at_ms == 7
    assert anomalies[0].district_code == 370102 and anomalies[0].city_code == 370100
    assert new == {"g1": {"closed": T0 + 4000}}


def test_a_continuing_breach_across_batches_is_one_episode() -> None:
    state, first = detect_breaches(gauge([4.5, 4.6]), {}, RULES, now_ms=0)
    state, second = detect_breaches(gauge([4.8, 4.7], t0=T0 + 2000), state, RULES, now_ms=0)
    assert phases(first) == [("start", "yellow", 4.5)] and second == []
    assert state["g1"]["peak"] == 4.8 and state["g1"]["since"] == T0
    state, third = detect_breaches(gauge([1.0], t0=T0 + 9000), state, RULES, now_ms=0)
    assert phases(third) == [("end", "yellow", 1.0)] and third[0].anomaly_id == first[0].anomaly_id


def test_a_late_normal_reading_does_not_end_a_newer_breach() -> None:
    state, _ = detect_breaches(gauge([4.5], t0=T0 + 5000), {}, RULES, now_ms=0)
    state, late = detect_breaches(gauge([1.0], t0=T0), state, RULES, now_ms=0)
    assert late == [] and "g1" in state


def test_out_of_order_rows_in_one_batch_are_taken_in_event_time() -> None:
    batch = gauge([4.5, 1.0]).take(np.array([1, 0]))  # the normal reading first in the batch
    _, anomalies = detect_breaches(batch, {}, RULES, now_ms=0)
    assert [a.phase for a in anomalies] == ["start", "end"]


@pytest.mark.parametrize("kind, values, severity", [
    ("pipe_pressure", {"pressure_mpa": 0.08}, "orange"),
    ("pipe_pressure", {"pressure_mpa": 0.95}, "yellow"),
    ("traffic", {"speed_kmh": 4.0, "flow_vph": 100.0, "occupancy_pct": 80.0}, "yellow"),
])
def test_each_kind_breaches_its_own_rule(kind: str, values: dict, severity: str) -> None:
    r = parse_reading({"sensor_id": "s", "kind": kind, "ts": T0 / 1000, "lon": 117, "lat": 36.6, **values})
    _, anomalies = detect_breaches(ReadingBatch.from_readings([r], [370102]), {}, RULES, 0)
    assert [(a.kind, a.severity) for a in anomalies] == [(kind, severity)]


def test_sensors_are_independent() -> None:
    a, b = gauge([4.5, 1.0], sensor="a"), gauge([1.0, 4.5], sensor="b")
    rows = ReadingBatch.from_readings(a.readings() + b.readings(), [370102] * 4)
    state, anomalies = detect_breaches(rows, {}, RULES, 0)
    assert [(x.sensor_id, x.phase) for x in anomalies] == [("a", "start"), ("a", "end"), ("b", "start")]
    assert state["a"] == {"closed": T0 + 1000} and state["b"]["since"] == T0 + 1000


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(text, "utf-8")
    return path


@pytest.mark.parametrize("text, words", [
    ("", "defines no"),
    ("[[rule]]\nkind='noise'\nfield='level_m'\nabove=1\nseverity='red'", "kind must be"),
    ("[[rule]]\nkind='traffic'\nfield='level_m'\nabove=1\nseverity='red'", "field must be"),
    ("[[rule]]\nkind='traffic'\nfield='speed_kmh'\nabove=1\nseverity='pink'", "severity must be"),
    ("[[rule]]\nkind='traffic'\nfield='speed_kmh'\nseverity='red'", "exactly one"),
    ("[[rule]]\nkind='traffic'\nfield='speed_kmh'\nabove='x'\nseverity='red'", "must be a number"),
    ("[[rule]]\nkind='traffic'\nfield='speed_kmh'\nabove=1\nseverity='red'\ncolour=1", "unknown key"),
    ("[[rule]\n", "cannot read"),
])
def test_bad_threshold_files_name_the_problem(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Thresholds.load(write(tmp_path, text))


def test_the_packaged_thresholds_cover_every_kind() -> None:
    assert {r.kind for r in RULES.rules} == {"traffic", "water_level", "pipe_pressure"}


def test_a_replayed_breach_after_the_episode_closed_opens_nothing() -> None:
    """Kafka redelivers after a rebalance: the same readings again must not raise a new alert."""
    readings = gauge([4.5, 5.8, 1.0])
    state, first = detect_breaches(readings, {}, RULES, now_ms=0)
    replayed_state, replayed = detect_breaches(readings.take(np.array([1, 2])), state, RULES, 0)
    assert [a.phase for a in first] == ["start", "escalate", "end"]
    assert replayed == [] and replayed_state is state
    assert open_episode_count(state) == 0


def test_a_new_breach_after_the_close_is_a_new_episode() -> None:
    state, first = detect_breaches(gauge([4.5, 1.0]), {}, RULES, now_ms=0)
    state, second = detect_breaches(gauge([4.6], t0=T0 + 60_000), state, RULES, now_ms=0)
    assert [a.phase for a in second] == ["start"]
    assert second[0].anomaly_id != first[0].anomaly_id and open_episode_count(state) == 1


def test_closed_markers_are_forgotten_after_the_retention() -> None:
    state, _ = detect_breaches(gauge([4.5, 1.0], sensor="old"), {}, RULES, now_ms=0)
    later = T0 + CLOSED_RETENTION_MS + 10_000
    state, _ = detect_breaches(gauge([4.5], sensor="new", t0=later), state, RULES, now_ms=0)
    assert set(state) == {"new"}
