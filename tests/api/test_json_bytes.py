"""Kept bytes are sized to their content: orjson's results carry a ~4 KB buffer each.

Measured with tracemalloc, which sees an object's real allocation (``sys.getsizeof`` shows
only its length).
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import orjson

from api.alert_book import AlertBook
from api.idempotency import IdempotencyCache, StoredResponse
from api.json_bytes import right_sized
from tests.api.test_alert_book import T0, alert_event


def allocated(make: Callable[[], object]) -> tuple[object, int]:
    """What ``make`` returns and the bytes allocated for it that are still held."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = make()
        return kept, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_right_sized_copies_into_an_allocation_of_its_length() -> None:
    data = orjson.dumps({"accepted": 5, "rejected": []})
    copies, size = allocated(lambda: [right_sized(data) for _ in range(1000)])
    assert all(c == data and c is not data for c in copies)  # type: ignore[attr-defined]
    assert size < 1000 * (len(data) + 100)


def test_the_alert_streams_replay_feed_holds_its_events_at_their_size() -> None:
    events = [alert_event(f"inc-{n}", last_seen_ms=T0 + n) for n in range(1000)]
    book = AlertBook()

    def apply_all() -> AlertBook:
        for offset, event in enumerate(events):
            book.apply(event, partition=0, offset=offset)
        return book

    _, size = allocated(apply_all)
    data = sum(len(entry.data) for entry in book._feed)
    # Everything the book keeps (feed, alerts, histories): 3.8x the events' JSON when
    # measured; 14.6x with orjson's buffers kept as they came.
    assert size < 6 * data, (size, data)


def test_idempotency_records_hold_answers_at_their_size() -> None:
    cache = IdempotencyCache()
    body = orjson.dumps({"accepted": 3, "rejected": []})

    def record_all() -> IdempotencyCache:
        for n in range(1000):
            cache.begin("key-1", f"k{n}", b"fp")
            cache.finish("key-1", f"k{n}", StoredResponse(202, orjson.dumps(
                {"accepted": 3, "rejected": []})))
        return cache

    _, size = allocated(record_all)
    assert cache.begin("key-1", "k7", b"fp") == StoredResponse(202, body)
    assert size < 1000 * 1000, size  # ~500 B a record; orjson's answers alone took ~4 KB each
