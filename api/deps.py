"""Dependencies the routes ask for; the app's lifespan puts them on ``app.state``."""

from __future__ import annotations

import asyncio
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

__all__ = ("PublisherDep", "AlertBookDep", "RegionsDep", "RateLimiterDep", "IdempotencyDep",
           "AlertHubDep", "CommandsDep", "SituationDep", "AlertCounterDep", "read_up_to_start")

#: How long an admin write waits, at most, for the API to have read its topic (it starts
#: reading with the API: this is milliseconds, unless the broker does not answer).
FEED_WAIT_S = 10.0


def get_publisher(request: Request) -> ReadingPublisher:
    return request.app.state.publisher


def get_alert_book(request: Request) -> AlertBook:
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

    An admin write derives from what the API has read: a zone's or the rules' next version is
    one above the newest read, and a DELETE needs the thing to exist. Computed from a partial
    read (an API that had just started), the version would be at or below one already on the
    topic, and every reader would ignore the record that the answer called queued."""
    try:
        await asyncio.wait_for(feed.follower.wait_caught_up(), FEED_WAIT_S)
    except TimeoutError:
        raise HTTPException(503, f"this API has not yet read the {what} topic up to its end; "
                                 "retry shortly", headers={"Retry-After": "5"}) from None
