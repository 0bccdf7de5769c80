"""Routing rules that change without a restart: the compacted routing topic, read by all.

One key, ``rules``; its value is ``{"version": int, "routing": {"departments": {...},
"rule": [...]}}`` — the same document as ``cityagent/data/routing.toml``, as JSON. Every
worker and API process starts from the packaged file and follows the topic; the newest valid
version wins (an invalid one is logged and ignored, so a bad write cannot stop routing). Admins
write it with ``PUT /v1/routing`` after the API validated it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from cityagent.errors import ConfigError
from cityagent.routing import Router
from cityagent.zones import MAX_VERSION
from streams.follower import TopicFollower

__all__ = ("RoutingFeed", "ROUTING_KEY")

ROUTING_KEY = "rules"

log = logging.getLogger("cityagent.routing")


class RoutingFeed:
    """The routing rules in force (``router``) and their ``version`` (0: the packaged file)."""

    def __init__(self, bootstrap: str, topic: str, base: Router) -> None:
        self.router = base
        self.version = 0
        self.document: Mapping | None = None
        self.follower = TopicFollower(bootstrap, topic, self.apply)

    def apply(self, key: str, value: object) -> bool:
        if key != ROUTING_KEY or not isinstance(value, Mapping):
            return False
        version = value.get("version")
        # The same version again is applied: concurrent writers on two API replicas compute
        # the same next version, and the later record is the one that stands (compaction
        # keeps it; ignoring it left readers that saw both disagreeing with later ones).
        if isinstance(version, bool) or not isinstance(version, int) or version < self.version:
            return False
        if version > MAX_VERSION:
            log.warning("routing topic: ignored version %s: above the largest version, %d "
                        "(2**53 - 1)", version, MAX_VERSION)
            return False
        try:
            router = Router.from_dict(value.get("routing") or {}, f"routing topic v{version}")
        except ConfigError as exc:
            log.warning("routing topic: ignored version %s: %s", version, exc)
            return False
        self.router, self.version, self.document = router, version, value.get("routing")
        log.info("routing: version %d, %d rules", version, len(router.rules))
        return True

    def start(self) -> None:
        self.follower.start()

    async def stop(self) -> None:
        await self.follower.stop()
