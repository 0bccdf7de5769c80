"""`cityagent eval`: the simulator's built-in scenarios through the detection code, scored.

For every scenario and seed: a fleet of ``--sensors`` sensors runs one quiet day first (so
baselines, including the hour-of-day ones, have history, as a deployed
sensor would), then the scenario at one reading every ``--tick`` seconds, through the same
``DetectionEngine`` the Faust worker runs. Anomaly starts are scored against the
simulator's ground-truth labels (``cityagent.quality``); ``quiet-day`` — nothing injected —
gives the false alarms per sensor-day. No broker is involved: this measures detection, not
transport.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

import numpy as np

from cityagent.alerting_eval import evaluate_alerting, zone_agreement
from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig
from cityagent.detectors.registry_profiles import SensorProfiles
from cityagent.incidents import AlertingConfig, IncidentEngine
from cityagent.quality import Detection, TruthLabel, TypeQuality, score_detections
from cityagent.regions import default_regions
from cityagent.routing import default_router
from cityagent.zones import ZoneIndex, demo_zones
from control.kernels import load_kernels, say_config_notes
from sensors_sim.anomalies import RAMP_TYPES
from sensors_sim.fleet import make_fleet
from sensors_sim.generators import FleetSignals
from sensors_sim.registry import registry_rows
from sensors_sim.scenario import builtin_names, load_scenario

__all__ = ("EvalOptions", "run_eval", "evaluate", "format_table")

#: Seconds between progress lines within a scenario's run.
PROGRESS_EVERY_S = 5.0

_DAY_MS = 86_400_000
#: Event time of the warm-up's first tick: a Monday 00:00 China Standard Time (2026-06-01).
_T0_MS = 1_780_243_200_000


@dataclass(frozen=True)
class EvalOptions:
    sensors: int = 1000
    seeds: tuple[int, ...] = (1, 2, 3)
    tick_s: float = 10.0
    scenarios: tuple[str, ...] = ()
    quiet_hours: float = 24.0
    warmup_hours: float = 24.0


def evaluate(options: EvalOptions, config: DetectionConfig | None = None,
             progress=None, alerting: AlertingConfig | None = None) -> dict:
    """The evaluation result as one JSON-ready object (see docs/detection.md)."""
    config = config or DetectionConfig.load()
    alerting = alerting or AlertingConfig.load()
    regions = default_regions()
    names = options.scenarios or tuple(n for n in builtin_names())
    types: dict[str, TypeQuality] = {}
    false_alarms = 0
    sensor_days = 0.0
    per_scenario = {}
    runs: list[tuple[str, dict]] = []  # (scenario, evaluate_alerting result) per seed
    tick_ms = round(options.tick_s * 1000)
    tolerance_ms = 2 * (config.windows.size_ms + config.windows.grace_ms)
    started = time.monotonic()
    for name in names:
        scenario = load_scenario(name)
        anomalies_total = 0
        for seed in options.seeds:
            fleet = make_fleet(options.sensors, seed, regions)
            signals = FleetSignals(fleet, seed, breaches=0)
            profiles = SensorProfiles.from_rows(
                registry_rows(signals, options.tick_s, regions, config), config=config)
            engine = DetectionEngine(config, profiles)
            state = engine.new_state()
            t = _T0_MS
            warm_end = _T0_MS + round(options.warmup_hours * 3_600_000)
            shown_at = time.monotonic()
            while t < warm_end:
                engine.process(state, signals.tick(t), 0)
                t += tick_ms
                if progress and time.monotonic() - shown_at >= PROGRESS_EVERY_S:
                    shown_at = time.monotonic()
                    progress(f"eval: {name} seed {seed}: quiet day before it "
                             f"{(t - _T0_MS) / (warm_end - _T0_MS):.0%} "
                             f"({shown_at - started:.0f} s)")
            # Real events do not start on a window boundary: start the scenario at a random
            # tick within a window (the same one for a seed).
            window_ticks = max(1, config.windows.size_ms // tick_ms)
            for _ in range(int(np.random.default_rng(seed).integers(window_ticks))):
                engine.process(state, signals.tick(t), 0)
                t += tick_ms
            signals.start_scenario(scenario)
            start = t
            end = start + _scenario_span_ms(scenario, options.quiet_hours)
            detections = []
            emitted = []
            while t < end:
                result = engine.process(state, signals.tick(t), 0)
                detections += [_detection(a) for a in result.anomalies if a.phase == "start"]
                emitted += result.anomalies
                t += tick_ms
                if progress and time.monotonic() - shown_at >= PROGRESS_EVERY_S:
                    shown_at = time.monotonic()
                    progress(f"eval: {name} seed {seed}: scenario {(t - start) / (end - start):.0%}"
                             f", {len(detections)} detections so far ({shown_at - started:.0f} s)")
            anomalies_total += len(emitted)
            labels = [TruthLabel(lab.sensor_id, lab.kind, lab.anomaly, lab.start_ms, lab.end_ms,
                                 _onset_after_ms(signals, i))
                      for i, lab in enumerate(signals.labels)]
            if not scenario.anomalies:
                false_alarms += len(detections)
                sensor_days += options.sensors * (end - start) / _DAY_MS
            else:
                for kind, q in score_detections(detections, labels, tolerance_ms).items():
                    types.setdefault(kind, TypeQuality()).merge(q)
                # The same anomalies through geofencing, routing and the incident lifecycle.
                engine = IncidentEngine(alerting, default_router(), regions)
                runs.append((name, evaluate_alerting(emitted, signals.labels, engine=engine,
                                                     zone_points=0,
                                                     tolerance_ms=tolerance_ms,
                                                     tick_s=options.tick_s)))
            if progress:
                progress(f"eval: {name} seed {seed}: {len(detections)} detections, "
                         f"{len(labels)} labels ({time.monotonic() - started:.0f} s)")
        per_scenario[name] = {"anomaly_events": anomalies_total}
    return {
        "types": {k: q.to_dict() for k, q in sorted(types.items()) if k != "other" or q.detections},
        "false_alarms_per_sensor_day": (round(false_alarms / sensor_days, 5)
                                        if sensor_days else None),
        "quiet_false_alarms": false_alarms,
        "quiet_sensor_days": round(sensor_days, 1),
        "window_s": config.windows.size_ms / 1000,
        "grace_s": config.windows.grace_ms / 1000,
        "sensors": options.sensors,
        "seeds": list(options.seeds),
        "tick_s": options.tick_s,
        "scenarios": per_scenario,
        "alerting": _alerting_summary(runs, progress),
    }


def _alerting_summary(runs: list[tuple[str, dict]], progress=None) -> dict:
    """Alerting figures over every seeded run of the injected scenarios (see docs/alerting.md).

    ``alerts_per_incident``: mean incident alerts per injected incident that was alerted;
    ``storm_alert_reduction``: anomaly events ÷ alerts in rainstorm-jinan (else all runs);
    ``routing_accuracy``: share of (injected anomaly, alert) pairs routed as expected;
    ``zone_agreement``: zone lookup vs a direct shapely check on 100k random points.
    """
    if progress:
        progress("eval: zone agreement on 100,000 random points…")
    agreement = zone_agreement(ZoneIndex(demo_zones()), 100_000, 0)
    if not runs:
        return {"alerts_per_incident": None, "storm_alert_reduction": None,
                "routing_accuracy": None, "zone_agreement": agreement}
    alerted = sum(r["incidents_alerted"] for _n, r in runs)
    per_incident = sum((r["alerts_per_incident"] or 0) * r["incidents_alerted"] for _n, r in runs)
    pairs = sum(r["routed_pairs"] for _n, r in runs)
    correct = sum((r["routing_accuracy"] or 0) * r["routed_pairs"] for _n, r in runs)
    storm = [r for n, r in runs if n == "rainstorm-jinan"]
    storm_over = "rainstorm-jinan" if storm else "every injected scenario run"
    storm = storm or [r for _n, r in runs]
    alerts = sum(r["alerts"] for r in storm)
    by_type: dict[str, list[float]] = {}
    for _n, r in runs:
        for kind, value in r["alerts_per_incident_by_type"].items():
            by_type.setdefault(kind, []).append(value)
    return {
        "alerts_per_incident": round(per_incident / alerted, 3) if alerted else None,
        "storm_alert_reduction": (round(sum(r["anomaly_events"] for r in storm) / alerts, 2)
                                  if alerts else None),
        "storm_alert_reduction_over": storm_over,
        "routing_accuracy": round(correct / pairs, 4) if pairs else None,
        "zone_agreement": agreement,
        "alerts_per_incident_by_type": {k: round(float(np.mean(v)), 3)
                                        for k, v in sorted(by_type.items())},
        "injected_incidents": sum(r["injected_incidents"] for _n, r in runs),
        "incidents_alerted": alerted,
        "incidents_with_one_alert": sum(r["incidents_with_one_alert"] for _n, r in runs),
    }


def _scenario_span_ms(scenario, quiet_hours: float) -> int:
    if not scenario.anomalies:
        return round(quiet_hours * 3_600_000)
    last = max(a.start_s + a.duration_s for a in scenario.anomalies)
    return round((last + 1800) * 1000)  # half an hour after the last anomaly ends


def _detection(a) -> Detection:
    return Detection(a.sensor_id, a.kind, a.detector, a.since_ms, a.ts_ms)


def _onset_after_ms(signals: FleetSignals, index: int) -> int | None:
    """How long after its start label ``index`` reached one noise scale (None: never)."""
    label = signals.labels[index]
    if label.anomaly not in RAMP_TYPES:
        return 0
    onset = signals.onset_ms.get(index)
    return None if onset is None else onset - label.start_ms


def _format_alerting(a: dict) -> list[str]:
    def fmt(value, pattern: str) -> str:
        return "n/a" if value is None else format(value, pattern)

    by_type = ", ".join(f"{k} {v:g}" for k, v in a.get("alerts_per_incident_by_type", {}).items())
    return [
        "",
        "alerting (incidents, routing, zones):",
        f"  alerts per injected incident   {fmt(a['alerts_per_incident'], '.3f')}"
        + (f"  ({by_type})" if by_type else ""),
        "  storm alert reduction          "
        + ("n/a (no injected scenario run)" if a["storm_alert_reduction"] is None else
           f"{a['storm_alert_reduction']:.1f}x (anomaly events per alert, "
           f"{a.get('storm_alert_reduction_over', 'rainstorm-jinan')})"),
        f"  routing accuracy               {fmt(a['routing_accuracy'], '.4f')}",
        f"  zone agreement (100k points)   {fmt(a['zone_agreement'], '.4f')}",
    ]


def format_table(result: dict) -> str:
    lines = [
        f"detection quality: {result['sensors']} sensors x seeds {result['seeds']}, "
        f"window {result['window_s']:g} s (+{result['grace_s']:g} s grace), "
        f"a reading every {result['tick_s']:g} s",
        "",
        f"{'type':<10} {'labels':>6} {'found':>6} {'precision':>9} {'recall':>7} {'F1':>6} "
        f"{'delay p50 s':>11} {'delay p95 s':>11} {'from onset p50/p95 s':>20}",
    ]
    for kind, q in result["types"].items():
        med = "-" if q["delay_median_s"] is None else f"{q['delay_median_s']:.0f}"
        p95 = "-" if q["delay_p95_s"] is None else f"{q['delay_p95_s']:.0f}"
        onset = "-" if q["onset_delay_median_s"] is None else (
            f"{q['onset_delay_median_s']:.0f} / {q['onset_delay_p95_s']:.0f}")
        lines.append(f"{kind:<10} {q['labels']:>6} {q['found']:>6} {q['precision']:>9.3f} "
                     f"{q['recall']:>7.3f} {q['f1']:>6.3f} {med:>11} {p95:>11} {onset:>20}")
    fa = result["false_alarms_per_sensor_day"]
    if fa is not None:
        lines += ["", f"quiet-day: {result['quiet_false_alarms']} false alarms over "
                      f"{result['quiet_sensor_days']:g} sensor-days = {fa:.4f} per sensor-day"]
    if result.get("alerting"):
        lines += _format_alerting(result["alerting"])
    return "\n".join(lines)


def run_eval(options: EvalOptions, *, as_json: bool, config: DetectionConfig | None = None,
             alerting: AlertingConfig | None = None) -> int:
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    config = config or DetectionConfig.load()
    say_config_notes(config, lambda line: progress(f"eval: {line}"))  # as the worker says them
    load_kernels(config, lambda line: progress(f"eval: {line}"))
    result = evaluate(options, config, progress, alerting)
    print(json.dumps(result, ensure_ascii=False) if as_json else format_table(result))
    return 0
