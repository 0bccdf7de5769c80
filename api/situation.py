"""The situation answers over HTTP: scope from the caller's key, open alerts, GeoJSON for maps.

The figures come from :class:`~cityagent.situation.SituationModel` (readings) and the alert
book (alerts); this module only joins them for one caller: it turns a key's scope into a
sensor mask, counts the alerts the key may see (re-listing them only when the book changed),
and turns a summary into map features whose geometry is the city or district polygon the
dashboard draws (``api.routes.dashboard``), so a map can colour it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import orjson

from api.alert_book import AlertBook, AlertQuery
from api.auth import Principal
from api.routes.dashboard import cities_geojson, districts_geojson
from cityagent.detectors.verdict import SEVERITIES
from cityagent.regions import City, RegionIndex
from cityagent.situation import AlertTally, Scope, SituationModel

__all__ = ("find_city", "scope_of", "AlertCounter", "situation_geojson", "flatten")


def find_city(regions: RegionIndex, text: str) -> City | None:
    """The city named by a code (``370100``) or name (``济南``, ``济南市``, ``Jinan``)."""
    wanted = text.strip().lower()
    for city in regions.cities:
        if wanted in {city.code, city.name, city.name.removesuffix("市"), city.name_en.lower()}:
            return city
    return None


def scope_of(principal: Principal, model: SituationModel) -> Scope:
    """What this key may see of the model: everything, or a mask and its whole cities."""
    if not principal.scoped:
        return Scope()
    return Scope(principal.scope_mask(model.sensor_ids, model.city_codes),
                 frozenset(principal.cities), bool(principal.prefixes))


class AlertCounter:
    """The alerts a key may see, as an AlertTally, re-listed only when the book changed."""

    def __init__(self, book: AlertBook, regions: RegionIndex, cache_size: int = 64) -> None:
        self._book = book
        self._regions = regions
        self._cache_size = cache_size
        self._cache: dict[tuple[str, ...] | None, tuple[int, AlertTally]] = {}

    def tally(self, principal: Principal | None) -> AlertTally:
        key = principal.scopes if principal is not None and principal.scoped else None
        version = self._book.applied
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        query = AlertQuery(principal=principal if key is not None else None)
        alerts = self._book.query(query, limit=max(len(self._book), 1)).alerts
        tally = AlertTally.from_alerts(alerts, self._regions)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[key] = (version, tally)
        return tally

    def open_by_severity(self) -> dict[str, int]:
        """Open alerts of the whole province per severity (for /metrics)."""
        tally = self.tally(None)
        return {severity: int(((tally.severity == i) & tally.open).sum())
                for i, severity in enumerate(SEVERITIES)}


def flatten(summary: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A summary as flat map properties: ``sensors.total`` → ``sensors_total``; no trend."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if key == "trend":
            continue
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}_"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def situation_geojson(answer: Mapping[str, Any], regions: RegionIndex,
                      city_code: str | None = None) -> dict[str, Any]:
    """The answer as a FeatureCollection: one feature per city (or district of ``city_code``)."""
    if city_code is None:
        summaries, shapes = answer["cities"], _shapes(regions, None)
        extra = {"province": flatten(answer["province"])}
    else:
        summaries, shapes = answer["districts"], _shapes(regions, city_code)
        extra = {"city": flatten(answer["city"])}
    features = [{"type": "Feature", "id": s["code"], "properties": flatten(s),
                 "geometry": shapes.get(s["code"])} for s in summaries]
    return {"type": "FeatureCollection", "as_of": answer["as_of"],
            "as_of_ms": answer["as_of_ms"], **extra, "features": features}


@functools.lru_cache(maxsize=32)
def _shapes(regions: RegionIndex, city_code: str | None) -> dict[str, Any]:
    """Geometry by code, from the dashboard's boundary files (built once per process)."""
    data = cities_geojson(regions) if city_code is None else districts_geojson(regions, city_code)
    return {f["id"]: f["geometry"] for f in orjson.loads(data)["features"]}
