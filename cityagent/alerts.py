"""Alerts: what operators see. One alert per anomaly episode of a sensor, placed in its district.

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
KIND_NAMES_ZH = {"traffic": "交通", "water_level": "水位", "pipe_pressure": "管网压力",
                 "generic": "监测值"}
_KIND_NAMES_EN = {"traffic": "traffic", "water_level": "water level",
                  "pipe_pressure": "pipe pressure", "generic": "value"}
#: Why, in words: by reason code, else by detector.
_REASONS = {
    "water.approaching": ("水位接近警戒", "water level approaching warning level"),
    "water.warning": ("水位超警戒", "water level over warning level"),
    "water.guaranteed": ("水位超保证", "water level over guaranteed level"),
    "water.record": ("水位超历史最高", "water level over record high"),
    "pressure.low": ("管网压力低于服务压力", "pipe pressure below the service floor"),
    "pressure.critical": ("管网压力严重不足", "pipe pressure critically low"),
    "pressure.high": ("管网压力过高", "pipe pressure over the high limit"),
    "traffic.congestion": ("交通严重拥堵", "severe traffic congestion"),
    "fault.flatline": ("传感器数值停滞", "sensor stuck (flatline)"),
    "fault.silence": ("传感器失联", "sensor silent"),
    "fault.spike_up": ("传感器尖峰", "sensor spike"),
    "fault.spike_down": ("传感器尖峰", "sensor spike"),
}
_DETECTORS = {
    "deviation": ("偏离基线", "deviation from baseline"),
    "change": ("突变", "sudden change"),
    "trend": ("持续偏移", "persistent drift from baseline"),
}


def _reason_zh(anomaly: Anomaly) -> str:
    if anomaly.reason in _REASONS:
        return _REASONS[anomaly.reason][0]
    return KIND_NAMES_ZH.get(anomaly.kind, "") + _DETECTORS.get(anomaly.detector, ("异常",))[0]


def _reason_en(anomaly: Anomaly) -> str:
    if anomaly.reason in _REASONS:
        return _REASONS[anomaly.reason][1]
    return f"{_KIND_NAMES_EN.get(anomaly.kind, '')} {_DETECTORS.get(anomaly.detector, ('', 'anomaly'))[1]}"


@dataclass(frozen=True)
class Alert:
    """A snapshot of one alert; the newest snapshot of an ``alert_id`` is the alert."""

    alert_id: str
    status: str  # "open" or "resolved"
    sensor_id: str
    kind: str
    severity: str
    detector: str
    reason: str
    score: float
    field: str
    observed: float
    expected: float
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


def alert_from_anomaly(anomaly: Anomaly, district_name: str, city_name: str, *,
                       district_name_en: str = "") -> Alert:
    """The alert snapshot an anomaly event leads to (names come from the region index).

    The English title names the district by ``district_name_en``, or by its code without one.
    """
    resolved = anomaly.phase == "end"
    op = ">" if anomaly.observed >= anomaly.expected else "<"
    where_zh = f"{city_name}{district_name}"
    return Alert(
        alert_id=anomaly.anomaly_id,
        status="resolved" if resolved else "open",
        sensor_id=anomaly.sensor_id,
        kind=anomaly.kind,
        severity=anomaly.severity,
        detector=anomaly.detector,
        reason=anomaly.reason,
        score=anomaly.peak_score,
        field=anomaly.field,
        observed=anomaly.observed,
        expected=anomaly.expected,
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
            f"{_reason_zh(anomaly)}：{anomaly.field} {anomaly.observed:g} {op} {anomaly.expected:g}"
        ),
        title_en=(
            f"{anomaly.severity} {_reason_en(anomaly)} at {anomaly.sensor_id} "
            f"({district_name_en or anomaly.district_code}): {anomaly.field} {anomaly.observed:g} {op} {anomaly.expected:g}"
        ),
    )
