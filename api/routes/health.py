"""Health: ``/healthz`` (the process is alive), ``/readyz`` (it can answer truthfully) and
``/metrics`` (Prometheus text).

Ready means the broker answers a metadata request and both read models (readings → situation,
alerts → alert book) have read their topic up to where it ended when the API started (the
readings topic from ``CITYAGENT_SITUATION_LOOKBACK_H`` ago): before that, the situation and the
alert list would show a partial past. While the situation catches up, the answer says how many
messages of the readings topic it has read of how many, so a restart can be watched. A load
balancer should send traffic to ready replicas only. The metrics are written in the Prometheus text format by hand
(a dozen lines; no client library needed) and follow its conventions: base units, ``_total``
for counters.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from api.schemas import Health, Readiness

__all__ = ("router", "CountRequests")

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "Not ready: `missing` says why"}})
async def readyz(request: Request) -> JSONResponse:
    """Ready: the broker answers; the read models, idempotency records, zones, maintenance
    windows and routing rules caught up."""
    state = request.app.state
    readings = getattr(state, "readings_feed", None)
    alerts = getattr(state, "alert_feed", None)
    records = getattr(state, "idempotency_log", None)
    followed = [getattr(state, name, None) for name in ("zone_feed", "maintenance_feed",
                                                        "routing_feed")]
    # The feeds' state as the request came, before awaiting the broker's answer.
    caught_up = {"readings_caught_up": bool(readings is not None and readings.caught_up),
                 "alerts_caught_up": bool(alerts is not None and alerts.caught_up),
                 "idempotency_caught_up": bool(records is not None and records.caught_up),
                 # Zones, maintenance windows, routing: a replica still reading them holds
                 # the packaged zones and rules, so their routes wait for them, or answer 503.
                 "settings_caught_up": all(f is not None and f.follower.caught_up
                                           for f in followed)}
    read, to_read = readings.progress if readings is not None else (0, 0)
    probe = getattr(state, "broker_probe", None)
    broker = probe is not None and await probe.answers()
    body = {"broker": broker, **caught_up}
    reading = "the situation is still reading the readings topic"
    if to_read:
        reading += f" ({read:,} of {to_read:,} messages, {100 * read // to_read}%)"
    missing = [{"broker": "the broker does not answer",
                "readings_caught_up": reading,
                "alerts_caught_up": "the alert book is still reading the alerts topic",
                "idempotency_caught_up": "the idempotency records are still being read (keyed "
                                         "POSTs of readings are answered 503 until then)",
                "settings_caught_up": "the zones, maintenance windows and routing rules are "
                                      "still being read"}[k]
               for k, ok in body.items() if not ok]
    ready = not missing
    return JSONResponse({"status": "ready" if ready else "not ready", **body,
                         "readings_messages_read": read, "readings_messages_to_read": to_read,
                         "missing": missing},
                        status_code=200 if ready else 503,
                        headers={} if ready else {"Retry-After": "2"})


# Load balancers and uptime checks often probe with HEAD: answer it as GET does (status and
# headers; the server sends no body). Not in the OpenAPI document: the same operation.
for _path, _endpoint in (("/healthz", healthz), ("/readyz", readyz)):
    router.add_api_route(_path, _endpoint, methods=["HEAD"], include_in_schema=False)


_METRICS_EXAMPLE = (
    "# HELP cityagent_api_readings_consumed_total Readings folded into the situation model "
    "from the readings topic.\n"
    "# TYPE cityagent_api_readings_consumed_total counter\n"
    "cityagent_api_readings_consumed_total 1843200\n"
    "# HELP cityagent_api_alerts_open Open (not resolved) alerts, by severity.\n"
    "# TYPE cityagent_api_alerts_open gauge\n"
    'cityagent_api_alerts_open{severity="orange"} 2\n'
    "# HELP cityagent_api_feed_caught_up 1 when the read model has read its topic up to where "
    "it ended at start.\n"
    "# TYPE cityagent_api_feed_caught_up gauge\n"
    'cityagent_api_feed_caught_up{feed="readings"} 1\n'
    'cityagent_api_feed_caught_up{feed="alerts"} 1\n'
)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"},
                                                        "example": _METRICS_EXAMPLE}},
                             "description": "Prometheus text exposition format 0.0.4"}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this API process (its read models, feeds and requests)."""
    return Response(render_metrics(request.app.state),
                    media_type="text/plain; version=0.0.4; charset=utf-8")


