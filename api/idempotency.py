"""Idempotency-Key: a retried POST gets the first answer again instead of storing twice.

A client that did not see the answer to a POST (a timeout, a dropped connection) cannot know
whether its readings were stored. With the same ``Idempotency-Key`` header on the retry, the
API replays the recorded answer and publishes nothing. Records are kept in memory, per API
key, for ``ttl_s`` (10 minutes) and at most ``max_entries`` (100,000) / ``max_bytes`` of
answers, oldest dropped first. The records of readings also go to a topic that every API
process reads (``api/idempotency_log.py``, :meth:`IdempotencyCache.remember`), so a retry
reaching another replica, or the same one restarted, is answered the same way.

Only accepted (202) answers are recorded: a refused request stored nothing, so running it
again is as safe as replaying it, and a 503 or 429 must be retried for real.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from api.json_bytes import right_sized

__all__ = ("IdempotencyCache", "IdempotencyConflict", "StoredResponse", "valid_key")

_KEY = re.compile(r"^[\x21-\x7e]{1,255}\Z")


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes


class IdempotencyConflict(Exception):
    """The key was used with another body (422), or its first request is still running (409)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class _Entry:
    fingerprint: bytes
    created: float
    response: StoredResponse | None = None  # None while the first request runs


def valid_key(key: str) -> bool:
    """1-255 visible ASCII characters (a UUID is the usual choice)."""
    return bool(_KEY.match(key))


class IdempotencyCache:
    def __init__(self, *, ttl_s: float = 600.0, max_entries: int = 100_000,
                 max_bytes: int = 64 << 20, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()  # oldest first
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def begin(self, owner: str, key: str, fingerprint: bytes) -> StoredResponse | None:
        """The recorded answer to replay, or None: then run the request and call finish/abandon.

        Raises IdempotencyConflict when the key is in use with another body or still running.
        """
        self._expire()
        entry = self._entries.get((owner, key))
        if entry is None:
            self._entries[(owner, key)] = _Entry(fingerprint, self._clock())
            self._expire()
            return None
        if entry.fingerprint != fingerprint:
            raise IdempotencyConflict(
                422, f"Idempotency-Key {key!r} was already used with a different request body in "
                     f"the last {self.ttl_s / 60:g} minutes; use a new key for a new request")
        if entry.response is None:
            raise IdempotencyConflict(
                409, f"a request with Idempotency-Key {key!r} is still being processed; "
                     "retry after it has been answered")
        return entry.response

    def finish(self, owner: str, key: str, response: StoredResponse) -> None:
        """Record the answer of a request begun with :meth:`begin`."""
        entry = self._entries.get((owner, key))
        if entry is not None and entry.response is None:
            # Kept for ttl_s: an answer straight from orjson would hold ~4 KB however short.
            entry.response = StoredResponse(response.status, right_sized(response.body))
            self._bytes += len(response.body)
            self._expire()

    def remember(self, owner: str, key: str, fingerprint: bytes, response: StoredResponse,
                 age_s: float) -> bool:
        """Take in a record another process (or this one, before a restart) made ``age_s``
        ago; False when it is older than ``ttl_s`` or the key is already known here (a
        request of this process, finished or running, is its own record)."""
        if age_s >= self.ttl_s or (owner, key) in self._entries:
            return False
        body = right_sized(response.body)
        self._entries[(owner, key)] = _Entry(fingerprint, self._clock() - max(age_s, 0.0),
                                             StoredResponse(response.status, body))
        self._bytes += len(body)
        self._expire()
        return True

    def abandon(self, owner: str, key: str) -> None:
        """Forget a begun request that was not accepted, so a retry runs it again."""
        entry = self._entries.get((owner, key))
        if entry is not None and entry.response is None:
            del self._entries[(owner, key)]

    def _expire(self) -> None:
        cutoff = self._clock() - self.ttl_s
        while self._entries:
            (_, first) = next(iter(self._entries.items()))
            if (first.created > cutoff and len(self._entries) <= self.max_entries
                    and self._bytes <= self.max_bytes):
                return
            _, dropped = self._entries.popitem(last=False)
            if dropped.response is not None:
                self._bytes -= len(dropped.response.body)
