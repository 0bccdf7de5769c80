"""What a worker judges alerts with — zones, maintenance windows, routing — read before it judges.

A worker starts with the packaged zones (or ``CITYAGENT_ZONES``), no maintenance windows and
the packaged routing rules, and follows three compacted topics for what admins changed since
(``streams/follower.py``). Until it has read them up to where they ended when it started, the
``scope`` agent would place anomalies in the wrong correlation scope, the ``incidents`` agent
would give alerts the wrong severity and departments or raise them inside a maintenance
window, and its timer would escalate with the wrong routing. So :meth:`WorkerFeeds.catch_up`
runs when the app starts (``CityAgentApp.before_start``), before its consumer joins the group:
no reading, anomaly or command is consumed until the three are caught up. Readings wait in
Kafka meanwhile; nothing is lost.

Bounded: after ``timeout_s`` (``CITYAGENT_FEEDS_CATCH_UP_S``, 30 s) the worker logs a warning
naming the topics still behind and starts anyway (a worker that never starts alerts nobody);
it logs again when they catch up. ``WorkerCounters.feeds_caught_up_s`` says whether and when.
The followers stop when the worker stops (:meth:`WorkerFeeds.stop`, a ``before_stop`` hook).
"""

from __future__ import annotations

import asyncio
import logging
import time

from streams.follower import TopicFollower
from streams.maintenance_feed import MaintenanceFeed
from streams.metrics import WorkerCounters
from streams.routing_feed import RoutingFeed
from streams.zone_feed import ZoneFeed

__all__ = ("WorkerFeeds",)

log = logging.getLogger("cityagent.streams")


class WorkerFeeds:
    """The worker's zones, maintenance windows and routing, and whether they are caught up."""

    def __init__(self, zones: ZoneFeed, maintenance: MaintenanceFeed, routing: RoutingFeed,
                 counters: WorkerCounters) -> None:
        self.zones, self.maintenance, self.routing = zones, maintenance, routing
        self.followers: dict[str, TopicFollower] = {
            "zones": zones.follower, "maintenance": maintenance.follower,
            "routing": routing.follower}
        self._counters = counters
        self._late: asyncio.Future | None = None  # waits for feeds behind after the timeout
        self._waiting: asyncio.Future | None = None  # the three followers' catch-up

    async def catch_up(self, timeout_s: float) -> bool:
        """Start following the topics and wait, at most ``timeout_s``, until each is read up
        to where it ended at start; False (warned) if one is not."""
        started = time.monotonic()
        for follower in self.followers.values():
            follower.start()
        waiting = self._waiting = asyncio.gather(
            *(f.wait_caught_up() for f in self.followers.values()))
        try:
            await asyncio.wait_for(asyncio.shield(waiting), timeout_s)
        except asyncio.CancelledError:
            # The start was cancelled (SIGTERM while a topic could not be read): the shielded
            # wait would poll on, and at exit asyncio logged its cancellation as an error
            # with a traceback ("_GatheringFuture exception was never retrieved").
            waiting.cancel()
            raise
        except TimeoutError:
            behind = [name for name, f in self.followers.items() if not f.caught_up]
            log.warning(
                "worker: after %g s the %s not read up to where %s when the worker started "
                "(%s); alerts are judged with what was read so far (the packaged zones and "
                "routing, no maintenance windows, where nothing was). Consuming now; a line "
                "will say when %s caught up", timeout_s, _names(behind),
                "it ended" if len(behind) == 1 else "they ended",
                "; ".join(_progress(self.followers[name]) for name in behind),
                "it has" if len(behind) == 1 else "they have")
            self._late = asyncio.ensure_future(self._when_caught_up(waiting, started, late=True))
            return False
        await self._when_caught_up(waiting, started)
        return True

    async def stop(self) -> None:
        """Stop following the topics: the worker is stopping. Left running, the followers'
        tasks were what Faust's last gather waited its whole 1 s for (mode's
        ``Worker._gather_all``) before cancelling them: every SIGTERM'd worker took 1 s
        longer to exit."""
        if self._late is not None:
            self._late.cancel()
        if self._waiting is not None:
            self._waiting.cancel()
        for follower in self.followers.values():
            await follower.stop()

    async def _when_caught_up(self, waiting: asyncio.Future, started: float, *,
                              late: bool = False) -> None:
        await waiting
        seconds = self._counters.feeds_caught_up_s = time.monotonic() - started
        log.log(logging.WARNING if late else logging.INFO,
                "worker: zones, maintenance and routing caught up in %.1f s (%s)%s", seconds,
                ", ".join(f"{name} {f.caught_up_s:.1f} s" for name, f in self.followers.items()),
                ", after the worker had started judging" if late else "; consuming now")


def _names(names: list[str]) -> str:
    """'zones topic is', 'zones and routing topics are', 'zones, maintenance and routing ...'"""
    if len(names) == 1:
        return f"{names[0]} topic is"
    return f"{', '.join(names[:-1])} and {names[-1]} topics are"


def _progress(follower: TopicFollower) -> str:
    if follower.ends is None:
        return f"{follower.topic}: the broker did not answer"
    return f"{follower.topic} at offsets {follower.positions} of {follower.ends}"