def render_metrics(state: Any) -> str:
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str,
               samples: list[tuple[dict[str, str], float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{text}}} {_value(value)}" if text else f"{name} {_value(value)}")

    model = getattr(state, "situation", None)
    feed = getattr(state, "readings_feed", None)
    alert_feed = getattr(state, "alert_feed", None)
    if model is not None:
        sensors = model.situation(int(time.time() * 1000))["province"]["sensors"]
        metric("cityagent_api_readings_consumed_total", "counter",
               "Readings folded into the situation model from the readings topic.",
               [({}, model.readings_total)])
        metric("cityagent_api_readings_future_total", "counter",
               "Readings not folded: dated over 5 minutes past this process's clock.",
               [({}, model.readings_future_total)])
        metric("cityagent_api_readings_wrong_kind_total", "counter",
               "Readings not folded: of another kind than their sensor's (two devices, one id).",
               [({}, model.readings_wrong_kind_total)])
        metric("cityagent_api_read_model_sensors", "gauge",
               "Sensors in the situation model, by status at stream time.",
               [({"status": "reporting"}, sensors["reporting"]),
                ({"status": "silent"}, sensors["silent"])])
        metric("cityagent_api_stream_time_seconds", "gauge",
               "Stream time: the newest reading's event time (Unix seconds).",
               [({}, (model.stream_ms or 0) / 1000)])
    if feed is not None:
        metric("cityagent_api_reading_messages_consumed_total", "counter",
               "Messages read from the readings topic.", [({}, feed.messages)])
        metric("cityagent_api_reading_batches_malformed_total", "counter",
               "Messages of the readings topic that were no reading batch (skipped).",
               [({}, feed.malformed)])
        metric("cityagent_api_sensors_forgotten_total", "counter",
               "Sensors dropped from the situation: no reading within the lookback, not in "
               "the registry (a starting API would not know them).", [({}, feed.forgotten)])
    counter = getattr(state, "alert_counter", None)
    book = getattr(state, "alert_book", None)
    if counter is not None and book is not None:
        metric("cityagent_api_alerts_open", "gauge", "Open (not resolved) alerts, by severity.",
               [({"severity": s}, n) for s, n in counter.open_by_severity().items()])
        metric("cityagent_api_alerts_known", "gauge", "Alerts in the alert book.",
               [({}, len(book))])
        metric("cityagent_api_alerts_forgotten_total", "counter",
               "Resolved alerts dropped from the alert book once the alerts topic's retention "
               "had passed since they were resolved.", [({}, book.forgotten)])
    if alert_feed is not None:
        metric("cityagent_api_alert_events_malformed_total", "counter",
               "Messages of the alerts topic that were no alert event (skipped).",
               [({}, alert_feed.malformed)])
    records = getattr(state, "idempotency_log", None)
    if records is not None:
        metric("cityagent_api_idempotency_records_total", "counter",
               "Idempotency records of keyed POSTs of readings: written by this process, "
               "not acknowledged by Kafka (their requests still answered 202), read from the "
               "topic, taken in (recent and not known here), malformed.",
               [({"outcome": "written"}, records.written), ({"outcome": "failed"}, records.failed),
                ({"outcome": "read"}, records.read), ({"outcome": "taken"}, records.taken),
                ({"outcome": "malformed"}, records.malformed)])
    feeds = [("readings", feed), ("alerts", alert_feed), ("idempotency", records)] + [
        (name, getattr(getattr(state, attribute, None), "follower", None))
        for name, attribute in (("zones", "zone_feed"), ("maintenance", "maintenance_feed"),
                                ("routing", "routing_feed"))]
    metric("cityagent_api_feed_caught_up", "gauge",
           "1 when the read model has read its topic up to where it ended at start.",
           [({"feed": name}, float(bool(f is not None and f.caught_up))) for name, f in feeds])
    if feed is not None:
        metric("cityagent_api_feed_lag_messages", "gauge",
               "Messages between the feed's position and the topic's end.",
               [({"feed": "readings"}, feed.lag)])
    counts: Counter[tuple[str, str, str]] | None = getattr(state, "request_counts", None)
    if counts is not None:
        metric("cityagent_api_requests_total", "counter", "HTTP requests answered, by route.",
               [({"method": m, "route": r, "status": s}, n)
                for (m, r, s), n in sorted(counts.items())])
    return "\n".join(out) + "\n"


def _value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class CountRequests:
    """ASGI middleware counting answered requests by method, route template and status.

    Pure ASGI rather than ``@app.middleware``: it must not buffer or wrap the alert stream's
    long-lived responses. Route templates (``/v1/sensors/{sensor_id}``) keep the labels few.
    """

    def __init__(self, app: Any, counts: Counter[tuple[str, str, str]]) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counted_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.counts[(scope["method"], route, str(status))] += 1
