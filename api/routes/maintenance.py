"""Maintenance windows for admins: sensors whose anomalies are recorded, not alerted.

A window is a record on the compacted maintenance topic, keyed by its id; every worker reads
the whole topic and suppresses the covered sensors' anomalies from then on (each one is kept
as a ``suppressed`` event on the alerts topic: the audit trail). ``PUT`` answers 202 once
Kafka stored the window; ``DELETE`` writes a tombstone. ``GET`` and ``DELETE`` first wait
until this API has read the topic up to where it ended at start (``api.deps.read_up_to_start``:
a list or a 404 from a partial read would pass for the truth); ``PUT`` only when it has a
precondition to check, as it writes the whole window under its id whatever was read.

Concurrent edits (``api.preconditions``), as for zones: each window has a ``version`` (the
offset of its record, ``streams.maintenance_feed``), given by the list; a write that sends
``If-Match`` (or the version it read as ``"version"`` in its body) is a 412 when the window
changed since, and ``If-None-Match: *`` creates, never replaces. Two admins extending one
window both got 202, and the later silently replaced the earlier. The writes run one at a
time with the zone and routing writes, and this process's writes not read back yet count
(``api.write_ledger``).
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, HTTPException, Path, Request, Response

from api.auth import AdminDep, ViewerDep
from api.deps import read_up_to_start
from api.preconditions import (
    WRITE_RESPONSES,
    body_version,
    check_preconditions,
    conditional_get,
    digest_etag,
    not_modified,
)
from cityagent.errors import ConfigError
from cityagent.incidents import MaintenanceWindow
from cityagent.readings import format_ts

__all__ = ("router",)

router = APIRouter(tags=["maintenance"])

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z"
_FIELDS = ("sensor", "start_ms", "end_ms", "note")
_YEAR_2100_MS = 4_102_444_800_000
_EXAMPLE = {"sensor": "jn-wl-*", "start_ms": 1795400000000, "end_ms": 1795407200000,
            "note": "检修 gauge cleaning in 历下区"}
_NOT_READ = {503: {"description": "This API has not read the maintenance topic up to its end "
                                  "yet (it just started, or the broker does not answer): retry "
                                  "after Retry-After."}}
WindowId = Annotated[str, Path(pattern=_ID.replace("\\Z", "$"), description="Your id for the window",
                               examples=["jn-gauges-2026-11-23"])]


_LIST_ETAG = ("A digest of the list (the windows, their versions and statuses): send it as "
              "If-None-Match to get a 304 while the list is the same. It is no window's "
              "version: If-Match names a window's 'version'.")


@router.get("/v1/maintenance", response_model=dict[str, Any], responses={
    200: {"headers": {"ETag": {"description": _LIST_ETAG, "schema": {"type": "string"}}},
          "content": {"application/json": {"example": {"windows": {"jn-gauges-2026-11-23": {
              **_EXAMPLE, "status": "scheduled", "version": 41}}}}}},
    **not_modified(_LIST_ETAG), **_NOT_READ})
async def list_windows(request: Request, response: Response,
                       _principal: ViewerDep) -> dict[str, Any] | Response:
    """Every maintenance window on the topic, by id, with its ``status`` now: ``scheduled``,
    ``in_force`` or ``ended`` (an ended window stays until it is deleted), and its
    ``version``, the one ``If-Match`` names."""
    feed = request.app.state.maintenance_feed
    await read_up_to_start(feed, "maintenance")
    now_ms = time.time_ns() // 1_000_000
    listed = {"windows": {k: {"sensor": w.sensor, "start_ms": w.start_ms, "end_ms": w.end_ms,
                              "note": w.note, "status": w.status(now_ms),
                              "version": feed.versions.get(k, 0)}
                          for k, w in sorted(feed.by_id.items())}}
    if (unchanged := conditional_get(request, response, digest_etag(listed))) is not None:
        return unchanged
    return listed


@router.put("/v1/maintenance/{window_id}", status_code=202, responses={
    202: {"content": {"application/json": {"example": {"window_id": "jn-gauges-2026-11-23",
                                                       "version": 42, "status": "queued"}}}},
    422: {"description": "The window is invalid: the message says why; or its 'version' is "
                         "not a version."},
    **WRITE_RESPONSES, **_NOT_READ})
async def put_window(window_id: WindowId, request: Request, _principal: AdminDep,
                     window: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])]) -> dict[str, Any]:
    """Create or replace a window: a sensor id or a prefix ending in ``*``, epoch-ms bounds.

    ``If-Match: "41"`` (or ``"version": 41`` in the body: the version you read) replaces it
    only if it is still at that version, ``If-Match: *`` only if it exists, ``If-None-Match:
    *`` only if it does not; 412 otherwise. Without them it is written whatever its version."""
    if not re.match(_ID, window_id):
        raise HTTPException(422, f"window id must match {_ID}; got {window_id!r}")
    read_version = body_version(window, f"maintenance window {window_id!r}")
    unknown = sorted(set(window) - set(_FIELDS))
    if unknown:
        raise HTTPException(422, f"maintenance window: unknown field(s) {unknown}; the fields "
                                 f"are {list(_FIELDS)}")
    try:
        parsed = MaintenanceWindow.from_dict(window)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    now_ms = time.time_ns() // 1_000_000
    if parsed.end_ms <= now_ms or parsed.end_ms > _YEAR_2100_MS:
        raise HTTPException(422, f"maintenance window {window_id!r}: end_ms {parsed.end_ms} "
                                 f"({format_ts(min(parsed.end_ms, _YEAR_2100_MS))}) must lie "
                                 "between now and 2100 (epoch milliseconds); to end a window "
                                 "now, DELETE it")
    value = {"sensor": parsed.sensor, "start_ms": parsed.start_ms, "end_ms": parsed.end_ms,
             "note": parsed.note}
    state = request.app.state
    if read_version is not None or {"if-match", "if-none-match"} & set(request.headers):
        await read_up_to_start(state.maintenance_feed, "maintenance")
    async with state.settings_writes:
        _check_window(request, window_id, read_version)
        partition, offset = await state.maintenance_writer.send_value(
            window_id, orjson.dumps(value), f"maintenance window {window_id!r}")
        state.maintenance_ledger.note(window_id, partition, offset, offset)
    return {"window_id": window_id, "version": offset, "status": "queued"}


@router.delete("/v1/maintenance/{window_id}", status_code=202, responses={
    202: {"content": {"application/json": {"example": {"window_id": "jn-gauges-2026-11-23",
                                                       "version": 43, "status": "queued"}}}},
    404: {"description": "No such window."}, **WRITE_RESPONSES, **_NOT_READ})
async def delete_window(window_id: WindowId, request: Request,
                        _principal: AdminDep) -> dict[str, Any]:
    """End a window now (a tombstone on the maintenance topic); with ``If-Match``, only if it
    is still at that version (412 otherwise)."""
    state = request.app.state
    await read_up_to_start(state.maintenance_feed, "maintenance")
    async with state.settings_writes:
        if _window_version(request, window_id) is None:
            raise HTTPException(404, f"no maintenance window {window_id!r}")
        _check_window(request, window_id, None)
        partition, offset = await state.maintenance_writer.send_tombstone(window_id)
        state.maintenance_ledger.note(window_id, partition, offset, offset, exists=False)
    return {"window_id": window_id, "version": offset, "status": "queued"}


def _window_version(request: Request, window_id: str) -> int | None:
    """The window's version (None: no such window): what this API has read, or wrote since."""
    state = request.app.state
    return state.maintenance_ledger.current(window_id,
                                            state.maintenance_feed.versions.get(window_id))


def _check_window(request: Request, window_id: str, read_version: int | None) -> None:
    """412 unless the window is at the version the write names (if it names one)."""
    named = re.findall(r'"([^"]*)"', request.headers.get("If-Match", ""))
    hint = (" (a window's version is its 'version' in GET /v1/maintenance; the ETag of that "
            "list names the whole list)" if any(not tag.isdigit() for tag in named) else "")
    check_preconditions(request, _window_version(request, window_id),
                        f"maintenance window {window_id!r}", read_version=read_version,
                        hint=hint)
