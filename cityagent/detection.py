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
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cityagent.batch import ReadingBatch
from cityagent.detectors.baseline import learn
from cityagent.detectors.change import detect_change
from cityagent.detectors.config import (
    DETECTORS,
    GENERIC,
    KIND_CODES,
    DetectionConfig,
    SensorProfiles,
    param_arrays,
)
from cityagent.detectors.deviation import detect_deviation
from cityagent.detectors.episodes import advance_episodes
from cityagent.detectors.features import features_of, scale_of, tod_slot
from cityagent.detectors.flatline import detect_flatline
from cityagent.detectors.levels import detect_levels, traffic_index
from cityagent.detectors.silence import silent_rows
from cityagent.detectors.spike import detect_spike
from cityagent.detectors.verdict import REASONS, SEVERITIES, Verdict, score_of
from cityagent.state import NO_TS, BucketState
from cityagent.windows import ClosedWindows, add_readings, close_due

__all__ = ("Anomaly", "DetectionEngine", "DetectionResult", "SEVERITIES", "anomaly_id")

_KIND_NAMES = {code: kind for kind, code in KIND_CODES.items()}
_D = {name: i for i, name in enumerate(DETECTORS)}
_FAULT_SEVERITY = 0
_REASON_INDEX = {r: i for i, r in enumerate(REASONS)}


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
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Anomaly:
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__})


def anomaly_id(sensor_id: str, detector: str, since_ms: int) -> str:
    """A stable id for an episode, so re-processing it never makes a second alert."""
    return hashlib.blake2b(f"{sensor_id}|{detector}|{since_ms}".encode(), digest_size=8).hexdigest()


@dataclass
class DetectionResult:
    anomalies: list[Anomaly] = field(default_factory=list)
    late: int = 0  # readings that arrived after their window had closed
    windows: int = 0  # windows closed and judged


