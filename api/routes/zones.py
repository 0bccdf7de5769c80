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

Concurrent edits (``api.preconditions``): the reads answer with an ``ETag`` carrying the
version, and a write that sends ``If-Match`` (or the version it read as ``"version"`` in its
body) is a 412 when the zone or the rules changed since. This process's writes run one at a
time, and each is checked against what the process has read with its own writes not read
back yet laid over it (``api.write_ledger``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, HTTPException, Request, Response

from api.auth import AdminDep, ViewerDep
from api.deps import read_up_to_start
from api.preconditions import (
    WRITE_RESPONSES,
    body_version,
    check_preconditions,
    conditional_get,
    etag,
    not_modified,
)
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
_ETAG_SAYS = ('The version, as a strong entity tag ("19"): send it as If-Match to write only '
              "if nothing changed since, or as If-None-Match to get a 304 while it has not.")
_ETAG = {"ETag": {"description": _ETAG_SAYS, "schema": {"type": "string"}},
         "Cache-Control": {"description": "no-cache: keep the answer if you like, but ask "
                                          "again with If-None-Match before you use it.",
                           "schema": {"type": "string"}}}
_READ = {**not_modified(_ETAG_SAYS), **_NOT_READ}


def _feed(request: Request):
    return request.app.state.zone_feed


@router.get("/v1/zones", response_model=dict[str, Any], responses={
    200: {"headers": _ETAG, "content": {"application/json": {"example": {
        "type": "FeatureCollection", "version": 18, "content_hash": "3f2a9c0d1b7e4a55",
        "features": [{**_FEATURE_EXAMPLE, "version": 12}]}}}}, **_READ})
async def list_zones(request: Request, response: Response,
                     _principal: ViewerDep) -> dict[str, Any] | Response:
    """Every operational zone now, as a GeoJSON FeatureCollection with its version (also the
    ETag); each feature carries its own ``version``, the one its ``If-Match`` names."""
    feed = _feed(request)
    await read_up_to_start(feed, "zones")
    zones = feed.zones
    if (unchanged := conditional_get(request, response, etag(zones.version))) is not None:
        return unchanged
    collection = zones.to_feature_collection()
    for feature, zone in zip(collection["features"], zones.zones.values(), strict=True):
        feature["version"] = zone.version
    return collection


@router.get("/v1/zones/{zone_id}", response_model=dict[str, Any], responses={
    200: {"headers": _ETAG, "content": {"application/json": {"example": _FEATURE_EXAMPLE}}},
    404: {"description": "No such zone."}, **_READ})
async def get_zone(zone_id: str, request: Request, response: Response,
                   _principal: ViewerDep) -> dict[str, Any] | Response:
    """One zone as a GeoJSON Feature, with its ``version`` (also the ETag)."""
    feed = _feed(request)
    await read_up_to_start(feed, "zones")
    zones = feed.zones
    if zone_id not in zones:
        raise HTTPException(404, f"no zone {zone_id!r}")
    zone = zones[zone_id]
    if (unchanged := conditional_get(request, response, etag(zone.version))) is not None:
        return unchanged
    return {**zone.to_feature(), "version": zone.version}


@router.put("/v1/zones/{zone_id}", status_code=202, responses={
    202: {"content": {"application/json": {"example": _QUEUED}}},
    409: {"description": "The zones are at the largest version (2**53 - 1)."},
    422: {"description": "The zone is invalid: the message names the property and why; or "
                         "its 'version' is not a version."},
    **WRITE_RESPONSES, **_NOT_READ})
async def put_zone(
    zone_id: str, request: Request, _principal: AdminDep,
    feature: Annotated[dict[str, Any], Body(examples=[_FEATURE_EXAMPLE])],
) -> dict[str, Any]:
    """Create or replace a zone (GeoJSON Feature, Polygon or MultiPolygon, lon/lat).

    ``If-Match: "12"`` (or ``"version": 12`` in the body: the version you read) replaces it
    only if it is still at that version, ``If-Match: *`` only if it exists, ``If-None-Match:
    *`` only if it does not; 412 otherwise. Without them it is written whatever its version."""
    feed = _feed(request)
    read_version = body_version(feature, f"zone {zone_id!r}")
    props = feature.get("properties")
    if isinstance(props, dict):
        if props.setdefault("zone_id", zone_id) != zone_id:
            raise HTTPException(422, f"the feature's zone_id {props['zone_id']!r} differs from "
                                     f"the path's {zone_id!r}")
    zone = await _parse_zone(feature, feed.regions, request.app.state.routing_feed)
    await read_up_to_start(feed, "zones")
    async with request.app.state.settings_writes:
        _check_zone(request, zone_id, read_version)
        version = _next_version(request.app.state.zone_ledger.top(feed.zones.version), "zones")
        key, value = zone_record(_with_version(zone, version))
        await _write(request, "zone", key, value, version, f"zone {key!r}")
    return {"zone_id": key, "version": version, "status": "queued"}


@router.delete("/v1/zones/{zone_id}", status_code=202, responses={
    202: {"content": {"application/json": {"example": _QUEUED}}},
    404: {"description": "No such zone."},
    409: {"description": "The zones are at the largest version (2**53 - 1)."},
    **WRITE_RESPONSES, **_NOT_READ})
async def delete_zone(zone_id: str, request: Request, _principal: AdminDep) -> dict[str, Any]:
    """Remove a zone everywhere (a versioned delete record on the zones topic); with
    ``If-Match``, only if it is still at that version (412 otherwise)."""
    feed = _feed(request)
    await read_up_to_start(feed, "zones")
    async with request.app.state.settings_writes:
        if _zone_version(request, zone_id) is None:
            raise HTTPException(404, f"no zone {zone_id!r}")
        _check_zone(request, zone_id, None)
        version = _next_version(request.app.state.zone_ledger.top(feed.zones.version), "zones")
        key, value = delete_record(zone_id, version)
        await _write(request, "zone", key, value, version, f"zone {key!r}", exists=False)
    return {"zone_id": key, "version": version, "status": "queued"}


def _zone_version(request: Request, zone_id: str) -> int | None:
    """The zone's version (None: no such zone): what this API has read, or wrote since."""
    zones = _feed(request).zones
    read = zones[zone_id].version if zone_id in zones else None
    return request.app.state.zone_ledger.current(zone_id, read)


def _check_zone(request: Request, zone_id: str, read_version: int | None) -> None:
    """412 unless the zone is at the version the write names (if it names one)."""
    current = _zone_version(request, zone_id)
    top = request.app.state.zone_ledger.top(_feed(request).zones.version)
    hint = (f" (a zone's version is that of its own last change, the ETag of GET "
            f"/v1/zones/{zone_id} or its feature's 'version' in GET /v1/zones; the zones' "
            f"{top}, the ETag of GET /v1/zones, is the whole set's)" if current != top else "")
    check_preconditions(request, current, f"zone {zone_id!r}", read_version=read_version,
                        hint=hint)


async def _write(request: Request, topic: str, key: str, value: Any, version: int, what: str,
                 *, exists: bool = True) -> None:
    """Write the record (503 when Kafka does not acknowledge it) and note it in the ledger:
    the next write is checked against it before this API has read it back."""
    state = request.app.state
    writer = getattr(state, f"{topic}_writer")
    partition, offset = await writer.send_value(key, orjson.dumps(value), what)
    getattr(state, f"{topic}_ledger").note(key, partition, offset, version, exists=exists)


_ROUTING_DOC = {
    "departments": {"water": {"zh": "水务", "en": "water affairs"},
                    "city_command": {"zh": "市指挥中心", "en": "city command centre"},
                    "province_command": {"zh": "省指挥中心", "en": "provincial command centre"}},
    "rule": [{"kind": "water_level", "zone_kind": "*", "departments": ["water"]}],
}


@router.get("/v1/routing", response_model=dict[str, Any], responses={
    200: {"headers": _ETAG, "content": {"application/json": {"example": {
                "version": 0, "departments": {"water": {"zh": "水务", "en": "water affairs"}},
                "rules": [{"number": 1, "kind": "water_level", "zone_kind": "*",
                           "reason": None, "min_severity": "blue",
                           "departments": ["water"]}]}}}}, **_READ})
async def routing_rules(request: Request, response: Response,
                        _principal: ViewerDep) -> dict[str, Any] | Response:
    """The departments and routing rules in force, and their version (0: the packaged file;
    also the ETag)."""
    feed = request.app.state.routing_feed
    await read_up_to_start(feed, "routing")
    router_: Router = feed.router
    if (unchanged := conditional_get(request, response, etag(feed.version))) is not None:
        return unchanged
    return {"version": feed.version,
            "departments": {code: {"zh": d.zh, "en": d.en}
                            for code, d in router_.departments.items()},
            "rules": [asdict(rule) for rule in router_.rules]}


@router.put("/v1/routing", status_code=202, responses={
    202: {"content": {"application/json": {"example": {"version": 1, "status": "queued"}}}},
    409: {"description": "The rules drop a department that zones still name: the message "
                         "names each such department and its zones; or they are at the "
                         "largest version (2**53 - 1)."},
    422: {"description": "The rules are invalid: the message names the rule and the key; or "
                         "the 'version' is not a version."},
    **WRITE_RESPONSES, **_NOT_READ})
async def put_routing(
    request: Request, _principal: AdminDep,
    document: Annotated[dict[str, Any], Body(examples=[_ROUTING_DOC])],
) -> dict[str, Any]:
    """Replace the routing rules everywhere: the document of routing.toml, as JSON
    (``departments`` and ``rule``), or what ``GET /v1/routing`` gives (``rules``), changed;
    validated first, then a new version on the routing topic.
    ``If-Match: "3"`` (or ``"version": 3`` in the document) only if they are still at version
    3; 412 otherwise."""
    read_version = body_version(document, "the routing document")
    document = routing_document(document)
    try:
        rules = Router.from_dict(document, "the routing document")
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    feed = request.app.state.routing_feed
    await read_up_to_start(feed, "routing")
    zones = _feed(request)
    await read_up_to_start(zones, "zones")
    ledger = request.app.state.routing_ledger
    async with request.app.state.settings_writes:
        check_preconditions(request, ledger.current(ROUTING_KEY, feed.version),
                            "the routing document", read_version=read_version)
        _refuse_orphaned_zones(zones.zones, rules)
        version = _next_version(ledger.top(feed.version), "routing")
        await _write(request, "routing", ROUTING_KEY, {"version": version, "routing": document},
                     version, f"routing version {version}")
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


def routing_document(document: dict[str, Any]) -> dict[str, Any]:
    """The routing document as ``PUT`` takes it (routing.toml's shape, ``rule``), also from the
    shape ``GET /v1/routing`` gives: its ``rules`` carry a ``number`` (the rule's position,
    for messages) and a null ``reason`` where the file leaves it out. What a GET gave, changed
    and sent back, was a 422 "unknown table 'rules'"; such rules are now taken in their
    order, their ``number`` and null members left out."""
    if "rules" not in document:
        return document
    if "rule" in document:
        raise HTTPException(422, "the routing document gives both 'rule' (routing.toml's shape) "
                                 "and 'rules' (the shape GET /v1/routing gives); send one of them")
    rules = document["rules"]
    if not isinstance(rules, list):
        raise HTTPException(422, "'rules' of the routing document must be a list of rules, as "
                                 f"GET /v1/routing gives it; got {type(rules).__name__}")
    taken = [{key: value for key, value in rule.items() if key != "number" and value is not None}
             if isinstance(rule, dict) else rule for rule in rules]
    return {**{key: value for key, value in document.items() if key != "rules"}, "rule": taken}


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
