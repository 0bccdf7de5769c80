"""The FastAPI application: ingest for integrators, alerts for operators.

Run with ``uvicorn --factory api.main:create_app_from_env`` (what `cityagent up` does).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.publisher import ReadingPublisher
from api.read_model import AlertBook, AlertFeed
from api.routes import alerts, health, readings
from cityagent.errors import BrokerError, CityAgentError
from cityagent.regions import default_regions
from cityagent.settings import Settings

__all__ = ("create_app", "create_app_from_env")

log = logging.getLogger("cityagent.api")


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.regions = default_regions()
        app.state.alert_book = AlertBook()
        app.state.publisher = ReadingPublisher(settings.bootstrap, settings.readings_topic)
        await app.state.publisher.start()
        feed = AlertFeed(settings.bootstrap, settings.alerts_topic, app.state.alert_book)
        feed.start()
        log.info("API connected to Kafka at %s", settings.bootstrap)
        try:
            yield
        finally:
            await feed.stop()
            await app.state.publisher.stop()

    app = FastAPI(
        title="CityAgent API",
        version="0.1.0",
        description="城市智能体 — sensor ingest and alerts for Shandong's city command platform.",
        lifespan=lifespan,
    )
    app.include_router(readings.router)
    app.include_router(alerts.router)
    app.include_router(health.router)

    @app.exception_handler(CityAgentError)
    async def domain_error(_request: Request, exc: CityAgentError) -> JSONResponse:
        """The one place domain errors become HTTP answers."""
        if isinstance(exc, BrokerError):
            return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def index() -> dict[str, str]:
        return {"name": "CityAgent 城市智能体", "docs": "/docs", "alerts": "/v1/alerts"}

    return app


def create_app_from_env() -> FastAPI:
    return create_app(Settings.from_env())
