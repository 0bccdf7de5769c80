"""Detection settings and per-sensor profiles: defaults, overrides, and errors naming the key."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cityagent.detectors.config import (
    KIND_CODES,
    DetectionConfig,
    SensorProfiles,
)
from cityagent.detectors.params import param_arrays, param_matrix
from cityagent.errors import ConfigError
from tests.cityagent.test_detection import packaged_doc


def test_the_registry_profiles_are_still_importable_from_config() -> None:
    # They moved to registry_profiles; code that imports them from config keeps working.
    from cityagent.detectors import config, registry_profiles
    from cityagent.detectors.config import PROFILE_COLUMNS as columns
    from cityagent.detectors.config import SensorProfiles as profiles

    assert profiles is registry_profiles.SensorProfiles is config.SensorProfiles
    assert columns is registry_profiles.PROFILE_COLUMNS
    with pytest.raises(AttributeError):
        config.NoSuchName  # noqa: B018


def test_the_packaged_defaults() -> None:
    config = DetectionConfig.load()
    w = config.windows
    assert (w.size_ms, w.grace_ms, w.hopping_panes, w.idle_ms, w.end_after_windows) == (
        60_000, 15_000, 5, 5_000, 2)
    water = config.kinds["water_level"]
    assert (water.field, water.warning_m, water.guaranteed_m) == ("level_m", 4.0, 5.0)
    assert math.isnan(water.record_m)
    pressure = config.kinds["pipe_pressure"]
    assert (pressure.floor_mpa, pressure.critical_mpa, pressure.high_mpa) == (0.14, 0.07, 0.8)
    assert config.kinds["traffic"].congestion_tpi == (9.5, 9.7, 9.9)
    assert config.kinds["generic"].field == "value"
    assert {k.deviation_z for k in config.kinds.values()} == {6.0}  # [defaults] apply to all


def test_window_and_grace_can_be_overridden() -> None:
    config = DetectionConfig.load(window_s=10, grace_s=2)
    assert (config.windows.size_ms, config.windows.grace_ms) == (10_000, 2_000)
    short = DetectionConfig.load(window_s=5)  # the file's 15 s grace is capped at the window
    assert (short.windows.size_ms, short.windows.grace_ms) == (5_000, 5_000)


def test_a_window_set_over_the_file_caps_its_idle_wait_and_grace_and_says_so() -> None:
    doc = packaged_doc()
    doc["windows"]["idle_s"] = 600
    own = DetectionConfig.from_dict(doc, "d.toml")  # a window in the file caps nothing
    assert (own.windows.idle_ms, own.notes) == (600_000, ())
    capped = DetectionConfig.from_dict(doc, "d.toml", window_s=60)
    assert capped.windows.idle_ms == 60_000
    assert capped.notes == (
        "[windows] idle_s = 600 of d.toml is taken as 60 s, the detection window "
        "CITYAGENT_WINDOW_S sets: a window set over the file's caps the idle wait at one window",)
    short = DetectionConfig.from_dict(doc, "d.toml", window_s=10)
    assert (short.windows.grace_ms, short.windows.idle_ms) == (10_000, 10_000)
    assert [note.split(" = ")[0] for note in short.notes] == [
        "[windows] grace_s", "[windows] idle_s"]
    assert DetectionConfig.from_dict(doc, "d.toml", window_s=10, grace_s=2).notes == (
        short.notes[1],)  # a grace of its own is not capped
    assert DetectionConfig.from_dict(doc, "d.toml", window_s=600).notes == ()


def test_an_idle_wait_of_up_to_an_hour_is_taken() -> None:
    doc = packaged_doc()
    doc["windows"]["idle_s"] = 3600
    assert DetectionConfig.from_dict(doc).windows.idle_ms == 3_600_000


@pytest.mark.parametrize("section, key, value, words", [
    ("windows", "sise_s", 60, "unknown key 'sise_s'; expected some of ['grace_s', 'hopping_panes', "
                              "'idle_s', 'size_s']"),
    ("episodes", "end_after", 2, "unknown key 'end_after'"),
    ("defaults", "deviation_zz", 6.0, "unknown key 'deviation_zz'"),
    ("kind.water_level", "warning", 4.0, "unknown key 'warning'"),
    # it said "0 or more", and 0 is refused too
    ("windows", "size_s", -60, "windows.size_s must be above 0 and at most 31622400 (a year); "
                               "got -60"),
    ("windows", "size_s", "60", "size_s must be a number"),
    ("windows", "grace_s", -1, "grace_s must be a number of 0 or more"),
    ("windows", "size_s", 0, "windows.size_s must be above 0"),
    # A number of milliseconds no 64-bit integer holds: a numba TypingError in the worker.
    ("windows", "size_s", 1e300, "windows.size_s must be above 0 and at most 31622400 (a year); "
                                 "got 1e+300"),
    ("windows", "grace_s", 90, "windows.grace_s must be between 0 and windows.size_s"),
    ("windows", "hopping_panes", 0, "windows.hopping_panes must be 1 or more"),
    ("episodes", "end_after_windows", 0, "episodes.end_after_windows must be 1 or more"),
    ("defaults", "cusum_h", -12.0, "cusum_h must be a number of 0 or more"),
    ("kind.water_level", "warning_m", -4.0, "[kind.water_level]: warning_m must be a number"),
    ("kind.traffic", "congestion_tpi", [9.5, 9.7], "congestion_tpi must be a list of 3 numbers"),
    ("kind.traffic", "time_of_day", 1, "time_of_day must be true or false"),
    ("kind.traffic", "field", 3, "field must be text"),
    # a field the kind's readings lack: nothing was judged, and nothing said so
    ("kind.generic", "field", "valu", "[kind.generic]: field must be one of ['value'] (the value "
                                      "of a generic reading the detectors watch); got 'valu'"),
    ("kind.water_level", "field", "level", "[kind.water_level]: field must be one of ['level_m']"),
    # named in [defaults], where it is written (it said [kind.traffic])
    ("defaults", "spike_z", "15", "[defaults]: spike_z must be a number of 0 or more"),
    ("defaults", "spike_z", math.inf, "spike_z must be a number of 0 or more"),
    # a count given a fraction: int() took 2.5 panes as 2 and 4.7 readings as 4, silently
    ("windows", "hopping_panes", 2.5, "hopping_panes must be a whole number; got 2.5"),
    ("episodes", "end_after_windows", 1.5, "end_after_windows must be a whole number; got 1.5"),
    ("defaults", "flat_min_readings", 4.7,
     "[defaults]: flat_min_readings must be a whole number; got 4.7"),
    ("kind.generic", "deviation_warmup", 20.5,
     "[kind.generic]: deviation_warmup must be a whole number; got 20.5"),
    # fractions above 1 (and rates of 0) were taken: a baseline_rate of 5 diverged
    ("defaults", "baseline_rate", 5, "[defaults]: baseline_rate must be above 0 and at most 1 "
                                     "(a fraction); got 5"),
    ("defaults", "cusum_rate", 0, "cusum_rate must be above 0 and at most 1 (a fraction); got 0"),
    ("kind.generic", "anomaly_rate_factor", 1.5, "[kind.generic]: anomaly_rate_factor must be 0 "
                                                 "or more and at most 1 (a fraction); got 1.5"),
    ("defaults", "flat_max_fraction", 2, "flat_max_fraction must be 0 or more and at most 1"),
    ("kind.generic", "quantum_max_fraction", 1.05, "quantum_max_fraction must be 0 or more and "
                                                   "at most 1"),
    # thresholds of 0: taken, they disabled (cusum_h) or flooded (silence_factor) a detector
    ("defaults", "cusum_h", 0, "[defaults]: cusum_h must be above 0; got 0"),
    ("defaults", "deviation_z", 0.0, "deviation_z must be above 0; got 0"),
    ("kind.generic", "silence_factor", 0, "[kind.generic]: silence_factor must be above 0; got 0"),
    ("kind.water_level", "trend_h", 0, "[kind.water_level]: trend_h must be above 0; got 0"),
    ("defaults", "spike_z", 0, "spike_z must be above 0; got 0"),
    ("defaults", "deviation_confirm", 1, "[defaults]: deviation_confirm must be true or false; "
                                         "got 1"),
    ("kind.generic", "deviation_confirm", "yes",
     "[kind.generic]: deviation_confirm must be true or false; got 'yes'"),
    # thresholds in the wrong order: each was taken, and the ladder skipped its lower rungs
    ("kind.water_level", "warning_m", 6.0,
     "[kind.water_level]: guaranteed_m (5) must be above warning_m (6)"),
    ("kind.water_level", "record_m", 4.5,
     "[kind.water_level]: record_m (4.5) must be above guaranteed_m (5)"),
    ("kind.pipe_pressure", "critical_mpa", 0.2,
     "[kind.pipe_pressure]: floor_mpa (0.14) must be above critical_mpa (0.2)"),
    ("kind.pipe_pressure", "high_mpa", 0.1,
     "[kind.pipe_pressure]: high_mpa (0.1) must be above floor_mpa (0.14)"),
    ("kind.traffic", "congestion_tpi", [9.9, 9.7, 9.5],
     "[kind.traffic]: congestion_tpi must rise (yellow, orange, red); got [9.9, 9.7, 9.5]"),
    # taken: 0 moved every bucket's clock at each tick, also while its readings flowed
    ("windows", "idle_s", 0, "detection.toml: windows.idle_s must be above 0 and at most 3600 "
                             "(an hour); got 0"),
    # taken (1e20: a quiet bucket's clock never moved, so its silence was never found), or
    # an OverflowError traceback as it was made milliseconds (1e306)
    ("windows", "idle_s", 3600.5, "detection.toml: windows.idle_s must be above 0 and at most "
                                  "3600 (an hour); got 3600.5"),
    ("windows", "idle_s", 1e20, "windows.idle_s must be above 0 and at most 3600 (an hour); "
                                "got 1e+20"),
    ("windows", "idle_s", 1e306, "windows.idle_s must be above 0 and at most 3600 (an hour); "
                                 "got 1e+306"),
    # taken: 0 put blue at 警戒 (never raised), 3 started it at 1 m for a 4 m / 5 m gauge
    ("kind.water_level", "blue_fraction", 0, "[kind.water_level]: blue_fraction must be above 0 "
                                             "and at most 1 (a fraction); got 0"),
    ("kind.water_level", "blue_fraction", 3, "[kind.water_level]: blue_fraction must be above 0 "
                                             "and at most 1 (a fraction); got 3"),
    # taken: the traffic index took vehicles an hour for km/h (5 vph at night: a red jam)
    ("kind.traffic", "field", "flow_vph",
     "detection.toml [kind.traffic]: field must be 'speed_kmh' (the traffic index is computed "
     "from speed against free flow); got 'flow_vph'"),
    ("kind.traffic", "field", "occupancy_pct", "field must be 'speed_kmh'"),
])
def test_a_wrong_setting_is_a_config_error_naming_it(section: str, key: str, value: object,
                                                     words: str) -> None:
    doc = packaged_doc()
    table = doc
    for part in section.split("."):
        table = table.setdefault(part, {})
    table[key] = value
    with pytest.raises(ConfigError) as caught:
        DetectionConfig.from_dict(doc, "detection.toml")
    assert words in str(caught.value)


def test_a_kind_without_quantum_max_takes_the_defaults_inf() -> None:
    """The packaged [defaults] has quantum_max = inf (no limit), which every packaged kind
    overrides; a kind that does not was refused: "quantum_max must be a number of 0 or more;
    got inf"."""
    doc = packaged_doc()
    assert doc["defaults"]["quantum_max"] == math.inf
    del doc["kind"]["traffic"]["quantum_max"]
    assert DetectionConfig.from_dict(doc).kinds["traffic"].quantum_max == math.inf
    doc["kind"]["traffic"]["quantum_max"] = -math.inf
    with pytest.raises(ConfigError, match="quantum_max must be a number of 0 or more, or inf"):
        DetectionConfig.from_dict(doc)


