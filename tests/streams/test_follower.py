"""A follower is caught up once it has applied every record its topic held when it started
(streams/follower.py), whether the broker reports end offsets exactly (Apache Kafka) or as the
last batch's first offset + 1 (the embedded Tansu); and a starting worker waits for its three
followers, but not for ever (streams/feeds.py).

The unit tests drive a follower with a fake consumer that serves whole batches, as a broker's
fetch does; the integration tests measure the same on the session's broker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import uuid
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

import streams.follower
from control.topics import TopicSpec, ensure_topics
from streams.feeds import WorkerFeeds
from streams.follower import TopicFollower, at_ends
from streams.metrics import WorkerCounters


class FakeTopic:
    """One topic's batches per partition (None: the topic does not exist)."""

    def __init__(self, partitions: dict[int, list[int]] | None, *, tansu: bool) -> None:
        self.batches = {p: [] for p in partitions} if partitions is not None else None
        self.tansu = tansu
        self.ends_asked = 0
        for partition, sizes in (partitions or {}).items():
            for size in sizes:
                self.append(partition, size)

    def append(self, partition: int, size: int) -> None:
        """A batch of ``size`` records, keyed by their offsets."""
        batches = self.batches[partition]
        base = sum(len(b) for b in batches)
        batches.append([f"r{partition}-{base + i}" for i in range(size)])

    def end(self, partition: int) -> int:
        batches = [b for b in self.batches[partition] if b]
        if not batches:
            return 0
        total = sum(len(b) for b in batches)
        return total - len(batches[-1]) + 1 if self.tansu else total

    def batch_at(self, partition: int, offset: int) -> list[str]:
        """The records from ``offset`` to the end of its batch (a fetch serves whole batches)."""
        base = 0
        for batch in self.batches[partition]:
            if base <= offset < base + len(batch):
                return batch[offset - base:]
            base += len(batch)
        return []


class FakeConsumer:
    """Enough of AIOKafkaConsumer: a poll with a timeout fetches the next batch whole; one
    without (timeout 0) returns only what an earlier fetch left buffered."""

    def __init__(self, topic: FakeTopic, *, fail_on_poll: int | None = None) -> None:
        self.topic, self.fail_on_poll = topic, fail_on_poll
        self.position_of: dict[int, int] = {}
        self.buffer: dict[int, list[str]] = {}
        self.polls = 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def partitions_for_topic(self, name: str) -> set[int] | None:
        return None if self.topic.batches is None else set(self.topic.batches)

    def assign(self, tps: list) -> None:
        """A new consumer without a group starts at the beginning (auto_offset_reset)."""
        self.tps = tps
        self.position_of = {tp.partition: 0 for tp in tps}

    async def end_offsets(self, tps: list) -> dict:
        self.topic.ends_asked += 1
        return {tp: self.topic.end(tp.partition) for tp in tps}

    async def position(self, tp) -> int:
        return self.position_of[tp.partition]

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict:
        self.polls += 1
        if self.polls == self.fail_on_poll:
            raise KafkaConnectionError("the broker went away")
        if timeout_ms and not any(self.buffer.values()):
            for tp in self.tps:
                if self.topic.batches is not None:
                    self.buffer[tp.partition] = self.topic.batch_at(
                        tp.partition, self.position_of[tp.partition])
            if not any(self.buffer.values()):
                await asyncio.sleep(0.01)  # nothing new: the poll waits (shortened)
        out = {}
        for tp in self.tps:
            records, self.buffer[tp.partition] = (self.buffer.get(tp.partition, [])[:max_records],
                                                  self.buffer.get(tp.partition, [])[max_records:])
            if records:
                start = self.position_of[tp.partition]
                out[tp] = [SimpleNamespace(partition=tp.partition, offset=start + i,
                                           key=key.encode(), value=b"{}")
                           for i, key in enumerate(records)]
                self.position_of[tp.partition] = start + len(records)
                break
        return out


def follower_of(topic: FakeTopic, *consumers: FakeConsumer, max_records: int = 4):
    """A follower of the fake topic and what it applied: (key, caught up when applied)."""
    applied: list[tuple[str, bool]] = []
    queue = list(consumers) or [FakeConsumer(topic)]
    follower = TopicFollower("fake:9092", "t", lambda k, v: applied.append(
        (k, follower.caught_up)) or True, max_records=max_records,
        consumer_factory=lambda: queue.pop(0) if len(queue) > 1 else queue[0])
    return follower, applied


async def caught_up(follower: TopicFollower, timeout_s: float = 2.0) -> None:
    follower.start()
    try:
        await asyncio.wait_for(follower.wait_caught_up(), timeout_s)
    finally:
        await follower.stop()


