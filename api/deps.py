"""Dependencies the routes ask for; the app's lifespan puts them on ``app.state``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from api.commands import CommandPublisher
from api.idempotency import IdempotencyCache
from api.publisher import ReadingPublisher
from api.ratelimit import RateLimiter
from api.read_model import AlertBook, AlertHub
from api.situation import AlertCounter
from cityagent.regions import RegionIndex
from cityagent.situation import SituationModel

__all__ = ("PublisherDep", "AlertBookDep", "ReadAlertBookDep", "RegionsDep", "RateLimiterDep",
           "IdempotencyDep", "AlertHubDep", "CommandsDep", "SituationDep", "AlertCounterDep",
           "read_up_to_start", "wait_until")

#: How long a settings route (zones, routing, maintenance windows: reads and admin writes) and
#: a resuming alert stream wait, at most, for the API to have read enough of its topic (it
#: starts reading with the API: this is milliseconds, unless the broker does not answer).
FEED_WAIT_S = 10.0
#: The ``Retry-After`` (seconds) of the 503 that follows.
FEED_RETRY_AFTER_S = 5

def get_publisher(request: Request) -> ReadingPublisher:
    return request.app.state.publisher


def get_alert_book(request: Request) -> AlertBook:
    return request.app.state.alert_book


async def get_read_alert_book(request: Request) -> AlertBook:
    """The alert book, once the API has read the alerts topic (its last 7 days) up to where it
    ended at start; 503 with Retry-After after :data:`FEED_WAIT_S`.

    Before that (a second or so after a start) the book holds part of the topic: a list
    lacked alerts, an alert not read yet was a 404, and an action on it a 404 (or a 409 for a
    state already changed) a client could not tell from the truth. An app without the feed
    (used without its lifespan: tests that fill the book themselves) answers from the book.
    """
    feed = getattr(request.app.state, "alert_feed", None)
    if feed is not None:
        await wait_until(lambda: feed.caught_up, lambda: (
            "this API has not yet read the alerts topic (its last 7 days) up to its end; "
            "retry shortly"))
    return request.app.state.alert_book


def get_alert_hub(request: Request) -> AlertHub:
    return request.app.state.alert_hub


def get_commands(request: Request) -> CommandPublisher:
    return request.app.state.commands


def get_regions(request: Request) -> RegionIndex:
    return request.app.state.regions


def get_rate_limiter(request: Request) -> RateLimiter:
    return request.app.state.rate_limiter


def get_idempotency(request: Request) -> IdempotencyCache:
    return request.app.state.idempotency


PublisherDep = Annotated[ReadingPublisher, Depends(get_publisher)]
RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]
IdempotencyDep = Annotated[IdempotencyCache, Depends(get_idempotency)]
AlertBookDep = Annotated[AlertBook, Depends(get_alert_book)]
ReadAlertBookDep = Annotated[AlertBook, Depends(get_read_alert_book)]
RegionsDep = Annotated[RegionIndex, Depends(get_regions)]
AlertHubDep = Annotated[AlertHub, Depends(get_alert_hub)]
CommandsDep = Annotated[CommandPublisher, Depends(get_commands)]


def get_situation(request: Request) -> SituationModel:
    return request.app.state.situation


def get_alert_counter(request: Request) -> AlertCounter:
    return request.app.state.alert_counter


SituationDep = Annotated[SituationModel, Depends(get_situation)]
AlertCounterDep = Annotated[AlertCounter, Depends(get_alert_counter)]


async def read_up_to_start(feed: Any, what: str) -> None:
    """Wait until the API has read ``feed``'s topic (zones, routing, maintenance) up to where it
    ended when the API started; 503 after :data:`FEED_WAIT_S`.

    Reads: until then the API holds the packaged defaults (the demo zones, routing.toml's
    rules, no maintenance window) or part of the topic, and a 200 with them could not be told
    from the truth (a load balancer may send a request to a replica that has just started,
    before its ``/readyz`` was checked). Writes derive from what the API has read: a zone's or
    the rules' next version is one above the newest read, and a DELETE needs the thing to
    exist. Computed from a partial read, the version would be at or below one already on the
    topic, and every reader would ignore the record that the answer called queued."""
    follower = feed.follower

    def not_read() -> str:
        progress = ("the broker has not answered it yet" if follower.ends is None
                    else f"read to offsets {follower.positions} of {follower.ends}")
        return (f"this API has not yet read the {what} topic up to its end ({progress}); "
                "retry shortly")

    await wait_until(lambda: follower.caught_up, not_read)


async def wait_until(ready: Callable[[], bool], detail: Callable[[], str]) -> None:
    """Wait until ``ready()`` (polled every 20 ms); after :data:`FEED_WAIT_S`, a 503 with
    ``detail()`` and ``Retry-After``. Polled, not an ``asyncio.Event``, for the reason of
    ``TopicFollower.wait_caught_up``: a test client runs each request in a loop of its own."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FEED_WAIT_S
    while not ready():
        if loop.time() >= deadline:
            raise HTTPException(503, detail(), headers={"Retry-After": str(FEED_RETRY_AFTER_S)})
        await asyncio.sleep(0.02)
