"""The alerting agents: anomalies → incidents (one owner per correlation scope) → alert events.

Two steps, because the key that owns an incident is not the key anomalies arrive with:

1. ``scope`` re-keys each anomaly (keyed by district on the anomalies topic) by its
   *correlation scope* (a zone, district or city: ``IncidentEngine.scope_key``) onto the
   ``alert-scopes`` topic.
2. ``incidents`` consumes ``alert-scopes`` and the operators' ``alert-commands`` as one
   stream, both keyed by scope, so exactly one agent applies everything that touches a
   scope's incidents, in order. The scope's state (``ScopeState``) is in the Faust table
   ``incidents``, written after every change; every state change is published on the alerts
   topic as an ``AlertEvent`` (who, when, the alert after the change): the audit trail.

Alert ids derive from the incident and every applied anomaly and command id is remembered in
the state, so a redelivered or replayed message changes nothing and publishes nothing. A
timer ticks every scope in this worker's part of the table: auto-resolve, escalation and
held faults need no new input.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import faust

from cityagent.detection import Anomaly
from cityagent.incident_alert import AlertEvent, Command, InvalidCommand
from cityagent.incidents import IncidentEngine, ScopeState
from streams.maintenance_feed import MaintenanceFeed
from streams.metrics import WorkerCounters
from streams.partitions import partition_of_key
from streams.routing_feed import RoutingFeed
from streams.topics import Topics, legacy_key, table_key
from streams.zone_feed import ZoneFeed

__all__ = ("register_alerting", "INCIDENT_TABLE")

INCIDENT_TABLE = "incidents"
TICK_S = 5.0

log = logging.getLogger("cityagent.streams")


def register_alerting(app: faust.App, topics: Topics, engine: IncidentEngine, zones: ZoneFeed,
                      maintenance: MaintenanceFeed, routing: RoutingFeed,
                      counters: WorkerCounters) -> faust.Table:
    table = app.Table(  # raw keys, as on the scopes topic (streams.topics.table_key)
        INCIDENT_TABLE, default=None, partitions=topics.scopes.partitions, key_type=bytes,
        value_type=bytes, use_partitioner=True,
    )

    engines: dict[tuple, IncidentEngine] = {}

    def current() -> IncidentEngine:
        """The engine with the maintenance windows and routing rules in force now."""
        key = (maintenance.windows, routing.version)
        found = engines.get(key)
        if found is None:
            engines.clear()
            found = engines[key] = dataclasses.replace(engine, maintenance=key[0],
                                                       router=routing.router)
        return found

    def load(scope: str) -> ScopeState:
        raw = table.get(table_key(scope)) or table.get(legacy_key(scope))
        if raw:
            try:
                return ScopeState.from_bytes(raw)
            except ValueError as exc:
                log.warning("scope %s: incident state unreadable (%s); starting afresh", scope, exc)
        return ScopeState()

    async def publish(scope: str, events: list[AlertEvent]) -> None:
        for event in events:
            counters.alerts_total += 1
            await topics.alerts.send(key=scope, value=event.to_dict())

    @app.agent(topics.anomalies, name="scope")
    async def scope(stream: faust.StreamT) -> None:
        async for value in stream:
            anomaly = _anomaly_or_none(value)
            if anomaly is None:
                continue
            key = engine.scope_key(anomaly, zones.index)
            await topics.scopes.send(key=key, value={"anomaly": value})

    @app.agent(topics.incident_inputs, name="incidents")
    async def incidents(stream: faust.StreamT) -> None:
        async for event in stream.events():
            key = _text(event.key)
            value = event.value if isinstance(event.value, dict) else {}
            state = load(key)
            now = _now_ms()
            if "anomaly" in value:
                anomaly = _anomaly_or_none(value["anomaly"])
                events = ([] if anomaly is None
                          else current().on_anomaly(state, anomaly, zones.index, now))
            elif "command" in value:
                try:
                    command = Command.from_dict(value["command"])
                except InvalidCommand as exc:
                    log.warning("skipped an invalid command for scope %s: %s", key, exc)
                    continue
                events = current().on_command(state, command, now)
                counters.commands_total += 1
            else:
                log.warning("skipped a message on %s that is neither an anomaly nor a command",
                            event.message.topic)
                continue
            save(key, state)
            await publish(key, events)

    ticked: list[set[int]] = [set()]

    def owned_partitions() -> set[int]:
        """The scopes-topic partitions this worker consumes now (its active assignment)."""
        name = topics.scopes.get_topic_name()
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name}
        if owned != ticked[0]:
            log.info("alert timers: scopes of %s partitions %s", name, sorted(owned))
            ticked[0] = owned
        return owned

    def save(scope: str, state: ScopeState) -> None:
        if state.is_empty:
            table.pop(table_key(scope), None)
        else:
            table[table_key(scope)] = state.to_bytes()
        if legacy_key(scope) in table:  # state from before raw keys, now rewritten
            del table[legacy_key(scope)]

    @app.task
    async def follow_zones() -> None:
        """Keep zones, maintenance windows and routing current from their topics."""
        zones.start()
        maintenance.start()
        routing.start()

    @app.timer(TICK_S)
    async def tick() -> None:
        """Auto-resolve, escalate and release held faults by the clock, for every scope in
        this worker's part of the table (restored ones included, after a restart). Only the
        partitions it owns: the table also holds standby copies of other workers' scopes, and
        ticking those too would send their events twice."""
        now = _now_ms()
        owned = owned_partitions()
        for scope in sorted({_text(key).strip('"') for key in table.keys()}):
            if partition_of_key(scope, topics.scopes.partitions) not in owned:
                continue  # a standby copy: the worker that owns the scope ticks it
            state = load(scope)
            events = current().tick(state, now)
            if events or state.is_empty:
                save(scope, state)
            await publish(scope, events)

    return table


def _anomaly_or_none(value: Any) -> Anomaly | None:
    try:
        return Anomaly.from_dict(value)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("skipped a malformed anomaly %r: %s", value, exc)
        return None


def _text(key: bytes | str | None) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