@dataclass(eq=False)
class DetectionEngine:
    """The detection step with its fixed inputs (settings, per-sensor profiles), built once."""

    config: DetectionConfig
    profiles: SensorProfiles = field(default_factory=SensorProfiles)

    def new_state(self) -> BucketState:
        return BucketState(panes=self.config.windows.hopping_panes)

    def params(self, state: BucketState) -> dict[str, np.ndarray]:
        """Each sensor's parameters (cached per state until it gains sensors)."""
        cached = state.params_cache
        if cached is not None and cached[0] is self and cached[1] == len(state):
            return cached[2]  # type: ignore[return-value]
        params = param_arrays(self.config, self.profiles, state.ids, state.cols["kind"])
        state.params_cache = (self, len(state), params)
        return params

    def process(self, state: BucketState, batch: ReadingBatch, now_ms: int) -> DetectionResult:
        """Fold a batch into ``state``; return the anomalies and counts it caused."""
        if len(batch) == 0:
            return DetectionResult()
        rows, new = state.rows_of(batch.sensor_id)
        c = state.cols
        kinds = _kind_codes(batch.kind)
        if new:
            unset = c["kind"][rows] < 0
            c["kind"][rows[unset]] = kinds[unset]
        c["lon"][rows], c["lat"][rows], c["district"][rows] = batch.lon, batch.lat, batch.district
        x = _watched_values(batch, kinds, self.config)
        late, closed = add_readings(state, rows, batch.ts_ms, x, self.config.windows)
        result = self._judge(state, closed, now_ms)
        result.late = late
        return result

    def advance(self, state: BucketState, watermark: int, now_ms: int) -> DetectionResult:
        """Move the bucket's event time to ``watermark`` (idle timer): close windows, find silence."""
        if state.watermark == NO_TS or watermark <= state.watermark:
            return DetectionResult()
        state.watermark = int(watermark)
        return self._judge(state, close_due(state, state.watermark, self.config.windows), now_ms)

    def reading_scores(self, state: BucketState, batch: ReadingBatch,
                       spread: np.ndarray | None = None,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A causal anomaly score in [0, 1] per reading, against the state *before* it.

        The deviation of each reading from its sensor's baseline (and, for water levels and
        pressure, its place on the domain ladder), without changing ``state``. 0 for sensors
        not seen or not warm yet.

        ``spread``: per reading, its sensor's mean absolute deviation of *single* readings
        from the baseline, learned by the caller (the replay tool, ``cityagent.rowscore``).
        The baseline's own scale is learned from window values, which vary far less than
        single readings when a window holds many, and would inflate every reading's score;
        NaN (or no ``spread``) falls back to it. Floors and the quantum apply either way.

        Returns ``(score, expected, scale)``: the baseline each reading was compared with
        (NaN before its sensor's first window) and the scale its score used (NaN where the
        sensor is unseen or not warm, the score then being 0).
        """
        n = len(batch)
        scores, expected_out, scale_out = np.zeros(n), np.full(n, np.nan), np.full(n, np.nan)
        known = np.array([state.index.get(s, -1) for s in batch.sensor_id.tolist()],
                         dtype=np.int64)
        ok = known >= 0
        if not ok.any():
            return scores, expected_out, scale_out
        rows = known[ok]
        params = self.params(state)
        p = {k: v[rows] for k, v in params.items()}
        c = state.cols
        x = _watched_values(batch, _kind_codes(batch.kind), self.config)[ok]
        slot = tod_slot(batch.ts_ms[ok])
        tod_n = c["tod_n"][rows, slot]
        use_tod = (p["time_of_day"] > 0) & (tod_n >= 3 * p["deviation_warmup"])
        expected = np.where(use_tod, c["tod_m"][rows, slot], c["rec_m"][rows])
        d = np.where(use_tod, c["tod_d"][rows, slot], c["rec_d"][rows])
        if spread is not None:
            own = spread[ok]
            d = np.where(np.isfinite(own), own, d)
        scale = scale_of(d, expected, p, c["quantum"][rows])
        with np.errstate(invalid="ignore"):
            ratio = np.abs(x - expected) / scale / p["deviation_z"]
        warm = c["rec_n"][rows] >= p["deviation_warmup"]
        s = np.where(warm & np.isfinite(ratio), score_of(ratio), 0.0)
        kind = c["kind"][rows]
        water = kind == KIND_CODES["water_level"]
        with np.errstate(invalid="ignore", divide="ignore"):
            s = np.where(water, np.maximum(s, np.clip(0.7 * x / p["warning_m"], 0, 1)), s)
            low = kind == KIND_CODES["pipe_pressure"]
            s = np.where(low, np.maximum(s, np.clip(0.85 * p["floor_mpa"] / x, 0, 1)), s)
        scores[ok] = np.nan_to_num(s)
        expected_out[ok] = expected
        scale_out[ok] = np.where(warm & np.isfinite(expected), scale, np.nan)
        return scores, expected_out, scale_out

    # -- judging -------------------------------------------------------------------------

    def _judge(self, state: BucketState, closed: ClosedWindows, now_ms: int) -> DetectionResult:
        result = DetectionResult(windows=len(closed))
        if len(state) == 0:
            return result
        params = self.params(state)
        for part in closed.rounds():
            self._judge_windows(state, part, params, now_ms, result.anomalies)
        self._judge_silence(state, params, now_ms, result.anomalies)
        return result

    def _judge_windows(self, state: BucketState, w: ClosedWindows, params, now_ms: int,
                       out: list[Anomaly]) -> None:
        cfg = self.config.windows
        f = features_of(state, w, params, cfg.size_ms)
        traffic = f.kind == KIND_CODES["traffic"]
        tpi = np.full(len(w), np.nan)
        if traffic.any():
            speed = w.hop_mean[traffic]
            tpi[traffic] = traffic_index(speed, f.p["free_flow_kmh"][traffic])
        verdicts = {
            "level": detect_levels(f, tpi),
            "deviation": detect_deviation(f),
            "change": detect_change(state, f),
            "spike": detect_spike(f),
            "flatline": detect_flatline(state, f),
        }
        for name, v in verdicts.items():
            self._episodes(state, w.rows, name, v, f.start_ms, f.start_ms, f.end_ms,
                           cfg.end_after_windows, now_ms, out)
        anomalous = (verdicts["level"].fire | verdicts["deviation"].fire
                     | verdicts["change"].fire)
        learn(state, f, anomalous, verdicts["flatline"].fire)

    def _judge_silence(self, state: BucketState, params, now_ms: int,
                       out: list[Anomaly]) -> None:
        silent, quiet = silent_rows(state, params, state.watermark)
        c = state.cols
        d = _D["silence"]
        was = c["ep_since"][:, d] != NO_TS
        if not (silent.any() or was.any()):
            return
        rows = np.flatnonzero(silent | was)
        fire = silent[rows]
        last = c["last_ts"][rows]
        sev = np.where(fire, _FAULT_SEVERITY, -1).astype(np.int8)
        score = np.where(fire, 0.9, 0.0)
        v = Verdict(fire, sev, score, quiet[rows] / 1000.0,
                    np.nan_to_num(params["expected_interval_s"][rows]),
                    np.full(len(rows), "fault.silence"), "quiet_s")
        self._episodes(state, rows, "silence", v, last, last,
                       np.full(len(rows), state.watermark), 1, now_ms, out)

    def _episodes(self, state: BucketState, rows: np.ndarray, detector: str, v: Verdict,
                  since_ms: np.ndarray, start_ms: np.ndarray, end_ms: np.ndarray,
                  end_after: int, now_ms: int, out: list[Anomaly]) -> None:
        """Advance one detector's episodes with its verdicts; append the anomaly events."""
        c = state.cols
        d = _D[detector]
        before = (c["ep_sev"][rows, d].copy(), c["ep_peak"][rows, d].copy(),
                  c["ep_reason"][rows, d].copy())
        tr = advance_episodes(state, rows, d, v.fire, v.severity, v.score, since_ms, end_after)
        for i in np.r_[tr.started, tr.escalated].tolist():
            c["ep_reason"][rows[i], d] = _REASON_INDEX.get(str(v.code[i]), 0)
        for phase, index in (("start", tr.started), ("escalate", tr.escalated),
                             ("end", tr.ended)):
            for i in index.tolist():
                row = int(rows[i])
                if phase == "end":
                    sev, peak, reason = (int(before[0][i]), float(before[1][i]),
                                         REASONS[int(before[2][i])])
                else:
                    sev, peak, reason = (int(c["ep_sev"][row, d]), float(c["ep_peak"][row, d]),
                                         str(v.code[i]))
                out.append(self._anomaly(state, row, detector, phase, v, i, int(tr.since[i]),
                                         int(start_ms[i]), int(end_ms[i]), now_ms,
                                         max(sev, 0), peak, reason))

    def _anomaly(self, state: BucketState, row: int, detector: str, phase: str, v: Verdict,
                 i: int, since: int, start_ms: int, end_ms: int, now_ms: int, sev_rank: int,
                 peak: float, reason: str) -> Anomaly:
        c = state.cols
        sensor = state.ids[row]
        district = int(c["district"][row])
        fld = v.field if isinstance(v.field, str) else str(v.field[i])
        kind = _KIND_NAMES.get(int(c["kind"][row]), GENERIC)
        if fld == "value":
            fld = self.config.kinds[kind].field
        return Anomaly(
            anomaly_id=anomaly_id(sensor, detector, since),
            phase=phase,
            sensor_id=sensor,
            kind=kind,
            detector=detector,
            reason=reason or f"{detector}.anomaly",
            score=round(float(v.score[i]), 4),
            peak_score=round(max(peak, float(v.score[i])), 4),
            severity=SEVERITIES[sev_rank],
            field=fld,
            observed=_finite(v.observed[i]),
            expected=_finite(v.expected[i]),
            window_start_ms=int(start_ms),
            window_end_ms=int(end_ms),
            since_ms=int(since),
            ts_ms=int(state.watermark),
            detected_at_ms=int(now_ms),
            lon=_finite(c["lon"][row]),
            lat=_finite(c["lat"][row]),
            district_code=district,
            city_code=district // 100 * 100,
        )


def _finite(value: Any) -> float:
    f = float(value)
    return round(f, 6) if np.isfinite(f) else 0.0


def _kind_codes(kinds: np.ndarray) -> np.ndarray:
    out = np.full(len(kinds), KIND_CODES[GENERIC], dtype=np.int8)
    for kind, code in KIND_CODES.items():
        if kind != GENERIC:
            out[kinds == kind] = code
    return out


def _watched_values(batch: ReadingBatch, kinds: np.ndarray, config: DetectionConfig) -> np.ndarray:
    """The value each kind's detectors watch (``field`` in detection.toml)."""
    x = np.full(len(batch), np.nan)
    for kind, code in KIND_CODES.items():
        rows = kinds == code
        if not rows.any():
            continue
        column = batch.values.get(config.kinds[kind].field)
        if column is not None:
            x[rows] = column[rows]
    return x
