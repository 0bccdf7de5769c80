"""Whether the broker answers, for ``/readyz``: asked on a connection of the probe's own.

Why its own connection: asked on a feed's consumer, the metadata request queued behind that
consumer's fetch, which the broker holds for up to 500 ms when there is nothing new, so every
``/readyz`` took ~0.5 s. A readiness probe's timeout is often 1 s (Kubernetes' default): a
slightly slow broker would then take a healthy API out of service.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

__all__ = ("BrokerProbe",)

log = logging.getLogger("cityagent.api")


class BrokerProbe:
    """Asks the broker for its cluster's metadata; connects on first use and after a failure.

    Not one topic's: asked for a topic it lacks, the embedded broker creates it (with 4
    partitions, which the workers would then refuse).
    """

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()

    async def answers(self, timeout_s: float = 2.0) -> bool:
        """True when the broker answers within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                admin = await self._connected()
                await admin.describe_cluster()
        except (KafkaError, OSError, TimeoutError):
            await self.close()  # a fresh connection next time, not a half-broken one
            return False
        return True

    async def _connected(self) -> AIOKafkaAdminClient:
        async with self._lock:  # concurrent probes share one client
            if self._admin is None:
                admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap,
                                            request_timeout_ms=2000)
                try:
                    await admin.start()
                except BaseException:
                    await admin.close()
                    raise
                self._admin = admin
            return self._admin

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                await admin.close()
            except (KafkaError, OSError) as exc:  # closing a broken connection: nothing to do
                log.debug("closing the broker probe: %s", exc)
