"""Operational zones that change without a restart: the compacted zones topic, read by all.

Every worker (and every API process) reads the whole ``<prefix>.zones`` topic from its start
(``streams/follower.py``) and applies each record on top of the zones it started with
(``CITYAGENT_ZONES`` or the packaged demo set). Records carry a version; older ones are
ignored, so every reader converges on the same set, whose ``version`` and ``content_hash`` say
which one it is. The admin API writes the records (``PUT``/``DELETE /v1/zones/{id}``);
compaction keeps the newest per zone.
"""

from __future__ import annotations

import logging

from cityagent.regions import RegionIndex
from cityagent.zones import ANY_DEPARTMENT, ZoneError, ZoneIndex, ZoneSet, apply_record
from streams.follower import TopicFollower

__all__ = ("ZoneFeed",)

log = logging.getLogger("cityagent.zones")


class ZoneFeed:
    """The current zones (``zones``, ``index``), kept up to date from the zones topic."""

    def __init__(self, bootstrap: str, topic: str, base: ZoneSet, regions: RegionIndex) -> None:
        self.zones = base
        self.index = ZoneIndex(base)
        self.regions = regions
        self.records = 0
        self.rejected = 0
        self.follower = TopicFollower(bootstrap, topic, self.apply, self._reindex)

    def apply(self, key: str, value: object) -> bool:
        """Apply one record (key, JSON-decoded value); False when it is invalid (logged).

        A zone's department is any department code: the API checked it against the routing
        rules in force when it wrote the record (a department added with PUT /v1/routing is
        in no packaged list, and the routing topic may not be read yet)."""
        try:
            self.zones = apply_record(self.zones, key, value, self.regions,  # type: ignore[arg-type]
                                      departments=ANY_DEPARTMENT)
        except ZoneError as exc:
            self.rejected += 1
            log.warning("zones topic: skipped record %r: %s", key, exc)
            return False
        self.records += 1
        return True

    def _reindex(self) -> None:
        self.index = ZoneIndex(self.zones)
        log.info("zones: version %d, %d zones (hash %s)", self.zones.version, len(self.zones),
                 self.zones.content_hash)

    def start(self) -> None:
        self.follower.start()

    async def stop(self) -> None:
        await self.follower.stop()
