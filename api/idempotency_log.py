"""Idempotency records of readings that outlive the API process and reach every replica.

A client retries a POST it got no answer to, and that is most often because the API
restarted under it, or because a load balancer sent the retry to another replica. A record
kept in one process's memory (``api/idempotency.py``) answers neither, and the retry stored
the readings a second time. So every accepted POST of readings with an ``Idempotency-Key``
also writes its record (key, body fingerprint, answer) to ``<prefix>.idempotency`` before its
202 goes out, and every API process follows that topic into its cache: from its beginning
on start (the topic keeps an hour, ``control.topics.IDEMPOTENCY_RETENTION_MS``; records
older than the cache's 10 minutes are read and dropped), then as records come.

Until a starting API has read the topic up to where it ended then, it cannot tell a retry
from a new request, so it answers keyed POSTs of readings 503 with ``Retry-After`` meanwhile
(requests without a key are unaffected). The gap left: a record is written after the
readings are acknowledged, so a process that dies between the two (milliseconds), or a
record Kafka refuses (logged, counted, the 202 still sent: the readings are stored), leaves
a retry to store the readings again. An answer over ``INLINE_BODY_MAX`` is stored
zlib-compressed (``body_z``): one listing 49,999 rejections of a 50,000-reading request is
~7 MB of JSON, over Kafka's 1 MB record limit, and ~0.6 MB compressed (~15 ms); only an
answer that stays over the limit compressed (tens of thousands of long, random sensor ids)
goes unrecorded. Also left: a retry reaching another replica while the first request
still runs there is not yet known to it. Operators' alert commands need none of
this: their command id derives from the key, and the alerting agent applies an id once.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
import zlib
from typing import Any

import orjson

from api.commands import CommandPublisher
from api.idempotency import IdempotencyCache, StoredResponse
from cityagent.errors import BrokerError, RecordTooLarge
from streams.follower import TopicFollower

__all__ = ("IdempotencyLog",)

log = logging.getLogger("cityagent.api")

#: Answers larger than this are stored zlib-compressed (``body_z``, base64), not as text:
#: answers of thousands of rejections compress ~15x and Kafka refuses records over 1 MB.
INLINE_BODY_MAX = 64 << 10


class IdempotencyLog:
    """Writes this process's records to the topic; reads everyone's into ``cache``.

    Reading is the shared :class:`~streams.follower.TopicFollower` (as for zones, maintenance
    windows and routing): from the topic's beginning, and ``caught_up`` once everything the
    topic held when this process started is read, the embedded broker's short end offsets
    included.
    """

    def __init__(self, bootstrap: str, topic: str, cache: IdempotencyCache) -> None:
        self._cache = cache
        self._writer = CommandPublisher(bootstrap, topic)
        self.follower = TopicFollower(bootstrap, topic, self._take)
        self.read = 0  # records read from the topic
        self.taken = 0  # of them, taken into the cache (not expired, not known here)
        self.malformed = 0
        self.written = 0
        self.failed = 0  # records Kafka did not acknowledge (their requests were answered 202)

    @property
    def caught_up(self) -> bool:
        return self.follower.caught_up

    async def open(self) -> None:
        """Connect the writer (BrokerError if Kafka cannot be reached) and start following."""
        await self._writer.start()
        self.follower.start()

    async def close(self) -> None:
        await self.follower.stop()
        await self._writer.stop()

    async def record(self, owner: str, key: str, fingerprint: bytes,
                     response: StoredResponse) -> None:
        """Write the record of an accepted request; a failure is logged and counted, not
        raised: the readings are stored, and the answer must say so."""
        doc: dict[str, Any] = {"owner": owner, "key": key, "fingerprint": fingerprint.hex(),
                               "status": response.status, "at_ms": int(time.time() * 1000)}
        if len(response.body) > INLINE_BODY_MAX:
            doc["body_z"] = base64.b64encode(zlib.compress(response.body, 1)).decode()
        else:
            doc["body"] = response.body.decode()
        value = orjson.dumps(doc)
        try:
            await self._writer.send_value(f"{owner} {key}", value, "idempotency record")
        except (BrokerError, RecordTooLarge) as exc:  # too large even compressed
            self.failed += 1
            log.warning("the idempotency record of key %r (API key %s) was not stored (%s): a "
                        "retry reaching another API process, or this one restarted, will "
                        "store its readings again", key, owner, exc)
        else:
            self.written += 1

    def _take(self, record_key: str, doc: Any) -> bool:
        """One record (its value JSON-decoded by the follower; a value that is not JSON the
        follower skips and logs)."""
        self.read += 1
        try:
            owner, key, at_ms = doc["owner"], doc["key"], doc["at_ms"]
            response = StoredResponse(int(doc["status"]), _body(doc))
            fingerprint = bytes.fromhex(doc["fingerprint"])
            if not (isinstance(owner, str) and isinstance(key, str) and isinstance(at_ms, int)):
                raise TypeError("owner, key and at_ms must be text, text and an integer")
        except (KeyError, TypeError, ValueError, binascii.Error, zlib.error) as exc:
            self.malformed += 1
            log.warning("skipped a malformed idempotency record %r: %s", record_key, exc)
            return False
        if self._cache.remember(owner, key, fingerprint, response,
                                (time.time() * 1000 - at_ms) / 1000):
            self.taken += 1
            return True
        return False


def _body(doc: dict[str, Any]) -> bytes:
    """A record's answer: ``body`` as text, or ``body_z`` compressed (``INLINE_BODY_MAX``)."""
    if "body_z" in doc:
        return zlib.decompress(base64.b64decode(doc["body_z"], validate=True))
    return str(doc["body"]).encode()
