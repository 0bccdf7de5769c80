"""Replay / backtest: the detection code run offline over a file of past readings.

``read_replay_file`` reads a CSV or JSON-lines file (formats in ``docs/replay.md``): one
series (``timestamp,value``, as in NAB and most published benchmarks) or many sensors
(``sensor_id,kind,timestamp,<value columns>``; JSON lines in the public reading shape).
``replay`` feeds the rows, in event-time order, through the same ``DetectionEngine`` the
Faust worker runs and returns one anomaly score in [0, 1] per input row plus the anomaly
events.

Causal by construction: the rows are fed in slices of event time that no window boundary
(and no ``window end + grace`` point) cuts through; before a slice is folded into the state,
the engine's event time is moved to the slice's first timestamp (closing every window that
is complete by then) and each of its rows is scored against that state and a per-reading
state of the replay's own (``cityagent.rowscore``: each sensor's spread of single readings,
the autocorrelation of its deviations and the spread of its innovations, and a CUSUM of
innovations, so that the score judges readings, not windows, shows level shifts, and does
not mistake a smooth series' lag behind its baseline for one), then folded into both. A row's score thus depends on earlier rows only: changing
a later row never changes it.

A series of unknown kind and unit is of kind ``generic``: its watched field is ``value``
and every scale is learned from the series itself (``[kind.generic]`` in detection.toml).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import orjson

from cityagent.batch import ReadingBatch
from cityagent.detection import Anomaly, DetectionEngine
from cityagent.detectors.config import GENERIC, DetectionConfig, SensorProfiles
from cityagent.errors import CityAgentError, ConfigError, InvalidReading
from cityagent.readings import (
    ALL_VALUE_FIELDS,
    KINDS,
    VALUE_FIELDS,
    VALUE_RANGES,
    format_ts,
    parse_reading,
)
from cityagent.rowscore import (
    RowState,
    change_scores,
    fold,
    innovation_scores,
    residuals,
    spread_of,
)
from cityagent.state import BucketState

__all__ = (
    "InvalidReplayFile",
    "ReplayInput",
    "ReplayResult",
    "SERIES_ID",
    "read_replay_file",
    "auto_window_s",
    "replay",
    "summarize",
    "write_scores",
    "write_anomalies",
)

#: Sensor id of the one series of a ``timestamp,value`` file.
SERIES_ID = "series"
#: Kinds a replayed row may have: the reading kinds, and generic (unknown kind and unit).
REPLAY_KINDS: tuple[str, ...] = (*KINDS, GENERIC)
#: Progress is reported every this many rows.
PROGRESS_EVERY = 1_000_000

_KIND_INDEX = {kind: i for i, kind in enumerate(REPLAY_KINDS)}
_TIME_COLUMNS = ("timestamp", "ts")
_VALUE_COLUMNS = ("value", *ALL_VALUE_FIELDS)
_JSON_GENERIC_KEYS = frozenset({"sensor_id", "kind", "timestamp", "ts", "value", "lon", "lat"})
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
# Event times we accept: 1970-01-01 up to 2100 (the engine needs times >= 0). Epoch numbers
# below 1e11 are seconds, above it milliseconds — the rule of cityagent.readings.parse_ts.
_MAX_TS_MS = 4_102_444_800_000
_SECONDS_LIMIT = 100_000_000_000

Progress = Callable[[str, int, int], None]  # (stage, rows done, rows in all or 0 if unknown)


class InvalidReplayFile(CityAgentError):
    """A replay input cannot be read: names the file, the line and what was expected."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None):
        self.path = str(path)
        self.reason = reason
        self.line = line
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")


