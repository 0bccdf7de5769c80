"""Alerts for operators: list with filters, one alert with its history, and acting on one.

``GET /v1/alerts`` and ``GET /v1/alerts/{id}`` read the API's alert book (built from the
alerts topic); viewer keys may read them too. ``POST /v1/alerts/{id}/ack|resolve|assign|comment``
put a command on the commands topic keyed by the alert's scope and answer 202: the alerting
agent applies it and its event comes back on the alerts topic; they need an operator (or
admin) key, and a viewer key gets a 403 saying so. A scoped key sees and acts on the alerts of its cities only; other
alerts are 404 to it, as if they did not exist.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from typing import Annotated, Any
from urllib.parse import unquote

import orjson
from fastapi import APIRouter, Body, Depends, Header, HTTPException, Path, Query, Request
from fastapi.responses import Response

from api.alert_book import AlertBook, AlertQuery, InvalidCursor
from api.auth import OperatorDep, Principal, ViewerDep
from api.commands import CommandPublisher
from api.deps import CommandsDep, IdempotencyDep, ReadAlertBookDep, RegionsDep
from api.idempotency import IdempotencyCache, IdempotencyConflict, StoredResponse, valid_key
from api.params import time_param
from api.preconditions import conditional_get, digest_etag, not_modified
from api.schemas import (
    AlertAssign,
    AlertComment,
    AlertDetail,
    AlertNote,
    AlertsPublic,
    CommandQueued,
)
from cityagent.detectors.verdict import SEVERITIES
from cityagent.incident_alert import ACKNOWLEDGED, RESOLVED, STATUSES, Command
from cityagent.readings import KINDS
from cityagent.regions import RegionIndex
from cityagent.routing import is_department_code

__all__ = ("router", "alert_query", "AlertQueryDep")

router = APIRouter(tags=["alerts"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or an unknown one."},
    403: {"description": "The key may not read alerts (an integrator key)."},
    422: {"description": "A filter, cursor or body is invalid; `detail` says which."},
    503: {"description": "This API, just started, has not yet read the alerts topic (its last "
                         "7 days) up to its end: retry after Retry-After."},
}
_ACTION_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    400: {"description": "A malformed Idempotency-Key or X-Operator header."},
    403: {"description": "The key may not act on alerts: a viewer (read-only) or integrator key."},
    404: {"description": "No such alert (or not in the key's cities)."},
    409: {"description": "The action changes nothing: the alert is resolved (only comments "
                         "are taken), or already acknowledged (ack); or a request with this "
                         "Idempotency-Key is still being processed."},
    503: {"description": "Kafka did not acknowledge the command, or this API, just started, has "
                         "not yet read the alerts topic up to its end; retry after Retry-After."},
}

#: The longest command id the alerting worker takes (cityagent.incident_alert.Command).
_MAX_COMMAND_ID = 200
#: The alert id path parameter (its example is the alert of the schemas' examples).
AlertId = Annotated[str, Path(description="The alert's id, as listed", examples=["inc-8179774cb767c89d67a0"])]


def _multi(values: list[str] | None, name: str, allowed: tuple[str, ...] | None) -> frozenset[str] | None:
    """Repeated or comma-separated values, each checked against ``allowed``."""
    if not values:
        return None
    found = frozenset(v.strip() for value in values for v in value.split(",") if v.strip())
    unknown = sorted(found - set(allowed)) if allowed is not None else []
    if unknown:
        raise HTTPException(422, f"{name} must be among {', '.join(allowed or ())}; "
                                 f"got {unknown[0]!r}")
    return found or None


def _department(value: str | None) -> str | None:
    """A department code's shape (routing.toml); which codes exist changes live (PUT
    /v1/routing), and past alerts keep a department that was removed, so it is not a list."""
    if value is None:
        return None
    code = value.strip()
    if not is_department_code(code):
        raise HTTPException(422, "department must be a department code such as water or "
                                 f"transport (routing.toml); got {value!r}")
    return code


def _bbox(value: str | None) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    try:
        box = tuple(float(v) for v in value.split(","))
    except ValueError:
        box = ()
    if (len(box) != 4 or not all(math.isfinite(v) for v in box)
            or box[0] > box[2] or box[1] > box[3]):
        raise HTTPException(422, "bbox must be minLon,minLat,maxLon,maxLat (WGS84 degrees, "
                                 f"min before max), e.g. 116.9,36.6,117.2,36.8; got {value!r}")
    return box  # type: ignore[return-value]


def _city_code(regions: RegionIndex, city: str) -> str:
    wanted = city.strip().lower()
    for c in regions.cities:
        names = {c.code, c.name, c.name.removesuffix("市"), c.name_en.lower()}
        if wanted in names:
            return c.code
    raise HTTPException(
        422,
        f"unknown city {city!r}; give a code like 370100 or a name like 济南 or Jinan "
        f"(one of {', '.join(c.name for c in regions.cities)})",
    )


def _district_code(regions: RegionIndex, district: str) -> str:
    try:
        return regions.district(district.strip()).code
    except KeyError:
        raise HTTPException(422, f"unknown district {district!r}; give a district code "
                                 "like 370102 (历下区)") from None


async def alert_query(
    principal: ViewerDep,
    regions: RegionsDep,
    status: Annotated[list[str] | None, Query(
        description="open, acknowledged, resolved; repeat or comma-separate",
        examples=[["open,acknowledged"]])] = None,
    severity: Annotated[list[str] | None, Query(
        description="blue, yellow, orange, red; repeat or comma-separate",
        examples=[["orange,red"]])] = None,
    kind: Annotated[list[str] | None, Query(
        description="Sensor kinds (water_level, pipe_pressure, traffic); repeat or "
                    "comma-separate", examples=[["water_level"]])] = None,
    city: Annotated[str | None, Query(
        description="City code (370100) or name (济南 / 济南市 / Jinan)",
        examples=["370100"])] = None,
    district: Annotated[str | None, Query(description="District code",
                                          examples=["370102"])] = None,
    zone: Annotated[str | None, Query(description="Operational zone id",
                                      examples=["jn-flood-old-city"])] = None,
    department: Annotated[str | None, Query(description="Department code (routing.toml)",
                                            examples=["water"])] = None,
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat (WGS84)",
                                      examples=["116.9,36.6,117.2,36.8"])] = None,
    since: Annotated[str | None, Query(
        description="Only alerts last seen at or after this time (RFC 3339 or epoch ms)",
        examples=["2026-11-22T08:00:00+08:00"])] = None,
    until: Annotated[str | None, Query(
        description="Only alerts last seen before this time (RFC 3339 or epoch ms)",
        examples=["1795310000000"])] = None,
) -> AlertQuery:
    """The filters of the alert list and stream, and the caller's scope."""
    return AlertQuery(
        statuses=_multi(status, "status", STATUSES),
        severities=_multi(severity, "severity", SEVERITIES),
        kinds=_multi(kind, "kind", KINDS),
        city_code=_city_code(regions, city) if city else None,
        district_code=_district_code(regions, district) if district else None,
        zone_id=zone.strip() if zone else None,
        department=_department(department),
        bbox=_bbox(bbox),
        since_ms=time_param(since, "since"),
        until_ms=time_param(until, "until"),
        principal=principal,
    )


