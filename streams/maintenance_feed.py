"""Maintenance windows from the compacted maintenance topic, the same in every process.

Key: the window's id; value: ``{"sensor": "jn-wl-*", "start_ms", "end_ms", "note"}`` or a
tombstone (null) to remove it. Anomalies of a sensor inside a window are recorded as
``suppressed`` alert events, never alerts (``IncidentEngine.maintenance``). Admins write
windows with ``PUT``/``DELETE /v1/maintenance/{id}``.

A window's ``version`` is the offset of the record that last wrote it (the topic has one
partition): Kafka gives each record its own once and for good, so every reader agrees on it,
a window deleted and written again never has a version it had before, and records written
before windows had versions have one too. A version in the value would need the deletes to
carry one, and a tombstone carries none (compaction could not drop them if they were not
tombstones). The API's ``If-Match`` checks compare it (``api.routes.maintenance``).
"""

from __future__ import annotations

import logging

from cityagent.errors import ConfigError
from cityagent.incidents import MaintenanceWindow
from streams.follower import TopicFollower

__all__ = ("MaintenanceFeed",)

log = logging.getLogger("cityagent.maintenance")


class MaintenanceFeed:
    """The maintenance windows in force (``windows``), by id, from the topic."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.by_id: dict[str, MaintenanceWindow] = {}
        self.versions: dict[str, int] = {}  # window id → its version (see the module doc)
        self.windows: tuple[MaintenanceWindow, ...] = ()
        self.follower = TopicFollower(bootstrap, topic, self._on_record, self._refresh)

    def _on_record(self, key: str, value: object) -> bool:
        return self.apply(key, value, version=self.follower.record_offset)

    def apply(self, key: str, value: object, *, version: int = 0) -> bool:
        """Apply one record, read at offset ``version``; False when it changes nothing."""
        if value is None:
            self.versions.pop(key, None)
            return self.by_id.pop(key, None) is not None
        try:
            self.by_id[key] = MaintenanceWindow.from_dict(value)  # type: ignore[arg-type]
        except ConfigError as exc:
            log.warning("maintenance topic: skipped record %r: %s", key, exc)
            return False
        self.versions[key] = version
        return True

    def _refresh(self) -> None:
        self.windows = tuple(self.by_id[k] for k in sorted(self.by_id))
        log.info("maintenance: %d windows", len(self.windows))

    def start(self) -> None:
        self.follower.start()

    async def stop(self) -> None:
        await self.follower.stop()
