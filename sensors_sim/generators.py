"""Readings for a whole fleet, one tick at a time: modelled normal values plus injections.

Pure numpy, no I/O and no clock: the caller gives each tick's event time, so the same seed
and the same tick times always give the same readings, the same breaches and the same labels.

Normal values come from the per-kind models of :mod:`sensors_sim.models` (traffic with rush
hours, water levels with drift and tide, pipe pressure following demand); they stay inside
:data:`NORMAL_RANGES`, short of the domain levels of ``cityagent/data/detection.toml``.
Anomalies come from two sources:

* the legacy *breach schedule*: every ``breach_every_s`` seconds ``breaches`` random sensors
  (not already in breach) are held past their threshold for ``breach_duration_s`` seconds;
  each is recorded in :attr:`FleetSignals.injected`;
* a *scenario* (:mod:`sensors_sim.scenario`): storms, incidents, leaks, bursts and sensor
  faults, resolved against the fleet at the first tick, or at the first tick ``warm_up_s``
  of event time later (its offsets then count from there).

Every injection, as it starts, adds ground-truth :class:`~sensors_sim.anomalies.Label` rows to
:attr:`FleetSignals.labels`. A sensor in a dropout is left out of the tick's batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cityagent.batch import ReadingBatch, bucket_of
from cityagent.readings import ALL_VALUE_FIELDS, VALUE_RANGES
from sensors_sim.anomalies import (
    BREACH_VALUES,
    RAMP_TYPES,
    WATCHED_FIELD,
    Injection,
    Label,
    apply,
)
from sensors_sim.fleet import Sensor
from sensors_sim.models import NORMAL_RANGES, PressureModel, TrafficModel, WaterLevelModel
from sensors_sim.scenario import Scenario, resolve

__all__ = ("FleetSignals", "InjectedBreach", "NORMAL_RANGES", "BREACH_VALUES")


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
        scenario: Scenario | None = None,
        warm_up_s: float = 0.0,
    ) -> None:
        if breach_every_s < 0 or breach_duration_s <= 0 or breaches < 0 or not warm_up_s >= 0:
            raise ValueError(
                "breach_every_s must be >= 0, breach_duration_s > 0, breaches >= 0 and "
                f"warm_up_s >= 0; got {breach_every_s}, {breach_duration_s}, {breaches}, "
                f"{warm_up_s}"
            )
        self.fleet = tuple(fleet)
        n = len(self.fleet)
        self.breach_every_ms = round(breach_every_s * 1000)
        self.breaches = breaches
        self.breach_duration_ms = max(1, round(breach_duration_s * 1000))
        self.scenario = scenario
        #: Event time of normal readings before the scenario's clock starts (ms): a pipeline
        #: that meets the fleet for the first time learns each sensor's normal behaviour
        #: first, and a fault injected before it has cannot be told from normal (flatline
        #: takes a sensor stuck in its first windows for one that is always flat).
        self.warm_up_ms = round(warm_up_s * 1000)
        #: Every breach injected so far, in order of injection.
        self.injected: list[InjectedBreach] = []
        #: Ground truth: one label per sensor of every injection that has started.
        self.labels: list[Label] = []
        #: Onsets of the labels of ramp anomalies (``RAMP_TYPES``), by index in ``labels``:
        #: the event time of the first reading whose injected change reached one standard
        #: deviation of the sensor's reading noise. A ramp label missing here never did (a
        #: far neighbour of a storm); any other label's onset is its start.
        self.onset_ms: dict[int, int] = {}

        # Separate streams: the choice of breach sensors does not depend on how many ticks
        # of noise came before it, nor the models on the scenario.
        self._noise_rng, self._breach_rng, model_rng, self._scenario_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
        )
        self.sensor_id = np.array([s.sensor_id for s in self.fleet], dtype=str)
        self.kind = np.array([s.kind for s in self.fleet], dtype=str)
        self.lon = np.array([s.lon for s in self.fleet], dtype=np.float64)
        self.lat = np.array([s.lat for s in self.fleet], dtype=np.float64)
        self.district = np.array([s.district_code for s in self.fleet], dtype=np.int64)
        self.city = np.array([s.city_code for s in self.fleet], dtype=np.int64)
        #: The Kafka bucket of each sensor (computed once: hashing ids per tick is slow).
        self.bucket = np.fromiter((bucket_of(s) for s in self.sensor_id.tolist()),
                                  dtype=np.int64, count=n)
        for column in (self.sensor_id, self.kind, self.lon, self.lat, self.district):
            column.flags.writeable = False  # shared by every tick's batch
        self.rows = {k: np.flatnonzero(self.kind == k)
                     for k in ("traffic", "water_level", "pipe_pressure")}
        self.traffic = TrafficModel(self.rows["traffic"].size, model_rng)
        self.water = WaterLevelModel(self.rows["water_level"].size,
                                     self.city[self.rows["water_level"]], model_rng)
        self.pressure = PressureModel(self.rows["pipe_pressure"].size, model_rng)
        # Per-row model parameters the injections need (NaN for rows of other kinds).
        self._ctx = {name: np.full(n, np.nan)
                     for name in ("free_flow", "base", "guaranteed", "rain_peak")}
        self._ctx["free_flow"][self.rows["traffic"]] = self.traffic.free_flow
        self._ctx["base"][self.rows["water_level"]] = self.water.base
        self._ctx["guaranteed"][self.rows["water_level"]] = self.water.guaranteed
        self._ctx["rain_peak"][self.rows["water_level"]] = self.water.rain_peak()
        # One standard deviation of each sensor's reading noise, in its watched value (for a
        # traffic sensor relative to its speed: the noise multiplies it).
        self._noise = np.full(n, np.nan)
        self._noise[self.rows["traffic"]] = self.traffic.SPEED_NOISE
        self._noise[self.rows["water_level"]] = np.where(
            self.water.river, self.water.NOISE_M, self.water.DRY_NOISE_M)
        self._noise[self.rows["pipe_pressure"]] = self.pressure.NOISE_MPA
        self._injections: list[Injection] = []
        self._pending: list[Injection] = []
        self._breach_until = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
        self._next_breach_ms: int | None = None
        self._t0_ms: int | None = None
        self._first_ms: int | None = None
        #: Fleet rows of the last tick's readings, or None when every sensor reported.
        self.last_rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.fleet)

    def start_scenario(self, scenario: Scenario) -> None:
        """Inject ``scenario`` with times counted from the next tick (after a warm-up run)."""
        self.scenario = scenario
        self._t0_ms = None

    def check_scenario(self) -> None:
        """Raise ScenarioError now if the scenario does not fit this fleet (a place with no
        sensor, an unknown sensor id), rather than at the first tick, after the output was
        opened (a file sink had already emptied the file). Draws nothing from the run's RNG."""
        if self.scenario is not None:
            resolve(self.scenario, 0, np.random.default_rng(0), sensor_id=self.sensor_id,
                    kind=self.kind, city=self.city, district=self.district, lon=self.lon,
                    lat=self.lat)

    def in_breach(self, ts_ms: int) -> np.ndarray:
        """Bool per sensor: is it held in breach (by the breach schedule) at ``ts_ms``."""
        return self._breach_until > ts_ms

    def normal_values(self, ts_ms: int) -> dict[str, np.ndarray]:
        """The modelled normal values of every sensor at ``ts_ms`` (NaN for other kinds)."""
        n = len(self.fleet)
        values = {name: np.full(n, np.nan) for name in ALL_VALUE_FIELDS}
        rng = self._noise_rng
        for model, kind in ((self.traffic, "traffic"), (self.water, "water_level"),
                            (self.pressure, "pipe_pressure")):
            rows = self.rows[kind]
            if rows.size:
                for name, column in model.values(ts_ms, rng).items():
                    low, high = NORMAL_RANGES[name]
                    values[name][rows] = np.clip(column, low, high)
        return values

    def tick(self, ts_ms: int) -> ReadingBatch:
        """The readings of every sensor at event time ``ts_ms`` (call with increasing times)."""
        ts_ms = int(ts_ms)
        if self._first_ms is None:
            self._first_ms = ts_ms
        if self._t0_ms is None and ts_ms >= self._first_ms + self.warm_up_ms:
            # The scenario's offsets count from here: the first tick after the warm-up.
            self._t0_ms = ts_ms
            if self.scenario is not None:
                self._pending = resolve(
                    self.scenario, ts_ms, self._scenario_rng, sensor_id=self.sensor_id,
                    kind=self.kind, city=self.city, district=self.district, lon=self.lon,
                    lat=self.lat,
                )
        self._inject_due(ts_ms)
        n = len(self.fleet)
        values = self.normal_values(ts_ms)
        breaching = self.in_breach(ts_ms)
        if breaching.any():
            for kind, fields in BREACH_VALUES.items():
                hit = breaching & (self.kind == kind)
                for name, value in fields.items():
                    values[name][hit] = value
        dropped = np.zeros(n, dtype=bool)
        if self._pending:
            started = [inj for inj in self._pending if inj.start_ms <= ts_ms]
            for inj in started:
                self._pending.remove(inj)
                self._injections.append(inj)
                inj.label_base = len(self.labels)
                self.labels.extend(inj.labels(self.sensor_id, self.kind))
        if self._injections:
            ramps = [inj for inj in self._injections
                     if inj.anomaly in RAMP_TYPES and inj.active(ts_ms)]
            before = {f: values[f].copy() for f in set(WATCHED_FIELD.values())} if ramps else {}
            for inj in self._injections:
                apply(inj, ts_ms, values, self.kind, self._ctx, dropped)
            self._injections = [inj for inj in self._injections if inj.end_ms > ts_ms]
            for name, column in values.items():
                low, high = VALUE_RANGES[name]
                np.clip(column, low, high, out=column)
            for inj in ramps:
                self._note_onsets(inj, ts_ms, before, values)
        batch = ReadingBatch(
            sensor_id=self.sensor_id,
            kind=self.kind,
            ts_ms=np.full(n, ts_ms, dtype=np.int64),
            lon=self.lon,
            lat=self.lat,
            district=self.district,
            values=values,
        )
        self.last_rows = None  # every row of the fleet, in order
        if dropped.any():
            self.last_rows = np.flatnonzero(~dropped)
            batch = batch.take(self.last_rows)
        return batch

    def _note_onsets(self, inj: Injection, ts_ms: int, before: dict[str, np.ndarray],
                     after: dict[str, np.ndarray]) -> None:
        """Record ``ts_ms`` as the onset of the labels of ``inj`` whose sensor's watched value
        now differs from what it would have read by one noise standard deviation or more."""
        rows = inj.rows
        kind = self.kind[rows]
        change = np.zeros(rows.size)
        scale = self._noise[rows].copy()
        for k, name in WATCHED_FIELD.items():
            mine = kind == k
            if mine.any():
                change[mine] = np.abs(after[name][rows[mine]] - before[name][rows[mine]])
                if k == "traffic":
                    scale[mine] *= before[name][rows[mine]]
        for i in np.flatnonzero(change >= scale).tolist():
            self.onset_ms.setdefault(inj.label_base + i, ts_ms)

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
            self.labels.append(Label(sensor.sensor_id, sensor.kind, "breach", ts_ms, end_ms, 1.0,
                                     "breach-schedule"))