def test_a_wrong_window_in_a_settings_file_names_the_file(tmp_path: Path) -> None:
    # DetectionConfig.load: "ConfigError names the file and key that are wrong".
    path = tmp_path / "site-detection.toml"
    path.write_text("[windows]\nsize_s = 60\ngrace_s = 90\n", "utf-8")
    with pytest.raises(ConfigError) as caught:
        DetectionConfig.load(path)
    assert "windows.grace_s" in str(caught.value)
    assert str(path) in str(caught.value)


def test_an_unknown_kind_and_a_missing_field_are_config_errors() -> None:
    doc = packaged_doc()
    doc["kind"]["air_quality"] = {"field": "pm25"}
    with pytest.raises(ConfigError, match=r"unknown kind \[kind.air_quality\]"):
        DetectionConfig.from_dict(doc)
    doc = packaged_doc()
    del doc["kind"]["traffic"]["field"]
    with pytest.raises(ConfigError, match=r"\[kind.traffic\]: field is missing"):
        DetectionConfig.from_dict(doc)
    with pytest.raises(ConfigError, match=r"\[windows\] must be a table"):
        DetectionConfig.from_dict({**packaged_doc(), "windows": 60})


@pytest.mark.parametrize("window_s, grace_s, words", [
    (10, 20, "windows.grace_s must be between 0 and windows.size_s (10); got 20"),
    (10, -1, "windows.grace_s"),
    (-5, 0, "windows.size_s must be above 0"),
])
def test_overrides_are_checked_too(window_s: float, grace_s: float, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        DetectionConfig.load(window_s=window_s, grace_s=grace_s)
    assert words in str(caught.value)


def test_a_settings_file_that_is_not_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "detection.toml"
    path.write_text("[windows\nsize_s = 60\n", "utf-8")
    with pytest.raises(ConfigError, match="detection.toml"):
        DetectionConfig.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        DetectionConfig.load(tmp_path / "missing.toml")


def test_a_settings_file_that_is_not_utf8_is_named_not_a_traceback(tmp_path: Path) -> None:
    """A UnicodeDecodeError traceback before (TOML saved as GBK, a Chinese comment), in the
    workers, the API and, as it reads the file before it starts them, `cityagent up`."""
    path = tmp_path / "detection.toml"
    path.write_bytes("# 检测设置\n[windows]\n".encode("gbk"))
    with pytest.raises(ConfigError, match=f"cannot read detection settings from {path}: "
                                          "not UTF-8 text"):
        DetectionConfig.load(path)


def test_a_settings_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_text('[windows]\nsize_s = 30\ngrace_s = 5\n[kind.traffic]\nfield = "speed_kmh"\n'
                    '[kind.water_level]\nfield = "level_m"\n'
                    '[kind.pipe_pressure]\nfield = "pressure_mpa"\n'
                    '[kind.generic]\nfield = "value"\n', "utf-8")
    config = DetectionConfig.load(path)
    assert (config.windows.size_ms, config.windows.grace_ms) == (30_000, 5_000)
    assert config.kinds["traffic"].deviation_z == 6.0  # the dataclass default


# -- per-sensor profiles --------------------------------------------------------------------


def _codes(*kinds: str) -> np.ndarray:
    return np.array([KIND_CODES[k] for k in kinds], dtype=np.int8)


def test_profile_values_override_the_kind_defaults() -> None:
    config = DetectionConfig.load()
    profiles = SensorProfiles.from_rows([
        {"sensor_id": "jn-wl-1", "warning_level_m": 3.5, "guaranteed_level_m": 4.2},
        {"sensor_id": "jn-wl-3", "warning_level_m": "3.0", "guaranteed_level_m": "3.6",
         "record_level_m": "5.5", "expected_interval_s": ""},
        {"sensor_id": "jn-tr-1", "free_flow_kmh": 80, "expected_interval_s": 30},
        {"sensor_id": "jn-pp-1", "min_pressure_mpa": 0.2, "max_pressure_mpa": 0.7},
        {"sensor_id": "nothing-to-say", "note": "ignored"},
    ])
    assert len(profiles) == 4
    ids = ["jn-wl-1", "jn-wl-2", "jn-wl-3", "jn-tr-1", "jn-tr-2", "jn-pp-1", "jn-pp-2"]
    p = param_arrays(param_matrix(
        config, profiles, ids, _codes("water_level", "water_level", "water_level", "traffic",
                                      "traffic", "pipe_pressure", "pipe_pressure")))
    assert p["warning_m"][:3].tolist() == [3.5, 4.0, 3.0]
    assert p["guaranteed_m"][:3].tolist() == [4.2, 5.0, 3.6]
    # the record defaults to one 警戒-保证 step above 保证 unless the registry gives it
    assert p["record_m"][:3] == pytest.approx([4.9, 6.0, 5.5])
    assert p["free_flow_kmh"][3:5].tolist() == [80.0, 60.0]
    assert p["expected_interval_s"].tolist() == [60.0, 60.0, 60.0, 30.0, 60.0, 60.0, 60.0]
    assert p["floor_mpa"][5:].tolist() == [0.2, 0.14]
    assert p["high_mpa"][5:].tolist() == [0.7, 0.8]
    assert p["critical_mpa"][5:].tolist() == [0.07, 0.07]
    assert p["tpi_yellow"][3] == 9.5 and p["tpi_red"][4] == 9.9
    assert p["scale_floor"].tolist() == [0.02] * 3 + [1.5] * 2 + [0.004] * 2


@pytest.mark.parametrize("row, words", [
    ({"warning_level_m": 3.5}, "sensor #1 has no sensor_id"),
    ({"sensor_id": "a", "warning_level_m": "high"}, "'a': warning_level_m must be a number"),
    ({"sensor_id": "a", "free_flow_kmh": -60}, "'a': free_flow_kmh must be 0 or more"),
    ({"sensor_id": "a", "free_flow_kmh": "nan"}, "'a': free_flow_kmh must be 0 or more"),
    # levels in the wrong order: a 保证 below 警戒 made 2.4 m red at a 警戒 of 3.0
    ({"sensor_id": "a", "warning_level_m": "3.0", "guaranteed_level_m": "2.5"},
     "'a': guaranteed_level_m (2.5) must be above warning_level_m (3)"),
    ({"sensor_id": "a", "warning_level_m": 3, "guaranteed_level_m": 3},
     "'a': guaranteed_level_m (3) must be above warning_level_m (3)"),
    ({"sensor_id": "a", "guaranteed_level_m": 3.6, "record_level_m": 3.5},
     "'a': record_level_m (3.5) must be above guaranteed_level_m (3.6)"),
    ({"sensor_id": "a", "warning_level_m": 3.6, "record_level_m": 3.5},
     "'a': record_level_m (3.5) must be above warning_level_m (3.6)"),
    ({"sensor_id": "a", "min_pressure_mpa": 0.5, "max_pressure_mpa": 0.3},
     "'a': max_pressure_mpa (0.3) must be above min_pressure_mpa (0.5)"),
    # a partial row against the kind settings it leaves in place (警戒 4, 保证 5, critical
    # 0.07, floor 0.14): each was taken, and 警戒 5.5 alone made a gauge red at 4.6 m
    ({"sensor_id": "a", "warning_level_m": 5.5},
     "'a': [kind.water_level] guaranteed_m (5: the row gives no guaranteed_level_m) must be "
     "above warning_level_m (5.5)"),
    ({"sensor_id": "a", "guaranteed_level_m": 3.5},
     "'a': guaranteed_level_m (3.5) must be above [kind.water_level] warning_m (4: the row "
     "gives no warning_level_m)"),
    ({"sensor_id": "a", "warning_level_m": 3.0, "record_level_m": 4.5},
     "'a': record_level_m (4.5) must be above [kind.water_level] guaranteed_m (5"),
    ({"sensor_id": "a", "min_pressure_mpa": 0.05},
     "'a': min_pressure_mpa (0.05) must be above [kind.pipe_pressure] critical_mpa (0.07; no "
     "registry column sets it)"),
    ({"sensor_id": "a", "max_pressure_mpa": "0.1"},
     "'a': max_pressure_mpa (0.1) must be above [kind.pipe_pressure] floor_mpa (0.14: the row "
     "gives no min_pressure_mpa)"),
    # values that contradict each other: levels of two kinds, or of another kind than the row's
    ({"sensor_id": "a", "warning_level_m": 3.0, "guaranteed_level_m": 3.6,
      "min_pressure_mpa": 0.2},
     "'a': min_pressure_mpa is a pipe_pressure column and warning_level_m a water_level one; "
     "a sensor is of one kind"),
    ({"sensor_id": "a", "kind": "traffic", "warning_level_m": 3.0, "guaranteed_level_m": 3.6},
     "'a': kind is 'traffic', but warning_level_m is a water_level column"),
])
def test_a_wrong_profile_is_a_config_error_naming_sensor_and_column(row: dict, words: str
                                                                    ) -> None:
    with pytest.raises(ConfigError) as caught:
        SensorProfiles.from_rows([row], "sensors.csv")
    assert words in str(caught.value) and "sensors.csv" in str(caught.value)


def test_a_partial_profile_is_checked_against_the_settings_in_use(tmp_path: Path) -> None:
    """警戒 5.5 alone is above the packaged 保证 (5), not above one of 6 in the settings the
    worker runs with; the registry is checked against those (and a kind's row keeps its
    other levels: 警戒 4.5 alone, below 保证 5, loads)."""
    doc = packaged_doc()
    doc["kind"]["water_level"]["guaranteed_m"] = 6.0
    config = DetectionConfig.from_dict(doc, "detection.toml")
    path = tmp_path / "sensors.csv"
    path.write_text("sensor_id,kind,warning_level_m\njn-wl-9,water_level,5.5\n", "utf-8")
    assert SensorProfiles.load(path, config).by_sensor == {"jn-wl-9": {"warning_m": 5.5}}
    with pytest.raises(ConfigError, match="sensors.csv: sensor 'jn-wl-9'"):
        SensorProfiles.load(path)
    ok = SensorProfiles.from_rows([{"sensor_id": "b", "kind": "water_level",
                                    "warning_level_m": "4.5", "min_pressure_mpa": ""}])
    assert ok.by_sensor == {"b": {"warning_m": 4.5}}


def test_profiles_load_from_csv_and_json(tmp_path: Path) -> None:
    csv_path = tmp_path / "sensors.csv"
    csv_path.write_text("sensor_id,kind,warning_level_m,guaranteed_level_m,free_flow_kmh\n"
                        "jn-wl-1,water_level,3.5,4.2,\njn-tr-1,traffic,,,80\n", "utf-8")
    json_path = tmp_path / "sensors.json"
    json_path.write_text(json.dumps({"sensors": [
        {"sensor_id": "jn-wl-1", "warning_level_m": 3.5, "guaranteed_level_m": 4.2},
        {"sensor_id": "jn-tr-1", "free_flow_kmh": 80}]}), "utf-8")
    expected = {"jn-wl-1": {"warning_m": 3.5, "guaranteed_m": 4.2},
                "jn-tr-1": {"free_flow_kmh": 80.0}}
    assert SensorProfiles.load(csv_path).by_sensor == expected
    assert SensorProfiles.load(json_path).by_sensor == expected
    (tmp_path / "bad.json").write_text('{"sensors": 3}', "utf-8")
    with pytest.raises(ConfigError, match="must hold a list"):
        SensorProfiles.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="cannot read"):
        SensorProfiles.load(tmp_path / "missing.csv")


def test_a_registry_csv_from_excel_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a BOM: every row 'had no sensor_id'."""
    path = tmp_path / "sensors.csv"
    path.write_bytes(b"\xef\xbb\xbfsensor_id,kind,warning_level_m,guaranteed_level_m\n"
                     b"jn-wl-1,water_level,3.5,4.2\n")
    assert SensorProfiles.load(path).by_sensor == {"jn-wl-1": {"warning_m": 3.5,
                                                               "guaranteed_m": 4.2}}


def test_a_registry_not_in_utf8_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A CSV saved as GBK was a UnicodeDecodeError traceback in the worker and the API."""
    path = tmp_path / "sensors.csv"
    path.write_bytes("sensor_id,kind,name\njn-wl-1,water_level,历下\n".encode("gbk"))
    with pytest.raises(ConfigError, match=r"sensors\.csv: not UTF-8 text .*save it as UTF-8"):
        SensorProfiles.load(path)
