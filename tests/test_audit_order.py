"""The time order of `cityagent audit` (control/audit_order.py): partitions read in offset
order, each only nearly in ``at_ms`` order, come out by ``(at_ms, partition, offset)``,
holding about two reorder windows of events, not the range; what comes later than the
window is written at once and counted."""

from __future__ import annotations

from control.audit import AuditSummary
from control.audit_order import TimeOrder

MIN = 60_000


def line(partition: int, offset: int, at_ms: int) -> bytes:
    return f"{at_ms} {partition} {offset}".encode()


def key(written: bytes) -> tuple[int, int, int]:
    at_ms, partition, offset = map(int, written.split())
    return at_ms, partition, offset


def read_all(parts: dict[int, list[int]], window_ms: int, batch: int = 5
             ) -> tuple[list[tuple[int, int, int]], TimeOrder, int]:
    """Drive a TimeOrder as the audit does: polls of ``batch`` events from each partition not
    paused (``ahead``); ``parts`` maps a partition to its events' ``at_ms`` in offset order.
    Returns the keys written, the order and the most events it held at once."""
    order = TimeOrder(parts, window_ms)
    next_offset = dict.fromkeys(parts, 0)
    out: list[bytes] = []
    most_held = 0
    while any(next_offset[p] < len(times) for p, times in parts.items()):
        ahead = order.ahead()
        for p, times in parts.items():
            if p in ahead or next_offset[p] >= len(times):
                continue
            for offset in range(next_offset[p], min(next_offset[p] + batch, len(times))):
                order.add(p, offset, times[offset], line(p, offset, times[offset]))
            next_offset[p] = min(next_offset[p] + batch, len(times))
            if next_offset[p] == len(times):
                order.done(p)
        most_held = max(most_held, order.held)
        out.extend(order.ready())
    out.extend(order.rest())
    return [key(w) for w in out], order, most_held


def test_interleaved_partitions_come_out_by_time_then_partition_then_offset():
    parts = {0: [0, 3 * MIN, 3 * MIN, 7 * MIN], 1: [1 * MIN, 3 * MIN, 5 * MIN],
             2: [2 * MIN, 2 * MIN + 1, 6 * MIN]}
    written, order, _ = read_all(parts, window_ms=0, batch=1)
    assert written == sorted(written)
    assert written[4:7] == [(3 * MIN, 0, 1), (3 * MIN, 0, 2), (3 * MIN, 1, 1)]  # ties
    assert len(written) == 10 and order.out_of_order == 0


def test_an_event_late_within_the_window_is_put_in_its_place():
    parts = {0: [0, 10 * MIN, 4 * MIN, 12 * MIN], 1: [5 * MIN, 11 * MIN]}
    written, order, _ = read_all(parts, window_ms=6 * MIN, batch=1)
    assert [w[0] // MIN for w in written] == [0, 4, 5, 10, 11, 12]
    assert order.out_of_order == 0


def test_an_event_later_than_the_window_is_written_at_once_and_counted():
    """Partition 0's 2-minute event comes after its 40-minute one: the window (5 min) let
    everything up to 35 min be written by then."""
    parts = {0: [0, MIN, 30 * MIN, 31 * MIN, 40 * MIN, 2 * MIN, 41 * MIN], 1: [29 * MIN, 33 * MIN]}
    written, order, _ = read_all(parts, window_ms=5 * MIN, batch=1)
    assert [w[0] // MIN for w in written] == [0, 1, 29, 30, 31, 33, 2, 40, 41]
    assert (order.out_of_order, order.most_late_ms) == (1, 31 * MIN)


def test_events_not_written_still_move_their_partition_on():
    order = TimeOrder([0, 1], window_ms=0)
    order.add(0, 0, 1_000, line(0, 0, 1_000))
    order.add(1, 0, 5_000, None)  # out of the range: not written, but partition 1 is past 1 s
    assert list(order.ready()) == []  # partition 0 may still bring something before 1 s
    order.add(0, 1, 6_000, None)
    assert list(order.ready()) == [line(0, 0, 1_000)]


def test_a_partition_ahead_of_the_others_by_more_than_the_window_is_paused():
    order = TimeOrder([0, 1, 2], window_ms=10)
    assert order.ahead() == set()
    order.add(0, 0, 100, None)
    assert order.ahead() == {0}  # partitions 1 and 2 have shown nothing yet
    order.add(1, 0, 95, None)
    order.add(2, 0, 109, None)
    assert order.ahead() == {2}  # 14 past partition 1
    order.done(1)
    assert order.ahead() == set()  # 100 and 109: within the window of each other


def test_what_is_held_is_bounded_by_the_window_not_the_range():
    """Ten days on two partitions, one with an event every 10 s, the other every 10 min, each
    with some events 50 s or 20 min late: read at the same number of events a poll, the sparse
    one would run days ahead, and its events wait for the dense one. All are written in order,
    holding about two windows of events (1 h), not the ten days."""
    dense = [i * 10_000 for i in range(10 * 8640)]
    sparse = [i * 10 * MIN + 3_000 for i in range(10 * 144)]
    for times, every, late in ((dense, 500, 5), (sparse, 20, 2)):
        for i in range(0, len(times) - late, every):
            times[i], times[i + late] = times[i + late], times[i]
    written, order, most_held = read_all({0: dense, 1: sparse}, window_ms=60 * MIN, batch=50)
    assert written == sorted(written) and len(written) == len(dense) + len(sparse)
    assert order.out_of_order == 0
    assert most_held <= 2 * 360 + 2 * 6 + 2 * 50, most_held  # two windows of each, a poll


def test_the_summary_says_how_many_came_out_of_order_and_how_far():
    summary = AuditSummary()
    summary.take({"alert_id": "a", "at_ms": 0})
    assert "out of time order" not in summary.line("city.alerts", 0.1)
    summary.out_of_order, summary.most_late_ms = 2, 95 * MIN
    assert summary.line("city.alerts", 0.1).endswith(
        "(read 0 messages of city.alerts in 0.1 s; 2 events out of time order, after events "
        "dated up to 1.6 h later: raise --reorder-window)")
