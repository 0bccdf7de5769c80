"""POST /v1/readings: integrators push readings; 202 only once Kafka has stored them.

The order of the checks: the key (401/403), the body's type (415), the body's size (413), the
Idempotency-Key (503 while a starting API reads the other processes' records, then replay,
409, 422), the body's shape (400, 413), the key's rate (429), then every item (accepted, or
rejected with its index, field and reason). docs/api.md describes it all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from api.auth import IntegratorDep, Principal
from api.deps import IdempotencyDep, PublisherDep, RateLimiterDep, RegionsDep, get_situation
from api.idempotency import IdempotencyCache, IdempotencyConflict, StoredResponse, valid_key
from api.idempotency_log import IdempotencyLog
from api.ingest import (
    MAX_ITEMS,
    TB_IDENTITY,
    BadBody,
    Rejection,
    check_items,
    check_media_type,
    decode_body,
    thingsboard_items,
)
from api.publisher import ReadingPublisher
from api.ratelimit import RateLimiter, TooLarge
from api.schemas import ReadingsAccepted, ReadingsRejected
from cityagent.errors import BrokerError
from cityagent.regions import RegionIndex

router = APIRouter(tags=["readings"])

#: Largest request body (413 beyond).
MAX_BODY_BYTES = 16 << 20

_EXAMPLE = [
    {"sensor_id": "jn-wl-000042", "kind": "water_level", "ts": "2026-11-22T08:30:00+08:00",
     "lon": 117.02, "lat": 36.66, "level_m": 2.41},
    {"sensor_id": "qd-tr-000007", "kind": "traffic", "ts": 1795307400,
     "lon": 120.38, "lat": 36.07, "speed_kmh": 42.5, "flow_vph": 1320, "occupancy_pct": 18.0},
]
_NDJSON_EXAMPLE = "\n".join(orjson.dumps(r).decode() for r in _EXAMPLE) + "\n"
_TB_EXAMPLE = [{"ts": 1795307400000, "values": {"level_m": 2.41}},
               {"ts": 1795307460000, "values": {"level_m": 2.43}}]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "Stored: `accepted` readings were acknowledged by Kafka (acks=all); "
                         "`rejected` lists the refused items (index, field, reason, sensor_id)."},
    400: {"description": "The body is not JSON, or the Idempotency-Key header is malformed."},
    401: {"description": "No API key, or an unknown one."},
    403: {"model": ReadingsRejected,
          "description": "The key may not post readings, or every reading is outside its scope."},
    409: {"description": "A request with this Idempotency-Key is still being processed."},
    413: {"description": f"Too large: over {MAX_BODY_BYTES >> 20} MiB (also once gunzipped) "
                         f"or {MAX_ITEMS:,} readings."},
    415: {"description": "A Content-Type other than JSON (application/json, text/plain, "
                         "application/*+json, or none) or NDJSON (application/x-ndjson ...), "
                         "or a Content-Encoding other than gzip or identity."},
    422: {"model": ReadingsRejected,
          "description": "Every reading is invalid (none was accepted), or the Idempotency-Key "
                         "was used before with another body."},
    429: {"description": "Over the key's rate (readings/s); retry after Retry-After seconds."},
    503: {"description": "Kafka did not acknowledge; nothing was accepted. Or, with an "
                         "Idempotency-Key, the API has just started and is still reading the "
                         "idempotency records. Retry after Retry-After."},
}


@router.post(
    "/v1/readings",
    status_code=202,
    response_model=ReadingsAccepted,
    responses=_RESPONSES,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}},
                             "example": _EXAMPLE},
        "application/x-ndjson": {"schema": {"type": "string"}, "example": _NDJSON_EXAMPLE},
    }}},
)
async def post_readings(request: Request, principal: IntegratorDep, publisher: PublisherDep,
                        regions: RegionsDep, limiter: RateLimiterDep,
                        idempotency: IdempotencyDep) -> Response:
    """Accept readings: one JSON object, a JSON array, or NDJSON (one reading per line).

    Valid readings are stored and the invalid ones listed with index, field and reason; if
    none is valid the answer is 422 and nothing is stored. docs/api.md has the details.
    """
    return await _ingest(request, principal, publisher, regions, limiter, idempotency, None)


@router.post(
    "/v1/readings/thingsboard",
    status_code=202,
    response_model=ReadingsAccepted,
    responses=_RESPONSES,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}},
                             "example": _TB_EXAMPLE}}}},
)
async def post_thingsboard(
    request: Request, principal: IntegratorDep, publisher: PublisherDep, regions: RegionsDep,
    limiter: RateLimiterDep, idempotency: IdempotencyDep,
    sensor_id: Annotated[str | None, Query(description="the device's sensor id, unless in values",
                                           examples=["jn-wl-000042"])] = None,
    kind: Annotated[str | None, Query(description="traffic, water_level or pipe_pressure",
                                      examples=["water_level"])] = None,
    lon: Annotated[float | None, Query(description="WGS84 longitude", examples=[117.02])] = None,
    lat: Annotated[float | None, Query(description="WGS84 latitude", examples=[36.66])] = None,
) -> Response:
    """Accept ThingsBoard device telemetry: ``{"ts": ms, "values": {...}}``, one or an array.

    The device's identity (sensor_id, kind, lon, lat) comes from the query parameters, or
    from ``values`` (which wins); the values use CityAgent's names (``level_m``...).
    """
    identity = {"sensor_id": sensor_id, "kind": kind, "lon": lon, "lat": lat}
    return await _ingest(request, principal, publisher, regions, limiter, idempotency, identity)


async def _ingest(request: Request, principal: Principal, publisher: ReadingPublisher,
                  regions: RegionIndex, limiter: RateLimiter, idempotency: IdempotencyCache,
                  identity: dict[str, Any] | None) -> Response:
    try:
        check_media_type(request.headers.get("content-type"))
        body = await _read_body(request)
    except BadBody as exc:
        return _error(exc.status, exc.detail)
    key = request.headers.get("idempotency-key")
    if key is None:
        return await _process(request, body, principal, publisher, regions, limiter, identity)
    if not valid_key(key):
        return _error(400, "Idempotency-Key must be 1-255 visible ASCII characters (a UUID is best)")
    records: IdempotencyLog | None = getattr(request.app.state, "idempotency_log", None)
    if records is not None and not records.caught_up:
        # A retry of a request another process (or this one, before a restart) accepted
        # would be stored again: wait until the records written before this start are read.
        return _error(503, "this API process has just started and is still reading the "
                           "idempotency records of the other processes; retry in a second",
                      {"Retry-After": "1"})
    media_type = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    fingerprint = hashlib.sha256(  # the body as read: "; charset=utf-8" is the same request
        f"{request.url.path}?{request.url.query}\n{media_type}\n".encode() + body).digest()
    try:
        stored = idempotency.begin(principal.key_id, key, fingerprint)
    except IdempotencyConflict as exc:
        return _error(exc.status, exc.detail, {"Retry-After": "1"} if exc.status == 409 else None)
    if stored is not None:
        return Response(stored.body, stored.status, media_type="application/json",
                        headers={"Idempotency-Replayed": "true"})
    response: Response | None = None
    try:
        response = await _process(request, body, principal, publisher, regions, limiter, identity)
    finally:
        if response is not None and response.status_code == 202:
            stored = StoredResponse(202, bytes(response.body))
            idempotency.finish(principal.key_id, key, stored)
            if records is not None:  # before the answer: a retry anywhere finds it
                await records.record(principal.key_id, key, fingerprint, stored)
        else:
            idempotency.abandon(principal.key_id, key)
    return response


async def _process(request: Request, body: bytes, principal: Principal,
                   publisher: ReadingPublisher, regions: RegionIndex, limiter: RateLimiter,
                   identity: dict[str, Any] | None) -> Response:
    try:
        items, preset = decode_body(body, request.headers.get("content-type"))
        if identity is not None:
            items, shape_errors = thingsboard_items(items, identity)
            preset = {**shape_errors, **preset}
    except BadBody as exc:
        return _error(exc.status, exc.detail)
    try:
        wait_s = limiter.take(principal.key_id, len(items))
    except TooLarge as exc:
        return _error(413, str(exc))
    if wait_s:
        return _error(429, f"{principal.describe()} is over its rate of "
                           f"{limiter.rate_per_s:g} readings/s (CITYAGENT_API_RATE); "
                           f"retry after {wait_s} s", {"Retry-After": str(wait_s)})
    # Sensors the situation model knows keep their kind (it reads the readings topic).
    checked = check_items(items, regions, principal, preset,
                          known_kinds=get_situation(request).kind_codes,
                          future_tolerance_ms=request.app.state.future_tolerance_ms)
    if identity is not None:
        checked.rejected = [_tb_hint(r) for r in checked.rejected]
    rejected = [r.public() for r in checked.rejected]
    if not len(checked.batch):
        return _json(*_refusal(checked.items, checked.rejected, principal), rejected)
    try:
        accepted = await publisher.publish(checked.batch)
    except BrokerError:
        limiter.give_back(principal.key_id, len(items))
        raise  # 503 with Retry-After, by the app's exception handler
    return Response(orjson.dumps({"accepted": accepted, "rejected": rejected}), 202,
                    media_type="application/json")


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise BadBody(413, f"request body is {int(length)} bytes; the limit is {MAX_BODY_BYTES}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadBody(413, f"request body is over {MAX_BODY_BYTES} bytes; the limit is "
                               f"{MAX_BODY_BYTES}")
        chunks.append(chunk)
    return _decoded(b"".join(chunks), request.headers.get("content-encoding", ""))


def _decoded(body: bytes, encoding: str) -> bytes:
    """The body under its Content-Encoding: gzip (integrators on slow links; readings compress
    ~8x) or none. Gunzipped, it must also fit the limit: a small bomb is refused unexpanded.

    Every gzip member is read (RFC 1952: ``cat a.gz b.gz`` is one valid gzip stream, as a
    gateway appending a compressed batch per flush writes it); bytes after the last member
    that are not one are a 400, never silently left out of the readings."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise BadBody(415, f"Content-Encoding {encoding!r} is not supported; send the body "
                           "as it is, or gzip it (Content-Encoding: gzip)")
    out, rest, member = bytearray(), body, 0
    try:
        while rest or not member:
            member += 1
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += inflate.decompress(rest, MAX_BODY_BYTES + 1 - len(out))
            if len(out) > MAX_BODY_BYTES or inflate.unconsumed_tail:
                raise BadBody(413, f"request body is over {MAX_BODY_BYTES} bytes once gunzipped; "
                                   f"the limit is {MAX_BODY_BYTES}")
            if not inflate.eof:
                raise BadBody(400, "request body is not complete gzip data (Content-Encoding: "
                                   f"gzip; member {member} ends early)")
            rest = inflate.unused_data
    except zlib.error as exc:
        where = (f" (after gzip member {member - 1}, {len(rest)} bytes that are not gzip)"
                 if member > 1 else "")
        raise BadBody(400, f"request body is not valid gzip (Content-Encoding: gzip){where}: "
                           f"{exc}") from None
    return bytes(out)


def _refusal(items: int, rejected: list[Rejection], principal: Principal) -> tuple[int, str]:
    if all(r.out_of_scope for r in rejected):
        return 403, (f"every reading is outside the scope of this {principal.describe()}; "
                     "none was accepted")
    if items == 1:
        return 422, f"the reading is invalid and was not accepted: {rejected[0].reason}"
    return 422, f"all {items} readings are invalid; none was accepted (see 'rejected')"


def _tb_hint(rejection: Rejection) -> Rejection:
    if rejection.field in TB_IDENTITY and ("missing" in rejection.reason
                                           or "got None" in rejection.reason):
        return dataclasses.replace(
            rejection, reason=f"{rejection.reason} (ThingsBoard shape: give it as the query "
                              f"parameter ?{rejection.field}=… or inside 'values')")
    return rejection


def _json(status: int, detail: str, rejected: list[dict[str, Any]]) -> Response:
    return Response(orjson.dumps({"detail": detail, "accepted": 0, "rejected": rejected}),
                    status, media_type="application/json")


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)