class _RowError(Exception):
    """A bad cell or row; becomes InvalidReplayFile with the line number."""


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ReplayInput:
    """The rows of a replay file, in input order, as reading columns."""

    path: str
    format: str  # "series-csv", "csv" or "jsonl"
    batch: ReadingBatch  # kind may be "generic"; values hold only the fields the file has
    line: np.ndarray  # the file line of each row (1-based)
    watched: np.ndarray  # the value the detectors watch, per row
    ignored: tuple[str, ...] = ()  # columns or keys that were not used (labels, notes, ...)

    def __len__(self) -> int:
        return len(self.batch)

    @property
    def sensors(self) -> int:
        return len(np.unique(self.batch.sensor_id)) if len(self) else 0


class _Rows:
    """Column builder: compact arrays while reading, numpy at the end."""

    def __init__(self, fields: Sequence[str]):
        self.ids: dict[str, str] = {}
        self.sensor: list[str] = []
        self.kind = array("b")
        self.ts = array("q")
        self.lon = array("d")
        self.lat = array("d")
        self.line = array("q")
        self.values = {f: array("d") for f in fields}

    def add(self, line: int, sensor: str, kind: str, ts_ms: int, lon: float, lat: float,
            values: Mapping[str, float]) -> None:
        self.sensor.append(self.ids.setdefault(sensor, sensor))
        self.kind.append(_KIND_INDEX[kind])
        self.ts.append(ts_ms)
        self.lon.append(lon)
        self.lat.append(lat)
        self.line.append(line)
        for name, column in self.values.items():
            column.append(values.get(name, math.nan))

    def __len__(self) -> int:
        return len(self.ts)

    def _one_kind_per_sensor(self, path: str) -> None:
        """InvalidReplayFile at the first row whose kind is not its sensor's first row's:
        detection judges a sensor by one kind and would drop such rows unscored."""
        if not self.sensor:
            return
        codes = np.frombuffer(self.kind, dtype=np.int8)
        first = _first_rows(np.array(self.sensor, dtype=object))
        bad = np.flatnonzero(codes != codes[first])
        if bad.size:
            i = int(bad[np.argmin(np.frombuffer(self.line, dtype=np.int64)[bad])])
            j = int(first[i])
            raise InvalidReplayFile(
                path, f"sensor {self.sensor[i]!r} is {REPLAY_KINDS[codes[i]]} here but "
                f"{REPLAY_KINDS[codes[j]]} on line {self.line[j]}: one sensor, one kind",
                int(self.line[i]))

    def finish(self, path: str, fmt: str, config: DetectionConfig,
               ignored: Sequence[str]) -> ReplayInput:
        n = len(self)
        self._one_kind_per_sensor(path)
        kinds = np.array(REPLAY_KINDS)[np.frombuffer(self.kind, dtype=np.int8).astype(np.intp)]
        watched_fields = {config.kinds[k].field for k in np.unique(kinds).tolist()}
        values = {}
        for name, col in self.values.items():
            column = np.frombuffer(col, dtype=np.float64).copy()
            if name in watched_fields or not np.isnan(column).all():
                values[name] = column
        batch = ReadingBatch(
            sensor_id=np.array(self.sensor, dtype=str) if n else np.empty(0, dtype=str),
            kind=kinds,
            ts_ms=np.frombuffer(self.ts, dtype=np.int64).copy(),
            lon=np.frombuffer(self.lon, dtype=np.float64).copy(),
            lat=np.frombuffer(self.lat, dtype=np.float64).copy(),
            district=np.zeros(n, dtype=np.int64),
            values=values,
        )
        watched = np.full(n, np.nan)
        for kind in np.unique(kinds).tolist():
            column = values.get(config.kinds[kind].field)
            if column is not None:
                rows = kinds == kind
                watched[rows] = column[rows]
        return ReplayInput(path, fmt, batch, np.frombuffer(self.line, dtype=np.int64).copy(),
                           watched, tuple(ignored))


def _first_rows(sensor: np.ndarray) -> np.ndarray:
    """Per row, the row index of its sensor's first row."""
    _, first, inverse = np.unique(sensor, return_index=True, return_inverse=True)
    return first[inverse]


