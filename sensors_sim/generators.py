"""Readings for a whole fleet, one tick at a time: normal values plus injected breaches.

Pure numpy, no I/O and no clock: the caller gives each tick's event time, so the same seed
and the same tick times always give the same readings and the same breaches.

Normal values sit well inside the thresholds of ``cityagent/data/thresholds.toml``: each
sensor has a baseline drawn once from its kind's normal range, and every reading is the
baseline plus a little Gaussian noise, clipped to that range. Breaches are injected on an
event-time schedule: every ``breach_every_s`` seconds ``breaches`` random sensors (not
already in breach) are held past their threshold for ``breach_duration_s`` seconds, then
return to normal. Each injection is recorded in :attr:`FleetSignals.injected`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cityagent.batch import ReadingBatch
from cityagent.readings import ALL_VALUE_FIELDS, VALUE_FIELDS
from sensors_sim.fleet import Sensor

__all__ = ("FleetSignals", "InjectedBreach", "NORMAL_RANGES", "BREACH_VALUES")

#: Normal value ranges per field, well inside every threshold.
NORMAL_RANGES: dict[str, tuple[float, float]] = {
    "speed_kmh": (30.0, 80.0),
    "flow_vph": (200.0, 1800.0),
    "occupancy_pct": (5.0, 40.0),
    "level_m": (1.0, 3.0),
    "pressure_mpa": (0.28, 0.45),
}
#: Noise standard deviation per field, as a fraction of its normal range's width.
_NOISE_FRACTION = 0.02

#: Values a sensor in an injected breach reports (past the thresholds: level > 5.0 m red,
#: pressure < 0.14 MPa orange, speed < 10 km/h yellow; flow and occupancy follow congestion).
BREACH_VALUES: dict[str, dict[str, float]] = {
    "traffic": {"speed_kmh": 5.0, "flow_vph": 150.0, "occupancy_pct": 85.0},
    "water_level": {"level_m": 5.5},
    "pipe_pressure": {"pressure_mpa": 0.08},
}


@dataclass(frozen=True)
class InjectedBreach:
    """One injected breach: the sensor reports breach values for ts in [start_ms, end_ms)."""

    sensor_id: str
    kind: str
    start_ms: int  # event time of its first breaching reading
    end_ms: int  # event time from which it reads normal again


class FleetSignals:
    """One reading per sensor per tick, as a :class:`ReadingBatch` tagged with districts."""

    def __init__(
        self,
        fleet: Sequence[Sensor],
        seed: int,
        *,
        breach_every_s: float = 10.0,
        breaches: int = 3,
        breach_duration_s: float = 30.0,
    ) -> None:
        if breach_every_s < 0 or breach_duration_s <= 0 or breaches < 0:
            raise ValueError(
                "breach_every_s must be >= 0, breach_duration_s > 0 and breaches >= 0; got "
                f"{breach_every_s}, {breach_duration_s}, {breaches}"
            )
        self.fleet = tuple(fleet)
        n = len(self.fleet)
        self.breach_every_ms = round(breach_every_s * 1000)
        self.breaches = breaches
        self.breach_duration_ms = max(1, round(breach_duration_s * 1000))
        #: Every breach injected so far, in order of injection.
        self.injected: list[InjectedBreach] = []

        # Separate streams: the choice of breach sensors does not depend on how many ticks
        # of noise came before it.
        self._noise_rng, self._breach_rng, baseline_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
        )
        self.sensor_id = np.array([s.sensor_id for s in self.fleet], dtype=str)
        self.kind = np.array([s.kind for s in self.fleet], dtype=str)
        self.lon = np.array([s.lon for s in self.fleet], dtype=np.float64)
        self.lat = np.array([s.lat for s in self.fleet], dtype=np.float64)
        self.district = np.array([s.district_code for s in self.fleet], dtype=np.int64)
        for column in (self.sensor_id, self.kind, self.lon, self.lat, self.district):
            column.flags.writeable = False  # shared by every tick's batch
        # Rows of each field (the sensors whose kind reports it) and their baselines.
        self._rows: dict[str, np.ndarray] = {}
        self._baseline: dict[str, np.ndarray] = {}
        for kind, names in VALUE_FIELDS.items():
            rows = np.flatnonzero(self.kind == kind)
            for name in names:
                low, high = NORMAL_RANGES[name]
                margin = (high - low) * 0.1
                self._rows[name] = rows
                self._baseline[name] = baseline_rng.uniform(low + margin, high - margin, rows.size)
        self._breach_until = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
        self._next_breach_ms: int | None = None

    def __len__(self) -> int:
        return len(self.fleet)

    def in_breach(self, ts_ms: int) -> np.ndarray:
        """Bool per sensor: is it held in breach at event time ``ts_ms``."""
        return self._breach_until > ts_ms

    def tick(self, ts_ms: int) -> ReadingBatch:
        """The readings of every sensor at event time ``ts_ms`` (call with increasing times)."""
        ts_ms = int(ts_ms)
        self._inject_due(ts_ms)
        n = len(self.fleet)
        breaching = self.in_breach(ts_ms)
        values: dict[str, np.ndarray] = {}
        for name in ALL_VALUE_FIELDS:
            column = np.full(n, np.nan)
            rows = self._rows[name]
            low, high = NORMAL_RANGES[name]
            noise = self._noise_rng.normal(0.0, (high - low) * _NOISE_FRACTION, rows.size)
            column[rows] = np.clip(self._baseline[name] + noise, low, high)
            values[name] = column
        if breaching.any():
            for kind, fields in BREACH_VALUES.items():
                hit = breaching & (self.kind == kind)
                for name, value in fields.items():
                    values[name][hit] = value
        return ReadingBatch(
            sensor_id=self.sensor_id,
            kind=self.kind,
            ts_ms=np.full(n, ts_ms, dtype=np.int64),
            lon=self.lon,
            lat=self.lat,
            district=self.district,
            values=values,
        )

    def _inject_due(self, ts_ms: int) -> None:
        if self.breaches == 0 or self.breach_every_ms == 0 or not self.fleet:
            return
        if self._next_breach_ms is None:  # the first tick starts the schedule
            self._next_breach_ms = ts_ms + self.breach_every_ms
            return
        if ts_ms < self._next_breach_ms:
            return
        # One injection per due tick; skip slots missed by a long gap between ticks.
        missed = (ts_ms - self._next_breach_ms) // self.breach_every_ms
        self._next_breach_ms += (missed + 1) * self.breach_every_ms
        free = np.flatnonzero(~self.in_breach(ts_ms))
        if free.size == 0:
            return
        chosen = np.sort(
            self._breach_rng.choice(free, size=min(self.breaches, free.size), replace=False)
        )
        end_ms = ts_ms + self.breach_duration_ms
        self._breach_until[chosen] = end_ms
        for i in chosen.tolist():
            sensor = self.fleet[i]
            self.injected.append(InjectedBreach(sensor.sensor_id, sensor.kind, ts_ms, end_ms))
