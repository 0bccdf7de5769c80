"""GET /v1/alerts/stream: alert changes as Server-Sent Events, live, filtered, resumable.

Each change of a matching alert is one ``event: alert`` whose ``data`` is the alert event
(``AlertEventPublic``) and whose ``id`` says how far the feed had read (see
:mod:`api.alert_book`): send it back as ``Last-Event-ID`` (browsers do so when they
reconnect) and the events retained since are replayed, by whichever API replica answers. An
id older than what is retained, or than where this API's read of the topic began (its last 7
days, when it started: the client missed changes this API never read), gets ``event: reset``
first. An alert that stops matching (resolved, with ``status=open``) is sent once more, so a
client sees it leave. A connection that was sent nothing for ``heartbeat_s`` gets a comment, so
proxies keep it open. An id past the end of the feed (the topic was recreated, as when the
embedded broker restarts: it keeps nothing) gets ``event: reset`` and a fresh id; so does a
connected client when the feed finds the topic recreated under it (its id becomes ``0``).

Each client reads from its own bounded queue: a client that cannot keep up gets
``event: overflow`` and is disconnected, and resumes with its last id, while the feed and the
other clients go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import StreamingResponse

from api.alert_book import (
    AlertBook,
    AlertQuery,
    FeedEntry,
    InvalidEventId,
    decode_event_id,
    encode_event_id,
)
from api.deps import AlertBookDep, AlertHubDep, wait_until
from api.read_model import AlertHub, TopicRecreated
from api.routes.alerts import AlertQueryDep
from api.schemas import EVENT_EXAMPLE

__all__ = ("router", "alert_events", "RETRY_MS")

router = APIRouter(tags=["alerts"])

#: How long browsers wait before reconnecting (the stream's ``retry:``).
RETRY_MS = 3000
HEARTBEAT = b": heartbeat\n\n"

_WIRE_EXAMPLE = (
    f"retry: {RETRY_MS}\nid: 12-0-7-3\n\n"
    f"id: 13-0-7-3\nevent: alert\ndata: {orjson.dumps(EVENT_EXAMPLE).decode()}\n\n"
    ": heartbeat\n\n"
)


@router.get(
    "/v1/alerts/stream",
    response_class=StreamingResponse,
    response_model=None,
    responses={
        200: {"description": "`text/event-stream`: `event: alert` (data: an AlertEventPublic), "
                             "`event: reset` (events since Last-Event-ID were dropped or are older "
                             "than this API's 7-day read of the topic, or the id "
                             "is past the feed's end, or the alerts topic was recreated: re-list), "
                             "`event: overflow` (too slow: reconnect with Last-Event-ID), "
                             "and `: heartbeat` comments.",
              "content": {"text/event-stream": {"schema": {"type": "string"},
                                                "example": _WIRE_EXAMPLE}}},
        401: {"description": "No API key, or an unknown one."},
        403: {"description": "The key may not read (an integrator key)."},
        422: {"description": "A filter or the Last-Event-ID is invalid, or `limit` or `cursor` "
                             "(the list's paging) was given."},
        503: {"description": "With a Last-Event-ID: this API, just started, does not know yet "
                             "where its read of the alerts topic begins; retry after "
                             "Retry-After."},
    },
)
async def stream_alerts(
    book: AlertBookDep,
    hub: AlertHubDep,
    query: AlertQueryDep,
    heartbeat_s: Annotated[float, Query(ge=1, le=300, description="Seconds between heartbeats "
                                        "of a stream that was sent nothing", examples=[15])] = 15.0,
    last_event_id: Annotated[str | None, Query(
        description="Resume after this event id (the Last-Event-ID header wins)",
        examples=["12-0-7-3"])] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    # Taken only to be refused with a reason (the check of unknown parameters would say less).
    limit: Annotated[str | None, Query(include_in_schema=False)] = None,
    cursor: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> StreamingResponse:
    """Alert changes as they happen (Server-Sent Events), with the filters of GET /v1/alerts
    (not ``limit`` or ``cursor``: a 422 says to resume with Last-Event-ID)."""
    paging = [name for name, value in (("cursor", cursor), ("limit", limit)) if value is not None]
    if paging:
        # They were ignored, silently: a client asking for 'limit=10' got every change, and
        # one passing a list's next_cursor got live changes only, not those after that page.
        named = " and ".join(f"'{name}'" for name in paging)
        raise HTTPException(422, f"the alert stream does not take {named}: 'limit' and "
                                 "'cursor' page GET /v1/alerts; the stream sends every change "
                                 "of the matching alerts "
                                 "from now on, or after Last-Event-ID (header, or "
                                 "?last_event_id=) to resume")
    token = last_event_id_header or last_event_id
    try:
        seen = decode_event_id(token) if token else None
    except InvalidEventId as exc:
        raise HTTPException(422, str(exc)) from None
    if seen is not None:  # whether the id is older than this API's read: known soon after start
        await wait_until(lambda: book.resumable, lambda: (
            "this API has not yet found where its read of the alerts topic begins (the last "
            "7 days), so it cannot tell whether your Last-Event-ID is older; retry shortly"))
    return StreamingResponse(alert_events(book, hub, query, seen, heartbeat_s),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def alert_events(book: AlertBook, hub: AlertHub, query: AlertQuery,
                       seen: Mapping[int, int] | None, heartbeat_s: float) -> AsyncIterator[bytes]:
    """The stream's bytes: replay after ``seen`` (an event id), then live events."""
    subscription = hub.subscribe(query.matches_entry)
    try:
        # Subscribing and taking the replay in one step: no event falls between them.
        replay, gap = book.replay(seen) if seen is not None else ([], False)
        past_end = seen is not None and book.past_end(seen)
        # Past the end, the id names no event of this feed (the topic was recreated): the
        # client re-lists and follows from here, and gets an id that means something.
        sent = dict(seen) if seen is not None and not past_end else book.next_offsets
        yield f"retry: {RETRY_MS}\nid: {encode_event_id(sent)}\n\n".encode()
        if past_end:
            yield _control("reset", "your Last-Event-ID is past the end of the alert feed (the "
                                    "alerts topic was recreated, as when the broker restarts "
                                    "empty); re-read GET /v1/alerts, then follow this stream")
        elif gap:
            yield _control("reset", "some events after your Last-Event-ID are no longer "
                                    "retained (or older than this API's read of the alerts "
                                    "topic: its last 7 days); re-read GET /v1/alerts, then follow this stream")
        for entry in replay:
            if query.matches_entry(entry):
                yield _frame(entry, sent)
        clock = asyncio.get_running_loop().time
        # A heartbeat whenever nothing was sent for heartbeat_s, also while the queue is busy
        # with entries this client already had (a replica catching up to its id).
        quiet_until = clock() + heartbeat_s
        while True:
            if subscription.overflowed:
                yield _control("overflow", "this client fell too far behind; reconnect with "
                                           "Last-Event-ID to resume", encode_event_id(sent))
                return
            try:
                entry = await asyncio.wait_for(subscription.queue.get(),
                                               max(quiet_until - clock(), 0.0))
            except TimeoutError:
                entry = None
            if isinstance(entry, TopicRecreated):
                # Offsets restart at 0: the client's id names nothing any more.
                sent = {}
                yield b"id: " + encode_event_id(sent).encode() + b"\n" + _control(
                    "reset", "the alerts topic was recreated (as when the broker restarts "
                             "empty): re-read GET /v1/alerts, then follow this stream")
            elif entry is not None and entry.offset >= sent.get(entry.partition, 0):
                yield _frame(entry, sent)
            elif clock() >= quiet_until:  # nothing came, or only entries replayed or had before
                yield HEARTBEAT
            else:
                continue
            quiet_until = clock() + heartbeat_s
    finally:
        hub.unsubscribe(subscription)


def _frame(entry: FeedEntry, sent: dict[int, int]) -> bytes:
    """The entry as an SSE event; ``sent`` advances to what the client now has."""
    for partition, offset in enumerate(entry.offsets):
        if offset > sent.get(partition, 0):
            sent[partition] = offset
    return b"id: " + encode_event_id(sent).encode() + b"\nevent: alert\ndata: " + entry.data + b"\n\n"


def _control(event: str, detail: str, last_event_id: str | None = None) -> bytes:
    doc: dict[str, Any] = {"detail": detail}
    if last_event_id is not None:
        doc["last_event_id"] = last_event_id
    return f"event: {event}\ndata: ".encode() + orjson.dumps(doc) + b"\n\n"