def read_replay_file(path: str | Path, config: DetectionConfig | None = None,
                     progress: Progress | None = None) -> ReplayInput:
    """Read a replay input (CSV or JSON lines; ``.gz`` too); InvalidReplayFile when bad."""
    path = Path(path)
    config = config or DetectionConfig.load()
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise InvalidReplayFile(path, f"cannot open the file: {exc.strerror or exc}") from None
    try:
        binary = gzip.open(raw) if path.suffix.lower() == ".gz" else raw
        with io.TextIOWrapper(binary, encoding="utf-8-sig", newline="") as text:
            if _is_jsonl(path, text):
                return _read_jsonl(path, text, config, progress)
            return _read_csv(path, text, config, progress)
    except UnicodeDecodeError as exc:
        raise InvalidReplayFile(path, f"is not UTF-8 text ({exc.reason})") from None
    except (OSError, EOFError) as exc:  # gzip: not a gzip file, truncated
        raise InvalidReplayFile(path, f"cannot read the file: {exc}") from None
    finally:
        raw.close()


def _is_jsonl(path: Path, text: TextIO) -> bool:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(_JSONL_SUFFIXES):
        return True
    if name.endswith(".csv"):
        return False
    head = text.read(4096)
    text.seek(0)
    return head.lstrip().startswith("{")


def _read_csv(path: Path, text: TextIO, config: DetectionConfig,
              progress: Progress | None) -> ReplayInput:
    reader = csv.reader(text)
    header: list[str] | None = None
    for cells in reader:
        if cells and any(c.strip() for c in cells):
            header = [c.strip().lower() for c in cells]
            break
    if header is None:
        raise InvalidReplayFile(path, "the file is empty; expected a header line such as "
                                      "timestamp,value")
    head_line = reader.line_num
    dup = [c for c, n in Counter(header).items() if n > 1 and c]
    if dup:
        raise InvalidReplayFile(path, f"column {dup[0]!r} appears twice in the header", head_line)
    time_col = next((c for c in _TIME_COLUMNS if c in header), None)
    if time_col is None or not any(c in header for c in _VALUE_COLUMNS):
        raise InvalidReplayFile(
            path,
            "expected a header of timestamp,value (one series) or sensor_id,kind,timestamp "
            "plus value columns (value, or " + ", ".join(ALL_VALUE_FIELDS) + f"); got "
            f"{','.join(header)!r}",
            head_line,
        )
    if "sensor_id" in header:
        return _read_sensor_csv(path, reader, header, time_col, config, progress)
    if "value" not in header:
        raise InvalidReplayFile(path, "a file without sensor_id is one series and needs a "
                                      f"value column; got {','.join(header)!r}", head_line)
    return _read_series_csv(path, reader, header, time_col, config, progress)


def _read_series_csv(path: Path, reader: Iterator[list[str]], header: list[str], time_col: str,
                     config: DetectionConfig, progress: Progress | None) -> ReplayInput:
    ti, vi = header.index(time_col), header.index("value")
    width = len(header)
    rows = _Rows(("value",))
    for cells in reader:
        line = reader.line_num  # type: ignore[attr-defined]
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        try:
            if len(cells) != width:
                raise _RowError(f"expected {width} columns like the header; got {len(cells)}")
            ts = _time(cells[ti], time_col)
            value = _number(cells[vi], "value")
        except _RowError as exc:
            raise InvalidReplayFile(path, str(exc), line) from None
        rows.add(line, SERIES_ID, GENERIC, ts, math.nan, math.nan, {"value": value})
        if progress and len(rows) % PROGRESS_EVERY == 0:
            progress("read", len(rows), 0)
    ignored = [c for c in header if c not in (time_col, "value")]
    return rows.finish(str(path), "series-csv", config, ignored)


