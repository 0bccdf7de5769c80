"""The Faust application: one per process, configured from Settings.

Settings chosen knowingly (docs/architecture.md has the measurements):
- ``broker_session_timeout`` 10 s: a dead worker's partitions move in ~26 s instead of ~122 s.
- Table changelogs get one record per batch (``streams/changelog_batches.py``), everything
  else is batched as usual. The embedded broker reports a partition's end offset as its last
  batch's base offset + 1, which stops Faust's changelog recovery short of the last batch's
  tail; with one record per changelog batch the end offset is exact. (Until 2026-11-23 the
  app set ``producer_max_batch_size=1`` for every topic, which made each send wait a round
  trip for the one before it on its partition: see docs/alerting.md, "Speed".)
- ``store="memory://"``: state lives in memory and is rebuilt from the compacted changelog on
  start, which the restart tests prove.
- Faust's recovery is patched to resume flow control before the stream partitions (``streams/faust_fixes.py``): without
  it a restarted worker sometimes skipped the first messages at its committed offsets.
- ``datadir`` in the system temp directory: with memory storage Faust only creates empty
  directories there, and its default (``<app id>-data`` in the working directory) left one per
  test worker in the checkout.
- topics are created by ``control.topics`` before workers start, never auto-declared here, so
  partition counts are explicit.
- ``before_start`` hooks (``CityAgentApp``) run when the app starts, before its consumer joins
  the group and before any agent, table or timer starts: the worker reads the zones,
  maintenance and routing topics there (``streams/feeds.py``), so nothing is judged without them.
- ``before_stop`` hooks (``CityAgentApp``) run when the worker begins to stop: the detection
  agent acknowledges messages only when it checkpoints them, and Faust's shutdown waits for
  every message a stream took to be acknowledged while its timers, which checkpoint, are
  already stopped; without a final checkpoint first a SIGTERM'd worker waited until killed.
  The agents take no message from the moment the worker begins to stop, before the hooks
  run: one taken after the final checkpoint was never acknowledged, and Faust waited for it
  for ever. That wait is bounded anyway (``STOP_WAIT_S``), and the worker says so if it ends it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust

from cityagent.settings import Settings
from streams.changelog_batches import use_changelog_safe_producer
from streams.faust_fixes import apply_faust_fixes

__all__ = ("CityAgentApp", "create_app", "STOP_WAIT_S")

log = logging.getLogger("cityagent.streams")

#: How long a stopping worker waits for the messages its agents took to be acknowledged
#: before it exits without them. They are acknowledged at once (the final checkpoint); the
#: bound is for an agent stuck in an await, and leaves the flush and the close within
#: Docker's 10 s and `cityagent up`'s 15 s before SIGKILL.
STOP_WAIT_S = 5.0


class CityAgentApp(faust.App):
    """A Faust app with ``before_start`` hooks, coroutines run when it starts before anything
    consumes, and ``before_stop`` hooks, coroutines run first when the worker stops.

    Faust's ``App.on_start`` runs before the app's children (consumer, agents, tables,
    timers) start, so a ``before_start`` hook delays them all; a worker told to stop meanwhile
    stops waiting for it.

    Faust's ``App.on_stop`` stops the consumer's flow and then waits, without a time limit,
    until every message a stream has taken is acknowledged (``stream_wait_empty``). A
    ``before_stop`` hook runs before that, while the producer still works, so an agent that
    acknowledges late (after a checkpoint) can write its state and acknowledge now.

    The flow stops first, before the hooks: a hook that awaits (the feeds' stop) let the
    detection agent take more messages after its final checkpoint, which nothing would
    acknowledge, and Faust's wait for them never ended (4 SIGTERMs in 6 under a backlog, each
    worker killed after 30 s). The wait is bounded by ``stop_wait_s`` too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.before_start: list[Callable[[], Awaitable[None]]] = []
        self.before_stop: list[Callable[[], Awaitable[None]]] = []
        self.stop_wait_s = STOP_WAIT_S
        self._stopping = False

    async def on_start(self) -> None:
        await super().on_start()
        for hook in self.before_start:
            try:
                if (await self.wait(hook())).stopped:
                    return
            except Exception:  # noqa: BLE001 - a worker that never starts alerts nobody
                log.exception("a before-start hook failed; starting anyway")

    async def on_stop(self) -> None:
        self._stopping = True
        self._hold_streams()
        for hook in self.before_stop:
            try:
                await hook()
            except Exception:  # noqa: BLE001 - stopping must go on; the log says what failed
                log.exception("a before-stop hook failed; stopping anyway")
        await super().on_stop()

    def _hold_streams(self) -> None:
        """Let the agents take no more messages (what Faust's ``_stop_consumer`` does after
        the hooks): the fetcher fetches nothing more, and a stream drops what it still has
        queued, unacknowledged and uncommitted, for the next worker to be handed again. A
        message an agent is processing now was taken before: the final checkpoint has it."""
        if self._consumer is None:  # stopped before it started: nothing was taken
            return
        self._consumer.stop_flow()
        self.flow_control.suspend()

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        """Faust's wait for every message the streams took to be acknowledged; when the
        worker stops, for at most ``stop_wait_s``, then it commits what was acknowledged and
        says how many it leaves (in a rebalance, Faust's own wait, unchanged)."""
        if not self._stopping:
            await super()._consumer_wait_empty(consumer, logger)
            return
        try:
            await asyncio.wait_for(super()._consumer_wait_empty(consumer, logger),
                                   self.stop_wait_s)
        except TimeoutError:
            left = len(consumer.unacked)
            log.warning("stopping: %d messages the agents took are still not acknowledged "
                        "after %g s; exiting without them: their offsets are not committed, "
                        "so the next worker is handed them again", left, self.stop_wait_s)
            await consumer.commit()


def faust_data_root() -> Path:
    """The folder of the workers' Faust data directories: one per user in the temp directory.

    It was one ``cityagent-faust`` for everyone, made by the first user's worker with that
    user's permissions: a second user's worker on the machine could not make its directory
    there (PermissionError), nor use the default app id's, which the first user owned."""
    return Path(tempfile.gettempdir()) / f"cityagent-faust-{os.getuid()}"


def create_app(settings: Settings) -> CityAgentApp:
    apply_faust_fixes()
    use_changelog_safe_producer()
    brokers = [f"kafka://{host}" for host in settings.bootstrap.split(",")]
    data_root = faust_data_root()
    data_root.mkdir(mode=0o700, exist_ok=True)  # Faust creates only its datadir's last level
    return CityAgentApp(
        settings.app_id,
        broker=brokers,
        store="memory://",
        datadir=str(data_root / "{conf.name}-data"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        topic_allow_declare=False,
        # No leader election: nothing here runs on one worker only, and Faust's leader topic
        # would be one more topic that control/topics.py does not create (Apache Kafka with
        # auto-creation off, as in docker-compose.yml, logs it as missing on every start).
        topic_disable_leader=True,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(1, settings.session_timeout_s // 4),
        producer_acks=-1,
        # A reading batch is ~30 KB: Faust's default buffer of 4096 messages could hold 120 MB.
        stream_buffer_maxsize=256,
        # Fetch up to 8 MB per partition per request (Faust's default is 1 MB, ~35 batches):
        # with 1 MB the worker waited on fetches for a third of the time (cityagent bench).
        consumer_max_fetch_size=8 << 20,
        web_enabled=False,
        web_host="127.0.0.1",
        autodiscover=False,
    )
