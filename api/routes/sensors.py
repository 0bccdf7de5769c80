"""Sensors: the registry joined with each sensor's latest reading and status, and its series.

``GET /v1/sensors`` pages through the sensors the key may see, in id order, with filters;
``GET /v1/sensors/{id}`` is one of them; ``GET /v1/sensors/{id}/readings`` its recent readings
(the last ~360 kept in memory per sensor, fewer each when the fleet is very large), for charts.
A sensor outside the key's scope is 404, as if it did not exist.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response

from api.auth import Principal, ViewerDep
from api.deps import RegionsDep, SituationDep
from api.params import time_param
from api.routes.situation import json_response
from api.schemas import SensorPublic, SensorReadings, SensorsPublic
from api.situation import find_city, scope_of
from cityagent.readings import KINDS, shown
from cityagent.situation import SituationModel

__all__ = ("router",)

router = APIRouter(tags=["sensors"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or an unknown one."},
    403: {"description": "The key may not read (an integrator key)."},
    422: {"description": "A filter, cursor or time is invalid; `detail` says which."},
}
_ONE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS, 404: {"description": "No such sensor (or not in the key's scope)."}}
_KINDS = (*KINDS, "generic")
SensorId = Annotated[str, Path(description="The sensor's id", examples=["jn-wl-000042"])]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _cursor(sensor_id: str) -> str:
    """An opaque page cursor: the last sensor id of the page, tagged so that a string that
    merely decodes (``AA`` is a NUL byte; ``YQ`` is ``a``) is not taken for one."""
    return base64.urlsafe_b64encode(orjson.dumps(["sensor", sensor_id])).rstrip(b"=").decode()


def _after(cursor: str | None) -> str | None:
    """The sensor id a ``next_cursor`` holds; 422 unless it is exactly what :func:`_cursor`
    gives: before, any base64 text was taken as a sensor id (``AA``: a NUL byte, sorting
    before every id), and the client silently got page 1 again."""
    if cursor is None:
        return None
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        tag, after = orjson.loads(raw)
        if tag != "sensor" or not isinstance(after, str) or _cursor(after) != cursor:
            raise ValueError("not a cursor of this API")
        return after
    except (binascii.Error, ValueError, TypeError):
        raise HTTPException(422, f"cursor {cursor[:40]!r} is not one this API gave out; pass "
                                 "the next_cursor of the previous page unchanged") from None


def _visible(model: SituationModel, sensor_id: str, principal: Principal, now_ms: int
             ) -> dict[str, Any]:
    item = model.sensor(sensor_id, now_ms)
    if item is None or not principal.may_see(item["city_code"] or "", sensor_id):
        raise HTTPException(404, f"no sensor {shown(sensor_id)}" + (
            " in this key's scope" if item is not None else ""))
    return item


@router.get("/v1/sensors", response_model=SensorsPublic, responses=_ERRORS)
async def list_sensors(
    principal: ViewerDep,
    model: SituationDep,
    regions: RegionsDep,
    city: Annotated[str | None, Query(description="City code or name (370100, 济南, Jinan)")] = None,
    district: Annotated[str | None, Query(description="District code, e.g. 370102")] = None,
    kind: Annotated[str | None, Query(description="traffic, water_level, pipe_pressure")] = None,
    status: Annotated[Literal["reporting", "silent"] | None, Query()] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Sensors the key may see, in id order: registry fields, latest values and status."""
    city_code = None
    if city is not None:
        found = find_city(regions, city)
        if found is None:
            raise HTTPException(422, f"unknown city {city!r}; give a code like 370100 or a "
                                     "name like 济南 or Jinan")
        city_code = found.code
    if district is not None:
        try:
            regions.district(district.strip())
        except KeyError:
            raise HTTPException(422, f"unknown district {district!r}; give a district code "
                                     "like 370102 (历下区)") from None
        district = district.strip()
    if kind is not None and kind not in _KINDS:
        raise HTTPException(422, f"kind must be one of {', '.join(_KINDS)}; got {kind!r}")
    items, last, total = model.sensors(
        _now_ms(), scope_of(principal, model), city=city_code, district=district, kind=kind,
        status=status, after=_after(cursor), limit=limit)
    return json_response({"count": len(items), "total": total, "sensors": items,
                          "next_cursor": _cursor(last) if last is not None else None})


@router.get("/v1/sensors/{sensor_id}", response_model=SensorPublic, responses=_ONE_ERRORS)
async def get_sensor(sensor_id: SensorId, principal: ViewerDep, model: SituationDep) -> Response:
    """One sensor: registry fields, latest values and status."""
    return json_response(_visible(model, sensor_id, principal, _now_ms()))


@router.get("/v1/sensors/{sensor_id}/readings", response_model=SensorReadings,
            responses=_ONE_ERRORS)
async def sensor_readings(
    sensor_id: SensorId,
    principal: ViewerDep,
    model: SituationDep,
    since: Annotated[str | None, Query(description="Only readings at or after this time: "
                                                   "RFC 3339 with offset, or epoch seconds or ms")] = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000, description="At most this many, "
                                                                     "the newest")] = None,
) -> Response:
    """The sensor's recent readings, oldest first (the API keeps ~360 per sensor)."""
    item = _visible(model, sensor_id, principal, _now_ms())
    since_ms = time_param(since, "since")
    readings = model.readings(sensor_id, since_ms=since_ms, limit=limit) or []
    return json_response({"sensor_id": sensor_id, "kind": item["kind"], "readings": readings})