AlertQueryDep = Annotated[AlertQuery, Depends(alert_query)]


@router.get("/v1/alerts", response_model=AlertsPublic, responses=_ERRORS)
async def list_alerts(
    query: AlertQueryDep,  # first: a bad key or filter is answered before the wait for the book
    book: ReadAlertBookDep,
    limit: Annotated[int, Query(ge=1, le=1000, examples=[100])] = 100,
    cursor: Annotated[str | None, Query(
        description="The next_cursor of the previous page")] = None,
) -> Any:
    """Alerts, most recently seen first, filtered; page on with ``next_cursor``."""
    try:
        page = book.query(query, limit=limit, cursor=cursor)
    except InvalidCursor as exc:
        raise HTTPException(422, str(exc)) from None
    return {"count": len(page.alerts), "alerts": page.alerts, "next_cursor": page.next_cursor}


#: Not ``seq``: two replicas (or one before and after a restart, which reads back 7 days) can
#: hold different histories of one alert at one ``seq``, and a validator must change with
#: the answer.
_DETAIL_ETAG = ("A digest of the answer: send it as If-None-Match to get a 304 while the "
                "alert and its history are unchanged.")


@router.get("/v1/alerts/{alert_id}", response_model=AlertDetail,
            responses={**_ERRORS, **not_modified(_DETAIL_ETAG),
                       200: {"headers": {"ETag": {"description": _DETAIL_ETAG,
                                                  "schema": {"type": "string"}}}},
                       404: {"description": "No such alert (or not in the key's cities)."}})
