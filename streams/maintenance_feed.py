"""Maintenance windows from the compacted maintenance topic, the same in every process.

Key: the window's id; value: ``{"sensor": "jn-wl-*", "start_ms", "end_ms", "note"}`` or a
tombstone (null) to remove it. Anomalies of a sensor inside a window are recorded as
``suppressed`` alert events, never alerts (``IncidentEngine.maintenance``). Admins write
windows with ``PUT``/``DELETE /v1/maintenance/{id}``.
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
        self.windows: tuple[MaintenanceWindow, ...] = ()
        self.follower = TopicFollower(bootstrap, topic, self.apply, self._refresh)

    def apply(self, key: str, value: object) -> bool:
        if value is None:
            return self.by_id.pop(key, None) is not None
        try:
            self.by_id[key] = MaintenanceWindow.from_dict(value)  # type: ignore[arg-type]
        except ConfigError as exc:
            log.warning("maintenance topic: skipped record %r: %s", key, exc)
            return False
        return True

    def _refresh(self) -> None:
        self.windows = tuple(self.by_id[k] for k in sorted(self.by_id))
        log.info("maintenance: %d windows", len(self.windows))

    def start(self) -> None:
        self.follower.start()

    async def stop(self) -> None:
        await self.follower.stop()