@pytest.mark.parametrize("tansu", [True, False], ids=["tansu-ends", "exact-ends"])
@pytest.mark.parametrize("max_records", [1, 4, 1000])
def test_caught_up_only_once_every_record_at_start_is_applied(tansu, max_records) -> None:
    topic = FakeTopic({0: [10, 10, 10]}, tansu=tansu)
    follower, applied = follower_of(topic, max_records=max_records)
    asyncio.run(caught_up(follower))
    assert follower.ends == {0: 21 if tansu else 30}  # Tansu: the last batch's base + 1
    assert [k for k, _ in applied] == [f"r0-{i}" for i in range(30)]
    assert not any(was_caught_up for _, was_caught_up in applied)
    assert follower.positions == {0: 30}


def test_an_empty_topic_is_caught_up_at_once() -> None:
    topic = FakeTopic({0: []}, tansu=True)
    follower, applied = follower_of(topic)
    asyncio.run(caught_up(follower))
    assert follower.ends == {0: 0} and applied == []
    assert follower.caught_up_s is not None and follower.caught_up_s < 0.5


def test_a_topic_that_does_not_exist_is_caught_up_at_once() -> None:
    topic = FakeTopic(None, tansu=True)
    follower, applied = follower_of(topic)
    asyncio.run(caught_up(follower))
    assert follower.ends == {} and topic.ends_asked == 0 and applied == []


def test_every_partition_must_reach_its_end() -> None:
    topic = FakeTopic({0: [], 1: [3, 3], 2: [5]}, tansu=True)
    follower, applied = follower_of(topic, max_records=2)
    asyncio.run(caught_up(follower))
    assert follower.ends == {0: 0, 1: 4, 2: 1}
    assert sorted(k for k, _ in applied) == sorted(
        [f"r1-{i}" for i in range(6)] + [f"r2-{i}" for i in range(5)])
    assert not any(was_caught_up for _, was_caught_up in applied)


def test_records_written_after_the_start_do_not_hold_it_back() -> None:
    topic = FakeTopic({0: [5]}, tansu=True)
    follower, applied = follower_of(topic)

    async def scenario() -> None:
        follower.start()
        try:
            while topic.ends_asked == 0:
                await asyncio.sleep(0)
            topic.append(0, 5)  # written right after the follower took the ends
            await asyncio.wait_for(follower.wait_caught_up(), 2)
            while len(applied) < 10:
                await asyncio.sleep(0.01)
        finally:
            await follower.stop()

    asyncio.run(scenario())
    assert follower.ends == {0: 1}
    assert [k for k, was in applied if not was] == [f"r0-{i}" for i in range(5)]
    assert [k for k, was in applied if was] == [f"r0-{i}" for i in range(5, 10)]


def test_after_a_lost_broker_it_reads_again_to_the_ends_it_took_at_start(monkeypatch) -> None:
    monkeypatch.setattr(streams.follower, "RETRY_S", 0.01)
    topic = FakeTopic({0: [4, 4, 4]}, tansu=True)
    lost, again = FakeConsumer(topic, fail_on_poll=2), FakeConsumer(topic)
    follower, applied = follower_of(topic, lost, again)
    asyncio.run(caught_up(follower))
    assert topic.ends_asked == 1 and follower.ends == {0: 9}
    keys = [k for k, _ in applied]
    assert keys[:4] == [f"r0-{i}" for i in range(4)]  # read before the broker went away
    assert keys[4:] == [f"r0-{i}" for i in range(12)]  # all of it again, from the start
    assert not any(was_caught_up for _, was_caught_up in applied)


def test_at_ends() -> None:
    assert at_ends({}, {})
    assert at_ends({0: 0}, {0: 0})
    assert at_ends({0: 22}, {0: 21}) and not at_ends({0: 20}, {0: 21})
    assert not at_ends({}, {0: 1})
    assert not at_ends({0: 5, 1: 0}, {0: 5, 1: 1})


def _feeds(topics: dict[str, FakeTopic], counters: WorkerCounters) -> WorkerFeeds:
    followed = {name: SimpleNamespace(follower=follower_of(topic)[0])
                for name, topic in topics.items()}
    return WorkerFeeds(followed["zones"], followed["maintenance"], followed["routing"], counters)


def test_a_starting_worker_waits_for_all_three_feeds(caplog) -> None:
    counters = WorkerCounters()
    feeds = _feeds({"zones": FakeTopic({0: [10, 10]}, tansu=True),
                    "maintenance": FakeTopic({0: []}, tansu=True),
                    "routing": FakeTopic(None, tansu=True)}, counters)
    caplog.set_level(logging.INFO)
    assert asyncio.run(feeds.catch_up(5.0)) is True
    assert all(f.caught_up for f in feeds.followers.values())
    assert counters.feeds_caught_up_s is not None
    assert "worker: zones, maintenance and routing caught up in" in caplog.text


def test_a_stopping_worker_stops_following_and_leaves_no_task_behind() -> None:
    """Left following, the three tasks were what Faust's last gather waited 1 s for when a
    worker stopped (streams/feeds.py, WorkerFeeds.stop)."""
    feeds = _feeds({"zones": FakeTopic({0: [2]}, tansu=True),
                    "maintenance": FakeTopic({0: []}, tansu=True),
                    "routing": FakeTopic({0: [1]}, tansu=True)}, WorkerCounters())

    async def scenario() -> tuple[int, int]:
        await feeds.catch_up(5.0)
        following = sum(not t.done() for t in asyncio.all_tasks()
                        if t.get_name().startswith("follow "))
        await feeds.stop()
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return following, len(left)

    assert asyncio.run(scenario()) == (3, 0)