def _read_sensor_csv(path: Path, reader: Iterator[list[str]], header: list[str], time_col: str,
                     config: DetectionConfig, progress: Progress | None) -> ReplayInput:
    col = {name: i for i, name in enumerate(header)}
    fields = [f for f in _VALUE_COLUMNS if f in col]
    used = {"sensor_id", "kind", time_col, "lon", "lat", *fields}
    width = len(header)
    rows = _Rows(fields)
    si, ki, ti = col["sensor_id"], col.get("kind"), col[time_col]
    loni, lati = col.get("lon"), col.get("lat")
    for cells in reader:
        line = reader.line_num  # type: ignore[attr-defined]
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        try:
            if len(cells) != width:
                raise _RowError(f"expected {width} columns like the header; got {len(cells)}")
            sensor = cells[si].strip()
            if not sensor:
                raise _RowError("sensor_id is empty")
            kind = cells[ki].strip() if ki is not None else GENERIC
            if kind not in _KIND_INDEX:
                raise _RowError(f"kind must be one of {list(REPLAY_KINDS)}; got {kind!r}")
            ts = _time(cells[ti], time_col)
            lon = _coordinate(cells[loni], "lon", 180.0) if loni is not None else math.nan
            lat = _coordinate(cells[lati], "lat", 90.0) if lati is not None else math.nan
            values = _row_values(cells, col, fields, kind, config)
        except _RowError as exc:
            raise InvalidReplayFile(path, str(exc), line) from None
        rows.add(line, sensor, kind, ts, lon, lat, values)
        if progress and len(rows) % PROGRESS_EVERY == 0:
            progress("read", len(rows), 0)
    ignored = [c for c in header if c not in used]
    return rows.finish(str(path), "csv", config, ignored)


def _row_values(cells: list[str], col: Mapping[str, int], fields: Sequence[str], kind: str,
                config: DetectionConfig) -> dict[str, float]:
    """The value cells of one multi-sensor row: its kind's fields; others must be empty."""
    own = ("value",) if kind == GENERIC else VALUE_FIELDS[kind]
    watched = config.kinds[kind].field
    values = {}
    for name in fields:
        cell = cells[col[name]].strip()
        if name not in own:
            if cell:
                raise _RowError(f"{name} does not belong to a {kind} reading (it has "
                                f"{', '.join(own)}); leave the cell empty")
            continue
        if not cell:
            if name == watched:
                raise _RowError(f"{name} is empty; a {kind} reading needs it")
            continue
        value = _number(cell, name)
        low, high = VALUE_RANGES.get(name, (-math.inf, math.inf))
        if not low <= value <= high:
            raise _RowError(f"{name} must lie in [{low:g}, {high:g}]; got {cell!r}")
        values[name] = value
    if watched not in values:
        raise _RowError(f"a {kind} reading needs a {watched} column")
    return values


def _read_jsonl(path: Path, text: TextIO, config: DetectionConfig,
                progress: Progress | None) -> ReplayInput:
    rows = _Rows(_VALUE_COLUMNS)
    ignored: set[str] = set()
    for line, raw in enumerate(text, start=1):
        if not raw.strip():
            continue
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidReplayFile(path, f"not a JSON object: {exc}", line) from None
        if not isinstance(doc, dict):
            raise InvalidReplayFile(path, f"expected a JSON object; got {type(doc).__name__}",
                                    line)
        kind = doc.get("kind", GENERIC)
        try:
            if not isinstance(kind, str):
                raise _RowError(f"kind must be one of {list(REPLAY_KINDS)}; got {kind!r}")
            if kind in VALUE_FIELDS:
                r = parse_reading(doc)
                rows.add(line, r.sensor_id, r.kind, r.ts_ms, r.lon, r.lat, r.values)
            elif kind == GENERIC:
                ignored.update(k for k in doc if k not in _JSON_GENERIC_KEYS)
                sensor, ts, lon, lat, value = _generic_doc(doc)
                rows.add(line, sensor, GENERIC, ts, lon, lat, {"value": value})
            else:
                raise _RowError(f"kind must be one of {list(REPLAY_KINDS)}; got {kind!r}")
        except InvalidReading as exc:
            raise InvalidReplayFile(path, str(exc), line) from None
        except _RowError as exc:
            raise InvalidReplayFile(path, str(exc), line) from None
        if progress and len(rows) % PROGRESS_EVERY == 0:
            progress("read", len(rows), 0)
    return rows.finish(str(path), "jsonl", config, sorted(ignored))


