"""Detection quality against ground truth: precision, recall, F1 and delay per anomaly type.

Ground truth is a list of labels — ``(sensor_id, kind, anomaly type, start_ms, end_ms)`` —
such as the simulator writes for its scenarios. A *detection* is the start of an anomaly
episode. Matching rules (documented in docs/detection.md):

* A detection matches a label of the same sensor when it is raised at or after the label's
  start and its episode began before the label's end plus ``tolerance_ms`` (the effect of
  an event outlasts it by a window or two: a river recedes, a window closes late).
* A label is *found* when at least one detection matches it; its **delay** is the event time
  of its first matching detection minus the label's start.
* Its **delay from onset** is the same detection's event time minus the label's *onset*, the
  first reading whose change reached one standard deviation of the sensor's reading noise
  (0 when the detection came earlier). It differs from the delay only for anomalies that grow
  from nothing (a storm's rise, a leak, a drift); a label whose change never reached the noise
  has no onset and no delay from onset.
* A detection matching no label is a **false alarm**. It counts against the type of a label
  on the same sensor if there is one, else against the type its detector and kind look for
  (``FALSE_ALARM_TYPE``), so every false alarm lowers some type's precision.

Per type: recall = found labels / labels; precision = matched detections / detections
attributed to the type; F1 their harmonic mean.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ("Detection", "TruthLabel", "TypeQuality", "score_detections", "FALSE_ALARM_TYPE")

#: (detector, kind) → the anomaly type a false alarm of it is counted against.
FALSE_ALARM_TYPE: dict[tuple[str, str], str] = {
    **{("silence", k): "dropout" for k in ("traffic", "water_level", "pipe_pressure", "generic")},
    **{("flatline", k): "stuck" for k in ("traffic", "water_level", "pipe_pressure", "generic")},
    **{("spike", k): "spike" for k in ("traffic", "water_level", "pipe_pressure", "generic")},
    ("level", "pipe_pressure"): "burst",
    ("change", "pipe_pressure"): "burst",
    ("deviation", "pipe_pressure"): "leak",
    ("trend", "pipe_pressure"): "leak",
    **{(d, "water_level"): "rainstorm" for d in ("level", "change", "deviation", "trend")},
    **{(d, "traffic"): "rainstorm" for d in ("level", "change", "deviation", "trend")},
    **{(d, "generic"): "drift" for d in ("level", "change", "deviation", "trend")},
}


@dataclass(frozen=True)
class Detection:
    sensor_id: str
    kind: str
    detector: str
    since_ms: int  # the episode's start (its first anomalous window)
    ts_ms: int  # event time it was raised


@dataclass(frozen=True)
class TruthLabel:
    sensor_id: str
    kind: str
    anomaly: str
    start_ms: int
    end_ms: int
    #: How long after its start its change reached the readings' noise (its *onset*): 0 for
    #: anomalies that change the readings at once, ``None`` when it never did.
    onset_after_ms: int | None = 0

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> TruthLabel:
        onset = doc.get("onset_after_ms", 0)
        return cls(str(doc["sensor_id"]), str(doc["kind"]), str(doc["anomaly"]),
                   int(doc["start_ms"]), int(doc["end_ms"]),
                   None if onset is None else int(onset))


@dataclass
class TypeQuality:
    labels: int = 0
    found: int = 0
    detections: int = 0  # attributed to this type
    true_detections: int = 0
    delays_s: list[float] | None = None
    onset_delays_s: list[float] | None = None

    @property
    def precision(self) -> float:
        return self.true_detections / self.detections if self.detections else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.labels if self.labels else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def delay_median_s(self) -> float | None:
        return _median(self.delays_s)

    @property
    def delay_p95_s(self) -> float | None:
        return _p95(self.delays_s)

    @property
    def onset_delay_median_s(self) -> float | None:
        return _median(self.onset_delays_s)

    @property
    def onset_delay_p95_s(self) -> float | None:
        return _p95(self.onset_delays_s)

    def merge(self, other: TypeQuality) -> None:
        self.labels += other.labels
        self.found += other.found
        self.detections += other.detections
        self.true_detections += other.true_detections
        self.delays_s = (self.delays_s or []) + (other.delays_s or [])
        self.onset_delays_s = (self.onset_delays_s or []) + (other.onset_delays_s or [])

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": round(self.precision, 4), "recall": round(self.recall, 4),
            "f1": round(self.f1, 4), "delay_median_s": _round(self.delay_median_s),
            "delay_p95_s": _round(self.delay_p95_s),
            "onset_delay_median_s": _round(self.onset_delay_median_s),
            "onset_delay_p95_s": _round(self.onset_delay_p95_s), "labels": self.labels,
            "found": self.found, "detections": self.detections,
            "true_detections": self.true_detections,
        }


def _median(values: list[float] | None) -> float | None:
    return float(np.median(values)) if values else None


def _p95(values: list[float] | None) -> float | None:
    return float(np.percentile(values, 95)) if values else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def score_detections(detections: Iterable[Detection], labels: Iterable[TruthLabel],
                     tolerance_ms: int) -> dict[str, TypeQuality]:
    """Quality per anomaly type of ``detections`` against ``labels`` (see module docstring)."""
    by_sensor: dict[str, list[TruthLabel]] = defaultdict(list)
    out: dict[str, TypeQuality] = defaultdict(TypeQuality)
    for label in labels:
        by_sensor[label.sensor_id].append(label)
        out[label.anomaly].labels += 1
    first: dict[TruthLabel, int] = {}
    for det in detections:
        own = by_sensor.get(det.sensor_id, [])
        matched = [lab for lab in own
                   if det.ts_ms >= lab.start_ms and det.since_ms < lab.end_ms + tolerance_ms]
        if matched:
            for lab in matched:
                if lab not in first or det.ts_ms < first[lab]:
                    first[lab] = det.ts_ms
            out[matched[0].anomaly].detections += 1
            out[matched[0].anomaly].true_detections += 1
        else:
            if own:
                nearest = min(own, key=lambda lab: abs(det.ts_ms - lab.start_ms))
                kind = nearest.anomaly
            else:
                kind = FALSE_ALARM_TYPE.get((det.detector, det.kind), "other")
            out[kind].detections += 1
    for lab, ts in first.items():
        q = out[lab.anomaly]
        q.found += 1
        q.delays_s = (q.delays_s or []) + [(ts - lab.start_ms) / 1000.0]
        if lab.onset_after_ms is not None:
            onset_ms = lab.start_ms + lab.onset_after_ms
            q.onset_delays_s = (q.onset_delays_s or []) + [max(ts - onset_ms, 0) / 1000.0]
    return dict(out)
