"""The one-screen dashboard (一屏观全省): the page at ``/``, its files and its map boundaries.

Everything the page needs is served from here, so it works without internet access:

* ``GET /`` — ``api/static/index.html``; the page then calls the /v1 routes with the
  operator key the user typed (kept in the browser's ``sessionStorage``).
* ``/static/...`` — the page's scripts and styles, and the vendored Apache ECharts
  (``api/static/vendor/echarts``, Apache-2.0, with its LICENSE and NOTICE).
* ``GET /geo/cities.json`` — Shandong's 16 cities as one GeoJSON FeatureCollection.
* ``GET /geo/{city_code}.json`` — one city's districts.

The boundaries are derived, once per process, from the district polygons the project already
vendors in ``cityagent/data/shandong_districts.json`` (MIT; see ``SOURCE.md`` there): a city
is the union of its districts. They are simplified for drawing (a few hundred metres, well
within the source's stated accuracy of about a kilometre). Each feature's ``name`` is its
code (``370100``), which is how the page registers and colours regions; ``name_zh`` and
``name_en`` are for labels (e.g. 历下区 and Lixia District), ``cp`` is a label point inside the
shape. A city also lists its districts' names, ``districts: {code: {"zh", "en"}}``, so that the
page can name the district of any alert before it has loaded that city. These routes are public,
like the page itself: boundaries are not secret, and every alert or figure needs a key.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import orjson
import shapely
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from shapely.geometry import mapping

from api.preconditions import none_match_names
from cityagent.regions import RegionIndex

__all__ = ("router", "mount_dashboard", "STATIC_DIR", "cities_geojson", "districts_geojson")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

#: Simplification tolerances, degrees (1e-3° ≈ 100 m): cities are drawn province-wide, districts
#: one city at a time.
CITY_TOLERANCE = 0.002
DISTRICT_TOLERANCE = 0.0008
#: Holes smaller than this (degrees², ≈ 5 km²) left by slivers between districts are dropped.
MIN_HOLE_AREA = 0.0005

router = APIRouter(include_in_schema=False)


class _Revalidated(StaticFiles):
    """Static files the browser revalidates (a cheap 304) on every load, so that after an
    upgrade no screen runs yesterday's scripts with today's API."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_dashboard(app: FastAPI) -> None:
    """Add the page, its static files and the boundary routes to ``app``."""
    app.include_router(router)
    app.mount("/static", _Revalidated(directory=STATIC_DIR), name="static")


@router.get("/")
async def dashboard() -> FileResponse:
    """The dashboard page (no-cache, so a new release is picked up on reload)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})


router.add_api_route("/", dashboard, methods=["HEAD"], include_in_schema=False)


@router.get("/geo/cities.json")
def geo_cities(request: Request) -> Response:
    return _geojson(request, cities_geojson(request.app.state.regions))


@router.get("/geo/{city_code}.json")
def geo_city(city_code: str, request: Request) -> Response:
    regions: RegionIndex = request.app.state.regions
    try:
        regions.city(city_code)
    except KeyError:
        raise HTTPException(404, f"no city {city_code!r}; give a code like 370100 (one of "
                                 f"{', '.join(c.code for c in regions.cities)})") from None
    return _geojson(request, districts_geojson(regions, city_code))


# Plain ``def``: the first call builds the shapes (~0.3 s), in the threadpool, not the event loop.
def _geojson(request: Request, body: bytes) -> Response:
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=3600"}
    # RFC 9110's weak comparison: nginx with gzip on turns the ETag weak (W/"..."), and the
    # browser sends that back; an exact comparison with "..." answered it the whole file.
    if none_match_names(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/geo+json", headers=headers)


# The region index lives as long as the app, so caching by it is caching once per process.
@functools.lru_cache(maxsize=4)
def cities_geojson(regions: RegionIndex) -> bytes:
    """The 16 cities, each the union of its districts, as GeoJSON bytes."""
    features = []
    for city in regions.cities:
        parts = [p for d, p in zip(regions.districts, regions.polygons, strict=True)
                 if d.city_code == city.code]
        shape = _drop_small_holes(shapely.union_all(parts))
        names = {d.code: {"zh": d.name, "en": d.name_en}
                 for d in regions.districts if d.city_code == city.code}
        features.append(_feature(shape, CITY_TOLERANCE, code=city.code, name_zh=city.name,
                                 name_en=city.name_en, districts=names))
    return orjson.dumps({"type": "FeatureCollection", "features": features})


@functools.lru_cache(maxsize=32)
def districts_geojson(regions: RegionIndex, city_code: str) -> bytes:
    """One city's districts as GeoJSON bytes."""
    features = [
        _feature(p, DISTRICT_TOLERANCE, code=d.code, name_zh=d.name, name_en=d.name_en,
                 city_code=d.city_code)
        for d, p in zip(regions.districts, regions.polygons, strict=True)
        if d.city_code == city_code
    ]
    return orjson.dumps({"type": "FeatureCollection", "features": features})


def _feature(shape: Any, tolerance: float, *, code: str, **properties: Any) -> dict[str, Any]:
    point = shapely.point_on_surface(_largest(shape))
    simple = shapely.set_precision(shapely.simplify(shape, tolerance, preserve_topology=True),
                                   1e-5)
    return {"type": "Feature", "id": code,
            "properties": {"name": code, "code": code, **properties,
                           "cp": [round(point.x, 5), round(point.y, 5)]},
            "geometry": mapping(simple)}


def _largest(shape: Any) -> Any:
    return max(shape.geoms, key=lambda g: g.area) if hasattr(shape, "geoms") else shape


def _drop_small_holes(shape: Any) -> Any:
    polygons = shape.geoms if hasattr(shape, "geoms") else [shape]
    kept = [shapely.Polygon(p.exterior, [r for r in p.interiors
                                         if shapely.Polygon(r).area >= MIN_HOLE_AREA])
            for p in polygons]
    return kept[0] if len(kept) == 1 else shapely.MultiPolygon(kept)
