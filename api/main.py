"""The FastAPI application: ingest for integrators, alerts for operators.

Run with ``uvicorn --factory api.main:create_app_from_env`` (what `cityagent up` does).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from api.auth import KeyRing, require
from api.broker_probe import BrokerProbe
from api.commands import CommandPublisher, command_topic
from api.idempotency import IdempotencyCache
from api.idempotency_log import IdempotencyLog
from api.publisher import ReadingPublisher
from api.ratelimit import RateLimiter
from api.read_model import AlertBook, AlertFeed, AlertHub
from api.readings_feed import ReadingsFeed
from api.request_checks import check_request
from api.routes import (
    alert_stream,
    alerts,
    dashboard,
    health,
    maintenance,
    me,
    readings,
    sensors,
    situation,
    zones,
)
from api.situation import AlertCounter
from api.strict_json import StrictJson
from api.write_ledger import WriteLedger
from cityagent.detectors.config import DetectionConfig
from cityagent.errors import BrokerError, CityAgentError, ConfigError, RecordTooLarge
from cityagent.regions import default_regions
from cityagent.routing import Router
from cityagent.settings import Settings
from cityagent.situation import SensorRegistry, SituationModel
from cityagent.zones import ZoneSet, demo_zones
from control.broker import wait_for_kafka
from control.topics import check_topics, pipeline_topics
from streams.log_repeats import quiet_kafka_client_repeats
from streams.maintenance_feed import MaintenanceFeed
from streams.routing_feed import RoutingFeed
from streams.zone_feed import ZoneFeed

__all__ = ("create_app", "create_app_from_env")

log = logging.getLogger("cityagent.api")
#: UTF-16 surrogates: a Python str may hold them (json.loads of "\\ud800"), UTF-8 may not.
_SURROGATES = re.compile("[\ud800-\udfff]")


def _json_safe(value: Any) -> Any:
    """``value`` with what JSON in UTF-8 cannot hold replaced: bytes that are not UTF-8 and
    lone surrogates by U+FFFD, NaN and the infinities by their names."""
    if isinstance(value, bytes):  # the body, when its content type is not JSON
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return _SURROGATES.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.publisher = ReadingPublisher(settings.bootstrap, settings.readings_topic)
        await app.state.publisher.start()
        await app.state.commands.start()
        # The last 7 days of the alerts topic (it keeps months: the audit trail): the book
        # forgets resolved alerts after that, and open ones are restated every day.
        feed = app.state.alert_feed = AlertFeed(
            settings.bootstrap, settings.alerts_topic, app.state.alert_book, app.state.alert_hub,
            lookback_ms=app.state.alert_book.resolved_for_ms)
        feed.start()
        app.state.readings_feed = ReadingsFeed(settings.bootstrap, settings.readings_topic,
                                               app.state.situation,
                                               lookback_ms=settings.situation_lookback_ms)
        app.state.readings_feed.start()
        app.state.idempotency_log = IdempotencyLog(settings.bootstrap, settings.idempotency_topic,
                                                   app.state.idempotency)
        await app.state.idempotency_log.open()
        app.state.broker_probe = BrokerProbe(settings.bootstrap)
        await app.state.zone_writer.start()
        app.state.zone_feed.start()
        await app.state.maintenance_writer.start()
        app.state.maintenance_feed.start()
        await app.state.routing_writer.start()
        app.state.routing_feed.start()
        log.info("API connected to Kafka at %s", settings.bootstrap)
        try:
            yield
        finally:
            await app.state.routing_feed.stop()
            await app.state.routing_writer.stop()
            await app.state.maintenance_feed.stop()
            await app.state.maintenance_writer.stop()
            await app.state.zone_feed.stop()
            await app.state.zone_writer.stop()
            await app.state.readings_feed.stop()
            await app.state.idempotency_log.close()
            await app.state.broker_probe.close()
            await feed.stop()
            await app.state.commands.stop()
            await app.state.publisher.stop()

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from this server; FastAPI's
    # own load them from cdn.jsdelivr.net and Google Fonts, which offline sites and mainland
    # China often cannot reach (the dashboard is served whole for the same reason).
    app = FastAPIOffline(
        static_url="/api-docs-static",
        title="CityAgent API",
        version="0.1.0",
        description="城市智能体 — sensor ingest and alerts for Shandong's city command platform.",
        lifespan=lifespan,
        # The body the middleware refused, and a query parameter the route does not take (FastAPI
        # ignores them: a typo was a wrong answer); after the key on a route that takes one.
        dependencies=[Depends(check_request)],
    )
    # Keys are read here, not in the lifespan, so that a bad key setting stops the process at once.
    app.state.keys = KeyRing.from_settings(settings, {c.code for c in default_regions().cities})
    app.state.rate_limiter = RateLimiter(settings.api_rate, settings.api_burst)
    app.state.idempotency = IdempotencyCache()
    # The alert read model lives as long as the app; the lifespan connects it to Kafka.
    app.state.regions = default_regions()
    # A suppressed event scoped by zone is placed where its sensor is (the situation model).
    app.state.alert_book = AlertBook(regions=app.state.regions,
                                     sensor_place=lambda s: app.state.situation.place_of(s))
    app.state.alert_hub = AlertHub()
    app.state.commands = CommandPublisher(settings.bootstrap, command_topic(settings))
    # Operational zones: the file (or demo) set, then the zones topic's records on top.
    app.state.router = Router.load()
    base = (ZoneSet.load(settings.zones_path, app.state.regions,
                         departments=app.state.router.department_codes)
            if settings.zones_path else demo_zones(app.state.regions))
    app.state.zone_feed = ZoneFeed(settings.bootstrap, settings.zones_topic, base,
                                   app.state.regions)
    app.state.zone_writer = CommandPublisher(settings.bootstrap, settings.zones_topic)
    app.state.routing_feed = RoutingFeed(settings.bootstrap, settings.routing_topic,
                                         app.state.router)
    app.state.routing_writer = CommandPublisher(settings.bootstrap, settings.routing_topic)
    # The zone, routing and maintenance writes of this process, one at a time, each
    # checked against what the process has read and its own writes not read back yet.
    app.state.settings_writes = asyncio.Lock()
    app.state.zone_ledger = WriteLedger(app.state.zone_feed.follower)
    app.state.routing_ledger = WriteLedger(app.state.routing_feed.follower)
    app.state.maintenance_feed = MaintenanceFeed(settings.bootstrap, settings.maintenance_topic)
    app.state.maintenance_writer = CommandPublisher(settings.bootstrap,
                                                    settings.maintenance_topic)
    app.state.maintenance_ledger = WriteLedger(app.state.maintenance_feed.follower)
    # The situation read model (readings topic → per-sensor state), and open-alert counts.
    app.state.future_tolerance_ms = settings.future_tolerance_ms
    detection = DetectionConfig.load(settings.detection_path)
    app.state.situation = SituationModel(
        app.state.regions, detection,
        SensorRegistry.load(settings.registry_path, detection) if settings.registry_path
        else None,
        future_tolerance_ms=settings.future_tolerance_ms)
    app.state.alert_counter = AlertCounter(app.state.alert_book, app.state.regions)
    app.state.request_counts = Counter()
    # Inner to CountRequests, so that it counts the 400s of bodies that are not strict JSON.
    app.add_middleware(StrictJson)
    app.add_middleware(health.CountRequests, counts=app.state.request_counts)
    app.include_router(me.router)
    app.include_router(readings.router)
    # The stream first: /v1/alerts/stream is not an alert id. The alert routes ask for their
    # roles themselves (reads: viewer, actions: operator); a router-wide requirement would run
    # first and answer an integrator's ack with the reads' 403. tests/api/test_roles.py checks
    # every route's roles.
    app.include_router(alert_stream.router, dependencies=[Depends(require("viewer"))])
    app.include_router(alerts.router)
    app.include_router(situation.router)
    app.include_router(sensors.router)
    app.include_router(zones.router)
    app.include_router(maintenance.router)
    app.include_router(health.router)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422 (each error's ``loc``, ``msg`` and ``input``), made encodable: the
        default handler failed with a 500 when the echoed input was a body of bytes that are
        not UTF-8 (sent as text/plain), NaN, or a lone surrogate."""
        return JSONResponse({"detail": jsonable_encoder(_json_safe(exc.errors()))},
                            status_code=422)

    @app.exception_handler(CityAgentError)
    async def domain_error(_request: Request, exc: CityAgentError) -> JSONResponse:
        """The one place domain errors become HTTP answers."""
        if isinstance(exc, BrokerError):
            return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})
        if isinstance(exc, RecordTooLarge):
            return JSONResponse({"detail": str(exc)}, status_code=413)
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/v1", include_in_schema=False)
    async def index() -> dict[str, str]:
        return {"name": "CityAgent 城市智能体", "docs": "/docs", "alerts": "/v1/alerts",
                "dashboard": "/"}

    # The one-screen dashboard: the page at /, its /static files and /geo boundaries.
    dashboard.mount_dashboard(app)

    return app


#: How long a starting API waits for the brokers to answer before it gives up (exit code 1).
KAFKA_WAIT_S = 30.0


def create_app_from_env() -> FastAPI:
    quiet_kafka_client_repeats()  # a broker that does not answer: not ~200 lines a second
    try:
        settings = Settings.from_env()
        app = create_app(settings)
    except ConfigError as exc:  # one line naming the setting, not a traceback from uvicorn
        print(f"cityagent api: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        # Here, not in the lifespan: uvicorn prints a lifespan's error with its traceback.
        wait_for_kafka(settings.bootstrap, timeout_s=KAFKA_WAIT_S)
        # Before its feeds ask for one: a broker that creates topics on first use would make
        # them with its own partition count. Its own topics only (not the workers'
        # changelogs), and whatever their counts: it reads them by assignment.
        check_topics(settings.bootstrap, [spec for spec in pipeline_topics(settings)
                                          if spec.name.startswith(f"{settings.topic_prefix}.")],
                     counts=False)
    except BrokerError as exc:
        print(f"cityagent api: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    return app