def _generic_doc(doc: Mapping[str, Any]) -> tuple[str, int, float, float, float]:
    sensor = doc.get("sensor_id", SERIES_ID)
    if not isinstance(sensor, str) or not sensor.strip():
        raise _RowError(f"sensor_id must be non-empty text; got {sensor!r}")
    key = next((k for k in _TIME_COLUMNS if k in doc), None)
    if key is None:
        raise _RowError("missing 'timestamp' (or 'ts')")
    ts = _time(doc[key], key)
    if "value" not in doc:
        raise _RowError("missing 'value' (a generic reading is {sensor_id, timestamp, value})")
    value = _json_number(doc["value"], "value")
    lon = _json_number(doc["lon"], "lon") if doc.get("lon") is not None else math.nan
    lat = _json_number(doc["lat"], "lat") if doc.get("lat") is not None else math.nan
    return sensor.strip(), ts, lon, lat, value


def _json_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _RowError(f"{name} must be a number; got {value!r}")
    if not math.isfinite(value):
        raise _RowError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def _number(cell: str, name: str) -> float:
    text = cell.strip()
    if not text:
        raise _RowError(f"{name} is empty")
    try:
        value = float(text)
    except ValueError:
        raise _RowError(f"{name} must be a number; got {cell!r}") from None
    if not math.isfinite(value):
        raise _RowError(f"{name} must be a finite number; got {cell!r}")
    return value


def _coordinate(cell: str, name: str, limit: float) -> float:
    if not cell.strip():
        return math.nan
    value = _number(cell, name)
    if not -limit <= value <= limit:
        raise _RowError(f"{name} must lie in [{-limit:g}, {limit:g}]; got {cell!r}")
    return value


