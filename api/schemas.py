"""Response shapes of the API, so the OpenAPI document says what clients get."""

from __future__ import annotations

from pydantic import BaseModel

__all__ = ("ItemError", "ReadingsAccepted", "ReadingsRejected", "AlertPublic", "AlertsPublic", "Health")


class ItemError(BaseModel):
    index: int
    field: str | None
    reason: str


class ReadingsAccepted(BaseModel):
    accepted: int


class ReadingsRejected(BaseModel):
    detail: str
    accepted: int
    errors: list[ItemError]


class AlertPublic(BaseModel):
    alert_id: str
    status: str
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
    opened_at: str
    updated_at: str
    resolved_at: str | None
    title_zh: str
    title_en: str


class AlertsPublic(BaseModel):
    count: int
    alerts: list[AlertPublic]


class Health(BaseModel):
    status: str
