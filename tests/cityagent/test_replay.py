"""`cityagent replay`: files in, one causal score per row and the anomaly events out."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig
from cityagent.errors import ConfigError
from cityagent.readings import format_ts
from cityagent.replay import (
    InvalidReplayFile,
    _rfc3339,
    auto_window_s,
    read_replay_file,
    repeated_times,
    replay,
    summarize,
    write_scores,
)
from control.cli import main as cli_main
from tests.cityagent.test_detection import readings

T0 = datetime(2014, 4, 1, tzinfo=UTC)  # written without an offset, as in NAB: read as UTC
T0_MS = int(T0.timestamp() * 1000)
N = 300
SPIKE, SHIFT = 120, 200  # rows of a one-row spike and of a level shift that lasts


def series_values(seed: int = 7) -> np.ndarray:
    v = 10.0 + np.random.default_rng(seed).normal(0.0, 1.0, N)
    v[SPIKE] += 10.0
    v[SHIFT:] += 8.0
    return np.round(v, 4)


def write_series(path: Path, values, step_s: float = 300.0) -> Path:
    lines = ["timestamp,value"]
    for i, v in enumerate(values):
        t = T0 + timedelta(seconds=i * step_s)
        lines.append(f"{t:%Y-%m-%d %H:%M:%S},{v}")
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


#: The example of docs/replay.md: series_values() written by write_series().
LEVEL_CSV = Path(__file__).resolve().parent.parent / "data" / "replay_level.csv"


@pytest.fixture(autouse=True)
def _no_worker_settings(monkeypatch) -> None:
    """`cityagent replay` reads the workers' detection variables: none of the caller's."""
    from cityagent.settings import DETECTION_VARS

    for var in DETECTION_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def shifted():
    inp = read_replay_file(LEVEL_CSV)
    return LEVEL_CSV, inp, replay(inp)


def test_the_fixture_file_is_the_generated_series(tmp_path: Path) -> None:
    fresh = write_series(tmp_path / "series.csv", series_values())
    assert LEVEL_CSV.read_text("utf-8") == fresh.read_text("utf-8")


# -- one series -------------------------------------------------------------------------------


def test_a_nab_style_series_is_one_generic_series_with_naive_times_as_utc(shifted) -> None:
    _, inp, result = shifted
    assert len(inp) == N and inp.sensors == 1 and inp.format == "series-csv"
    assert set(inp.batch.kind.tolist()) == {"generic"}
    assert set(inp.batch.sensor_id.tolist()) == {"series"}
    assert inp.batch.ts_ms[0] == T0_MS and inp.batch.ts_ms[1] == T0_MS + 300_000
    assert inp.line[0] == 2 and inp.line[-1] == N + 1
    assert result.window_s == 300.0 and result.grace_s == 0.0  # one reading per window
    assert result.late == 0 and result.windows == N


def test_scores_are_low_before_an_anomaly_and_high_at_and_after_it(shifted) -> None:
    _, _, result = shifted
    s = result.scores
    assert s.shape == (N,) and ((s >= 0) & (s <= 1)).all()
    assert (s[:5] == 0).all()  # a new series is not judged until its baseline is warm
    normal = np.r_[s[20:SPIKE], s[SPIKE + 1 : SHIFT]]
    assert normal.max() < 0.5 and np.percentile(normal, 95) < 0.3, normal.max()
    assert s[SPIKE] > 0.5  # 10 sd out
    assert s[SPIKE + 1 : SPIKE + 6].max() < 0.5  # one spike does not drag the baseline
    assert s[SHIFT : SHIFT + 5].min() > 0.5  # 8 sd up, and staying up
    assert s[SHIFT : SHIFT + 5].mean() > 3 * np.mean(normal)


def test_the_level_shift_raises_an_anomaly_and_the_quiet_part_none(shifted) -> None:
    _, _, result = shifted
    step = 300_000
    starts = [a for a in result.anomalies if a.phase == "start"]
    assert all(a.kind == "generic" and a.field == "value" for a in result.anomalies)
    at_shift = [a for a in starts
                if T0_MS + SHIFT * step <= a.since_ms <= T0_MS + (SHIFT + 3) * step]
    assert {a.detector for a in at_shift} & {"deviation", "change"}, starts
    spike_window = T0_MS + SPIKE * step
    false_alarms = [a for a in starts
                    if a.since_ms < T0_MS + SHIFT * step and a.since_ms != spike_window]
    assert false_alarms == []


def test_a_rows_score_depends_on_earlier_rows_only(tmp_path: Path, shifted) -> None:
    _, _, result = shifted
    changed = series_values()
    changed[150] += 50.0  # a later row: rows before it must keep their scores
    changed[260:] -= 30.0
    again = replay(read_replay_file(write_series(tmp_path / "changed.csv", changed)))
    assert np.array_equal(again.scores[:150], result.scores[:150])
    assert again.scores[150] > 0.5 and not np.array_equal(again.scores, result.scores)
    cut = T0_MS + 150 * 300_000
    assert ([a for a in again.anomalies if a.ts_ms <= cut]
            == [a for a in result.anomalies if a.ts_ms <= cut])


def test_causal_within_a_window_too(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    values = np.round(20 + rng.normal(0, 1, 600), 4)  # every 10 s: six readings a window
    first = replay(read_replay_file(write_series(tmp_path / "a.csv", values, step_s=10)))
    assert first.window_s == 60.0
    changed = values.copy()
    changed[303] += 40.0  # the middle of a window (300-305)
    second = replay(read_replay_file(write_series(tmp_path / "b.csv", changed, step_s=10)))
    assert np.array_equal(first.scores[:303], second.scores[:303])
    assert second.scores[303] > 0.5


def _noise_day(step_s: float, seed: int) -> np.ndarray:
    """A day of independent normal noise (mean 100, sd 1), one reading every ``step_s``."""
    return np.round(100.0 + np.random.default_rng(seed).normal(0.0, 1.0, int(86_400 / step_s)),
                    4)


@pytest.mark.parametrize(("step_s", "seed"), [(1.0, 1), (1.0, 2), (2.0, 1), (2.0, 2), (5.0, 2)])
def test_dense_noise_raises_no_spike_in_a_day(tmp_path: Path, step_s: float, seed: int) -> None:
    # With 60 readings a window, window values vary ~7.6 times less than readings: measured in
    # the window scale, the largest of 60 ordinary readings reached the spike threshold in
    # most windows (before the fix: 24 and 15 spike episodes at 1 s, 132 and 150 at 2 s).
    values = _noise_day(step_s, seed)
    result = replay(read_replay_file(write_series(tmp_path / "noise.csv", values, step_s)))
    assert result.window_s == 60.0
    assert [a for a in result.anomalies if a.detector == "spike"] == []
    assert result.scores.max() < 0.5


@pytest.mark.parametrize("step_s", [1.0, 2.0, 10.0])
def test_a_spike_in_dense_noise_is_still_found(tmp_path: Path, step_s: float) -> None:
    values = _noise_day(step_s, 3)
    at = len(values) // 2 + 7
    values[at] += 25.0  # one reading 25 sd out
    result = replay(read_replay_file(write_series(tmp_path / "spike.csv", values, step_s)))
    spikes = [a for a in result.anomalies if a.detector == "spike" and a.phase == "start"]
    assert len(spikes) == 1, spikes
    (a,) = spikes
    t = T0_MS + round(at * step_s * 1000)
    assert a.window_start_ms <= t < a.window_start_ms + 60_000
    assert a.reason == "fault.spike_up" and a.observed == values[at]
    assert result.scores[at] > 0.5


@pytest.mark.parametrize("step_s", [300.0, 10.0])
def test_a_constant_series_scores_zero_and_raises_nothing(tmp_path: Path, step_s: float) -> None:
    result = replay(read_replay_file(write_series(tmp_path / "c.csv", [42.5] * 200, step_s)))
    assert result.anomalies == []
    assert float(result.scores.max()) == 0.0


def test_the_window_is_auto_or_given(tmp_path: Path, shifted) -> None:
    _, inp, _ = shifted
    assert auto_window_s(inp) == 300.0
    dense = read_replay_file(write_series(tmp_path / "d.csv", [1.0, 2.0, 3.0], step_s=1))
    assert auto_window_s(dense) == 60.0  # never below the live window
    result = replay(inp, window_s=900, grace_s=60)
    assert (result.window_s, result.grace_s) == (900, 60) and result.windows == N // 3
    with pytest.raises(ConfigError, match="grace"):
        replay(inp, window_s=300, grace_s=400)


def test_epoch_seconds_and_extra_columns_are_read(tmp_path: Path) -> None:
    path = tmp_path / "yahoo.csv"
    path.write_text("timestamp,value,is_anomaly\n1416726000,1.5,0\n1416729600,2.5,1\n", "utf-8")
    inp = read_replay_file(path)
    assert inp.batch.ts_ms.tolist() == [1_416_726_000_000, 1_416_729_600_000]
    assert inp.watched.tolist() == [1.5, 2.5] and inp.ignored == ("is_anomaly",)


def test_gzip_files_are_read(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "series.csv.gz"
    path.write_bytes(gzip.compress(b"timestamp,value\n2014-04-01T00:00:00Z,1\n"))
    assert read_replay_file(path).watched.tolist() == [1.0]


@pytest.mark.parametrize("sep", ["\t", ";"])
def test_tab_and_semicolon_separated_files_read_as_the_comma_file(tmp_path: Path,
                                                                 sep: str) -> None:
    # A TSV, or a spreadsheet's CSV in a language with decimal commas, names the same columns
    # with another separator: it was refused ("expected a header of timestamp,value ...; got
    # 'timestamp\tvalue'"). Rows of empty cells below the data, as spreadsheets export them,
    # are blank lines.
    comma = LEVEL_CSV.read_text("utf-8").splitlines()
    lines = ['"Timestamp"' + sep + '"Value"'] + [r.replace(",", sep) for r in comma[1:]]
    path = tmp_path / "export.csv"
    path.write_bytes(("\ufeff" + "\r\n".join([*lines, sep, sep * 3, ""])).encode())
    inp, want = read_replay_file(path), read_replay_file(LEVEL_CSV)
    assert inp.format == "series-csv" and len(inp) == len(want) == N
    assert inp.ts_ms.tolist() == want.ts_ms.tolist()
    assert inp.watched.tolist() == want.watched.tolist()


def test_rows_of_empty_cells_are_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "sheet.csv"
    path.write_text("timestamp,value,label\n2014-04-01 00:00:00,1,\n,,\n"
                    "2014-04-01 00:05:00,2,\n ,,\n,,\n", "utf-8")
    inp = read_replay_file(path)
    assert inp.watched.tolist() == [1.0, 2.0] and inp.line.tolist() == [2, 4]


# -- many sensors -----------------------------------------------------------------------------


def sensor_rows() -> list[dict]:
    """Three sensors a minute apart for 3 h: a quiet one, one that jumps, a rising river."""
    rng = np.random.default_rng(11)
    rows = []
    for i in range(180):
        t = T0_MS + i * 60_000
        rows.append({"sensor_id": "quiet", "kind": "generic", "t": t,
                     "value": round(50 + rng.normal(0, 2), 3)})
        rows.append({"sensor_id": "jump", "kind": "generic", "t": t,
                     "value": round(5 + rng.normal(0, 0.5) + (6 if i >= 120 else 0), 3)})
        level = round(2.0 + (3.0 * (i - 100) / 60 if i >= 100 else 0) + rng.normal(0, 0.01), 3)
        rows.append({"sensor_id": "gauge-1", "kind": "water_level", "t": t, "level_m": level})
    return rows


def write_sensor_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sensor_id", "kind", "timestamp", "lon", "lat", "value", "level_m"])
        for r in rows:
            w.writerow([r["sensor_id"], r["kind"], format_ts(r["t"]), 117.0, 36.6,
                        r.get("value", ""), r.get("level_m", "")])
    return path


def test_a_multi_sensor_csv_in_any_row_order(tmp_path: Path) -> None:
    rows = sensor_rows()
    shuffled = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
    inp = read_replay_file(write_sensor_csv(tmp_path / "many.csv", shuffled))
    assert inp.format == "csv" and inp.sensors == 3 and len(inp) == len(rows)
    result = replay(inp)
    assert result.window_s == 60.0 and result.late == 0
    # Scores come back in input order: compare with the same rows replayed in time order.
    ordered = replay(read_replay_file(write_sensor_csv(tmp_path / "ordered.csv", rows)))
    back = {(r["sensor_id"], r["t"]): s for r, s in zip(shuffled, result.scores, strict=True)}
    assert [back[(r["sensor_id"], r["t"])] for r in rows] == ordered.scores.tolist()
    raised = {(a.sensor_id, a.detector, a.reason) for a in result.anomalies
              if a.phase in ("start", "escalate")}
    assert not any(s == "quiet" for s, _, _ in raised), raised
    assert any(s == "jump" and d in ("deviation", "change") for s, d, _ in raised), raised
    assert {("gauge-1", "level", "water.approaching"), ("gauge-1", "level", "water.warning"),
            ("gauge-1", "level", "water.guaranteed")} <= raised
    sid = inp.batch.sensor_id
    assert result.scores[sid == "quiet"][30:].max() < 0.5
    gauge = np.array([r["level_m"] for r in shuffled if r["sensor_id"] == "gauge-1"])
    assert (result.scores[sid == "gauge-1"][gauge > 4.2] > 0.7).all()


def test_jsonl_in_the_public_reading_shape_gives_the_same_as_csv(tmp_path: Path) -> None:
    rows = sensor_rows()
    path = tmp_path / "many.jsonl"
    with path.open("w") as fh:
        for r in rows:
            if r["kind"] == "water_level":
                doc = {"sensor_id": r["sensor_id"], "kind": "water_level",
                       "ts": format_ts(r["t"]), "lon": 117.0, "lat": 36.6,
                       "level_m": r["level_m"]}
            else:
                doc = {"sensor_id": r["sensor_id"], "timestamp": r["t"] / 1000,
                       "value": r["value"], "lon": 117.0, "lat": 36.6, "note": "x"}
            fh.write(json.dumps(doc) + "\n")
        fh.write("\n")  # blank lines are skipped
    inp = read_replay_file(path)
    assert inp.format == "jsonl" and len(inp) == len(rows) and inp.ignored == ("note",)
    from_csv = replay(read_replay_file(write_sensor_csv(tmp_path / "many.csv", rows)))
    result = replay(inp)
    assert result.scores.tolist() == from_csv.scores.tolist()
    assert result.anomalies == from_csv.anomalies


def test_jsonl_keys_are_matched_without_regard_to_case_as_csv_headers_are(
        tmp_path: Path) -> None:
    # A pandas export of a frame with columns Sensor_ID, Kind, Timestamp, Value, Level_m.
    rows = sensor_rows()
    docs = []
    for r in rows:
        doc = {"Sensor_ID": r["sensor_id"]}
        if r["kind"] == "water_level":  # the public reading shape: its time is "ts"
            doc |= {"KIND": "water_level", "Ts": format_ts(r["t"]), "Lon": 117.0, "LAT": 36.6,
                    "Level_M": r["level_m"]}
        else:
            doc |= {"Timestamp": r["t"] / 1000, "Value": r["value"], " Note ": "x"}
        docs.append(doc)
    mixed, lower = tmp_path / "mixed.jsonl", tmp_path / "lower.jsonl"
    mixed.write_text("".join(json.dumps(d) + "\n" for d in docs), "utf-8")
    lower.write_text("".join(json.dumps({k.strip().lower(): v for k, v in d.items()}) + "\n"
                             for d in docs), "utf-8")
    inp = read_replay_file(mixed)
    assert len(inp) == len(rows) and inp.ignored == ("note",)
    assert sorted(inp.values) == ["level_m", "value"]
    result, expected = replay(inp), replay(read_replay_file(lower))
    assert result.scores.tolist() == expected.scores.tolist()
    assert result.anomalies == expected.anomalies


def test_a_sensor_that_stops_is_silent_but_the_end_of_the_file_is_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    lines = ["sensor_id,timestamp,value"]
    for i in range(120):
        t = format_ts(T0_MS + i * 60_000)
        lines.append(f"on,{t},{10 + rng.normal(0, 1):.3f}")
        if i < 60:
            lines.append(f"off,{t},{10 + rng.normal(0, 1):.3f}")
    path = tmp_path / "stop.csv"
    path.write_text("\n".join(lines) + "\n")
    result = replay(read_replay_file(path))
    silence = [(a.sensor_id, a.phase) for a in result.anomalies if a.detector == "silence"]
    assert silence == [("off", "start")]
    assert summarize(read_replay_file(path), result)["sensors"] == 2


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("name, text, line, message", [
    ("empty.csv", "", None, "empty"),
    ("header.csv", "a,b\n1,2\n", 1, "expected a header"),
    ("value.csv", "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,abc\n", 3,
     "value must be a number"),
    ("nan.csv", "timestamp,value\n2014-04-01 00:00:00,nan\n", 2, "finite"),
    ("time.csv", "timestamp,value\n\n2014-04-01 00:00:00,1\nyesterday,2\n", 4, "not a time"),
    ("cols.csv", "timestamp,value\n2014-04-01 00:00:00,1,3\n", 2, "expected 2 columns"),
    # A quote left open: the csv module's "field larger than field limit" was a traceback;
    # a short one was reported on the line where the file ended.
    ("quote.csv", 'timestamp,value\n2014-04-01 00:00:00,"1\n'
                  + "2014-04-01 00:05:00,1\n" * 7000, 2, "never closed"),
    ("short.csv", 'timestamp,value\n2014-04-01 00:00:00,1\n"2014-04-01 00:05:00,1\n'
                  "2014-04-01 00:10:00,1\n", 3, "got 1 \\(the row runs over lines 3-4"),
    ("comma.csv", "timestamp;value\n2014-04-01 00:00:00;10,25\n", 2,
     "value must be a number written with a decimal point and no commas; got '10,25'"),
    ("kind.csv", "sensor_id,kind,timestamp,value\ns1,radar,2014-04-01T00:00:00Z,1\n", 2,
     "kind must be one of"),
    ("foreign.csv", "sensor_id,kind,timestamp,value,level_m\n"
                    "s1,generic,2014-04-01T00:00:00Z,1,2.5\n", 2, "level_m does not belong"),
    ("range.csv", "sensor_id,kind,timestamp,level_m\ng,water_level,1396310400,20000\n", 2,
     "level_m must lie in"),
    ("bad.jsonl", '{"timestamp": 1396310400, "value": 1}\n{"timestamp": \n', 2, "not a JSON"),
    ("reading.jsonl", '{"timestamp": 1396310400, "value": 1}\n'
                      '{"sensor_id": "g", "kind": "water_level", "ts": "2014-04-01T00:00:00Z",'
                      ' "lon": 117, "lat": 36}\n', 2, "needs 'level_m'"),
    ("array.json", '[\n  {"timestamp": 1396310400, "value": 1},\n'
                   '  {"timestamp": 1396310700, "value": 2}\n]\n', 1,
     "is a JSON array; expected JSON lines, one object per line"),
    ("oneline.json", '[{"timestamp": 1396310400, "value": 1}]\n', 1, "is a JSON array"),
    ("novalue.jsonl", '{"sensor_id": "a", "timestamp": 1396310400}\n', 1, "missing 'value'"),
    ("kind.jsonl", '{"kind": ["x"], "timestamp": 1396310400, "value": 1}\n', 1, "kind must be"),
    ("case.jsonl", '{"timestamp": 1396310400, "value": 1}\n'
                   '{"timestamp": 1396310460, "Value": 2, "value": 3}\n', 2,
     "key 'value' appears twice \\(keys are matched without regard to case\\)"),
    # One sensor, two kinds (two devices given one id): detection would drop the second's.
    ("twokinds.csv", "sensor_id,kind,timestamp,value,level_m\n"
                     "x,water_level,1396310400,,2.0\ny,generic,1396310410,1,\n"
                     "x,generic,1396310420,5,\nx,generic,1396310430,5,\n", 4,
     "sensor 'x' is generic here but water_level on line 2: one sensor, one kind"),
])
def test_bad_files_name_the_line(tmp_path: Path, name: str, text: str, line: int | None,
                                 message: str) -> None:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    with pytest.raises(InvalidReplayFile, match=message) as info:
        read_replay_file(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}, line {line}:" if line else f"{path}:")


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidReplayFile, match="cannot open the file"):
        read_replay_file(tmp_path / "nope.csv")


# -- the command ------------------------------------------------------------------------------


def test_the_command_writes_one_score_per_input_row(tmp_path: Path, shifted, capsys) -> None:
    path, _, result = shifted
    scores, events = tmp_path / "scores.csv", tmp_path / "anomalies.jsonl"
    code = cli_main(["replay", str(path), "--scores", str(scores), "--anomalies", str(events),
                     "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == N and summary["window_s"] == 300.0
    with scores.open() as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["row", "timestamp", "sensor_id", "value", "score"]
    assert len(table) == N + 1
    assert [int(r[0]) for r in table[1:]] == list(range(N))
    assert table[1][1] == "2014-04-01T00:00:00.000Z" and table[1][2] == "series"
    assert np.allclose([float(r[4]) for r in table[1:]], result.scores, atol=1e-6)
    lines = events.read_text().splitlines()
    assert len(lines) == len(result.anomalies) == summary["anomalies"]
    assert json.loads(lines[0])["anomaly_id"] == result.anomalies[0].anomaly_id


def test_rows_are_held_as_codes_and_scores_written_in_chunks(tmp_path: Path,
                                                            monkeypatch) -> None:
    # Memory: no column of text per row (ids and kinds are codes), positions and value fields
    # only when the file has them; the scores file the same whatever its chunk size.
    rng = np.random.default_rng(4)
    lines = ["sensor_id,kind,timestamp,lon,lat,value,level_m"]
    for i in range(900):
        t = T0 + timedelta(seconds=10 * (i // 3), milliseconds=7 * (i % 3))
        if i % 3 == 2:
            lines.append(f'"g,{i % 3}",water_level,{t.isoformat()},117.1,36.6,,'
                         f"{2 + rng.normal(0, 0.05):.4f}")
        else:
            lines.append(f"s{i % 3},generic,{t.isoformat()},,,{rng.normal(5, 1):.4f},")
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    inp = read_replay_file(path)
    assert inp.sensor.dtype == np.int32 and inp.kind_code.dtype == np.int8
    assert inp.sensor_ids == ("s0", "s1", "g,2") and inp.sensors == 3
    assert inp.batch.sensor_id.tolist()[:3] == ["s0", "s1", "g,2"]
    assert inp.batch.kind.tolist()[:3] == ["generic", "generic", "water_level"]
    assert np.isnan(inp.batch.lon[0]) and inp.batch.lon[2] == 117.1
    assert sorted(inp.values) == ["level_m", "value"]
    result = replay(inp)
    whole, chunked = tmp_path / "whole.csv", tmp_path / "chunked.csv"
    write_scores(whole, inp, result)
    monkeypatch.setattr("cityagent.replay.SCORES_CHUNK", 7)
    write_scores(chunked, inp, result)
    text = whole.read_text("utf-8")
    assert chunked.read_text("utf-8") == text
    table = list(csv.reader(text.splitlines()))
    assert [r[1] for r in table[1:]] == [format_ts(int(t)) for t in inp.ts_ms]
    assert [r[2] for r in table[1:4]] == ["s0", "s1", "g,2"]
    stamps = np.array([0, 1, 999, 951_782_400_123, 4_102_444_799_999])  # 1970 .. 2099
    assert _rfc3339(stamps) == [format_ts(int(t)) for t in stamps]


def test_the_command_prints_a_summary_and_an_anomaly_table(shifted, capsys) -> None:
    path, _, _ = shifted
    assert cli_main(["replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{N} rows, 1 sensor" in out and "episodes" in out
    assert "detector" in out and "window start" in out


@pytest.mark.parametrize("args, message", [
    (["missing.csv"], "cannot open the file"),
    (["bad.csv"], "bad.csv, line 3: value must be a number"),
    (["good.csv", "--window", "60", "--grace", "90"], "grace"),
    (["header.csv"], "no data rows"),
])
def test_the_command_exits_2_with_one_line_on_bad_input(tmp_path: Path, capsys, args,
                                                        message) -> None:
    (tmp_path / "bad.csv").write_text("timestamp,value\n2014-04-01 00:00:00,1\n"
                                      "2014-04-01 00:05:00,x\n")
    write_series(tmp_path / "good.csv", [1.0, 2.0])
    write_series(tmp_path / "header.csv", [])
    code = cli_main(["replay", str(tmp_path / args[0]), *args[1:]])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_long_replay_reports_progress_by_time_not_only_by_the_million(
        shifted, monkeypatch: pytest.MonkeyPatch) -> None:
    # A file of one series replays ~20,000 rows/s: a million rows would be ~50 s of silence.
    from cityagent import replay as replay_module

    _, inp, whole = shifted
    monkeypatch.setattr(replay_module, "PROGRESS_S", 0.0)
    seen: list[tuple[str, int, int]] = []
    result = replay(inp, progress=lambda *report: seen.append(report))
    assert len(seen) == result.slices == N  # one row a window: a report after every slice
    assert [done for _, done, _ in seen] == list(range(1, N + 1))
    assert {(stage, total) for stage, _, total in seen} == {("replay", N)}
    assert result.scores.tolist() == whole.scores.tolist()


def test_writing_a_big_scores_file_reports_progress(
        shifted, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Millions of rows take seconds to write (~2 µs a row): that too is reported by time.
    from cityagent import replay as replay_module

    _, inp, whole = shifted
    monkeypatch.setattr(replay_module, "PROGRESS_S", 0.0)
    monkeypatch.setattr(replay_module, "SCORES_CHUNK", 64)
    seen: list[tuple[str, int, int]] = []
    write_scores(tmp_path / "s.csv", inp, whole, progress=lambda *report: seen.append(report))
    assert seen == [("write", min(e, N), N) for e in range(64, N + 64, 64)]
    lines = (tmp_path / "s.csv").read_text("utf-8").splitlines()
    assert len(lines) == N + 1


def yahoo_values() -> tuple[np.ndarray, list[int]]:
    """A daily cycle of hourly rows with three 15-sd spikes (Yahoo S5's kind of series)."""
    i = np.arange(1420)
    v = 100 + 30 * np.sin(i / 24 * 2 * np.pi) + np.random.default_rng(3).normal(0, 4, len(i))
    spikes = [400, 800, 1200]
    v[spikes] += 60
    return np.round(v, 3), spikes


def test_yahoo_s5_files_read_as_published(tmp_path: Path) -> None:
    # A1 numbers its hourly rows 1, 2, 3, ... under "timestamp"; A3 and A4 have epoch seconds
    # under "timestamps". A1's row numbers read as seconds of 1970-01-01: with the 60 s floor
    # of the auto window, 60 rows shared a window, 1,199 of 1,420 rows scored 0 (the
    # baseline's warm-up) and the spikes 0, 0 and 0.2; A3 was refused for its header.
    values, spikes = yahoo_values()
    a1 = tmp_path / "real_1.csv"
    a1.write_text("timestamp,value,is_anomaly\n" + "".join(
        f"{n + 1},{v},{int(n in spikes)}\n" for n, v in enumerate(values)), "utf-8")
    a3 = tmp_path / "A3Benchmark-TS1.csv"
    a3.write_text("timestamps,value,anomaly,changepoint,trend,noise,seasonality1\n" + "".join(
        f"{1416722400 + 3600 * n},{v},{int(n in spikes)},0,0,0,0\n"
        for n, v in enumerate(values)), "utf-8")
    by_index, by_clock = read_replay_file(a1), read_replay_file(a3)
    first = replay(by_index)
    assert first.window_s == 1.0 and replay(by_clock).window_s == 3600.0
    # The same series one row a window either way: the same scores.
    assert first.scores.tolist() == replay(by_clock).scores.tolist()
    assert (first.scores[spikes] >= 0.5).all()
    assert (first.scores == 0).sum() == 20  # the baseline's warm-up (deviation_warmup rows)
    summary = summarize(by_index, first)
    assert summary["times_are_row_numbers"] is True and summary["ignored_columns"] == ["is_anomaly"]
    assert summarize(by_clock, replay(by_clock))["times_are_row_numbers"] is False


def test_a_dense_series_of_clock_times_keeps_the_live_window(tmp_path: Path) -> None:
    # One reading a second in 2014: clock times, so the auto window stays 60 s (6 ... 60
    # readings a window, as the live worker judges them), not the 1 s step.
    inp = read_replay_file(write_series(tmp_path / "dense.csv", series_values(), step_s=1.0))
    assert auto_window_s(inp) == 60.0 and not summarize(inp, replay(inp))["times_are_row_numbers"]


def test_repeated_times_are_no_interval_for_the_auto_window(tmp_path: Path, capsys) -> None:
    # A file with every row twice (two exports concatenated and sorted, a min and a max per
    # time): half its intervals were 0, so the median was 0 and the window the 60 s floor,
    # five windows out of six of a 5-minute series empty; A1's row numbers got 60 rows a
    # window again. Repeated times do not count as intervals, and the summary counts them.
    values, spikes = yahoo_values()
    a1 = tmp_path / "real_1.csv"
    a1.write_text("timestamp,value\n" + "".join(
        f"{n + 1},{v}\n{n + 1},{v}\n" for n, v in enumerate(values)), "utf-8")
    twice = read_replay_file(a1)
    assert auto_window_s(twice) == 1.0 and repeated_times(twice) == len(values)
    nab = LEVEL_CSV.read_text("utf-8").splitlines()
    path = tmp_path / "twice.csv"
    path.write_text("\n".join([nab[0], *(r for row in nab[1:] for r in (row, row))]) + "\n")
    inp = read_replay_file(path)
    assert auto_window_s(inp) == 300.0
    summary = summarize(inp, replay(inp))
    assert summary["repeated_times"] == N and summary["window_s"] == 300.0
    assert summarize(read_replay_file(LEVEL_CSV), replay(read_replay_file(LEVEL_CSV)))[
        "repeated_times"] == 0
    assert cli_main(["replay", str(path)]) == 0
    assert (f"repeated   {N} rows with the time of an earlier row of their sensor"
            in capsys.readouterr().out)


def test_the_summary_counts_the_rows_before_each_sensors_baseline_was_learned(
        tmp_path: Path, shifted) -> None:
    # One reading a window: the first deviation_warmup (20) rows score 0 against no baseline.
    # Sub-second data over two windows scored 0 on every row, and the summary said nothing.
    _, inp, result = shifted
    assert result.cold == 20 and (result.scores[:20] == 0).all()
    assert summarize(inp, result)["rows_before_warm"] == 20
    dense = read_replay_file(write_series(tmp_path / "dense.csv", series_values(), step_s=0.1))
    quick = replay(dense)
    assert quick.cold == N and (quick.scores == 0).all()


def test_an_empty_kind_cell_is_generic_and_a_sensor_still_has_one_kind(tmp_path: Path) -> None:
    path = tmp_path / "kinds.csv"
    path.write_text("sensor_id,kind,timestamp,value\n"
                    "a,,2026-06-01T00:00:00Z,1.0\n"
                    "a,generic,2026-06-01T00:01:00Z,1.1\n"
                    "b,,2026-06-01T00:00:00Z,2.0\n", "utf-8")
    inp = read_replay_file(path)
    assert inp.sensors == 2 and summarize(inp, replay(inp))["kinds"] == {"generic": 3}
    path.write_text("sensor_id,kind,timestamp,value,level_m\n"
                    "g,water_level,2026-06-01T00:00:00Z,,2.0\n"
                    "g,,2026-06-01T00:01:00Z,2.1,\n", "utf-8")
    with pytest.raises(InvalidReplayFile, match="line 3: sensor 'g' is generic here but "
                                                "water_level on line 2"):
        read_replay_file(path)


# -- what a replay of the readings cannot reproduce: the worker's idle timer ---------------


LIVE_T0 = 1_795_307_400_000
CUT_MS = LIVE_T0 + 30 * 60_000  # the gateway cut begins


def _gauge_messages(buffered: bool) -> list[tuple[int, list[tuple[str, str, int, float]]]]:
    """(wall ms, rows) of one gauge reporting every 10 s, one message each, wall clock =
    event time, whose input stops from minute 30 to 40 (a gateway cut); ``buffered``: the
    gateway then sends the readings of the cut, in time order, in the first message after."""
    cut, back, end = CUT_MS, CUT_MS + 10 * 60_000, CUT_MS + 15 * 60_000
    out = []
    for t in range(LIVE_T0, end, 10_000):
        if cut <= t < back:
            continue
        rows = [("g", "water_level", t, 2.0 + 0.01 * (t // 10_000 % 3))]
        if buffered and t == back:
            rows = [("g", "water_level", u, 2.0 + 0.01 * (u // 10_000 % 3))
                    for u in range(cut, back, 10_000)] + rows
        out.append((t, rows))
    return out


def _live(messages) -> tuple[list, int]:
    """The worker's loop over ``messages``: each batch at its wall time, and its idle timer
    (every second: a bucket idle for idle_s advances its event time by the idle time)."""
    engine = DetectionEngine(DetectionConfig.load())
    idle_ms = engine.config.windows.idle_ms
    state = engine.new_state()
    found, late, last_input, i = [], 0, None, 0
    for wall in range(LIVE_T0, messages[-1][0] + 1, 1000):
        while i < len(messages) and messages[i][0] <= wall:
            step = engine.process(state, readings(messages[i][1]), wall,
                                  watermark_limit_ms=wall)
            found, late, last_input, i = found + step.anomalies, late + step.late, wall, i + 1
        if last_input is not None and wall - last_input >= idle_ms:
            found += engine.advance(state, state.watermark + wall - last_input, wall).anomalies
            last_input = wall
    return found, late


def _replayed(tmp_path: Path, messages):
    path = tmp_path / "readings.csv"
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["sensor_id", "kind", "timestamp", "level_m"])
        out.writerows(row for _, rows in messages for row in rows)
    return replay(read_replay_file(path), window_s=60, grace_s=15)


def test_a_replay_dates_timer_found_silence_otherwise_and_judges_what_the_timer_made_late(
        tmp_path: Path) -> None:
    """docs/detection.md (Windows): silence the idle timer found is not in the readings."""
    back = CUT_MS + 10 * 60_000
    # The cut alone: the same silence episode (same id: it starts at the last reading), but
    # found 185 s into the cut live and only when the readings resume in the replay.
    messages = _gauge_messages(buffered=False)
    live, late = _live(messages)
    again = _replayed(tmp_path, messages)
    live_start = [a for a in live if a.detector == "silence" and a.phase == "start"]
    replay_start = [a for a in again.anomalies if a.detector == "silence" and a.phase == "start"]
    assert len(live_start) == len(replay_start) == 1 and late == again.late == 0
    assert live_start[0].anomaly_id == replay_start[0].anomaly_id
    assert live_start[0].ts_ms == CUT_MS - 10_000 + 185_000
    assert replay_start[0].ts_ms == back
    # With the buffered upload: live, the timer had moved the event time on, so most of the
    # upload was late and the silence stands; the replay judges it all and finds no silence.
    messages = _gauge_messages(buffered=True)
    live, late = _live(messages)
    again = _replayed(tmp_path, messages)
    assert late == 54 and again.late == 0
    assert [a.phase for a in live if a.detector == "silence"] == ["start", "end"]
    assert [a for a in again.anomalies if a.detector == "silence"] == []