async def get_alert(alert_id: AlertId, principal: ViewerDep, book: ReadAlertBookDep,
                    request: Request, response: Response) -> Any:
    """One alert and its history, oldest first: its last 200 sensor updates and its last 200
    other events (opened, escalated, the operators' acknowledgement, assignment, comments...);
    304 to an ``If-None-Match`` naming its ETag while they are unchanged."""
    alert = _visible(book, alert_id, principal)
    history, complete = book.history(alert_id)
    detail = {"alert": alert, "history": history, "history_complete": complete}
    if (unchanged := conditional_get(request, response, digest_etag(detail))) is not None:
        return unchanged
    return detail


def _visible(book: AlertBook, alert_id: str, principal: Principal) -> dict[str, Any]:
    alert = book.get(alert_id, principal)
    if alert is None:
        raise HTTPException(404, f"no alert {alert_id!r}"
                                 + (" in the cities of this key" if principal.scoped else ""))
    return alert


# -- acting on alerts -----------------------------------------------------------------------

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key",
    description="A retry with the same key and request gets the first answer again and is "
                "applied once; the same key with another action or body is 422")]
Operator = Annotated[str | None, Header(
    alias="X-Operator",
    description="Who acts, recorded as NAME@KEY_ID (percent-encode non-ASCII: %E5%BC%A0%E4%B8%89)")]


@router.post("/v1/alerts/{alert_id}/ack", status_code=202, response_model=CommandQueued,
             responses=_ACTION_ERRORS)
async def ack_alert(alert_id: AlertId, principal: OperatorDep, book: ReadAlertBookDep,
                    commands: CommandsDep, idempotency: IdempotencyDep,
                    body: Annotated[AlertNote | None, Body()] = None,
                    idempotency_key: IdempotencyKey = None, operator: Operator = None) -> Any:
    """Acknowledge: someone is on it (stops its escalation)."""
    return await _act("ack", alert_id, principal, book, commands, idempotency, idempotency_key, operator,
                      text=body.note if body else None)


@router.post("/v1/alerts/{alert_id}/resolve", status_code=202, response_model=CommandQueued,
             responses=_ACTION_ERRORS)
async def resolve_alert(alert_id: AlertId, principal: OperatorDep, book: ReadAlertBookDep,
                        commands: CommandsDep, idempotency: IdempotencyDep,
                        body: Annotated[AlertNote | None, Body()] = None,
                        idempotency_key: IdempotencyKey = None,
                        operator: Operator = None) -> Any:
    """Resolve: the incident is over (409 if it already is)."""
    return await _act("resolve", alert_id, principal, book, commands, idempotency, idempotency_key, operator,
                      text=body.note if body else None)


@router.post("/v1/alerts/{alert_id}/assign", status_code=202, response_model=CommandQueued,
             responses=_ACTION_ERRORS)
async def assign_alert(alert_id: AlertId, body: AlertAssign, principal: OperatorDep,
                       book: ReadAlertBookDep, commands: CommandsDep, idempotency: IdempotencyDep,
                       idempotency_key: IdempotencyKey = None, operator: Operator = None) -> Any:
    """Assign to a crew or person."""
    return await _act("assign", alert_id, principal, book, commands, idempotency, idempotency_key, operator,
                      text=body.note, assignee=body.assignee)


@router.post("/v1/alerts/{alert_id}/comment", status_code=202, response_model=CommandQueued,
             responses=_ACTION_ERRORS)
async def comment_alert(alert_id: AlertId, body: AlertComment, principal: OperatorDep,
                        book: ReadAlertBookDep, commands: CommandsDep, idempotency: IdempotencyDep,
                        idempotency_key: IdempotencyKey = None,
                        operator: Operator = None) -> Any:
    """Add a comment (also on a resolved alert)."""
    return await _act("comment", alert_id, principal, book, commands, idempotency, idempotency_key, operator,
                      text=body.text)


