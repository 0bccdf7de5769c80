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
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import orjson

from cityagent.batch import ReadingBatch
from cityagent.detection import Anomaly, DetectionEngine
from cityagent.detectors.config import GENERIC, DetectionConfig
from cityagent.detectors.registry_profiles import SensorProfiles
from cityagent.errors import CityAgentError, ConfigError, InvalidReading
from cityagent.readings import (
    ALL_VALUE_FIELDS,
    KINDS,
    VALUE_FIELDS,
    VALUE_RANGES,
    format_ts,
    parse_reading,
)
from cityagent.rowscore import RowState, SliceScorer

__all__ = (
    "InvalidReplayFile",
    "ReplayInput",
    "ReplayResult",
    "SERIES_ID",
    "read_replay_file",
    "auto_window_s",
    "repeated_times",
    "times_are_row_numbers",
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
#: ... and the replay at least this often (a file of one series replays ~20,000 rows/s).
PROGRESS_S = 5.0
#: Rows of the scores file formatted at a time.
SCORES_CHUNK = 65_536

_KIND_INDEX = {kind: i for i, kind in enumerate(REPLAY_KINDS)}
#: ``timestamps``: the header of Yahoo S5's A3 and A4 benchmark files.
_TIME_COLUMNS = ("timestamp", "ts", "timestamps")
#: Times all before this (1971-01-01 UTC) are row numbers, not clock times: Yahoo S5's A1
#: files number their hourly rows 1, 2, 3, ..., which read as epoch seconds fall in 1970.
_ROW_NUMBERS_BEFORE_MS = 31_536_000_000
_VALUE_COLUMNS = ("value", *ALL_VALUE_FIELDS)
_JSON_GENERIC_KEYS = frozenset({"sensor_id", "kind", *_TIME_COLUMNS, "value", "lon", "lat"})
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
    """The rows of a replay file, in input order, as compact columns.

    Sensors and kinds are integer codes per row (``sensor`` into ``sensor_ids``, ``kind_code``
    into ``REPLAY_KINDS``): a column of text per row (numpy pads every id to the longest,
    4 bytes a character; kind names to 13 characters) took ~100 bytes a row of a 3M-row file.
    ``batch`` makes the rows as one ``ReadingBatch`` with text columns on first use; the
    replay itself builds such a batch per slice of event time only.
    """

    path: str
    format: str  # "series-csv", "csv" or "jsonl"
    sensor_ids: tuple[str, ...]  # in order of first appearance
    sensor: np.ndarray  # int32: each row's index into sensor_ids
    kind_code: np.ndarray  # int8: each row's index into REPLAY_KINDS
    ts_ms: np.ndarray  # int64
    lon: np.ndarray | None  # float64; None when no row has a position
    lat: np.ndarray | None
    values: dict[str, np.ndarray]  # float64 per value field the file has (NaN: none)
    line: np.ndarray  # the file line of each row (1-based)
    watched: np.ndarray  # the value the detectors watch, per row
    ignored: tuple[str, ...] = ()  # columns or keys that were not used (labels, notes, ...)

    def __len__(self) -> int:
        return len(self.ts_ms)

    @property
    def sensors(self) -> int:
        return len(self.sensor_ids)

    def placed_sensors(self) -> frozenset[str]:
        """The sensors with a position on at least one row."""
        if self.lon is None or self.lat is None:
            return frozenset()
        has = np.isfinite(self.lon) & np.isfinite(self.lat)
        return frozenset(self.sensor_ids[i] for i in np.unique(self.sensor[has]).tolist())

    @cached_property
    def batch(self) -> ReadingBatch:
        """Every row as one batch (kind may be "generic"), in input order."""
        return self.rows(np.arange(len(self)))

    @cached_property
    def _ids_text(self) -> np.ndarray:
        return _text_array(self.sensor_ids)

    def rows(self, index: np.ndarray) -> ReadingBatch:
        """The rows at ``index`` as a batch."""
        n = len(index)
        return ReadingBatch(
            sensor_id=self._ids_text[self.sensor[index]] if n else np.empty(0, dtype=str),
            kind=_KIND_NAMES[self.kind_code[index]],
            ts_ms=self.ts_ms[index],
            lon=self.lon[index] if self.lon is not None else np.full(n, np.nan),
            lat=self.lat[index] if self.lat is not None else np.full(n, np.nan),
            district=np.zeros(n, dtype=np.int64),
            values={k: v[index] for k, v in self.values.items()},
        )


_KIND_NAMES = np.array(REPLAY_KINDS)


def _text_array(ids: Sequence[str]) -> np.ndarray:
    return np.array(ids, dtype=str) if len(ids) else np.empty(0, dtype=str)


class _Rows:
    """Column builder: compact arrays while reading (sensors as codes; positions and value
    fields only once a row has one), numpy views of them at the end."""

    def __init__(self, fields: Sequence[str]):
        self.codes: dict[str, int] = {}
        self.ids: list[str] = []
        self.first = array("q")  # per sensor code, its first row
        self.sensor = array("i")
        self.kind = array("b")
        self.ts = array("q")
        self.lon: array | None = None
        self.lat: array | None = None
        self.line = array("q")
        self.fields = tuple(fields)
        self.values: dict[str, array] = {}

    def add(self, line: int, sensor: str, kind: str, ts_ms: int, lon: float, lat: float,
            values: Mapping[str, float]) -> None:
        n = len(self.ts)
        code = self.codes.get(sensor)
        if code is None:
            code = self.codes[sensor] = len(self.ids)
            self.ids.append(sensor)
            self.first.append(n)
        self.sensor.append(code)
        self.kind.append(_KIND_INDEX[kind])
        self.ts.append(ts_ms)
        if self.lon is None and not (math.isnan(lon) and math.isnan(lat)):
            self.lon, self.lat = _nan_array(n), _nan_array(n)
        if self.lon is not None and self.lat is not None:
            self.lon.append(lon)
            self.lat.append(lat)
        self.line.append(line)
        columns = self.values
        for name, value in values.items():
            if name not in columns and name in self.fields and not math.isnan(value):
                columns[name] = _nan_array(n)
        for name, column in columns.items():
            column.append(values.get(name, math.nan))

    def __len__(self) -> int:
        return len(self.ts)

    def _one_kind_per_sensor(self, path: str, codes: np.ndarray, sensor: np.ndarray,
                             lines: np.ndarray) -> None:
        """InvalidReplayFile at the first row whose kind is not its sensor's first row's:
        detection judges a sensor by one kind and would drop such rows unscored."""
        if not len(sensor):
            return
        first = np.frombuffer(self.first, dtype=np.int64)
        bad = np.flatnonzero(codes != codes[first][sensor])
        if bad.size:
            i = int(bad[np.argmin(lines[bad])])
            j = int(first[sensor[i]])
            raise InvalidReplayFile(
                path, f"sensor {self.ids[sensor[i]]!r} is {REPLAY_KINDS[codes[i]]} here but "
                f"{REPLAY_KINDS[codes[j]]} on line {self.line[j]}: one sensor, one kind",
                int(self.line[i]))

    def finish(self, path: str, fmt: str, config: DetectionConfig,
               ignored: Sequence[str]) -> ReplayInput:
        # Views of the arrays built while reading (no copies): nothing appends to them now.
        n = len(self)
        codes = np.frombuffer(self.kind, dtype=np.int8) if n else np.zeros(0, dtype=np.int8)
        sensor = np.frombuffer(self.sensor, dtype=np.int32) if n else np.zeros(0, np.int32)
        lines = np.frombuffer(self.line, dtype=np.int64) if n else np.zeros(0, np.int64)
        self._one_kind_per_sensor(path, codes, sensor, lines)
        present = np.flatnonzero(np.bincount(codes, minlength=len(REPLAY_KINDS))).tolist()
        watched_fields = {config.kinds[REPLAY_KINDS[k]].field for k in present}
        values = {}
        for name in self.fields:
            col = self.values.get(name)
            if col is not None:
                values[name] = np.frombuffer(col, dtype=np.float64)
            elif name in watched_fields:
                values[name] = np.full(n, np.nan)
        if len(present) == 1 and config.kinds[REPLAY_KINDS[present[0]]].field in values:
            watched = values[config.kinds[REPLAY_KINDS[present[0]]].field]
        else:
            watched = np.full(n, np.nan)
            for k in present:
                column = values.get(config.kinds[REPLAY_KINDS[k]].field)
                if column is not None:
                    rows = codes == k
                    watched[rows] = column[rows]
        return ReplayInput(
            path, fmt, tuple(self.ids), sensor, codes,
            np.frombuffer(self.ts, dtype=np.int64) if n else np.zeros(0, dtype=np.int64),
            None if self.lon is None else np.frombuffer(self.lon, dtype=np.float64),
            None if self.lat is None else np.frombuffer(self.lat, dtype=np.float64),
            values, lines, watched, tuple(ignored))


def _nan_array(n: int) -> array:
    """``array("d")`` of ``n`` NaNs (a column that starts after ``n`` rows without it)."""
    return array("d", [math.nan]) * n


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
    records = _csv_records(path, csv.reader(text, delimiter=_separator(text)))
    first = next(records, None)
    if first is None:
        raise InvalidReplayFile(path, "the file is empty; expected a header line such as "
                                      "timestamp,value")
    head_line, _, cells = first
    header = [c.strip().lower() for c in cells]
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
        return _read_sensor_csv(path, records, header, time_col, config, progress)
    if "value" not in header:
        raise InvalidReplayFile(path, "a file without sensor_id is one series and needs a "
                                      f"value column; got {','.join(header)!r}", head_line)
    return _read_series_csv(path, records, header, time_col, config, progress)


#: Cell separators tried in turn on the header line: a comma, then a tab (TSV) and a
#: semicolon (spreadsheets set to a language that writes decimal commas).
_SEPARATORS = (",", "\t", ";")


def _separator(text: TextIO) -> str:
    """The cell separator of a CSV file: the first of ``_SEPARATORS`` that splits its header
    line (the first line with more than separators and quotes) into a time column."""
    head = text.read(65_536)
    text.seek(0)
    line = next((raw for raw in head.splitlines() if raw.strip(' \t,;"')), "")
    for sep in _SEPARATORS:
        if any(c.strip().strip('"').strip().lower() in _TIME_COLUMNS for c in line.split(sep)):
            return sep
    return ","


def _csv_records(path: Path, reader: Any) -> Iterator[tuple[int, int, list[str]]]:
    """``(first line, last line, cells)`` of each record with a non-blank cell: blank lines
    and rows of empty cells (``,,``, as spreadsheets export below their data) are skipped.
    A record the csv module cannot read is InvalidReplayFile at the line it starts on."""
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            hint = ' (a quote (") opened here and never closed?)' if "field limit" in str(
                exc) else ""
            raise InvalidReplayFile(path, f"cannot read the CSV: {exc}{hint}", start) from None
        if cells and (cells[0].strip() or any(c.strip() for c in cells)):
            yield start, reader.line_num, cells


def _width_error(width: int, cells: list[str], start: int, end: int) -> _RowError:
    spans = (f" (the row runs over lines {start}-{end}: a quote (\") left open?)"
             if end > start else "")
    return _RowError(f"expected {width} columns like the header; got {len(cells)}{spans}")


def _read_series_csv(path: Path, records: Iterator[tuple[int, int, list[str]]],
                     header: list[str], time_col: str, config: DetectionConfig,
                     progress: Progress | None) -> ReplayInput:
    ti, vi = header.index(time_col), header.index("value")
    width = len(header)
    rows = _Rows(("value",))
    for line, end, cells in records:
        try:
            if len(cells) != width:
                raise _width_error(width, cells, line, end)
            ts = _time(cells[ti], time_col)
            value = _number(cells[vi], "value")
        except _RowError as exc:
            raise InvalidReplayFile(path, str(exc), line) from None
        rows.add(line, SERIES_ID, GENERIC, ts, math.nan, math.nan, {"value": value})
        if progress and len(rows) % PROGRESS_EVERY == 0:
            progress("read", len(rows), 0)
    ignored = [c for c in header if c not in (time_col, "value")]
    return rows.finish(str(path), "series-csv", config, ignored)


def _read_sensor_csv(path: Path, records: Iterator[tuple[int, int, list[str]]],
                     header: list[str], time_col: str, config: DetectionConfig,
                     progress: Progress | None) -> ReplayInput:
    col = {name: i for i, name in enumerate(header)}
    fields = [f for f in _VALUE_COLUMNS if f in col]
    used = {"sensor_id", "kind", time_col, "lon", "lat", *fields}
    width = len(header)
    rows = _Rows(fields)
    si, ki, ti = col["sensor_id"], col.get("kind"), col[time_col]
    loni, lati = col.get("lon"), col.get("lat")
    for line, end, cells in records:
        try:
            if len(cells) != width:
                raise _width_error(width, cells, line, end)
            sensor = cells[si].strip()
            if not sensor:
                raise _RowError("sensor_id is empty")
            # An empty kind cell is a kind not given, as a missing column is: generic.
            kind = (cells[ki].strip() if ki is not None else "") or GENERIC
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
        if not len(rows) and raw.lstrip().startswith("["):
            # A .json file holding one array of rows, the commonest JSON export: its "[" alone
            # was "not a JSON object: unexpected end of data".
            raise InvalidReplayFile(path, "is a JSON array; expected JSON lines, one object "
                                          "per line without [ ] around them", line)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidReplayFile(path, f"not a JSON object: {exc}", line) from None
        if not isinstance(doc, dict):
            raise InvalidReplayFile(path, f"expected a JSON object; got {type(doc).__name__}",
                                    line)
        doc = _lower_keys(path, doc, line)
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


def _lower_keys(path: Path, doc: dict[str, Any], line: int) -> dict[str, Any]:
    """The row with its keys matched as CSV headers are: without regard to case or the
    spaces around them (a pandas export of ``Timestamp,Value`` was refused as "missing
    'timestamp'" while the same columns in a CSV were read)."""
    if all(k.islower() and k == k.strip() for k in doc):  # the common case: nothing to do
        return doc
    lowered: dict[str, Any] = {}
    for key, value in doc.items():
        name = key.strip().lower()
        if name in lowered:
            raise InvalidReplayFile(path, f"key {name!r} appears twice (keys are matched "
                                          "without regard to case)", line)
        lowered[name] = value
    return lowered


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
    lon = _json_coordinate(doc.get("lon"), "lon", 180.0)
    lat = _json_coordinate(doc.get("lat"), "lat", 90.0)
    return sensor.strip(), ts, lon, lat, value


def _json_coordinate(value: Any, name: str, limit: float) -> float:
    """A JSON row's lon/lat, checked as a CSV cell's is (lon 200 was taken)."""
    if value is None:
        return math.nan
    number = _json_number(value, name)
    if not -limit <= number <= limit:
        raise _RowError(f"{name} must lie in [{-limit:g}, {limit:g}]; got {value!r}")
    return number


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
        if "," in text and _is_float(text.replace(",", ".")):
            raise _RowError(f"{name} must be a number written with a decimal point and no "
                            f"commas; got {cell!r}") from None
        raise _RowError(f"{name} must be a number; got {cell!r}") from None
    if not math.isfinite(value):
        raise _RowError(f"{name} must be a finite number; got {cell!r}")
    return value


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
    #: Rows that came before their sensor's baseline was warm (deviation_warmup windows):
    #: scored by the domain levels only, so 0 for a generic series.
    cold: int = 0
    elapsed_s: float = 0.0


def auto_window_s(inp: ReplayInput, config: DetectionConfig | None = None) -> float:
    """The default window: detection.toml's; for generic series at least their median interval.

    Series of known kind are replayed with the window the live worker uses. A generic series
    gets ``max(window, median interval between a sensor's readings)``, so that a series
    sampled every 5 minutes has one reading per window, not mostly empty windows. Times that
    are row numbers (``times_are_row_numbers``) get their median step, however short: the
    60 s of a live window mean nothing to them, and 60 rows a window left three in four
    rows of a Yahoo S5 A1 file unscored (the baseline's 20 windows of warm-up were 1,200
    rows) and its spikes scoring 0.
    """
    config = config or DetectionConfig.load()
    base = config.windows.size_ms / 1000.0
    if len(inp) < 2 or not (inp.kind_code == _KIND_INDEX[GENERIC]).all():
        return base
    gaps = _gaps(inp)
    gaps = gaps[gaps > 0]  # a repeated time is no interval: every row twice gave 60 s
    if gaps.size == 0:
        return base
    step = float(np.median(gaps)) / 1000.0
    return step if times_are_row_numbers(inp) else max(base, step)


def _gaps(inp: ReplayInput) -> np.ndarray:
    """The intervals between each sensor's consecutive readings (ms; 0 for a repeated time)."""
    order = np.lexsort((inp.ts_ms, inp.sensor))
    sensor, ts = inp.sensor[order], inp.ts_ms[order]
    return np.diff(ts)[sensor[1:] == sensor[:-1]]


def repeated_times(inp: ReplayInput) -> int:
    """How many rows have the time of an earlier row of their sensor (all are replayed)."""
    return int((_gaps(inp) == 0).sum()) if len(inp) > 1 else 0


def times_are_row_numbers(inp: ReplayInput) -> bool:
    """Are the file's times row numbers (all in 1970), not clock times? Only for generic
    series: readings of a known kind are judged by the clock (hour of day, silence)."""
    return (len(inp) > 0 and bool((inp.kind_code == _KIND_INDEX[GENERIC]).all())
            and int(inp.ts_ms.max()) < _ROW_NUMBERS_BEFORE_MS)


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
    # The rows in time order, as indexes: each slice's batch is gathered when it is replayed,
    # so no sorted copy of every column is made.
    order = np.argsort(inp.ts_ms, kind="stable")
    ts = inp.ts_ms[order]
    watched = inp.watched[order]
    # Per-reading state rows: the sensors in sorted order of their ids, as np.unique gives.
    sensor_ids, rank = np.unique(inp._ids_text, return_inverse=True)
    sensor = rank.astype(np.int32)[inp.sensor[order]]
    rows = RowState.new(len(sensor_ids))
    score = SliceScorer(engine, state, rows, sensor_ids.tolist())
    number = {s: i for i, s in enumerate(sensor_ids.tolist())}
    size_ms, grace_ms = windows.windows.size_ms, windows.windows.grace_ms
    key = ts // size_ms * 2
    if grace_ms > 0:
        key += (ts % size_ms) >= grace_ms
    bounds = np.flatnonzero(np.r_[True, key[1:] != key[:-1], True])
    del key
    scores = np.zeros(n)
    out = result.anomalies
    next_report, reported = PROGRESS_EVERY, time.monotonic()
    for a, e in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        chunk = inp.rows(order[a:e])
        first, last = int(ts[a]), int(ts[e - 1])
        moved = engine.advance(state, first, first)  # close what is complete before the slice
        out.extend(moved.anomalies)
        result.windows += moved.windows
        _start_afresh(rows, number, moved.forgotten)
        scores[a:e] = score(chunk, sensor[a:e], watched[a:e])
        step = engine.process(state, chunk, last)
        _start_afresh(rows, number, step.forgotten)
        out.extend(step.anomalies)
        result.windows += step.windows
        result.late += step.late
        result.slices += 1
        if progress and (e >= next_report or time.monotonic() - reported >= PROGRESS_S):
            progress("replay", e, n)
            next_report = (e // PROGRESS_EVERY + 1) * PROGRESS_EVERY
            reported = time.monotonic()
    # Close the last windows. The data ending is not the sensors going quiet: silence that
    # only this final step would find is dropped.
    end = (int(ts[-1]) // size_ms + 1) * size_ms + grace_ms
    flushed = engine.advance(state, end, end)
    out.extend(a for a in flushed.anomalies
               if not (a.detector == "silence" and a.phase == "start"))
    result.windows += flushed.windows
    result.scores[order] = np.clip(np.nan_to_num(scores), 0.0, 1.0)
    result.cold = score.cold
    result.elapsed_s = time.perf_counter() - started
    return result


def _start_afresh(rows: RowState, number: dict[str, int], forgotten: list[str]) -> None:
    """The engine forgot these sensors (not heard from for ``forget_after_s``): their
    per-reading state starts afresh too, as their engine state does if they come back."""
    if forgotten:
        rows.reset(np.array([number[s] for s in forgotten], dtype=np.int64))


def replace_windows(config: DetectionConfig, window_s: float, grace_s: float) -> DetectionConfig:
    """``config`` with another window size and grace (the rest of the settings kept)."""
    return dc_replace(config, windows=dc_replace(
        config.windows, size_ms=round(window_s * 1000), grace_ms=round(grace_s * 1000)))


# -- reporting -------------------------------------------------------------------------------


def summarize(inp: ReplayInput, result: ReplayResult) -> dict[str, Any]:
    """What was replayed and found, as one JSON-ready object."""
    starts = Counter(a.detector for a in result.anomalies if a.phase == "start")
    counts = np.bincount(inp.kind_code, minlength=len(REPLAY_KINDS)).tolist()
    kinds = {kind: c for kind, c in zip(REPLAY_KINDS, counts, strict=True) if c}
    return {
        "file": inp.path,
        "format": inp.format,
        "rows": len(inp),
        "sensors": inp.sensors,
        "kinds": dict(sorted(kinds.items())),
        "first": format_ts(int(inp.ts_ms.min())) if len(inp) else None,
        "last": format_ts(int(inp.ts_ms.max())) if len(inp) else None,
        "window_s": result.window_s,
        "grace_s": result.grace_s,
        "windows": result.windows,
        "late": result.late,
        "anomalies": len(result.anomalies),
        "episodes": sum(starts.values()),
        "episodes_by_detector": dict(sorted(starts.items())),
        "score_max": round(float(result.scores.max()), 6) if len(inp) else 0.0,
        "rows_scored_above_0_5": int((result.scores >= 0.5).sum()),
        "times_are_row_numbers": times_are_row_numbers(inp),
        "rows_before_warm": result.cold,
        "repeated_times": repeated_times(inp),
        "ignored_columns": list(inp.ignored),
        "elapsed_s": round(result.elapsed_s, 3),
    }


def write_scores(path: str | Path, inp: ReplayInput, result: ReplayResult,
                 progress: Progress | None = None) -> None:
    """CSV ``row,timestamp,sensor_id,value,score``: one line per input row, in input order.

    ``row`` counts the data rows from 0; ``timestamp`` is RFC 3339 UTC; ``value`` the value
    the detectors watch. Written in chunks of rows, so that only a chunk is ever held as
    Python objects. ``progress("write", rows written, rows)`` at least every ``PROGRESS_S``:
    a file of millions of rows takes seconds (~2 µs a row), which had passed without a word.
    """
    ids = inp.sensor_ids
    n = len(inp)
    reported = time.monotonic()
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(("row", "timestamp", "sensor_id", "value", "score"))
        for a in range(0, n, SCORES_CHUNK):
            e = min(a + SCORES_CHUNK, n)
            w.writerows(
                (i, t, ids[s], repr(v), f"{sc:.6f}")
                for i, t, s, v, sc in zip(range(a, e), _rfc3339(inp.ts_ms[a:e]),
                                          inp.sensor[a:e].tolist(), inp.watched[a:e].tolist(),
                                          result.scores[a:e].tolist(), strict=True)
            )
            if progress and time.monotonic() - reported >= PROGRESS_S:
                progress("write", e, n)
                reported = time.monotonic()


def _rfc3339(ts_ms: np.ndarray) -> list[str]:
    """``format_ts`` of each time (epoch ms, 1970-2100), in one numpy call."""
    text = np.datetime_as_string(ts_ms.astype("datetime64[ms]"), unit="ms")
    return [t + "Z" for t in text.tolist()]


def write_anomalies(path: str | Path, anomalies: Sequence[Anomaly],
                    placed: frozenset[str] | None = None) -> None:
    """The anomaly events as JSON lines (``Anomaly.to_dict``), in detection order.

    ``placed``: the sensors the file gave a position (``ReplayInput.placed_sensors``); the
    others' events get ``lon``/``lat`` null, not 0.0, a real place in the Gulf of Guinea.
    None: every event keeps its position.
    """
    with open(path, "wb") as fh:
        for a in anomalies:
            doc = a.to_dict()
            if placed is not None and a.sensor_id not in placed:
                doc["lon"] = doc["lat"] = None
            fh.write(orjson.dumps(doc) + b"\n")
