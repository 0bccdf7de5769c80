"""POST /v1/readings: integrators push readings; 202 only once Kafka has stored them."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import PublisherDep, RegionsDep
from api.schemas import ItemError, ReadingsAccepted, ReadingsRejected
from cityagent.batch import ReadingBatch
from cityagent.errors import InvalidReading
from cityagent.readings import Reading, parse_reading
from cityagent.regions import RegionIndex

router = APIRouter(tags=["readings"])

#: Largest request body and item count one request may carry.
MAX_BODY_BYTES = 16 << 20
MAX_ITEMS = 50_000

_EXAMPLE = [
    {"sensor_id": "jn-wl-000042", "kind": "water_level", "ts": "2026-11-22T08:30:00+08:00",
     "lon": 117.02, "lat": 36.66, "level_m": 2.41},
    {"sensor_id": "qd-tr-000007", "kind": "traffic", "ts": 1795307400,
     "lon": 120.38, "lat": 36.07, "speed_kmh": 42.5, "flow_vph": 1320, "occupancy_pct": 18.0},
]


@router.post(
    "/v1/readings",
    status_code=202,
    response_model=ReadingsAccepted,
    responses={
        400: {"description": "The body is not JSON."},
        413: {"description": "Too large: more than 16 MiB or 50,000 readings."},
        422: {"model": ReadingsRejected, "description": "Some readings are invalid; none was accepted."},
        503: {"description": "Kafka did not acknowledge; nothing was accepted. Retry after Retry-After."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {
                "schema": {"type": "array", "items": {"type": "object"}},
                "example": _EXAMPLE,
            }},
        }
    },
)
async def post_readings(request: Request, publisher: PublisherDep, regions: RegionsDep) -> Any:
    """Accept a JSON array of readings (or one reading object), all or nothing.

    Every item is validated and located in its district; if any is invalid the answer is 422
    listing each bad item's index, field and reason, and nothing is stored.
    """
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return _error(413, f"request body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _error(400, f"request body is not valid JSON: {exc}")
    items = doc if isinstance(doc, list) else [doc]
    if len(items) > MAX_ITEMS:
        return _error(413, f"{len(items)} readings in one request; the limit is {MAX_ITEMS}")
    if not items:
        return _error(422, "the array holds no readings")
    readings, districts, errors = _validate(items, regions)
    if errors:
        rejected = ReadingsRejected(
            detail=f"{len(errors)} of {len(items)} readings are invalid; none was accepted",
            accepted=0,
            errors=errors,
        )
        return JSONResponse(rejected.model_dump(), status_code=422)
    accepted = await publisher.publish(ReadingBatch.from_readings(readings, districts))
    return ReadingsAccepted(accepted=accepted)


def _validate(
    items: list[Any], regions: RegionIndex
) -> tuple[list[Reading], np.ndarray, list[ItemError]]:
    errors: list[ItemError] = []
    readings: list[Reading] = []
    indices: list[int] = []
    for i, raw in enumerate(items):
        try:
            readings.append(parse_reading(raw))
            indices.append(i)
        except InvalidReading as exc:
            errors.append(ItemError(index=i, field=exc.field, reason=exc.reason))
    if not readings:
        return readings, np.zeros(0, dtype=np.int64), errors
    lon = np.fromiter((r.lon for r in readings), float, len(readings))
    lat = np.fromiter((r.lat for r in readings), float, len(readings))
    found = regions.locate(lon, lat)
    for row in np.flatnonzero(found < 0).tolist():
        errors.append(ItemError(
            index=indices[row], field="lon",
            reason=f"position lon={lon[row]:g}, lat={lat[row]:g} is outside Shandong province "
            "(in none of its districts); positions are WGS84 [lon, lat], lon first",
        ))
    errors.sort(key=lambda e: e.index)
    return readings, regions.district_code_numbers(found), errors


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)