async def _act(action: str, alert_id: str, principal: Principal, book: AlertBook,
               commands: CommandPublisher, idempotency: IdempotencyCache,
               idempotency_key: str | None, operator: str | None,
               *, text: str | None = None, assignee: str | None = None) -> Response:
    """Queue the command; with an Idempotency-Key, a retry of the same request replays the
    first 202 and the same key on another request is 422 (for 10 minutes, in this API: after
    that, or after a restart, the command id still differs, so nothing is dropped as a
    duplicate of another action: the key's ack and resolve were one command id, and the
    worker applied only the first)."""
    actor = _actor(principal, operator)
    fingerprint = hashlib.sha256(orjson.dumps([alert_id, action, actor, assignee, text])).digest()
    command_id = _command_id(principal, idempotency_key, fingerprint)
    if idempotency_key is not None:
        try:
            stored = idempotency.begin(principal.key_id, idempotency_key, fingerprint)
        except IdempotencyConflict as exc:
            raise HTTPException(exc.status, exc.detail,
                                headers={"Retry-After": "1"} if exc.status == 409 else None) from None
        if stored is not None:
            return Response(stored.body, stored.status, media_type="application/json",
                            headers={"Idempotency-Replayed": "true"})
    try:
        alert = _visible(book, alert_id, principal)
        _check_changes(action, alert)
        command = Command(command_id=command_id, alert_id=alert_id, action=action, actor=actor,
                          at_ms=int(time.time() * 1000), assignee=assignee, text=text)
        await commands.send(command, alert["scope"])  # BrokerError: 503 with Retry-After
    except BaseException:
        if idempotency_key is not None:
            idempotency.abandon(principal.key_id, idempotency_key)
        raise
    body = orjson.dumps({"command_id": command.command_id, "alert_id": alert_id,
                         "action": action, "status": "queued"})
    if idempotency_key is not None:
        idempotency.finish(principal.key_id, idempotency_key, StoredResponse(202, body))
    return Response(body, 202, media_type="application/json")


def _check_changes(action: str, alert: dict[str, Any]) -> None:
    """409 for what the alerting agent would ignore (as the book sees the alert now)."""
    status = alert["status"]
    if status == RESOLVED and action != "comment":
        by = f" by {alert['resolved_by']}" if alert.get("resolved_by") else ""
        at = f" at {alert['resolved_at']}" if alert.get("resolved_at") else ""
        raise HTTPException(409, f"alert {alert['alert_id']!r} is already resolved{by}{at}; "
                                 "only comments are taken")
    if action == "ack" and status == ACKNOWLEDGED:
        raise HTTPException(409, f"alert {alert['alert_id']!r} is already acknowledged by "
                                 f"{alert.get('acknowledged_by')}")


def _command_id(principal: Principal, idempotency_key: str | None, fingerprint: bytes) -> str:
    """``KEY_ID:Idempotency-Key:REQUEST`` (REQUEST: 12 hex digits of what the request asks), so
    one key's retries of one request match, and neither two keys nor two requests collide."""
    if idempotency_key is None:
        return f"{principal.key_id}:{uuid.uuid4()}"
    if not valid_key(idempotency_key):
        raise HTTPException(400, "Idempotency-Key must be 1-255 visible ASCII characters "
                                 "(a UUID is best)")
    # A command id has at most 200 characters (Command): a long key is its SHA-256 when the
    # id would pass that with this key's id (a configured name has up to 64 characters).
    if len(idempotency_key) > min(160, _MAX_COMMAND_ID - len(principal.key_id) - 14):
        idempotency_key = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return f"{principal.key_id}:{idempotency_key}:{fingerprint.hex()[:12]}"


def _actor(principal: Principal, operator: str | None) -> str:
    """The key's id, or ``NAME@KEY_ID`` with an X-Operator name (the key vouches for it)."""
    if operator is None:
        return principal.key_id
    try:
        name = unquote(operator, errors="strict").strip()
    except UnicodeDecodeError:
        name = ""  # percent-encoded bytes that are not UTF-8
    if not name or len(name) > 64 or not name.isprintable():
        raise HTTPException(400, "X-Operator must be a name of 1-64 printable characters "
                                 f"(percent-encoded UTF-8 for non-ASCII); got {operator[:80]!r}")
    return f"{name}@{principal.key_id}"
