"""Maintenance windows for admins: sensors whose anomalies are recorded, not alerted.

A window is a record on the compacted maintenance topic, keyed by its id; every worker reads
the whole topic and suppresses the covered sensors' anomalies from then on (each one is kept
as a ``suppressed`` event on the alerts topic: the audit trail). ``PUT`` answers 202 once
Kafka stored the window; ``DELETE`` writes a tombstone. ``GET`` and ``DELETE`` first wait
until this API has read the topic up to where it ended at start (``api.deps.read_up_to_start``:
a list or a 404 from a partial read would pass for the truth); ``PUT`` does not, as it writes
the whole window under its id whatever was read.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, HTTPException, Path, Request

from api.auth import AdminDep, ViewerDep
from api.deps import read_up_to_start
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


@router.get("/v1/maintenance", responses={200: {"content": {"application/json": {
    "example": {"windows": {"jn-gauges-2026-11-23": _EXAMPLE}}}}}, **_NOT_READ})
async def list_windows(request: Request, _principal: ViewerDep) -> dict[str, Any]:
    """Every maintenance window on the topic, by id, with its ``status`` now: ``scheduled``,
    ``in_force`` or ``ended`` (an ended window stays until it is deleted)."""
    feed = request.app.state.maintenance_feed
    await read_up_to_start(feed, "maintenance")
    now_ms = time.time_ns() // 1_000_000
    return {"windows": {k: {"sensor": w.sensor, "start_ms": w.start_ms, "end_ms": w.end_ms,
                            "note": w.note, "status": w.status(now_ms)}
                        for k, w in sorted(feed.by_id.items())}}


@router.put("/v1/maintenance/{window_id}", status_code=202, responses={
    202: {"content": {"application/json": {"example": {"window_id": "jn-gauges-2026-11-23",
                                                       "status": "queued"}}}},
    422: {"description": "The window is invalid: the message says why."}})
async def put_window(window_id: WindowId, request: Request, _principal: AdminDep,
                     window: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])]) -> dict[str, Any]:
    """Create or replace a window: a sensor id or a prefix ending in ``*``, epoch-ms bounds."""
    if not re.match(_ID, window_id):
        raise HTTPException(422, f"window id must match {_ID}; got {window_id!r}")
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
    await request.app.state.maintenance_writer.send_value(
        window_id, orjson.dumps(value), f"maintenance window {window_id!r}")
    return {"window_id": window_id, "status": "queued"}


@router.delete("/v1/maintenance/{window_id}", status_code=202, responses={
    202: {"content": {"application/json": {"example": {"window_id": "jn-gauges-2026-11-23",
                                                       "status": "queued"}}}},
    404: {"description": "No such window."}, **_NOT_READ})
async def delete_window(window_id: WindowId, request: Request,
                        _principal: AdminDep) -> dict[str, Any]:
    """End a window now (a tombstone on the maintenance topic)."""
    await read_up_to_start(request.app.state.maintenance_feed, "maintenance")
    if window_id not in request.app.state.maintenance_feed.by_id:
        raise HTTPException(404, f"no maintenance window {window_id!r}")
    await request.app.state.maintenance_writer.send_tombstone(window_id)
    return {"window_id": window_id, "status": "queued"}
