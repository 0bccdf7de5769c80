"""Threshold detection over a batch: numpy finds breaches, state turns them into episodes.

The walking-skeleton detector: static thresholds per kind from one TOML file. A sensor's
*breach episode* starts with its first reading past a threshold and ends with its first
reading back inside them all. Detection emits an anomaly when an episode starts, when its
severity rises, and when it ends — not one per reading — so a stuck river gauge does not
flood the anomalies topic.

State in, state out: ``detect_breaches`` takes the open episodes of a bucket's sensors and
returns the new ones; the caller owns storage (a Faust table in the worker, a dict in tests).
Only sensors in breach, or whose breach ended within the last hour, have state, so state is
small and changes rarely.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from cityagent.batch import ReadingBatch
from cityagent.errors import ConfigError
from cityagent.readings import VALUE_FIELDS

__all__ = (
    "SEVERITIES",
    "ThresholdRule",
    "Thresholds",
    "Anomaly",
    "detect_breaches",
    "open_episode_count",
    "CLOSED_RETENTION_MS",
    "episode_id",
)

#: Warning colours, lowest first (蓝 黄 橙 红).
SEVERITIES: tuple[str, ...] = ("blue", "yellow", "orange", "red")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}

#: How long (event time) a sensor remembers that its last episode ended, to ignore replays.
CLOSED_RETENTION_MS = 3_600_000


@dataclass(frozen=True)
class ThresholdRule:
    """A value of one kind of sensor must stay at or below ``above`` / at or above ``below``."""

    kind: str
    field: str
    severity: str
    above: float | None = None
    below: float | None = None

    @property
    def limit(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]

    @property
    def direction(self) -> str:
        return "above" if self.above is not None else "below"


@dataclass(frozen=True)
class Thresholds:
    """The rule set, loaded once at startup from TOML and validated."""

    rules: tuple[ThresholdRule, ...]

    @classmethod
    def load(cls, path: Path | None = None) -> Thresholds:
        """Read rules from ``path`` (default: the packaged file); ConfigError names what is wrong."""
        where = str(path) if path else "cityagent/data/thresholds.toml"
        try:
            text = (
                path.read_text("utf-8")
                if path
                else resources.files("cityagent.data").joinpath("thresholds.toml").read_text("utf-8")
            )
            doc = tomllib.loads(text)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read thresholds from {where}: {exc}") from None
        rules = []
        for i, raw in enumerate(doc.get("rule", [])):
            rules.append(_rule_from(raw, f"{where}: rule #{i + 1}"))
        if not rules:
            raise ConfigError(f"{where} defines no [[rule]]")
        return cls(tuple(rules))


def _rule_from(raw: Mapping[str, Any], where: str) -> ThresholdRule:
    kind, field, severity = raw.get("kind"), raw.get("field"), raw.get("severity")
    if kind not in VALUE_FIELDS:
        raise ConfigError(f"{where}: kind must be one of {list(VALUE_FIELDS)}; got {kind!r}")
    if field not in VALUE_FIELDS[kind]:
        raise ConfigError(f"{where}: field must be one of {list(VALUE_FIELDS[kind])}; got {field!r}")
    if severity not in _RANK:
        raise ConfigError(f"{where}: severity must be one of {list(SEVERITIES)}; got {severity!r}")
    above, below = raw.get("above"), raw.get("below")
    if (above is None) == (below is None):
        raise ConfigError(f"{where}: give exactly one of 'above' or 'below'")
    limit = above if above is not None else below
    if isinstance(limit, bool) or not isinstance(limit, int | float):
        raise ConfigError(f"{where}: the limit must be a number; got {limit!r}")
    unknown = set(raw) - {"kind", "field", "severity", "above", "below"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    return ThresholdRule(
        kind, field, severity,
        above=None if above is None else float(above),
        below=None if below is None else float(below),
    )


@dataclass(frozen=True)
class Anomaly:
    """A change in a sensor's breach episode: ``phase`` is start, escalate or end."""

    anomaly_id: str  # the episode's id: the same for its start, escalations and end
    phase: str
    sensor_id: str
    kind: str
    detector: str
    field: str
    direction: str  # "above" or "below" the threshold
    threshold: float
    observed: float  # the value of the reading that caused this event
    peak: float  # the worst value seen in the episode so far
    severity: str  # the highest severity reached in the episode so far
    since_ms: int  # event time of the episode's first breaching reading
    ts_ms: int  # event time of the reading that caused this event
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


def episode_id(sensor_id: str, since_ms: int) -> str:
    """A stable id for a breach episode, so re-processing it never makes a second alert."""
    return hashlib.blake2b(f"{sensor_id}|{since_ms}".encode(), digest_size=8).hexdigest()


