"""Per-key ingest rate limit: a token bucket counted in readings, not requests.

Readings, because one request may carry one reading or 50,000: the cost to the pipeline is
per reading. Each key's bucket holds up to ``burst`` tokens and refills at ``rate_per_s``; a
request of n readings takes n tokens or, when fewer are left, is refused with the seconds
until enough have refilled (the 429's ``Retry-After``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ("RateLimiter", "TooLarge")


class TooLarge(Exception):
    """A request holds more readings than the bucket can ever hold: no wait would help."""


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s and burst must be positive")
        self.rate_per_s = float(rate_per_s)
        self.burst = int(burst)
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # key id -> [tokens, last refill time]

    def take(self, key_id: str, readings: int) -> int:
        """Take ``readings`` tokens; return 0, or the whole seconds to wait before retrying.

        Raises TooLarge when ``readings`` exceeds the burst.
        """
        if readings > self.burst:
            raise TooLarge(f"{readings} readings in one request; this key may post at most "
                           f"{self.burst} at once (CITYAGENT_API_BURST)")
        now = self._clock()
        bucket = self._buckets.setdefault(key_id, [float(self.burst), now])
        bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate_per_s)
        bucket[1] = now
        if bucket[0] >= readings:
            bucket[0] -= readings
            return 0
        return max(1, math.ceil((readings - bucket[0]) / self.rate_per_s))

    def give_back(self, key_id: str, readings: int) -> None:
        """Return tokens of a request that stored nothing (the broker did not acknowledge)."""
        bucket = self._buckets.get(key_id)
        if bucket is not None:
            bucket[0] = min(self.burst, bucket[0] + readings)
