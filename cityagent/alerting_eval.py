"""Alerting quality: a scenario's anomalies through the incident engine, scored.

Given the anomaly events of one simulator run and its ground-truth labels (one per affected
sensor of each injection: ``sensor_id, kind, anomaly, start_ms, end_ms, source``), the
anomalies run through :class:`~cityagent.incidents.IncidentEngine` in event-time order, the
engine's clock being the event time, with a tick every ``tick_s`` seconds and enough ticks after
the last anomaly for incidents to resolve. Measured:

* ``alerts_per_incident`` — distinct alerts per *injected incident* that got any: an injected
  incident is one scenario entry (its ``source``: a storm over a city, a burst at three
  junctions), except for sensor faults, where each faulty sensor is its own incident (as it
  is for the engine). An alert belongs to an injected incident when an anomaly matching one
  of its labels joined it; matching follows :mod:`cityagent.quality` (raised at or after the
  label's start, episode begun before its end plus ``tolerance_ms``). Target: 1.
* ``storm_alert_reduction`` — anomaly events ÷ alerts opened (the rainstorm-jinan target is
  10 or more).
* ``routing_accuracy`` — of the (label, alert) pairs, the share whose alert's final
  departments include what :data:`EXPECTED_ROUTES` requires and nothing it forbids.
* ``zone_agreement`` — :meth:`ZoneIndex.zones_at` against a direct shapely test of every zone
  on random points (half near the zones, half anywhere in the province's box): must be 1.0.

Pure: no simulator import (labels are duck-typed objects or dicts), no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from cityagent.detection import Anomaly
from cityagent.detectors.verdict import SEVERITIES
from cityagent.incident_alert import Alert
from cityagent.incidents import AlertingConfig, IncidentEngine, ScopeState
from cityagent.routing import CITY_COMMAND, default_router
from cityagent.zones import ZoneIndex, demo_zones

__all__ = ("ExpectedRoute", "EXPECTED_ROUTES", "FAULT_TYPES", "evaluate_alerting",
           "zone_agreement", "expected_route")

#: Injected anomaly types that are device faults: one incident per faulty sensor.
FAULT_TYPES: tuple[str, ...] = ("stuck", "dropout", "spike", "drift")
_RANK = {name: i for i, name in enumerate(SEVERITIES)}
_OWNER = {"water_level": "water", "pipe_pressure": "water", "traffic": "transport",
          "generic": "city_management"}


@dataclass(frozen=True)
class ExpectedRoute:
    """Departments an alert about an injected anomaly must (and must not) be for.

    ``always`` at any severity; ``severe`` too when the alert is ``severe_from`` or worse;
    never any of ``never``. The city command centre is always required.
    """

    always: frozenset[str]
    severe: frozenset[str] = frozenset()
    severe_from: str = "orange"
    never: frozenset[str] = frozenset()

    def correct(self, departments: Iterable[str], severity: str) -> bool:
        got = set(departments)
        need = {CITY_COMMAND, *self.always}
        if _RANK[severity] >= _RANK[self.severe_from]:
            need |= self.severe
        return need <= got and not (self.never & got)


def _fault(kind: str, *, never_emergency: bool) -> ExpectedRoute:
    return ExpectedRoute(frozenset({_OWNER[kind]}),
                         never=frozenset({"emergency"}) if never_emergency else frozenset())


#: (injected anomaly type, sensor kind) → the expected route: the one place that says who an
#: alert about each kind of real-world event is for. Bursts and leaks: water affairs, plus
#: emergency management once red (a main is gone); a rainstorm's gauges: water affairs, plus
#: city management (drainage, ponding) and emergency management once orange; its roads and
#: traffic incidents: transport. Broken sensors go to the department owning the sensor and
#: must not page emergency management — except drift, which looks like a real rise and may.
EXPECTED_ROUTES: dict[tuple[str, str], ExpectedRoute] = {
    ("burst", "pipe_pressure"): ExpectedRoute(frozenset({"water"}), frozenset({"emergency"}),
                                              "red"),
    ("leak", "pipe_pressure"): ExpectedRoute(frozenset({"water"}), frozenset({"emergency"}),
                                             "red"),
    ("rainstorm", "water_level"): ExpectedRoute(
        frozenset({"water"}), frozenset({"city_management", "emergency"}), "orange"),
    ("rainstorm", "traffic"): ExpectedRoute(frozenset({"transport"})),
    ("incident", "traffic"): ExpectedRoute(frozenset({"transport"}), frozenset({"emergency"}),
                                           "red"),
    **{("breach", k): ExpectedRoute(frozenset({_OWNER[k]})) for k in _OWNER},
    **{(f, k): _fault(k, never_emergency=f != "drift") for f in FAULT_TYPES for k in _OWNER},
}


def expected_route(anomaly_type: str, kind: str) -> ExpectedRoute:
    """The expected route of an injected type on a sensor kind (owner department if unlisted)."""
    return EXPECTED_ROUTES.get((anomaly_type, kind),
                               ExpectedRoute(frozenset({_OWNER.get(kind, "city_management")})))


@dataclass(frozen=True)
class _Label:
    sensor_id: str
    kind: str
    anomaly: str
    start_ms: int
    end_ms: int
    source: str


def _label(raw: Any) -> _Label:
    get = raw.get if isinstance(raw, Mapping) else lambda k, d=None: getattr(raw, k, d)
    return _Label(str(get("sensor_id")), str(get("kind")), str(get("anomaly")),
                  int(get("start_ms")), int(get("end_ms")), str(get("source", "") or ""))


def evaluate_alerting(anomalies: Iterable[Anomaly], labels: Iterable[Any], *,
                      engine: IncidentEngine | None = None, zones: ZoneIndex | None = None,
                      tolerance_ms: int = 150_000, tick_s: float = 60.0,
                      zone_points: int = 100_000, seed: int = 0) -> dict[str, Any]:
    """Score one run (see the module docstring). ``zones`` default: the demo zones."""
    engine = engine or IncidentEngine(AlertingConfig.load(), default_router())
    zones = zones if zones is not None else ZoneIndex(demo_zones(engine.regions))
    run = _run(sorted(anomalies, key=lambda a: a.ts_ms), engine, zones, round(tick_s * 1000))
    truth = [_label(raw) for raw in labels]
    by_sensor: dict[str, list[_Label]] = defaultdict(list)
    for lab in truth:
        by_sensor[lab.sensor_id].append(lab)
    incident_alerts: dict[tuple[str, str], set[str]] = defaultdict(set)
    pairs: set[tuple[_Label, str]] = set()
    for a, alert_id in run.joined:
        for lab in by_sensor.get(a.sensor_id, ()):
            if a.ts_ms >= lab.start_ms and a.since_ms < lab.end_ms + tolerance_ms:
                incident_alerts[_injected_incident(lab)].add(alert_id)
                pairs.add((lab, alert_id))
    incidents = {_injected_incident(lab): lab.anomaly for lab in truth}
    counts = [len(incident_alerts[i]) for i in incidents if incident_alerts[i]]
    by_type: dict[str, list[int]] = defaultdict(list)
    for i, kind in incidents.items():
        if incident_alerts[i]:
            by_type[kind].append(len(incident_alerts[i]))
    correct = sum(1 for lab, alert_id in pairs
                  if expected_route(lab.anomaly, lab.kind).correct(
                      run.final[alert_id].departments, run.final[alert_id].severity))
    opened = len(run.final)
    return {
        "alerts_per_incident": round(float(np.mean(counts)), 3) if counts else None,
        "storm_alert_reduction": round(run.anomalies / opened, 2) if opened else None,
        "routing_accuracy": round(correct / len(pairs), 4) if pairs else None,
        "zone_agreement": zone_agreement(zones, zone_points, seed) if zone_points else None,
        "alerts_per_incident_by_type": {k: round(float(np.mean(v)), 3)
                                        for k, v in sorted(by_type.items())},
        "injected_incidents": len(incidents),
        "incidents_alerted": len(counts),
        "incidents_with_one_alert": sum(1 for c in counts if c == 1),
        "anomaly_events": run.anomalies,
        "alerts": opened,
        "suppressed": run.suppressed,
        "alert_events": run.events,
        "routed_pairs": len(pairs),
    }


def _injected_incident(lab: _Label) -> tuple[str, str]:
    if lab.anomaly in FAULT_TYPES:
        return (lab.source, lab.sensor_id)
    return (lab.source or lab.anomaly, "")


@dataclass
class _Run:
    joined: list[tuple[Anomaly, str]]  # (anomaly, alert id it opened or updated)
    final: dict[str, Alert]  # newest snapshot per alert id
    anomalies: int
    events: int
    suppressed: int


def _run(anomalies: list[Anomaly], engine: IncidentEngine, zones: ZoneIndex,
         tick_ms: int) -> _Run:
    """The anomalies through the engine, one state per scope key (as the Faust table)."""
    states: dict[str, ScopeState] = defaultdict(ScopeState)
    run = _Run([], {}, len(anomalies), 0, 0)

    def record(events: list, anomaly: Anomaly | None = None) -> None:
        for e in events:
            run.events += 1
            if e.alert is None:
                run.suppressed += 1
                continue
            run.final[e.alert_id] = e.alert
            if anomaly is not None and e.type in ("opened", "updated"):
                run.joined.append((anomaly, e.alert_id))

    def tick_until(end_ms: int, next_tick: int) -> int:
        while next_tick <= end_ms:
            for state in states.values():
                record(engine.tick(state, next_tick))
            next_tick += tick_ms
        return next_tick

    if not anomalies:
        return run
    next_tick = anomalies[0].ts_ms
    for anomaly in anomalies:
        next_tick = tick_until(anomaly.ts_ms, next_tick)
        state = states[engine.scope_key(anomaly, zones)]
        record(engine.on_anomaly(state, anomaly, zones, anomaly.ts_ms), anomaly)
    tick_until(next_tick + round((engine.config.resolve_after_s + 60) * 1000), next_tick)
    return run


def zone_agreement(zones: ZoneIndex, n: int = 100_000, seed: int = 0) -> float:
    """Share of ``n`` random points where ``zones_at`` names exactly the zones a direct
    ``shapely.intersects_xy`` test of each zone finds (1.0 when the index is right)."""
    if not len(zones) or n <= 0:
        return 1.0
    rng = np.random.default_rng(seed)
    near = n // 2
    boxes = np.array([z.bbox for z in zones.zones])
    pick = rng.integers(len(boxes), size=near)
    minx, miny, maxx, maxy = boxes[pick].T
    pad_x, pad_y = (maxx - minx) * 0.25, (maxy - miny) * 0.25
    x = np.r_[rng.uniform(minx - pad_x, maxx + pad_x), rng.uniform(114.8, 122.7, n - near)]
    y = np.r_[rng.uniform(miny - pad_y, maxy + pad_y), rng.uniform(34.4, 38.4, n - near)]
    direct = np.stack([shapely.intersects_xy(z.geometry, x, y) for z in zones.zones], axis=1)
    indexed = np.zeros_like(direct)
    for row, hits in enumerate(zones.zones_at(x, y)):
        indexed[row, list(hits)] = True
    return float((direct == indexed).all(axis=1).mean())