def _time(value: Any, name: str) -> int:
    """Event time in epoch ms: ISO 8601 / RFC 3339 text (no offset: UTC), or epoch s or ms."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise _RowError(f"{name} is empty")
        try:
            number: float | None = float(text)
        except ValueError:
            number = None
        if number is None:
            try:
                parsed = datetime.fromisoformat(text.replace("z", "Z"))
            except ValueError:
                raise _RowError(f"{name} is not a time like 2014-04-01 00:00:00, "
                                f"2026-11-22T08:30:00+08:00 or epoch seconds; got {value!r}"
                                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            ts_ms = round(parsed.timestamp() * 1000)
        else:
            ts_ms = _epoch_ms(number, value, name)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        ts_ms = _epoch_ms(float(value), value, name)
    else:
        raise _RowError(f"{name} must be a time (text or epoch seconds/milliseconds); "
                        f"got {value!r}")
    if not 0 <= ts_ms < _MAX_TS_MS:
        raise _RowError(f"{name} must lie between 1970 and 2100; got {value!r}")
    return ts_ms


def _epoch_ms(number: float, raw: Any, name: str) -> int:
    if not math.isfinite(number):
        raise _RowError(f"{name} must be a finite number; got {raw!r}")
    return round(number * 1000) if abs(number) < _SECONDS_LIMIT else round(number)


# -- replaying -------------------------------------------------------------------------------


@dataclass(eq=False)
class ReplayResult:
    """Scores per input row (input order) and the anomaly events, in detection order."""

    scores: np.ndarray
    anomalies: list[Anomaly] = field(default_factory=list)
    window_s: float = 60.0
    grace_s: float = 0.0
    windows: int = 0  # windows closed and judged
    late: int = 0  # readings after their window had closed (none when replaying a file)
    slices: int = 0  # engine steps
    elapsed_s: float = 0.0


def auto_window_s(inp: ReplayInput, config: DetectionConfig | None = None) -> float:
    """The default window: detection.toml's; for generic series at least their median interval.

    Series of known kind are replayed with the window the live worker uses. A generic series
    gets ``max(window, median interval between a sensor's readings)``, so that a series
    sampled every 5 minutes has one reading per window, not mostly empty windows.
    """
    config = config or DetectionConfig.load()
    base = config.windows.size_ms / 1000.0
    b = inp.batch
    if len(b) < 2 or not (b.kind == GENERIC).all():
        return base
    order = np.lexsort((b.ts_ms, b.sensor_id))
    sensor, ts = b.sensor_id[order], b.ts_ms[order]
    same = sensor[1:] == sensor[:-1]
    gaps = np.diff(ts)[same]
    if gaps.size == 0:
        return base
    return max(base, float(np.median(gaps)) / 1000.0)


def replay(inp: ReplayInput, *, window_s: float | None = None, grace_s: float | None = None,
           config: DetectionConfig | None = None, profiles: SensorProfiles | None = None,
           progress: Progress | None = None) -> ReplayResult:
    """Run the detection engine over ``inp`` in event-time order; score every row causally.

    ``window_s`` defaults to :func:`auto_window_s`; ``grace_s`` to 0 (the rows are sorted, so
    nothing is late, and a grace would only delay judgement). ``config`` is the detection
    settings file to start from (default: the packaged one).
    """
    started = time.perf_counter()
    base = config or DetectionConfig.load()
    window = window_s if window_s is not None else auto_window_s(inp, base)
    grace = 0.0 if grace_s is None else grace_s
    if not window > 0 or not math.isfinite(window):
        raise ConfigError(f"the window must be a positive number of seconds; got {window:g}")
    if not 0 <= grace <= window:
        raise ConfigError(f"the grace ({grace:g} s) must lie between 0 and the window "
                          f"({window:g} s)")
    windows = replace_windows(base, window, grace)
    engine = DetectionEngine(windows, profiles or SensorProfiles())
    state = engine.new_state()
    n = len(inp)
    result = ReplayResult(scores=np.zeros(n), window_s=window, grace_s=grace)
    if n == 0:
        result.elapsed_s = time.perf_counter() - started
        return result
    order = np.argsort(inp.batch.ts_ms, kind="stable")
    b = inp.batch.take(order)
    watched = inp.watched[order]
    sensor_ids, sensor = np.unique(b.sensor_id, return_inverse=True)  # per-reading state rows
    rows_state = RowState.new(len(sensor_ids))
    ts = b.ts_ms
    size_ms, grace_ms = windows.windows.size_ms, windows.windows.grace_ms
    key = ts // size_ms * 2
    if grace_ms > 0:
        key += (ts % size_ms) >= grace_ms
    bounds = np.flatnonzero(np.r_[True, key[1:] != key[:-1], True])
    scores = np.zeros(n)
    out = result.anomalies
    next_report = PROGRESS_EVERY
    for a, e in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        chunk = _slice(b, a, e)
        first, last = int(ts[a]), int(ts[e - 1])
        moved = engine.advance(state, first, first)  # close what is complete before the slice
        out.extend(moved.anomalies)
        result.windows += moved.windows
        scores[a:e] = _row_scores(engine, state, rows_state, chunk, sensor[a:e], watched[a:e])
        step = engine.process(state, chunk, last)
        out.extend(step.anomalies)
        result.windows += step.windows
        result.late += step.late
        result.slices += 1
        if progress and e >= next_report:
            progress("replay", e, n)
            next_report = (e // PROGRESS_EVERY + 1) * PROGRESS_EVERY
    # Close the last windows. The data ending is not the sensors going quiet: silence that
    # only this final step would find is dropped.
    end = (int(ts[-1]) // size_ms + 1) * size_ms + grace_ms
    flushed = engine.advance(state, end, end)
    out.extend(a for a in flushed.anomalies
               if not (a.detector == "silence" and a.phase == "start"))
    result.windows += flushed.windows
    result.scores[order] = np.clip(np.nan_to_num(scores), 0.0, 1.0)
    result.elapsed_s = time.perf_counter() - started
    return result


def _row_scores(engine: DetectionEngine, state: BucketState, rows_state: RowState,
                chunk: ReadingBatch, sensor: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Score a slice's readings against the state before it, then learn the per-reading state.

    The score is the largest of the engine's deviation (and domain) score, judged with each
    sensor's per-reading spread, the innovation's score and the per-reading CUSUM's
    (``cityagent.rowscore``).
    """
    deviation, expected, scale, floor = engine.reading_scores(
        state, chunk, spread_of(rows_state, sensor))
    r = residuals(rows_state, sensor, x, expected, scale, floor)
    score = np.maximum.reduce([deviation, innovation_scores(r),
                               change_scores(rows_state, sensor, r, scale)])
    fold(rows_state, sensor, scale, r, score)
    return score


def replace_windows(config: DetectionConfig, window_s: float, grace_s: float) -> DetectionConfig:
    """``config`` with another window size and grace (the rest of the settings kept)."""
    return dc_replace(config, windows=dc_replace(
        config.windows, size_ms=round(window_s * 1000), grace_ms=round(grace_s * 1000)))


def _slice(b: ReadingBatch, a: int, e: int) -> ReadingBatch:
    return ReadingBatch(b.sensor_id[a:e], b.kind[a:e], b.ts_ms[a:e], b.lon[a:e], b.lat[a:e],
                        b.district[a:e], {k: v[a:e] for k, v in b.values.items()})


# -- reporting -------------------------------------------------------------------------------


def summarize(inp: ReplayInput, result: ReplayResult) -> dict[str, Any]:
    """What was replayed and found, as one JSON-ready object."""
    b = inp.batch
    starts = Counter(a.detector for a in result.anomalies if a.phase == "start")
    kinds = Counter(b.kind.tolist())
    return {
        "file": inp.path,
        "format": inp.format,
        "rows": len(inp),
        "sensors": inp.sensors,
        "kinds": dict(sorted(kinds.items())),
        "first": format_ts(int(b.ts_ms.min())) if len(inp) else None,
        "last": format_ts(int(b.ts_ms.max())) if len(inp) else None,
        "window_s": result.window_s,
        "grace_s": result.grace_s,
        "windows": result.windows,
        "late": result.late,
        "anomalies": len(result.anomalies),
        "episodes": sum(starts.values()),
        "episodes_by_detector": dict(sorted(starts.items())),
        "score_max": round(float(result.scores.max()), 6) if len(inp) else 0.0,
        "rows_scored_above_0_5": int((result.scores >= 0.5).sum()),
        "ignored_columns": list(inp.ignored),
        "elapsed_s": round(result.elapsed_s, 3),
    }


def write_scores(path: str | Path, inp: ReplayInput, result: ReplayResult) -> None:
    """CSV ``row,timestamp,sensor_id,value,score``: one line per input row, in input order.

    ``row`` counts the data rows from 0; ``timestamp`` is RFC 3339 UTC; ``value`` the value
    the detectors watch.
    """
    b = inp.batch
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(("row", "timestamp", "sensor_id", "value", "score"))
        ts = b.ts_ms.tolist()
        w.writerows(
            (i, format_ts(t), s, repr(v), f"{sc:.6f}")
            for i, (t, s, v, sc) in enumerate(zip(ts, b.sensor_id.tolist(),
                                                  inp.watched.tolist(),
                                                  result.scores.tolist(), strict=True))
        )


def write_anomalies(path: str | Path, anomalies: Sequence[Anomaly]) -> None:
    """The anomaly events as JSON lines (``Anomaly.to_dict``), in detection order."""
    with open(path, "wb") as fh:
        for a in anomalies:
            fh.write(orjson.dumps(a.to_dict()) + b"\n")
