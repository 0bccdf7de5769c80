"""Injected anomalies: what each type does to the readings of the sensors it touches.

An :class:`Injection` holds the fleet rows it affects, a weight per row (1 at the epicentre,
less at neighbours), an event-time window ``[start_ms, end_ms)`` and a magnitude. Its effect
is applied in place to the value columns of a tick, after the normal models ran. Every
injection also yields one ground-truth :class:`Label` per affected sensor. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ("ANOMALY_TYPES", "FAULT_TYPES", "KINDS_OF", "RAMP_TYPES", "WATCHED_FIELD", "Injection",
           "Label", "apply")

#: Sensor faults: any kind of sensor can have them.
FAULT_TYPES: tuple[str, ...] = ("stuck", "dropout", "spike", "drift")
#: Every anomaly type and the sensor kinds it affects.
KINDS_OF: dict[str, tuple[str, ...]] = {
    "breach": ("traffic", "water_level", "pipe_pressure"),
    "incident": ("traffic",),
    "rainstorm": ("water_level", "traffic"),
    "leak": ("pipe_pressure",),
    "burst": ("pipe_pressure",),
    **{f: ("traffic", "water_level", "pipe_pressure") for f in FAULT_TYPES},
}
ANOMALY_TYPES: tuple[str, ...] = tuple(KINDS_OF)
#: Anomalies that grow from nothing: a storm's rise, a leak's drain, a sensor's drift. At their
#: start they change a reading by less than its noise, so besides its start a label of one has
#: an *onset*: the first reading whose injected change reaches one standard deviation of the
#: sensor's reading noise (``FleetSignals.onset_ms``). Every other type changes the readings
#: at once, or stops them: its onset is its start.
RAMP_TYPES: tuple[str, ...] = ("rainstorm", "leak", "drift")
#: The value of each kind whose change an onset is measured on (what the detectors watch).
WATCHED_FIELD: dict[str, str] = {
    "traffic": "speed_kmh", "water_level": "level_m", "pipe_pressure": "pressure_mpa",
}

#: Values a sensor in a legacy breach reports (past the orange level of detection.toml).
BREACH_VALUES: dict[str, dict[str, float]] = {
    "traffic": {"speed_kmh": 5.0, "flow_vph": 150.0, "occupancy_pct": 85.0},
    "water_level": {"level_m": 5.5},
    "pipe_pressure": {"pressure_mpa": 0.08},
}
_INCIDENT_SPEED = 6.0  # km/h at the incident's own segment
_INCIDENT_OCCUPANCY = 80.0
_BURST_FLOOR = 0.05  # MPa at the burst itself
_LEAK_DROP = 0.2  # MPa lost at the leak by the end of its window (magnitude 1)


@dataclass(frozen=True)
class Label:
    """Ground truth: ``sensor_id`` shows anomaly ``anomaly`` over event time [start_ms, end_ms)."""

    sensor_id: str
    kind: str
    anomaly: str
    start_ms: int
    end_ms: int
    magnitude: float
    source: str  # the scenario entry (or "breach-schedule") that injected it

    def to_dict(self) -> dict[str, object]:
        return {
            "sensor_id": self.sensor_id, "kind": self.kind, "anomaly": self.anomaly,
            "start_ms": self.start_ms, "end_ms": self.end_ms, "magnitude": self.magnitude,
            "source": self.source,
        }


@dataclass(eq=False)
class Injection:
    """One anomaly on some fleet rows over an event-time window."""

    anomaly: str
    rows: np.ndarray  # int fleet rows, sorted
    weights: np.ndarray  # float per row, 0-1
    start_ms: int
    end_ms: int
    magnitude: float = 1.0
    source: str = ""
    #: Index of its first label in ``FleetSignals.labels`` (one label per row, in row order).
    label_base: int = field(default=-1, repr=False)
    _held: dict[str, np.ndarray] | None = field(default=None, repr=False)
    _fired: bool = field(default=False, repr=False)

    def active(self, ts_ms: int) -> bool:
        return self.start_ms <= ts_ms < self.end_ms

    def labels(self, sensor_id: np.ndarray, kind: np.ndarray) -> list[Label]:
        return [
            Label(str(sensor_id[r]), str(kind[r]), self.anomaly, self.start_ms, self.end_ms,
                  float(self.magnitude), self.source)
            for r in self.rows.tolist()
        ]


def _phase(inj: Injection, ts_ms: int) -> float:
    return (ts_ms - inj.start_ms) / max(inj.end_ms - inj.start_ms, 1)


def rain_response(u: float, peak: float | np.ndarray = 0.35) -> float | np.ndarray:
    """Unit response of a gauge to a storm over its window (u = 0..1): a lagged rise to 1 at
    ``u = peak`` (0.35 for river gauges; earlier for streets and underpasses, which fill
    faster), then a recession back to the base level by the end of the window. ``peak`` may be
    an array (one per sensor); the result then is too."""
    u = min(max(u, 0.0), 1.0)
    h = (u / np.asarray(peak, dtype=np.float64))
    h = h * np.exp(1.0 - h) * (1.0 - u**4)
    return float(h) if h.ndim == 0 else h


def apply(inj: Injection, ts_ms: int, values: dict[str, np.ndarray], kind: np.ndarray,
          ctx: dict[str, np.ndarray], dropped: np.ndarray) -> None:
    """Apply ``inj`` at event time ``ts_ms`` to ``values`` (in place); mark dropped rows.

    ``ctx`` holds per-row model parameters: ``free_flow`` (traffic), ``base`` and
    ``guaranteed`` and optionally ``rain_peak`` (water levels).
    """
    if not inj.active(ts_ms):
        return
    rows, w, m = inj.rows, inj.weights, inj.magnitude
    a = inj.anomaly
    if a == "breach":
        for k, fields in BREACH_VALUES.items():
            hit = rows[kind[rows] == k]
            for name, value in fields.items():
                values[name][hit] = value
    elif a == "incident":
        u = _phase(inj, ts_ms)
        s = np.clip(m, 0.0, 1.0) * (1.0 if u < 0.8 else (1.0 - u) / 0.2)  # clears at the end
        ws = w * s
        values["speed_kmh"][rows] = values["speed_kmh"][rows] * (1 - ws) + ws * _INCIDENT_SPEED
        values["occupancy_pct"][rows] = (values["occupancy_pct"][rows] * (1 - ws)
                                         + ws * _INCIDENT_OCCUPANCY)
        values["flow_vph"][rows] *= 1.0 - 0.7 * ws
    elif a == "rainstorm":
        u = _phase(inj, ts_ms)
        h = rain_response(u)
        wl = rows[kind[rows] == "water_level"]
        if wl.size:
            ww = w[kind[rows] == "water_level"]
            hw = rain_response(u, ctx["rain_peak"][wl]) if "rain_peak" in ctx else h
            rise = m * ww * hw * (ctx["guaranteed"][wl] - ctx["base"][wl])
            values["level_m"][wl] += rise
        tr = rows[kind[rows] == "traffic"]
        if tr.size:
            f = np.clip(0.55 * m * w[kind[rows] == "traffic"] * min(1.0, 2.5 * h), 0.0, 0.9)
            values["speed_kmh"][tr] *= 1.0 - f
            values["occupancy_pct"][tr] = np.minimum(values["occupancy_pct"][tr] * (1 + 1.5 * f), 95.0)
            values["flow_vph"][tr] *= 1.0 - 0.4 * f
    elif a == "leak":
        u = _phase(inj, ts_ms)
        values["pressure_mpa"][rows] -= _LEAK_DROP * m * w * u
    elif a == "burst":
        p = values["pressure_mpa"][rows]
        values["pressure_mpa"][rows] = p - np.clip(w * m, 0.0, 1.0) * (p - _BURST_FLOOR)
    elif a == "stuck":
        if inj._held is None:
            inj._held = {name: col[rows].copy() for name, col in values.items()}
        for name, held in inj._held.items():
            ok = ~np.isnan(held)
            values[name][rows[ok]] = held[ok]
    elif a == "dropout":
        dropped[rows] = True
    elif a == "spike":
        if inj._fired:
            return
        inj._fired = True
        k = kind[rows]
        values["speed_kmh"][rows[k == "traffic"]] = 2.0
        wl = rows[k == "water_level"]
        values["level_m"][wl] += 4.0 * m
        values["pressure_mpa"][rows[k == "pipe_pressure"]] = min(0.9 * m, 9.5)
    elif a == "drift":
        u = _phase(inj, ts_ms) * m
        k = kind[rows]
        tr = rows[k == "traffic"]
        values["speed_kmh"][tr] *= max(1.0 - 0.8 * u, 0.05)
        wl = rows[k == "water_level"]
        values["level_m"][wl] += 3.0 * u
        pp = rows[k == "pipe_pressure"]
        values["pressure_mpa"][pp] -= 0.3 * u
    else:  # pragma: no cover - validated when the scenario is read
        raise ValueError(f"unknown anomaly type {a!r}")
