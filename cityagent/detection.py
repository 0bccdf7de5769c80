"""Windowed anomaly detection: readings → event-time windows → five detectors → anomalies.

``DetectionEngine.process(state, batch, now_ms)`` folds a batch into its sensors' tumbling
windows (``cityagent.windows``); every window that closes is judged by the detectors of
``cityagent.detectors`` — domain levels, deviation from the sensor's baseline, sudden change
(CUSUM), spike, flatline — and every sensor of the state is checked for silence. Verdicts
become *episodes* per sensor and detector; an anomaly event is emitted when an episode
starts, escalates or ends, not once per window, so a stuck river gauge does not flood the
anomalies topic. ``advance(state, watermark, now_ms)`` does the same without readings: the
worker's timer calls it so that windows close and silence is found when a bucket is idle.

State in, state out: a ``BucketState`` (numpy columns) that the caller owns — a Faust table
checkpoint in the worker, an object in the replay tool, eval and tests. Processing the same
readings from the same state gives the same anomalies with the same ids (replay-safe).

Once an hour of the bucket's event time, after a step, sensors not heard from for the
settings' ``forget_after_s`` (30 days) are forgotten (``BucketState.forget``): the state
does not grow for ever as sensor ids churn. Nothing is emitted for them; one that reports
again is a new sensor.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from cityagent.batch import ReadingBatch
from cityagent.detectors.config import (
    DETECTORS,
    GENERIC,
    KIND_CODES,
    DetectionConfig,
)
from cityagent.detectors.episodes import (
    E_DETECTOR,
    E_END,
    E_EXPECTED,
    E_FIELD,
    E_OBSERVED,
    E_PEAK,
    E_PHASE,
    E_REASON,
    E_ROW,
    E_SCORE,
    E_SEVERITY,
    E_SINCE,
    E_START,
    PHASES,
    Events,
)
from cityagent.detectors.features import scale_of, tod_slot
from cityagent.detectors.levels import reading_level_score
from cityagent.detectors.params import param_arrays, param_matrix
from cityagent.detectors.registry_profiles import SensorProfiles
from cityagent.detectors.step import Scratch, step_batch
from cityagent.detectors.step import watched_values as _watched_kernel
from cityagent.detectors.verdict import FIELDS, REASONS, SEVERITIES, score_of
from cityagent.errors import InvalidAnomaly
from cityagent.readings import ALL_VALUE_FIELDS
from cityagent.state import NO_TS, BucketState

__all__ = ("Anomaly", "DetectionEngine", "DetectionResult", "ReadingScores", "SEVERITIES",
           "anomaly_id")

_KIND_NAMES = {code: kind for kind, code in KIND_CODES.items()}
_NO_VALUES = np.zeros(0)
#: Kinds whose single readings have a place on the domain ladder (``reading_scores``).
_LEVEL_KINDS = (KIND_CODES["water_level"], KIND_CODES["pipe_pressure"])
_NO_ROWS = np.zeros(0, dtype=np.int64)
_NO_LIMIT = int(np.iinfo(np.int64).max)
#: How often, in a bucket's event time, sensors to forget are looked for: a scan of one
#: column, and a copy of the state only when one is found, instead of a cost per batch.
FORGET_CHECK_MS = 3_600_000


@dataclass(frozen=True)
class Anomaly:
    """A change in one sensor's episode with one detector: ``phase`` start, escalate or end."""

    anomaly_id: str  # the episode's id: the same for its start, escalations and end
    phase: str
    sensor_id: str
    kind: str
    detector: str  # level, deviation, change, spike, flatline, silence
    reason: str  # e.g. water.warning, pressure.low, deviation.high, fault.flatline
    score: float  # in [0, 1]; 0.5 is the detector's threshold
    peak_score: float  # the highest score of the episode so far
    severity: str  # blue, yellow, orange, red: the highest of the episode so far
    field: str  # what ``observed`` measures: level_m, traffic_index, value, quiet_s ...
    observed: float
    expected: float  # the baseline, or the level that was passed
    window_start_ms: int  # the event-time window judged
    window_end_ms: int
    since_ms: int  # event time the episode began
    ts_ms: int  # event time of detection (the bucket's watermark)
    detected_at_ms: int  # wall-clock time of detection
    lon: float
    lat: float
    district_code: int
    city_code: int

    def to_dict(self) -> dict[str, Any]:
        # Every field is a scalar: a flat copy, not asdict's deep one (several times slower).
        return {name: getattr(self, name) for name in _ANOMALY_FIELDS}

    @classmethod
    def from_dict(cls, doc: Any) -> Anomaly:
        """An anomaly from its JSON document; InvalidAnomaly names the first wrong field.

        Anything may write to the anomalies topic (another detection system, by design), and
        a wrong type would otherwise fail deep in the alerting agent (a text id that is a
        number, a severity it does not know) or in the events it writes. Fields it does not
        know are ignored."""
        if not isinstance(doc, Mapping):
            raise InvalidAnomaly(f"anomaly: expected an object; got {type(doc).__name__}")
        values: dict[str, Any] = {}
        for name, check in _ANOMALY_FIELDS.items():
            if name not in doc:
                raise InvalidAnomaly(f"anomaly: {name!r} is missing")
            values[name] = check(name, doc[name])
        return cls(**values)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 200:
        raise InvalidAnomaly(f"anomaly: {name!r} must be text of at most 200 characters; "
                             f"got {value!r:.80}")
    return value


