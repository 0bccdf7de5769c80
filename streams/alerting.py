"""The alerting agents: anomalies → incidents (one owner per correlation scope) → alert events.

Two steps, because the key that owns an incident is not the key anomalies arrive with:

1. ``scope`` re-keys each anomaly (keyed by district on the anomalies topic) by its
   *correlation scope* (a zone, district or city: ``IncidentEngine.scope_key``) onto the
   ``alert-scopes`` topic.
2. ``incidents`` consumes ``alert-scopes`` and the operators' ``alert-commands`` as one
   stream, both keyed by scope, so exactly one agent applies everything that touches a
   scope's incidents, in order. Every state change is published on the alerts topic as an
   ``AlertEvent`` (who, when, the alert after the change): the audit trail.

A scope's state (``ScopeState``) lives in memory and is **checkpointed** to the Faust table
``incidents`` at most every ``CHECKPOINT_S`` (only the scopes that changed), in parts when it
is larger than a Kafka record (``streams.parted``). Until 2026-11-23 it was read from the
table and written back whole for every message: a flood incident of a district grows by
~0.3 KB per sensor, so in a rainstorm over thousands of sensors each anomaly cost a parse and
a write of up to a megabyte (quadratic in the incident's size), and at ~4,000 sensors the
record passed Kafka's 1 MB limit and the worker crashed, again after every restart.

As in detection, the stream is acknowledged only up to what a checkpoint holds. After a
crash Kafka redelivers the rest, and the engine applies it again to the restored state: alert
ids derive from the incident, every applied anomaly and command id is remembered in the
state, and ``seq`` counts each alert's changes, so the replay makes the same changes with the
same ``seq`` (events the alert book already holds, and ignores). A timer ticks every scope of
this worker's partitions: auto-resolve, escalation and held faults need no new input.

Both agents and the timer judge with the zones, maintenance windows and routing rules of
their compacted topics; a starting worker reads those up to where they ended before it
consumes anything (``streams/feeds.py``), so its first anomalies are not judged with the
packaged defaults.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import faust

from cityagent.detection import Anomaly
from cityagent.errors import InvalidAnomaly
from cityagent.incident_alert import AlertEvent, Command, InvalidCommand
from cityagent.incidents import IncidentEngine, ScopeState
from streams.app import CityAgentApp
from streams.checkpoints import CheckpointedStates
from streams.feeds import WorkerFeeds
from streams.metrics import WorkerCounters
from streams.parted import PartedTable, delete_value, head_keys, read_value, write_value
from streams.partitions import partition_of_key
from streams.topics import InvalidMessage, Topics, from_json, legacy_key, to_json

__all__ = ("register_alerting", "CurrentEngine", "INCIDENT_TABLE", "CHECKPOINT_S")

INCIDENT_TABLE = "incidents"
TICK_S = 5.0
#: Longest time between checkpoints of the scopes that changed (shorter if the worker's
#: ``checkpoint_s`` is): incident states are small, except in a large event, and a short
#: interval keeps what a crash makes the worker apply again, and publish again, small.
CHECKPOINT_S = 1.0

log = logging.getLogger("cityagent.streams")


class _Scopes(CheckpointedStates):
    """The in-memory states of this worker's scopes, their checkpoints and pending acks."""

    def __init__(self, table: faust.Table, partitions: int) -> None:
        super().__init__(table, partitions)
        self.states: dict[str, ScopeState] = {}

    def get(self, scope: str) -> ScopeState:
        state = self.states.get(scope)
        if state is None:
            state = self.states[scope] = self._stored(scope)
        return state

    def _stored(self, scope: str) -> ScopeState:
        try:
            raw = read_value(self.table, scope) or self.table.get(legacy_key(scope))
            if raw:
                return ScopeState.from_bytes(raw)
        except ValueError as exc:
            log.warning("scope %s: incident state unreadable (%s); starting afresh", scope, exc)
        return ScopeState()

    def partition(self, scope: str) -> int:
        return partition_of_key(scope, self.partitions)

    def scopes_of(self, owned: set[int]) -> list[str]:
        """Every scope of the owned partitions, in memory or only in the table (restored)."""
        known = head_keys(self.table.keys()) | set(self.states)
        return sorted(s for s in known if self.partition(s) in owned)

    async def checkpoint(self) -> None:
        """Write the changed scopes' states (delete the empty ones), then ack the events
        they include."""
        for scope in sorted(self.dirty):
            state = self.states.get(scope)
            if state is None:
                continue
            if state.is_empty:
                delete_value(self.table, scope)
                del self.states[scope]
            else:
                write_value(self.table, scope, state.to_bytes())
            if legacy_key(scope) in self.table:  # state from before raw keys, now rewritten
                del self.table[legacy_key(scope)]
        self.dirty.clear()
        await self.acknowledge()

    def keep_only(self, owned: set[int]) -> None:
        """After a rebalance: forget the scopes of partitions this worker no longer has (they
        were checkpointed when revoked, and reload from the table if they come back)."""
        for scope in list(self.states):
            if self.partition(scope) not in owned:
                del self.states[scope]
                self.dirty.discard(scope)