def detect_breaches(
    batch: ReadingBatch,
    episodes: Mapping[str, Mapping[str, Any]],
    thresholds: Thresholds,
    now_ms: int,
) -> tuple[Mapping[str, dict[str, Any]], list[Anomaly]]:
    """Advance the breach episodes of a batch's sensors; return (new state, anomalies).

    ``episodes`` maps sensor id → its open episode, or → ``{"closed": ts_ms}`` for an episode
    that ended at event time ``ts_ms`` (JSON-serialisable). The closed marker makes detection
    idempotent: Kafka delivers at least once, and a consumer group redelivers recent
    messages after a rebalance, so a reading at or before the end of the sensor's last episode
    is a replay and must not open a new one. Markers older than ``CLOSED_RETENTION_MS`` of
    event time are dropped.

    The same mapping object is returned when nothing changed, so callers can skip writing
    state (compare with ``is``).
    """
    severity, rule_index = _breaches(batch, thresholds)
    breached = severity >= 0
    if not breached.any() and not episodes:
        return episodes, []
    # Rows that can change state: breaches, and any reading of a sensor with state (an open
    # episode it may end, or a closed one it may replay).
    watched = np.union1d(batch.sensor_id[breached], np.array(list(episodes), dtype=str))
    candidates = np.flatnonzero(np.isin(batch.sensor_id, watched))
    if candidates.size == 0:
        return episodes, []
    # Rows in event-time order, so an episode starts at its earliest breaching reading.
    candidates = candidates[np.argsort(batch.ts_ms[candidates], kind="stable")]
    state = {k: dict(v) for k, v in episodes.items()}
    changed = _prune_closed(state, int(batch.ts_ms.max()) - CLOSED_RETENTION_MS)
    anomalies: list[Anomaly] = []
    for row in candidates.tolist():
        sensor = str(batch.sensor_id[row])
        ts = int(batch.ts_ms[row])
        episode = state.get(sensor)
        if episode is not None and "closed" in episode:
            if ts <= episode["closed"]:
                continue  # a replay or a late reading of an episode already closed
            episode = None
        if breached[row]:
            rule = thresholds.rules[int(rule_index[row])]
            value = float(batch.values[rule.field][row])
            if episode is None:
                episode = state[sensor] = _open_episode(sensor, rule, value, ts)
                anomalies.append(_anomaly(batch, row, episode, "start", value, now_ms))
                changed = True
            elif ts >= episode["last_ts"]:
                changed |= ts > episode["last_ts"]
                episode["last_ts"] = ts
                if _RANK[rule.severity] > _RANK[episode["severity"]]:
                    episode.update(severity=rule.severity, field=rule.field,
                                   direction=rule.direction, threshold=rule.limit, peak=value)
                    anomalies.append(_anomaly(batch, row, episode, "escalate", value, now_ms))
                    changed = True
                elif rule.field == episode["field"] and _worse(value, episode):
                    episode["peak"] = value
                    changed = True
        elif episode is not None and ts > episode["last_ts"]:
            state[sensor] = {"closed": ts}
            value = float(batch.values[episode["field"]][row])
            anomalies.append(_anomaly(batch, row, episode, "end", value, now_ms))
            changed = True
    return (state if changed else episodes), anomalies


def open_episode_count(episodes: Mapping[str, Mapping[str, Any]]) -> int:
    """How many sensors of this state are in breach now (closed markers excluded)."""
    return sum("closed" not in e for e in episodes.values())


def _prune_closed(state: dict[str, dict[str, Any]], older_than_ms: int) -> bool:
    stale = [k for k, v in state.items() if "closed" in v and v["closed"] < older_than_ms]
    for key in stale:
        del state[key]
    return bool(stale)


def _breaches(batch: ReadingBatch, thresholds: Thresholds) -> tuple[np.ndarray, np.ndarray]:
    """Per row: rank of the highest breached severity (-1: none) and the rule that set it."""
    n = len(batch)
    severity = np.full(n, -1, dtype=np.int8)
    rule_index = np.full(n, -1, dtype=np.int16)
    kind_masks: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore"):  # NaN (a value of another kind) compares False
        for i, rule in enumerate(thresholds.rules):
            mask = kind_masks.get(rule.kind)
            if mask is None:
                mask = kind_masks[rule.kind] = batch.kind == rule.kind
            column = batch.values[rule.field]
            past = column > rule.above if rule.above is not None else column < rule.below
            rank = _RANK[rule.severity]
            hit = mask & past & (severity < rank)
            severity[hit] = rank
            rule_index[hit] = i
    return severity, rule_index


def _open_episode(sensor: str, rule: ThresholdRule, value: float, ts: int) -> dict[str, Any]:
    return {
        "id": episode_id(sensor, ts),
        "since": ts,
        "last_ts": ts,
        "severity": rule.severity,
        "field": rule.field,
        "direction": rule.direction,
        "threshold": rule.limit,
        "peak": value,
    }


def _worse(value: float, episode: Mapping[str, Any]) -> bool:
    return value > episode["peak"] if episode["direction"] == "above" else value < episode["peak"]


def _anomaly(
    batch: ReadingBatch, row: int, episode: Mapping[str, Any], phase: str, value: float, now_ms: int
) -> Anomaly:
    district = int(batch.district[row])
    return Anomaly(
        anomaly_id=episode["id"],
        phase=phase,
        sensor_id=str(batch.sensor_id[row]),
        kind=str(batch.kind[row]),
        detector="threshold",
        field=episode["field"],
        direction=episode["direction"],
        threshold=episode["threshold"],
        observed=value,
        peak=episode["peak"],
        severity=episode["severity"],
        since_ms=episode["since"],
        ts_ms=int(batch.ts_ms[row]),
        detected_at_ms=now_ms,
        lon=float(batch.lon[row]),
        lat=float(batch.lat[row]),
        district_code=district,
        city_code=district // 100 * 100,
    )