def _id(name: str, value: Any) -> str:
    if not _text(name, value).strip():
        raise InvalidAnomaly(f"anomaly: {name!r} must not be empty")
    return value


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(name: str, value: Any) -> str:
        if value not in choices or not isinstance(value, str):
            raise InvalidAnomaly(f"anomaly: {name!r} must be one of {list(choices)}; "
                                 f"got {value!r:.80}")
        return value
    return check


def _int64(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise InvalidAnomaly(f"anomaly: {name!r} must be a whole number (64-bit); "
                             f"got {value!r:.80}")
    return value


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidAnomaly(f"anomaly: {name!r} must be a finite number; got {value!r:.80}")
    return float(value)


def _unit(name: str, value: Any) -> float:
    if not 0.0 <= _number(name, value) <= 1.0:
        raise InvalidAnomaly(f"anomaly: {name!r} must be a number in [0, 1]; got {value!r}")
    return float(value)


#: How each field of an anomaly document is checked (Anomaly.from_dict), in field order.
_ANOMALY_FIELDS = {
    "anomaly_id": _id, "phase": _one_of(PHASES), "sensor_id": _id, "kind": _id,
    "detector": _id, "reason": _id, "score": _unit, "peak_score": _unit,
    "severity": _one_of(SEVERITIES), "field": _text, "observed": _number, "expected": _number,
    "window_start_ms": _int64, "window_end_ms": _int64, "since_ms": _int64, "ts_ms": _int64,
    "detected_at_ms": _int64, "lon": _number, "lat": _number, "district_code": _int64,
    "city_code": _int64,
}


def anomaly_id(sensor_id: str, detector: str, since_ms: int) -> str:
    """A stable id for an episode, so re-processing it never makes a second alert."""
    return hashlib.blake2b(f"{sensor_id}|{detector}|{since_ms}".encode(), digest_size=8).hexdigest()


class ReadingScores(NamedTuple):
    """Per reading: its score against the state before it, and what it was judged by."""

    score: np.ndarray
    expected: np.ndarray
    scale: np.ndarray
    floor: np.ndarray


@dataclass
class DetectionResult:
    anomalies: list[Anomaly] = field(default_factory=list)
    late: int = 0  # readings that arrived after their window had closed
    windows: int = 0  # windows closed and judged
    #: Readings dropped because their kind is not their sensor's (the kind it first reported),
    #: and per such sensor: (sensor id, its kind, the kind the reading claimed).
    wrong_kind: int = 0
    wrong_kind_sensors: tuple[tuple[str, str, str], ...] = ()
    #: Sensors forgotten after this step: not heard from for ``forget_after_s``, their state
    #: rows removed (no anomaly is emitted for them; their open episodes end unannounced).
    forgotten: list[str] = field(default_factory=list)


@dataclass(eq=False)
class DetectionEngine:
    """The detection step with its fixed inputs (settings, per-sensor profiles), built once."""

    config: DetectionConfig
    profiles: SensorProfiles = field(default_factory=SensorProfiles)

    def new_state(self) -> BucketState:
        return BucketState(panes=self.config.windows.hopping_panes)

    def warm_up(self) -> float:
        """Load (or, on a machine's first run, compile) the kernels; return the seconds taken.

        A worker calls this before it consumes, so its first batch is not the one that waits.
        """
        started = time.perf_counter()
        state = self.new_state()
        size = self.config.windows.size_ms
        t0 = 1_767_225_600_000 // size * size
        ids = np.array([f"warm-up-{kind}" for kind in KIND_CODES])
        values = {name: np.full(len(ids), 1.0) for name in ALL_VALUE_FIELDS}
        for step in range(3):
            batch = ReadingBatch(ids, np.array(list(KIND_CODES)), np.full(len(ids), t0 + step * size),
                                 np.full(len(ids), 117.0), np.full(len(ids), 36.6),
                                 np.full(len(ids), 370102), values)
            self.process(state, batch, 0)
        self.advance(state, t0 + 100 * size, 0)
        return time.perf_counter() - started

    def params(self, state: BucketState) -> dict[str, np.ndarray]:
        """Each sensor's parameters by name (views of ``param_matrix``)."""
        return self._params(state)[1]

    def param_matrix(self, state: BucketState) -> np.ndarray:
        """Each sensor's parameters, a row per sensor (``cityagent.detectors.params``)."""
        return self._params(state)[0]

    def _params(self, state: BucketState) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        cached = state.params_cache
        if cached is not None and cached[0] is self and cached[1] == (len(state), state.layout):
            return cached[2]  # type: ignore[return-value]
        matrix = param_matrix(self.config, self.profiles, state.ids, state.cols["kind"])
        state.params_cache = (self, (len(state), state.layout), (matrix, param_arrays(matrix)))
        return matrix, state.params_cache[2][1]  # type: ignore[index]

    def process(self, state: BucketState, batch: ReadingBatch, now_ms: int, *,
                watermark_limit_ms: int | None = None) -> DetectionResult:
        """Fold a batch into ``state``; return the anomalies and counts it caused.

        ``watermark_limit_ms``: the bucket's event time moves to its newest reading, but not
        past this (a live worker's clock; none when replaying history)."""
        if len(batch) == 0:
            return DetectionResult()
        rows, new = state.rows_of(batch.sensor_id)
        c = state.cols
        kinds = _kind_codes(batch)
        if new:  # a new sensor's first reading in the batch decides its kind
            unset = np.flatnonzero(c["kind"][rows] < 0)
            first_rows, first_at = np.unique(rows[unset], return_index=True)
            c["kind"][first_rows] = kinds[unset[first_at]]
        # A sensor's kind is the kind it first reported. A reading of another kind under its
        # id (two devices given one id) would be judged by the wrong detectors: a road's
        # 60 km/h read as a 60 m water level is a red flood alarm.
        wrong = c["kind"][rows] != kinds
        wrong_sensors: tuple[tuple[str, str, str], ...] = ()
        if wrong.any():
            wrong_sensors = _wrong_kinds(batch.sensor_id[wrong], c["kind"][rows[wrong]],
                                         kinds[wrong])
            right = ~wrong
            batch, rows, kinds = batch.take(right), rows[right], kinds[right]
        ts = np.asarray(batch.ts_ms, dtype=np.int64)
        result = self._step(state, rows, kinds, self._watched_columns(batch), ts,
                            np.asarray(batch.lon, dtype=np.float64),
                            np.asarray(batch.lat, dtype=np.float64),
                            np.asarray(batch.district, dtype=np.int64), np.lexsort((ts, rows)),
                            state.watermark, now_ms,
                            _NO_LIMIT if watermark_limit_ms is None else int(watermark_limit_ms))
        if wrong_sensors:
            result.wrong_kind, result.wrong_kind_sensors = int(wrong.sum()), wrong_sensors
        return result

    def advance(self, state: BucketState, watermark: int, now_ms: int) -> DetectionResult:
        """Move the bucket's event time to ``watermark`` (idle timer): close windows, find silence."""
        if state.watermark == NO_TS or watermark <= state.watermark:
            return DetectionResult()
        empty = _NO_ROWS
        return self._step(state, empty, empty, (_NO_VALUES,) * len(_KIND_NAMES), empty,
                          _NO_VALUES, _NO_VALUES, empty, empty, int(watermark), now_ms,
                          _NO_LIMIT)

    def _step(self, state: BucketState, rows: np.ndarray, kinds: np.ndarray,
              columns: tuple[np.ndarray, ...], ts: np.ndarray, lon: np.ndarray, lat: np.ndarray,
              district: np.ndarray, order: np.ndarray, watermark: int,
              now_ms: int, ceiling: int) -> DetectionResult:
        """``step_batch`` on the state: readings (none: advance to ``watermark``) → anomalies."""
        scratch = self._scratch
        scratch.fit(len(rows), len(state))
        events = self._events
        events.clear()
        # At most one transition per detector and closed window, and one of silence and one
        # of flatline per sensor.
        events.reserve(len(DETECTORS) * (len(rows) + 2 * len(state)) + 2 * len(state))
        windows = self.config.windows
        late, closed, watermark = step_batch(
            state.columns(), self.param_matrix(state), rows, kinds, columns, ts, lon, lat,
            district, order, watermark, ceiling, windows.size_ms, windows.grace_ms, state.panes,
            windows.end_after_windows, scratch.keep, scratch.x, scratch.run_rows,
            scratch.run_since, scratch.run_x, *scratch.closed, events.ints, events.floats, events.count)
        state.late_total += late
        state.watermark = int(watermark)
        result = DetectionResult(late=late, windows=closed)
        count = int(events.count[0])
        if count:
            result.anomalies = self._anomalies(state, events.ints[:count].tolist(),
                                               events.floats[:count].tolist(), now_ms)
        forget_ms = self.config.forget_after_ms
        if forget_ms and state.watermark // FORGET_CHECK_MS > state.forget_checked_ms // FORGET_CHECK_MS:
            # After the anomalies: their rows are the rows before the forgetting.
            state.forget_checked_ms = state.watermark
            result.forgotten = state.forget(state.watermark - forget_ms)
        return result

    def reading_scores(self, state: BucketState, batch: ReadingBatch,
                       spread: np.ndarray | None = None) -> ReadingScores:
        """A causal anomaly score in [0, 1] per reading, against the state *before* it.

        The deviation of each reading from its sensor's baseline (and, for water levels and
        pressure, its place on the domain ladder), without changing ``state``. 0 for sensors
        not seen or not warm yet.

        ``spread``: per reading, its sensor's mean absolute deviation of *single* readings
        from the baseline, learned by the caller (the replay tool, ``cityagent.rowscore``).
        The baseline's own scale is learned from window values, which vary far less than
        single readings when a window holds many, and would inflate every reading's score;
        NaN (or no ``spread``) falls back to it. Floors and the quantum apply either way.

        Returns ``ReadingScores(score, expected, scale, floor)``: the baseline each reading
        was compared with (NaN before its sensor's first window), the scale its score used
        (NaN where the sensor is unseen or not warm, the score then being 0), and the part
        of that scale that is not learned — the kind's floors and the sensor's quantum, the
        least change that can mean anything (NaN where the scale is).
        """
        n = len(batch)
        scores, expected_out, scale_out = np.zeros(n), np.full(n, np.nan), np.full(n, np.nan)
        floor_out = np.full(n, np.nan)
        known = np.array([state.index.get(s, -1) for s in batch.sensor_id.tolist()],
                         dtype=np.int64)
        ok = known >= 0
        if not ok.any():
            return ReadingScores(scores, expected_out, scale_out, floor_out)
        rows = known[ok]
        params = self.params(state)
        p = {k: v[rows] for k, v in params.items()}
        c = state.cols
        x = self.watched_values(batch)[ok]
        slot = tod_slot(batch.ts_ms[ok])
        tod_n = c["tod_n"][rows, slot]
        use_tod = (p["time_of_day"] > 0) & (tod_n >= 3 * p["deviation_warmup"])
        expected = np.where(use_tod, c["tod_m"][rows, slot], c["rec_m"][rows])
        d = np.where(use_tod, c["tod_d"][rows, slot], c["rec_d"][rows])
        if spread is not None:
            own = spread[ok]
            d = np.where(np.isfinite(own), own, d)
        quantum = c["quantum"][rows]
        scale = scale_of(d, expected, p, quantum)
        with np.errstate(invalid="ignore"):
            ratio = np.abs(x - expected) / scale / p["deviation_z"]
        warm = c["rec_n"][rows] >= p["deviation_warmup"]
        s = np.where(warm & np.isfinite(ratio), score_of(ratio), 0.0)
        # The domain ladder: the level detector's score of each reading as a window of its
        # own, both sides of pressure (before 2026-11-24 only the floor's: a pressure above
        # the high limit scored nothing here, though its window raised pressure.high).
        kind = c["kind"][rows]
        matrix = self.param_matrix(state)
        for i in np.flatnonzero(np.isin(kind, _LEVEL_KINDS)).tolist():
            s[i] = max(s[i], reading_level_score(int(kind[i]), float(x[i]), matrix[rows[i]]))
        scores[ok] = np.nan_to_num(s)
        expected_out[ok] = expected
        scale_out[ok] = np.where(warm & np.isfinite(expected), scale, np.nan)
        floor = np.maximum.reduce([p["scale_floor"],
                                   p["relative_floor"] * np.abs(np.nan_to_num(expected)),
                                   np.where(np.isfinite(quantum), quantum, 0.0)])
        floor_out[ok] = np.where(np.isfinite(scale_out[ok]), floor, np.nan)
        return ReadingScores(scores, expected_out, scale_out, floor_out)

    # -- judging -------------------------------------------------------------------------

    @cached_property
    def _events(self) -> Events:
        """The transitions the kernels write, one buffer reused by every batch."""
        return Events()

    def watched_values(self, batch: ReadingBatch) -> np.ndarray:
        """The value each reading's kind watches (NaN where the batch lacks it)."""
        x = np.empty(len(batch))
        _watched_kernel(_kind_codes(batch), self._watched_columns(batch), x, len(batch))
        return x

    @cached_property
    def _scratch(self) -> Scratch:
        return Scratch()

    @cached_property
    def _watched_fields(self) -> tuple[str, ...]:
        """Per kind code, the value field that kind's detectors watch (detection.toml)."""
        return tuple(self.config.kinds[_KIND_NAMES[code]].field
                     for code in range(len(_KIND_NAMES)))

    def _watched_columns(self, batch: ReadingBatch) -> tuple[np.ndarray, ...]:
        """Per kind code, the batch's column of the value that kind watches (``field`` in
        detection.toml; empty when the batch has no such column)."""
        values = batch.values
        return tuple(_NO_VALUES if values.get(f) is None
                     else np.asarray(values[f], dtype=np.float64) for f in self._watched_fields)

    def _anomalies(self, state: BucketState, ints: list[list[int]], floats: list[list[float]],
                   now_ms: int) -> list[Anomaly]:
        c = state.cols
        out = []
        for e, f in zip(ints, floats, strict=True):
            row = e[E_ROW]
            detector = DETECTORS[e[E_DETECTOR]]
            sensor = state.ids[row]
            district = int(c["district"][row])
            kind = _KIND_NAMES.get(int(c["kind"][row]), GENERIC)
            fld = FIELDS[e[E_FIELD]]
            if fld == "value":
                fld = self.config.kinds[kind].field
            out.append(Anomaly(
                anomaly_id=anomaly_id(sensor, detector, e[E_SINCE]),
                phase=PHASES[e[E_PHASE]],
                sensor_id=sensor,
                kind=kind,
                detector=detector,
                reason=REASONS[e[E_REASON]] or f"{detector}.anomaly",
                score=round(f[E_SCORE], 4),
                peak_score=round(f[E_PEAK], 4),
                severity=SEVERITIES[e[E_SEVERITY]],
                field=fld,
                observed=_finite(f[E_OBSERVED]),
                expected=_finite(f[E_EXPECTED]),
                window_start_ms=e[E_START],
                window_end_ms=e[E_END],
                since_ms=e[E_SINCE],
                ts_ms=int(state.watermark),
                detected_at_ms=int(now_ms),
                lon=_finite(c["lon"][row]),
                lat=_finite(c["lat"][row]),
                district_code=district,
                city_code=district // 100 * 100,
            ))
        return out


def _wrong_kinds(sensors: np.ndarray, theirs: np.ndarray, claimed: np.ndarray
                 ) -> tuple[tuple[str, str, str], ...]:
    """(sensor, its kind, the kind a reading claimed) per sensor, in the order of its first."""
    found: dict[str, tuple[str, str, str]] = {}
    for sensor, own, other in zip(sensors.tolist(), theirs.tolist(), claimed.tolist(),
                                  strict=True):
        found.setdefault(sensor, (sensor, _KIND_NAMES.get(own, GENERIC),
                                  _KIND_NAMES.get(other, GENERIC)))
    return tuple(found.values())


def _finite(value: Any) -> float:
    f = float(value)
    return round(f, 6) if np.isfinite(f) else 0.0


def _kind_codes(batch: ReadingBatch) -> np.ndarray:
    """Each reading's kind code (``KIND_CODES``; a kind the wire does not know is generic)."""
    if batch.codes is not None:  # decoded from the wire: the same codes, all known
        return np.asarray(batch.codes, dtype=np.int64)
    out = np.full(len(batch), KIND_CODES[GENERIC], dtype=np.int64)
    for kind, code in KIND_CODES.items():
        if kind != GENERIC:
            out[batch.kind == kind] = code
    return out