def test_a_worker_stopped_while_waiting_for_its_feeds_stops_quietly() -> None:
    """SIGTERM while a feed cannot be read (the broker is down at start): Faust cancels the
    start and then stops the worker. The wait for the three feeds was left polling, and when
    mode cancelled every task at exit asyncio logged "_GatheringFuture exception was never
    retrieved" with a traceback, an error line for an ordinary stop."""
    stuck = FakeTopic({0: [3]}, tansu=True)
    stuck.batch_at = lambda partition, offset: []  # type: ignore[method-assign]  # no answers
    feeds = _feeds({"zones": FakeTopic({0: [3]}, tansu=True), "maintenance": stuck,
                    "routing": FakeTopic({0: [1]}, tansu=True)}, WorkerCounters())
    unhandled: list[dict] = []

    async def scenario() -> list[asyncio.Task]:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: unhandled.append(ctx))
        start = asyncio.ensure_future(feeds.catch_up(30.0))
        await asyncio.sleep(0.2)
        start.cancel()  # the start, cancelled by the signal
        with contextlib.suppress(asyncio.CancelledError):
            await start
        await feeds.stop()  # the worker's before_stop hook
        await asyncio.sleep(0.05)
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(scenario()) == []
    gc.collect()  # an unretrieved exception is reported when its future is collected
    assert unhandled == []


def test_a_feed_that_cannot_catch_up_delays_the_worker_only_so_long(caplog) -> None:
    counters = WorkerCounters()
    stuck = FakeTopic({0: [3]}, tansu=True)
    stuck.batch_at = lambda partition, offset: []  # type: ignore[method-assign]  # no fetch answers
    feeds = _feeds({"zones": FakeTopic({0: [3]}, tansu=True), "maintenance": stuck,
                    "routing": FakeTopic({0: [1]}, tansu=True)}, counters)

    async def scenario() -> bool:
        began = time.monotonic()
        ready = await feeds.catch_up(0.3)
        assert time.monotonic() - began < 2
        assert counters.feeds_caught_up_s is None
        del stuck.batch_at  # the broker answers again
        await asyncio.wait_for(feeds.followers["maintenance"].wait_caught_up(), 2)
        await asyncio.sleep(0.05)
        for follower in feeds.followers.values():
            await follower.stop()
        return ready

    caplog.set_level(logging.INFO)
    assert asyncio.run(scenario()) is False
    warning = next(r.getMessage() for r in caplog.records if "not read up to" in r.getMessage())
    assert "after 0.3 s the maintenance topic is not read up to where it ended" in warning
    assert "at offsets {0: 0} of {0: 1}" in warning
    assert counters.feeds_caught_up_s is not None
    assert "caught up in" in caplog.text and "after the worker had started judging" in caplog.text


async def _send_batches(bootstrap: str, topic: str, sizes: list[int]) -> None:
    """Batches of the given sizes (each awaited before the next: one producer batch each)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await producer.start()
    try:
        n = 0
        for size in sizes:
            sent = [await producer.send(topic, key=f"k{n + i}".encode(), value=b"{}")
                    for i in range(size)]
            await asyncio.gather(*sent)
            n += size
    finally:
        await producer.stop()


@pytest.mark.integration
@pytest.mark.parametrize("sizes", [[], [1, 1, 1], [10, 10, 10]], ids=["empty", "1x3", "10x3"])
def test_on_the_broker_the_follower_applies_every_record_before_it_is_caught_up(
        kafka_bootstrap, sizes) -> None:
    """On the embedded broker the end offset of 10+10+10 records is 21; a follower polling 4
    records at a time is caught up only with all 30 applied. On Apache Kafka it is 30."""
    name = f"follow-{uuid.uuid4().hex[:10]}"
    ensure_topics(kafka_bootstrap, [TopicSpec(name, 1, 1, compacted=True)])
    asyncio.run(_send_batches(kafka_bootstrap, name, sizes))
    applied: list[tuple[str, bool]] = []
    follower = TopicFollower(kafka_bootstrap, name, lambda k, v: applied.append(
        (k, follower.caught_up)) or True, max_records=4)
    asyncio.run(caught_up(follower, timeout_s=20))
    total = sum(sizes)
    assert follower.ends[0] in {total, total - (sizes[-1] if sizes else 0) + 1}
    assert [k for k, was in applied if not was] == [f"k{i}" for i in range(total)]
    assert follower.positions == {0: total}


@pytest.mark.integration
def test_on_the_broker_a_missing_topic_is_caught_up_at_once(kafka_bootstrap) -> None:
    follower = TopicFollower(kafka_bootstrap, f"missing-{uuid.uuid4().hex[:10]}",
                             lambda k, v: True)
    asyncio.run(caught_up(follower, timeout_s=20))
    assert follower.ends == {}