class CurrentEngine:
    """The engine with the maintenance windows and routing rules in force now (call it),
    made again when either changes.

    The rules are told apart by the router the routing feed holds, not by their version: a
    second record of one version (two API replicas writing at once) replaces the rules, and
    keyed by version the worker went on routing by the first while its feed, and every
    reader started later, had the second."""

    def __init__(self, engine: IncidentEngine, maintenance: Any, routing: Any) -> None:
        self.engine, self.maintenance, self.routing = engine, maintenance, routing
        self._made: IncidentEngine | None = None

    def __call__(self) -> IncidentEngine:
        windows, router = self.maintenance.windows, self.routing.router
        made = self._made
        if made is None or made.maintenance != windows or made.router is not router:
            made = self._made = dataclasses.replace(self.engine, maintenance=windows,
                                                    router=router)
        return made


def register_alerting(app: CityAgentApp, topics: Topics, engine: IncidentEngine,
                      feeds: WorkerFeeds, counters: WorkerCounters,
                      checkpoint_s: float = CHECKPOINT_S,
                      feeds_catch_up_s: float = 30.0) -> faust.Table:
    # Raw keys, as on the scopes topic (streams.topics.table_key); a state's parts go to the
    # partition of its scope.
    table = app.tables.add(PartedTable(
        app, name=INCIDENT_TABLE, default=None, partitions=topics.scopes.partitions,
        key_type=bytes, value_type=bytes, beacon=app.tables.beacon,
    ))
    scopes = _Scopes(table, topics.scopes.partitions)
    checkpoint_s = min(checkpoint_s, CHECKPOINT_S)
    zones, maintenance, routing = feeds.zones, feeds.maintenance, feeds.routing

    current = CurrentEngine(engine, maintenance, routing)

    async def publish(scope: str, events: list[AlertEvent]) -> None:
        for event in events:
            counters.alerts_total += 1
            await topics.alerts.send(key=scope, value=to_json(event.to_dict()))

    @app.agent(topics.anomalies, name="scope")
    async def scope(stream: faust.StreamT) -> None:
        async for value in stream:
            anomaly = _anomaly_or_none(value)
            if anomaly is None:
                continue
            try:
                key = engine.scope_key(anomaly, zones.index)
            except Exception:  # a bug: one message must not stop its partition for good
                counters.messages_failed_total += 1
                log.exception("could not scope anomaly %s; skipped it (a bug, please report "
                              "it with this log)", anomaly.anomaly_id)
                continue
            await topics.scopes.send(key=key, value=to_json({"anomaly": anomaly.to_dict()}))

    @app.agent(topics.incident_inputs, name="incidents")
    async def incidents(stream: faust.StreamT) -> None:
        manual = stream.noack()
        scopes.stream = manual
        async for event in manual.events():
            scopes.pending.append(event)
            key = _text(event.key)
            try:
                value = from_json(event.value)
            except InvalidMessage as exc:
                log.warning("skipped a message at %s[%d]@%d: %s", event.message.topic,
                            event.message.partition, event.message.offset, exc)
                continue
            value = value if isinstance(value, dict) else {}
            now = _now_ms()
            try:
                if "anomaly" in value:
                    anomaly = _anomaly_or_none(value["anomaly"])
                    events = ([] if anomaly is None else
                              current().on_anomaly(scopes.get(key), anomaly, zones.index, now))
                elif "command" in value:
                    try:
                        command = Command.from_dict(value["command"])
                    except InvalidCommand as exc:
                        log.warning("skipped an invalid command for scope %s: %s", key, exc)
                        continue
                    events = current().on_command(scopes.get(key), command, now)
                    counters.commands_total += 1
                else:
                    log.warning("skipped a message on %s that is neither an anomaly nor a "
                                "command", event.message.topic)
                    continue
            except Exception:  # a bug: one message must not stop its partition for good
                counters.messages_failed_total += 1
                message = event.message
                log.exception("alerting failed on the message at %s[%d]@%d and skipped it; "
                              "this is a bug, please report it with this log",
                              message.topic, message.partition, message.offset)
                continue
            scopes.dirty.add(key)
            await publish(key, events)
            if scopes.due(checkpoint_s):
                await scopes.checkpoint()

    ticked: list[set[int]] = [set()]

    def owned_partitions() -> set[int]:
        """The scopes-topic partitions this worker consumes now (its active assignment)."""
        name = topics.scopes.get_topic_name()
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name}
        if owned != ticked[0]:
            log.info("alert timers: scopes of %s partitions %s", name, sorted(owned))
            ticked[0] = owned
        return owned

    async def catch_up() -> None:
        """Read zones, maintenance windows and routing before anything is consumed (the
        agents and the timer judge with them), then keep them current."""
        await feeds.catch_up(feeds_catch_up_s)

    app.before_start.append(catch_up)

    @app.timer(TICK_S)
    async def tick() -> None:
        """Auto-resolve, escalate and release held faults by the clock, for every scope of
        this worker's partitions (restored ones included, after a restart). Only the
        partitions it owns: the table also holds standby copies of other workers' scopes, and
        ticking those too would send their events twice. Not while rebalancing: the table
        may be recovered only in part, and a state loaded from it now would stay in memory."""
        if app.rebalancing:
            return
        now = _now_ms()
        for key in scopes.scopes_of(owned_partitions()):
            state = scopes.get(key)
            events = current().tick(state, now)
            if events or state.is_empty:
                scopes.dirty.add(key)
            await publish(key, events)

    @app.timer(checkpoint_s)
    async def checkpoint() -> None:
        """Checkpoint what is due. In a rebalance Faust waits for every message a stream took
        to be acknowledged before it lets the partitions go: checkpoint at once then."""
        if app.rebalancing or scopes.due(checkpoint_s):
            await scopes.checkpoint()

    async def final_checkpoint() -> None:
        """The worker is stopping: write what was applied and acknowledge it."""
        await scopes.checkpoint()

    app.before_stop.append(final_checkpoint)
    app.before_stop.append(feeds.stop)  # after the checkpoints, which do not need the feeds

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        await scopes.checkpoint()

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        name = topics.scopes.get_topic_name()
        scopes.keep_only({tp.partition for tp in assigned if tp.topic == name})

    return table


def _anomaly_or_none(value: Any) -> Anomaly | None:
    """The anomaly in a message value (JSON bytes) or its document; None, logged, if none."""
    try:
        return Anomaly.from_dict(from_json(value) if isinstance(value, bytes) else value)
    except (InvalidMessage, InvalidAnomaly) as exc:
        log.warning("skipped a malformed anomaly %.300r: %s", value, exc)
        return None


def _text(key: bytes | str | None) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
