"""The situation (一屏观全省): the province and its cities now, and one city drilled down.

``GET /v1/situation`` and ``GET /v1/situation/{city}`` answer from the situation model (built
from the readings topic) and the alert book (the alerts topic), for what the caller's key may
see; ``?format=geojson`` gives the same figures as map features with the city or district
polygon. Answers are encoded with orjson straight from the model; the response models
document them (and the tests check answers against them).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson
from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from api.auth import OperatorDep
from api.deps import AlertCounterDep, RegionsDep, SituationDep
from api.schemas import CitySituationPublic, SituationPublic
from api.situation import find_city, scope_of, situation_geojson

__all__ = ("router", "json_response")

router = APIRouter(tags=["situation"])

_GEOJSON_DOC: dict[str, Any] = {
    "description": "With `?format=geojson`: a FeatureCollection, one feature per city (or "
                   "district), the summary flattened into its properties "
                   "(`sensors_total`, `alerts_open`, `indicators_traffic_index`...) and the "
                   "area's polygon as geometry.",
    "content": {"application/geo+json": {}},
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or an unknown one."},
    403: {"description": "The key is not an operator or admin key."},
}
Format = Literal["json", "geojson"]


def json_response(body: Any, media_type: str = "application/json") -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type=media_type)


def _now_ms() -> int:
    return int(time.time() * 1000)


@router.get("/v1/situation", response_model=SituationPublic,
            responses={**_ERRORS, 200: _GEOJSON_DOC})
async def situation(principal: OperatorDep, model: SituationDep, alerts: AlertCounterDep,
                    regions: RegionsDep, format: Format = "json") -> Response:
    """The province and every city: sensors reporting and silent, readings/s, open alerts,
    indicators and a 30-minute trend.

    A key scoped to cities sees those cities (and the province as their sum); one scoped by
    sensor-id prefix sees its sensors, and the cities they are in.
    """
    answer = model.situation(_now_ms(), scope_of(principal, model), alerts.tally(principal))
    if format == "geojson":
        return json_response(situation_geojson(answer, regions), "application/geo+json")
    return json_response(answer)


@router.get("/v1/situation/{city}", response_model=CitySituationPublic,
            responses={**_ERRORS, 200: _GEOJSON_DOC,
                       404: {"description": "No such city (or not in the key's scope)."}})
async def city_situation(city: str, principal: OperatorDep, model: SituationDep,
                         alerts: AlertCounterDep, regions: RegionsDep,
                         format: Format = "json") -> Response:
    """One city (code like ``370100``, or name ``济南`` / ``Jinan``): its summary, each of its
    districts, and its sensors worst first (at most 2000)."""
    found = find_city(regions, city)
    if found is None:
        raise HTTPException(404, f"no city {city!r}; give a code like 370100 or a name like "
                                 f"济南 or Jinan (one of {', '.join(c.name for c in regions.cities)})")
    if not principal.may_see_city(found.code) and not principal.prefixes:
        raise HTTPException(404, f"no city {city!r} in this key's scope "
                                 f"({'|'.join(principal.scopes)})")
    answer = model.city_situation(found.code, _now_ms(), scope_of(principal, model),
                                  alerts.tally(principal))
    if format == "geojson":
        return json_response(situation_geojson(answer, regions, found.code),
                             "application/geo+json")
    return json_response(answer)
