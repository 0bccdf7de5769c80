"""Alerts: what operators see. One alert per breach episode of a sensor, placed in its district.

The skeleton's alerting is a pure mapping from anomaly events to alert snapshots: the
episode's start opens the alert, an escalation raises its severity, the episode's end
resolves it. The alert id *is* the episode id, so a re-processed anomaly updates the same
alert instead of making a second one. Issue #5 adds zones, routing and the full lifecycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cityagent.detection import Anomaly

__all__ = ("Alert", "alert_from_anomaly", "SEVERITY_NAMES_ZH", "KIND_NAMES_ZH")

SEVERITY_NAMES_ZH = {"blue": "蓝色", "yellow": "黄色", "orange": "橙色", "red": "红色"}
KIND_NAMES_ZH = {"traffic": "交通拥堵", "water_level": "水位超限", "pipe_pressure": "管网压力异常"}
_KIND_NAMES_EN = {
    "traffic": "traffic congestion",
    "water_level": "water level over limit",
    "pipe_pressure": "pipe pressure out of range",
}


@dataclass(frozen=True)
class Alert:
    """A snapshot of one alert; the newest snapshot of an ``alert_id`` is the alert."""

    alert_id: str
    status: str  # "open" or "resolved"
    sensor_id: str
    kind: str
    severity: str
    field: str
    direction: str
    threshold: float
    observed: float
    peak: float
    city_code: str
    city_name: str
    district_code: str
    district_name: str
    lon: float
    lat: float
    opened_at_ms: int  # event time the breach began
    updated_at_ms: int  # event time of the latest reading that changed the alert
    resolved_at_ms: int | None
    detected_at_ms: int
    title_zh: str
    title_en: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Alert:
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__})


def alert_from_anomaly(anomaly: Anomaly, district_name: str, city_name: str) -> Alert:
    """The alert snapshot an anomaly event leads to (names come from the region index)."""
    resolved = anomaly.phase == "end"
    op = ">" if anomaly.direction == "above" else "<"
    where_zh = f"{city_name}{district_name}"
    return Alert(
        alert_id=anomaly.anomaly_id,
        status="resolved" if resolved else "open",
        sensor_id=anomaly.sensor_id,
        kind=anomaly.kind,
        severity=anomaly.severity,
        field=anomaly.field,
        direction=anomaly.direction,
        threshold=anomaly.threshold,
        observed=anomaly.observed,
        peak=anomaly.peak,
        city_code=str(anomaly.city_code),
        city_name=city_name,
        district_code=str(anomaly.district_code),
        district_name=district_name,
        lon=anomaly.lon,
        lat=anomaly.lat,
        opened_at_ms=anomaly.since_ms,
        updated_at_ms=anomaly.ts_ms,
        resolved_at_ms=anomaly.ts_ms if resolved else None,
        detected_at_ms=anomaly.detected_at_ms,
        title_zh=(
            f"{where_zh} {anomaly.sensor_id} {SEVERITY_NAMES_ZH[anomaly.severity]}"
            f"{KIND_NAMES_ZH[anomaly.kind]}：{anomaly.field} {anomaly.peak:g} {op} {anomaly.threshold:g}"
        ),
        title_en=(
            f"{anomaly.severity} {_KIND_NAMES_EN[anomaly.kind]} at {anomaly.sensor_id} "
            f"({anomaly.district_code}): {anomaly.field} {anomaly.peak:g} {op} {anomaly.threshold:g}"
        ),
    )
