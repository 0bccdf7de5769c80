"""Dependencies the routes ask for; the app's lifespan puts them on ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.commands import CommandPublisher
from api.idempotency import IdempotencyCache
from api.publisher import ReadingPublisher
from api.ratelimit import RateLimiter
from api.read_model import AlertBook, AlertHub
from api.situation import AlertCounter
from cityagent.regions import RegionIndex
from cityagent.situation import SituationModel

__all__ = ("PublisherDep", "AlertBookDep", "RegionsDep", "RateLimiterDep", "IdempotencyDep",
           "AlertHubDep", "CommandsDep", "SituationDep", "AlertCounterDep")


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
