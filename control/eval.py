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

from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig, SensorProfiles
from cityagent.quality import Detection, TruthLabel, TypeQuality, score_detections
from cityagent.regions import default_regions
from sensors_sim.fleet import make_fleet
from sensors_sim.generators import FleetSignals
from sensors_sim.registry import registry_rows
from sensors_sim.scenario import builtin_names, load_scenario

__all__ = ("EvalOptions", "run_eval", "evaluate", "format_table")

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
             progress=None) -> dict:
    """The evaluation result as one JSON-ready object (see docs/detection.md)."""
    config = config or DetectionConfig.load()
    regions = default_regions()
    names = options.scenarios or tuple(n for n in builtin_names())
    types: dict[str, TypeQuality] = {}
    false_alarms = 0
    sensor_days = 0.0
    per_scenario = {}
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
                registry_rows(signals, options.tick_s, regions, config))
            engine = DetectionEngine(config, profiles)
            state = engine.new_state()
            t = _T0_MS
            warm_end = _T0_MS + round(options.warmup_hours * 3_600_000)
            while t < warm_end:
                engine.process(state, signals.tick(t), 0)
                t += tick_ms
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
            while t < end:
                result = engine.process(state, signals.tick(t), 0)
                detections += [_detection(a) for a in result.anomalies if a.phase == "start"]
                anomalies_total += len(result.anomalies)
                t += tick_ms
            labels = [TruthLabel(lab.sensor_id, lab.kind, lab.anomaly, lab.start_ms, lab.end_ms)
                      for lab in signals.labels]
            if not scenario.anomalies:
                false_alarms += len(detections)
                sensor_days += options.sensors * (end - start) / _DAY_MS
            else:
                for kind, q in score_detections(detections, labels, tolerance_ms).items():
                    types.setdefault(kind, TypeQuality()).merge(q)
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
    }


def _scenario_span_ms(scenario, quiet_hours: float) -> int:
    if not scenario.anomalies:
        return round(quiet_hours * 3_600_000)
    last = max(a.start_s + a.duration_s for a in scenario.anomalies)
    return round((last + 1800) * 1000)  # half an hour after the last anomaly ends


def _detection(a) -> Detection:
    return Detection(a.sensor_id, a.kind, a.detector, a.since_ms, a.ts_ms)


def format_table(result: dict) -> str:
    lines = [
        f"detection quality: {result['sensors']} sensors x seeds {result['seeds']}, "
        f"window {result['window_s']:g} s (+{result['grace_s']:g} s grace), "
        f"a reading every {result['tick_s']:g} s",
        "",
        f"{'type':<10} {'labels':>6} {'found':>6} {'precision':>9} {'recall':>7} {'F1':>6} "
        f"{'delay p50 s':>11} {'delay p95 s':>11}",
    ]
    for kind, q in result["types"].items():
        med = "-" if q["delay_median_s"] is None else f"{q['delay_median_s']:.0f}"
        p95 = "-" if q["delay_p95_s"] is None else f"{q['delay_p95_s']:.0f}"
        lines.append(f"{kind:<10} {q['labels']:>6} {q['found']:>6} {q['precision']:>9.3f} "
                     f"{q['recall']:>7.3f} {q['f1']:>6.3f} {med:>11} {p95:>11}")
    fa = result["false_alarms_per_sensor_day"]
    if fa is not None:
        lines += ["", f"quiet-day: {result['quiet_false_alarms']} false alarms over "
                      f"{result['quiet_sensor_days']:g} sensor-days = {fa:.4f} per sensor-day"]
    return "\n".join(lines)


def run_eval(options: EvalOptions, *, as_json: bool, config: DetectionConfig | None = None) -> int:
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = evaluate(options, config, progress)
    print(json.dumps(result, ensure_ascii=False) if as_json else format_table(result))
    return 0
