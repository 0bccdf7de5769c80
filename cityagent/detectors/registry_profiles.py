"""The sensor registry's per-sensor values: ``SensorProfiles``, and the checks of its rows.

What differs from sensor to sensor — a gauge's 警戒/保证 levels, a road's free-flow speed, a
pipe's pressure limits, a sensor's report interval — is read from the registry file the
simulator writes (JSON or CSV, the same columns an operator's asset list would have) and
overrides the kind's settings of ``DetectionConfig`` for that sensor. A row is checked as it
is read, with the kind settings it leaves in place: its levels must rise, and be of one kind.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cityagent.config_files import read_registry_rows
from cityagent.detectors.config import KIND_CODES, DetectionConfig, KindConfig
from cityagent.errors import ConfigError

__all__ = ("SensorProfiles", "PROFILE_COLUMNS")

#: Registry columns that override a kind's defaults, and the KindConfig field each sets.
PROFILE_COLUMNS: dict[str, str] = {
    "expected_interval_s": "expected_interval_s",
    "free_flow_kmh": "free_flow_kmh",
    "warning_level_m": "warning_m",
    "guaranteed_level_m": "guaranteed_m",
    "record_level_m": "record_m",
    "min_pressure_mpa": "floor_mpa",
    "max_pressure_mpa": "high_mpa",
}


#: Registry columns (KindConfig fields) that must rise in this order where a row gives both:
#: a 保证 below 警戒 made every level past the lower one red (record) from the first rung.
_PROFILE_ORDER = (("warning_m", "guaranteed_m"), ("guaranteed_m", "record_m"),
                  ("warning_m", "record_m"), ("floor_mpa", "high_mpa"))
_COLUMN_OF = {name: column for column, name in PROFILE_COLUMNS.items()}


def _check_order(values: Mapping[str, float], where: str) -> None:
    """A ConfigError when a registry row's levels are not in rising order."""
    for low, high in _PROFILE_ORDER:
        if low in values and high in values and not values[low] < values[high]:
            raise ConfigError(f"{where}: {_COLUMN_OF[high]} ({values[high]:g}) must be above "
                              f"{_COLUMN_OF[low]} ({values[low]:g})")


#: The kind whose detectors read each registry column (expected_interval_s: any kind).
_COLUMN_KIND = {"free_flow_kmh": "traffic", "warning_level_m": "water_level",
                "guaranteed_level_m": "water_level", "record_level_m": "water_level",
                "min_pressure_mpa": "pipe_pressure", "max_pressure_mpa": "pipe_pressure"}


def _row_kind(row: Mapping[str, Any], values: Mapping[str, float], where: str) -> str | None:
    """The kind a registry row's level columns are for; a ConfigError when they are of two
    kinds, or of another kind than the row's ``kind`` (its levels would be taken as given by
    a sensor whose detectors never read them)."""
    kinds: dict[str, str] = {}  # kind → the first of its columns the row gives
    for name in values:
        column = _COLUMN_OF[name]
        if column in _COLUMN_KIND:
            kinds.setdefault(_COLUMN_KIND[column], column)
    if len(kinds) > 1:
        (k1, c1), (k2, c2) = sorted(kinds.items())[:2]
        raise ConfigError(f"{where}: {c1} is a {k1} column and {c2} a {k2} one; a sensor is "
                          f"of one kind")
    stated = row.get("kind")
    if kinds and isinstance(stated, str) and stated in KIND_CODES and stated not in kinds:
        ((kind, column),) = kinds.items()
        raise ConfigError(f"{where}: kind is {stated!r}, but {column} is a {kind} column")
    return next(iter(kinds), None)


def _check_against_kind(values: Mapping[str, float], kind: KindConfig, where: str) -> None:
    """A ConfigError when a row's levels and the kind's defaults it leaves in place are not in
    rising order: a row giving only 警戒, above the default 保证, made an inverted pair (the
    gauge went orange, 保证, before it went yellow, 警戒)."""
    merged = {name: float(getattr(kind, name)) for name in _LEVELS}
    merged.update((name, value) for name, value in values.items() if name in _LEVELS)
    if math.isnan(merged["record_m"]):  # as param_matrix derives it: above 保证 when 警戒 is
        merged["record_m"] = 2 * merged["guaranteed_m"] - merged["warning_m"]
    for low, high in _LEVEL_ORDER:
        a, b = merged[low], merged[high]
        given = low in values or high in values
        if given and math.isfinite(a) and math.isfinite(b) and not a < b:
            raise ConfigError(f"{where}: {_named(high, b, values, kind.kind)} must be above "
                              f"{_named(low, a, values, kind.kind)}")


def _named(name: str, value: float, values: Mapping[str, float], kind: str) -> str:
    """A level in an error: the row's column, or the kind's setting the row left in place."""
    if name in values:
        return f"{_COLUMN_OF[name]} ({value:g})"
    column = _COLUMN_OF.get(name)
    if column is None:
        return f"[kind.{kind}] {name} ({value:g}; no registry column sets it)"
    return f"[kind.{kind}] {name} ({value:g}: the row gives no {column})"


#: The levels a registry row may leave to its kind's settings, and their order.
_LEVELS = ("warning_m", "guaranteed_m", "record_m", "critical_mpa", "floor_mpa", "high_mpa")
_LEVEL_ORDER = (*_PROFILE_ORDER, ("critical_mpa", "floor_mpa"))


@dataclass(frozen=True)
class SensorProfiles:
    """Per-sensor overrides: sensor id → {KindConfig field: value}."""

    by_sensor: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.by_sensor)

    def get(self, sensor_id: str) -> Mapping[str, float]:
        return self.by_sensor.get(sensor_id, {})

    @classmethod
    def load(cls, path: Path, config: DetectionConfig | None = None) -> SensorProfiles:
        """Read a registry (``.csv``, else JSON ``{"sensors": [...]}`` or a list of objects).

        Only the columns of :data:`PROFILE_COLUMNS` are used; empty cells are ignored. Each
        row's levels, with the ``config`` kind settings it leaves in place (default: the
        packaged settings), must rise: 警戒 < 保证 < record, critical < floor < high.
        """
        rows = read_registry_rows(path)
        return cls.from_rows(rows, str(path), config)

    @classmethod
    def from_rows(cls, rows: list[Mapping[str, Any]], where: str = "registry",
                  config: DetectionConfig | None = None) -> SensorProfiles:
        config = config or DetectionConfig.load()
        out: dict[str, dict[str, float]] = {}
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping) or not row.get("sensor_id"):
                raise ConfigError(f"{where}: sensor #{i + 1} has no sensor_id")
            values = {}
            for column, name in PROFILE_COLUMNS.items():
                raw = row.get(column)
                if raw is None or raw == "":
                    continue
                try:
                    number = float(raw)
                except (TypeError, ValueError):
                    raise ConfigError(
                        f"{where}: sensor {row['sensor_id']!r}: {column} must be a number; "
                        f"got {raw!r}") from None
                if not math.isfinite(number) or number < 0:
                    raise ConfigError(
                        f"{where}: sensor {row['sensor_id']!r}: {column} must be 0 or more; "
                        f"got {raw!r}")
                values[name] = number
            at = f"{where}: sensor {row['sensor_id']!r}"
            _check_order(values, at)
            kind = _row_kind(row, values, at)
            if kind is not None:
                _check_against_kind(values, config.kinds[kind], at)
            if values:
                out[str(row["sensor_id"])] = values
        return cls(out)
