"""Operational zones and routing for admins: read them, change zones without a restart.

A zone change is a record on the compacted zones topic (``PUT``/``DELETE`` answer 202 once
Kafka stored it); every worker and every API process reads that topic whole and applies it
(``streams/zone_feed.py``), so a new or moved zone takes effect everywhere within seconds and
carries a version. The zone is validated here first (geometry, inside Shandong, size,
lon/lat order, known department): a bad zone is a 422 naming what is wrong, never a record.
Routing rules work the same way: ``PUT /v1/routing`` replaces the whole document (the JSON of
``cityagent/data/routing.toml``) with a new version on the compacted routing topic.

Every route here first waits until this API has read its topic up to where it ended when the
API started (``api.deps.read_up_to_start``; 503 after a bound): before that it holds the
packaged zones and rules, or part of the topic, and would answer with them as if they were
the truth, or write a version below one already on the topic.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, HTTPException, Request

from api.auth import AdminDep, ViewerDep
from api.deps import read_up_to_start
from cityagent.errors import ConfigError
from cityagent.routing import Router
from cityagent.zones import (
    MAX_VERSION,
    ZoneError,
    ZoneSet,
    delete_record,
    parse_zone,
    zone_record,
)
from streams.routing_feed import ROUTING_KEY

__all__ = ("router",)

router = APIRouter(tags=["zones"])

_FEATURE_EXAMPLE: dict[str, Any] = {
    "type": "Feature",
    "properties": {"zone_id": "jn-underpass-lishan", "name": "历山路下穿隧道",
                   "name_en": "Lishan Road underpass", "zone_kind": "underpass",
                   "department": "transport", "severity_adjust": 1},
    "geometry": {"type": "Polygon", "coordinates": [[[117.030, 36.660], [117.034, 36.660],
                                                     [117.034, 36.663], [117.030, 36.663],
                                                     [117.030, 36.660]]]},
}
_QUEUED = {"zone_id": "jn-underpass-lishan", "version": 19, "status": "queued"}
_NOT_READ = {503: {"description": "This API has not read the topic up to its end yet (it "
                                  "just started, or the broker does not answer): retry after "
                                  "Retry-After."}}


def _feed(request: Request):
    return request.app.state.zone_feed


@router.get("/v1/zones", responses={200: {"content": {"application/json": {"example": {
    "type": "FeatureCollection", "version": 18, "content_hash": "3f2a9c0d1b7e4a55",
    "features": [_FEATURE_EXAMPLE]}}}}, **_NOT_READ})
async def list_zones(request: Request, _principal: ViewerDep) -> dict[str, Any]:
    """Every operational zone now, as a GeoJSON FeatureCollection with its version."""
    feed = _feed(request)
    await read_up_to_start(feed, "zones")
    return feed.zones.to_feature_collection()


@router.get("/v1/zones/{zone_id}", responses={
    200: {"content": {"application/json": {"example": _FEATURE_EXAMPLE}}},
    404: {"description": "No such zone."}, **_NOT_READ})
async def get_zone(zone_id: str, request: Request, _principal: ViewerDep) -> dict[str, Any]:
    """One zone as a GeoJSON Feature."""
    feed = _feed(request)
    await read_up_to_start(feed, "zones")
    zones = feed.zones
    if zone_id not in zones:
        raise HTTPException(404, f"no zone {zone_id!r}")
    return {**zones[zone_id].to_feature(), "version": zones[zone_id].version}


@router.put("/v1/zones/{zone_id}", status_code=202, responses={
    202: {"content": {"application/json": {"example": _QUEUED}}},
    409: {"description": "The zones are at the largest version (2**53 - 1)."},
    422: {"description": "The zone is invalid: the message names the property and why."},
    **_NOT_READ})
async def put_zone(
    zone_id: str, request: Request, _principal: AdminDep,
    feature: Annotated[dict[str, Any], Body(examples=[_FEATURE_EXAMPLE])],
) -> dict[str, Any]:
    """Create or replace a zone (GeoJSON Feature, Polygon or MultiPolygon, lon/lat)."""
    feed = _feed(request)
    props = feature.get("properties")
    if isinstance(props, dict):
        if props.setdefault("zone_id", zone_id) != zone_id:
            raise HTTPException(422, f"the feature's zone_id {props['zone_id']!r} differs from "
                                     f"the path's {zone_id!r}")
    zone = await _parse_zone(feature, feed.regions, request.app.state.routing_feed)
    await read_up_to_start(feed, "zones")
    version = _next_version(feed.zones.version, "zones")
    key, value = zone_record(_with_version(zone, version))
    await request.app.state.zone_writer.send_value(key, orjson.dumps(value), f"zone {key!r}")
    return {"zone_id": key, "version": version, "status": "queued"}


@router.delete("/v1/zones/{zone_id}", status_code=202, responses={
    202: {"content": {"application/json": {"example": _QUEUED}}},
    404: {"description": "No such zone."},
    409: {"description": "The zones are at the largest version (2**53 - 1)."},
    **_NOT_READ})
async def delete_zone(zone_id: str, request: Request, _principal: AdminDep) -> dict[str, Any]:
    """Remove a zone everywhere (a versioned delete record on the zones topic)."""
    feed = _feed(request)
    await read_up_to_start(feed, "zones")
    if zone_id not in feed.zones:
        raise HTTPException(404, f"no zone {zone_id!r}")
    version = _next_version(feed.zones.version, "zones")
    key, value = delete_record(zone_id, version)
    await request.app.state.zone_writer.send_value(key, orjson.dumps(value), f"zone {key!r}")
    return {"zone_id": key, "version": version, "status": "queued"}


_ROUTING_DOC = {
    "departments": {"water": {"zh": "水务", "en": "water affairs"},
                    "city_command": {"zh": "市指挥中心", "en": "city command centre"},
                    "province_command": {"zh": "省指挥中心", "en": "provincial command centre"}},
    "rule": [{"kind": "water_level", "zone_kind": "*", "departments": ["water"]}],
}


@router.get("/v1/routing", responses={200: {"content": {"application/json": {"example": {
    "version": 0, "departments": {"water": {"zh": "水务", "en": "water affairs"}},
    "rules": [{"number": 1, "kind": "water_level", "zone_kind": "*", "reason": None,
               "min_severity": "blue", "departments": ["water"]}]}}}}, **_NOT_READ})
async def routing_rules(request: Request, _principal: ViewerDep) -> dict[str, Any]:
    """The departments and routing rules in force, and their version (0: the packaged file)."""
    feed = request.app.state.routing_feed
    await read_up_to_start(feed, "routing")
    router_: Router = feed.router
    return {"version": feed.version,
            "departments": {code: {"zh": d.zh, "en": d.en}
                            for code, d in router_.departments.items()},
            "rules": [asdict(rule) for rule in router_.rules]}


@router.put("/v1/routing", status_code=202, responses={
    202: {"content": {"application/json": {"example": {"version": 1, "status": "queued"}}}},
    409: {"description": "The rules drop a department that zones still name: the message "
                         "names each such department and its zones; or they are at the "
                         "largest version (2**53 - 1)."},
    422: {"description": "The rules are invalid: the message names the rule and the key."},
    **_NOT_READ})
async def put_routing(
    request: Request, _principal: AdminDep,
    document: Annotated[dict[str, Any], Body(examples=[_ROUTING_DOC])],
) -> dict[str, Any]:
    """Replace the routing rules everywhere: the document of routing.toml, as JSON
    (``departments`` and ``rule``); validated first, then a new version on the routing topic."""
    try:
        rules = Router.from_dict(document, "the routing document")
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    feed = request.app.state.routing_feed
    await read_up_to_start(feed, "routing")
    zones = _feed(request)
    await read_up_to_start(zones, "zones")
    _refuse_orphaned_zones(zones.zones, rules)
    version = _next_version(feed.version, "routing")
    await request.app.state.routing_writer.send_value(
        ROUTING_KEY, orjson.dumps({"version": version, "routing": document}),
        f"routing version {version}")
    return {"version": version, "status": "queued"}


def _next_version(current: int, topic: str) -> int:
    """One above ``current``; 409 at the bound (the state of the topic, not the request, is
    what stops it): a version past it was a 500 (orjson cannot write one past 2**64 - 1) or
    read inexactly by JavaScript (past 2**53 - 1)."""
    if current >= MAX_VERSION:
        raise HTTPException(409, f"the {topic} are at version {current}, the largest a version "
                                 f"may be ({MAX_VERSION}, 2**53 - 1: the largest whole number "
                                 "every JSON reader keeps exact), so no further change can be "
                                 f"versioned; start the {topic} topic afresh, with versions "
                                 "below that bound")
    return current + 1


def _refuse_orphaned_zones(zones: ZoneSet, rules: Router) -> None:
    """409 when the new rules drop a department that zones still name: those zones would
    route their alerts to a department no rule knows. Checked against the zones this API has
    read (all of the topic up to its start, and what came since); the detail names every
    such department and its zones, so the admin can move or delete them first."""
    known = set(rules.department_codes)
    orphans: dict[str, list[str]] = {}
    for zone_id, zone in zones.zones.items():
        if zone.department not in known:
            orphans.setdefault(zone.department, []).append(zone_id)
    if not orphans:
        return
    named = "; ".join(f"{code!r} (named by {_listed(ids)})"
                      for code, ids in sorted(orphans.items()))
    raise HTTPException(409, "the routing document drops department(s) that zones still name: "
                             f"{named}. Give those zones another department "
                             "(PUT /v1/zones/{zone_id}) or delete them first, or keep the "
                             "department(s) in 'departments'")


def _listed(zone_ids: list[str], most: int = 20) -> str:
    """``zone 'a'``, ``zones 'a', 'b'``, or the first ``most`` and how many more."""
    shown = ", ".join(repr(z) for z in zone_ids[:most])
    more = f" and {len(zone_ids) - most} more" if len(zone_ids) > most else ""
    return f"zone {shown}" if len(zone_ids) == 1 else f"zones {shown}{more}"


async def _parse_zone(feature: dict[str, Any], regions, routing) -> Any:
    """The zone, its department one of the routing rules in force (PUT /v1/routing may have
    added it); 422 naming what is wrong. Only an unknown department waits for the routing
    topic to be read (503 after a bound): any other mistake is answered at once."""
    try:
        return parse_zone(feature, regions, departments=routing.router.department_codes)
    except ZoneError as exc:
        if exc.property != "department" or routing.follower.caught_up:
            raise HTTPException(422, str(exc)) from None
    await read_up_to_start(routing, "routing")
    try:
        return parse_zone(feature, regions, departments=routing.router.department_codes)
    except ZoneError as exc:
        raise HTTPException(422, str(exc)) from None


def _with_version(zone, version: int):
    from dataclasses import replace

    return replace(zone, version=version)
