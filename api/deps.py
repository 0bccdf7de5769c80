"""Dependencies the routes ask for; the app's lifespan puts them on ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.publisher import ReadingPublisher
from api.read_model import AlertBook
from cityagent.regions import RegionIndex

__all__ = ("PublisherDep", "AlertBookDep", "RegionsDep")


def get_publisher(request: Request) -> ReadingPublisher:
    return request.app.state.publisher


def get_alert_book(request: Request) -> AlertBook:
    return request.app.state.alert_book


def get_regions(request: Request) -> RegionIndex:
    return request.app.state.regions


PublisherDep = Annotated[ReadingPublisher, Depends(get_publisher)]
AlertBookDep = Annotated[AlertBook, Depends(get_alert_book)]
RegionsDep = Annotated[RegionIndex, Depends(get_regions)]
