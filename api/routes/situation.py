"""The situation (一屏观全省): the province and its cities now, and one city drilled down.

``GET /v1/situation`` and ``GET /v1/situation/{city}`` answer from the situation model (built
from the readings topic) and the alert book (the alerts topic), for what the caller's key may
see; ``?format=geojson`` gives the same figures as map features with the city or district
polygon. Answers are encoded with orjson straight from the model; the response models
document them (and the tests check answers against them).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import Response
from pydantic import BaseModel

from api.auth import ViewerDep
from api.deps import AlertCounterDep, RegionsDep, SituationDep
from api.schemas import CitySituationPublic, SituationPublic
from api.situation import find_city, flatten, scope_of, situation_geojson

__all__ = ("router", "json_response")

router = APIRouter(tags=["situation"])


def _geojson_doc(model: type[BaseModel], whole: str, parts: str,
                 box: tuple[float, float, float, float]) -> dict[str, Any]:
    """The 200 answer's ``?format=geojson`` form, its example derived from the JSON example
    (as :func:`situation_geojson` derives the answer; the polygon here is a box)."""
    example = model.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
    x0, y0, x1, y1 = box
    polygon = {"type": "Polygon",
               "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}
    features = [{"type": "Feature", "id": s["code"], "properties": flatten(s),
                 "geometry": polygon} for s in example[parts]]
    return {
        "description": "With `?format=geojson`: a FeatureCollection, one feature per city (or "
                       "district), the summary flattened into its properties "
                       "(`sensors_total`, `alerts_open`, `indicators_traffic_index`...) and the "
                       "area's polygon as geometry.",
        "content": {"application/geo+json": {"schema": {"type": "object"}, "example": {
            "type": "FeatureCollection", "as_of": example["as_of"],
            "as_of_ms": example["as_of_ms"], whole: flatten(example[whole]),
            "features": features}}},
    }


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or an unknown one."},
    403: {"description": "The key may not read (an integrator key)."},
}
Format = Literal["json", "geojson"]
City = Annotated[str, Path(description="City code or name (370100, 济南, Jinan)",
                          examples=["370100"])]


def json_response(body: Any, media_type: str = "application/json") -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type=media_type)


def _now_ms() -> int:
    return int(time.time() * 1000)


@router.get("/v1/situation", response_model=SituationPublic,
            responses={**_ERRORS, 200: _geojson_doc(SituationPublic, "province", "cities",
                                                     (116.2, 36.0, 117.9, 37.5))})
async def situation(principal: ViewerDep, model: SituationDep, alerts: AlertCounterDep,
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
            responses={**_ERRORS,
                       200: _geojson_doc(CitySituationPublic, "city", "districts",
                                         (117.0, 36.55, 117.25, 36.7)),
                       404: {"description": "No such city (or not in the key's scope)."}})
async def city_situation(city: City, principal: ViewerDep, model: SituationDep,
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
