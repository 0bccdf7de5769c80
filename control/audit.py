"""`cityagent audit`: the alert events of a time range, from the alerts topic, as JSON lines.

The alerts topic is the audit trail of every alert: each event (opened, escalated,
acknowledged by whom, assigned, commented, resolved, restated ...) carries its actor, its time
(``at_ms``) and the alert's snapshot after it, and the topic keeps them
``CITYAGENT_ALERTS_RETENTION_DAYS`` (180 days by default). This command answers "who
acknowledged the flood alert in 历下区 last month, and when?" without an API.

It reads, never writes: no consumer group, no committed offset, no topic created (the topic
is looked up in the whole cluster's metadata, as a request naming it would make Tansu create
it). It seeks each partition by Kafka record time to a day before ``--since``: an event's
``at_ms`` is the wall clock of whatever made it (the worker's when it processed an anomaly or
ticked, the API's when it took a command; an escalation's due time), all no later than the
worker's clock when it sent the record, so only clocks that disagree between machines can
put a record's time before its event's ``at_ms``; a day covers any plausible skew. It reads
up to the end offsets the topic had when it started, so a topic being written still ends; the events' own ``at_ms`` and
``alert_id`` decide what is written.

The events are written in time order, by ``(at_ms, partition, offset)``, as they are read:
each partition is read in offset order, which is only nearly ``at_ms`` order, so events are
held for a reorder window (``--reorder-window``, 1 h) and a partition read ahead of the
others by more than it is paused. An event that comes in its partition more than the window
after one dated later is written out of order and counted in the summary line; exactly what
is guaranteed, and the memory it takes, is in control/audit_order.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

from cityagent.readings import format_ts
from cityagent.settings import Settings
from control.audit_order import TimeOrder

__all__ = ("add_arguments", "run_audit", "parse_time", "parse_duration", "AuditSummary")

#: How far before --since the read starts, by Kafka record time (see the module docstring).
SEEK_SLACK_MS = 86_400_000
#: Seconds between progress lines on stderr.
PROGRESS_S = 2.0
#: Empty polls in a row (a second each) after which a partition below its end is given up.
MAX_IDLE_POLLS = 10
#: Records taken per poll, at most: what a poll adds to the events held for the time order.
POLL_RECORDS = 500
#: How long after an event dated later one may come in its partition and still be written
#: in order (``--reorder-window``; see control/audit_order.py). Commands come minutes late
#: when the workers are busy or restarting, an hour's events of a city are held easily.
REORDER_WINDOW_MS = 3_600_000
CONNECT_TIMEOUT_S = 20.0

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


class AuditError(ValueError):
    """A bad argument or an unusable broker: one line for the user, exit code 2."""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--since", metavar="TIME",
                        help="first event time: RFC 3339 (2026-10-01T00:00:00+08:00) or a "
                             "duration ago (30d, 12h, 90m, 2w); default: the retention's start")
    parser.add_argument("--until", metavar="TIME",
                        help="events before this time (same forms; default: no limit)")
    parser.add_argument("--alert", action="append", default=[], metavar="ALERT_ID",
                        help="only this alert's events (repeatable; default: every event, "
                             "suppressed anomalies too)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="write the JSON lines here (default, or -: stdout)")
    parser.add_argument("--reorder-window", metavar="DURATION",
                        help="how late an event may come in its partition, after events dated "
                             "later, and still be written in time order (30m, 1h, 1d; "
                             "default 1h): the events of about twice this are held in memory")
    return parser


def parse_time(text: str, now_ms: int, flag: str) -> int:
    """``--since``/``--until`` as epoch milliseconds: RFC 3339 with an offset, or a duration
    ago; AuditError naming the flag otherwise."""
    text = text.strip()
    if _DURATION.fullmatch(text.lower()):
        return now_ms - parse_duration(text, flag)
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise AuditError(f"{flag} must be an RFC 3339 time like 2026-10-01T08:00:00+08:00 or "
                         f"a duration ago like 30d or 12h; got {text!r}") from None
    if parsed.tzinfo is None:
        raise AuditError(f"{flag} needs a UTC offset (Z or +08:00) so it is not ambiguous; "
                         f"got {text!r}")
    return round(parsed.timestamp() * 1000)


@dataclass
class AuditSummary:
    """What an audit read and wrote."""

    events: int = 0
    alert_ids: set[str] = field(default_factory=set)
    suppressed: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    messages: int = 0  # read from the topic, written or not
    malformed: int = 0  # messages that were no alert event
    idle_partitions: list[int] = field(default_factory=list)  # given up below their end
    out_of_order: int = 0  # written after events dated later (came over the window late)
    most_late_ms: int = 0

    def take(self, event: dict[str, Any]) -> None:
        self.events += 1
        if event.get("alert_id"):
            self.alert_ids.add(event["alert_id"])
        else:
            self.suppressed += 1
        at_ms = event["at_ms"]
        self.first_ms = at_ms if self.first_ms is None else min(self.first_ms, at_ms)
        self.last_ms = at_ms if self.last_ms is None else max(self.last_ms, at_ms)

    def line(self, topic: str, seconds: float) -> str:
        if self.events:
            found = (f"{_count(self.events, 'event')} of {_count(len(self.alert_ids), 'alert')}"
                     + (f" ({_count(self.suppressed, 'suppressed anomaly', 'suppressed anomalies')})"
                        if self.suppressed else "")
                     + f", {format_ts(self.first_ms or 0)} to {format_ts(self.last_ms or 0)}")
        else:
            found = "no events in the range"
        extra = (f"; {_count(self.malformed, 'malformed message')} skipped" if self.malformed
                 else "")
        if self.idle_partitions:
            extra += (f"; partitions {self.idle_partitions} gave nothing for "
                      f"{MAX_IDLE_POLLS} s below their end: not read to it")
        if self.out_of_order:
            extra += (f"; {_count(self.out_of_order, 'event')} out of time order, after "
                      f"events dated up to {_duration(self.most_late_ms)} later: raise "
                      "--reorder-window")
        return (f"cityagent audit: {found} (read {_count(self.messages, 'message')} of {topic} in "
                f"{seconds:.1f} s{extra})")


def run_audit(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``cityagent audit``; 2 with one line on stderr for bad arguments or no broker."""
    started = time.monotonic()
    now_ms = int(time.time() * 1000)
    try:
        since_ms = (parse_time(args.since, now_ms, "--since") if args.since is not None
                    else now_ms - settings.alerts_retention_ms)
        until_ms = parse_time(args.until, now_ms, "--until") if args.until is not None else None
        if until_ms is not None and until_ms <= since_ms:
            raise AuditError(f"--until ({format_ts(until_ms)}) must be after --since "
                             f"({format_ts(since_ms)})")
        window_ms = (REORDER_WINDOW_MS if args.reorder_window is None
                     else parse_duration(args.reorder_window, "--reorder-window"))
        alert_ids = {a.strip() for a in args.alert}
        if "" in alert_ids:
            raise AuditError("--alert needs an alert id; got an empty one")
        with _output(args.out) as out:
            summary = asyncio.run(_audit(settings, since_ms, until_ms, frozenset(alert_ids),
                                         window_ms, out.write, _progress))
    except AuditError as exc:
        print(f"cityagent audit: {exc}", file=sys.stderr)
        return 2
    print(summary.line(settings.alerts_topic, time.monotonic() - started), file=sys.stderr)
    return 0


def parse_duration(text: str, flag: str) -> int:
    """A duration (``90m``, ``1h``, ``2d``, ``0s``) as milliseconds; AuditError naming the flag
    otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise AuditError(f"{flag} must be a duration like 30m, 1h or 2d; got {text!r}")
    return round(float(match.group(1)) * _UNIT_MS[match.group(2)])


def _duration(ms: int) -> str:
    """``3.2 s``, ``12 min``, ``2.5 h``, ``3.1 d``: how late an event came, roughly."""
    for unit, size, digits in (("d", 86_400_000, 1), ("h", 3_600_000, 1), ("min", 60_000, 0)):
        if ms >= size:
            return f"{ms / size:.{digits}f} {unit}"
    return f"{ms / 1000:.1f} s"


def _count(n: int, one: str, many: str | None = None) -> str:
    """``1 event``, ``2 events``, ``1,200 events``."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


@contextlib.contextmanager
def _output(path: Path | None):
    """Stdout, or ``path`` written as a hidden ``.part`` beside it and renamed when the export
    is complete: a failed export (no broker, Ctrl-C) leaves no file, not an empty or partial
    one that looks like an answer."""
    if path is None or str(path) == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    if path.is_dir():
        raise AuditError(f"--out {path}: is a folder; give a file name")
    part = path.with_name(f".{path.name}.part")
    try:
        handle: IO[bytes] = open(part, "wb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise AuditError(f"--out {path}: cannot write it ({exc.strerror or exc})") from None
    try:
        with handle:
            yield handle
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _progress(read: int, total: int) -> None:
    print(f"cityagent audit: read {read:,} of {total:,} messages "
          f"({100 * read / max(total, 1):.0f}%) ...", file=sys.stderr, flush=True)


async def _audit(settings: Settings, since_ms: int, until_ms: int | None,
                 alert_ids: frozenset[str], window_ms: int, write: Callable[[bytes], Any],
                 progress: Callable[[int, int], None]) -> AuditSummary:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    from api.topic_feed import Lookback

    # aiokafka logs every failed connection attempt; the one line below says it all.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    topic, bootstrap = settings.alerts_topic, settings.bootstrap
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 << 20)
    try:
        try:
            await asyncio.wait_for(consumer.start(), CONNECT_TIMEOUT_S)
            partitions = await _partitions(consumer, topic)
        except (TimeoutError, KafkaError, OSError) as exc:
            hint = (" (is `cityagent up` running? the embedded broker keeps its topics only "
                    "while it runs; set CITYAGENT_KAFKA for another Kafka)"
                    if settings.embedded else "")
            why = str(exc) if str(exc).startswith(type(exc).__name__) else (
                f"{type(exc).__name__}: {exc}".rstrip(": "))
            raise AuditError(f"cannot reach the Kafka brokers at {bootstrap}: {why}{hint}"
                             ) from None
        if partitions is None:
            raise AuditError(f"topic {topic!r} does not exist at {bootstrap} (CITYAGENT_TOPIC_"
                             f"PREFIX is {settings.topic_prefix!r}); nothing to audit")
        consumer.assign(partitions)
        lookback = Lookback.since(since_ms - SEEK_SLACK_MS, "audit")
        await lookback.seek(consumer, partitions)
        ends = await consumer.end_offsets(partitions)
        return await _read(consumer, lookback, ends, since_ms, until_ms, alert_ids, window_ms,
                           write, progress)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


async def _partitions(consumer: Any, topic: str) -> list[Any] | None:
    """The topic's partitions, or None when it does not exist, from the whole cluster's
    metadata: a metadata request that names the topic would make Tansu create it."""
    from aiokafka import TopicPartition

    if topic not in await consumer.topics():
        return None
    ids = consumer.partitions_for_topic(topic)
    if not ids:
        await consumer._client.force_metadata_update()  # noqa: SLF001 (no public refresh call)
        ids = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in sorted(ids)] if ids else None


async def _read(consumer: Any, lookback: Any, ends: dict, since_ms: int, until_ms: int | None,
                alert_ids: frozenset[str], window_ms: int, write: Callable[[bytes], Any],
                progress: Callable[[int, int], None]) -> AuditSummary:
    """Read every partition to its end offset at start, writing the events in the range in
    time order (``control.audit_order``).

    A partition is done once a poll took it to its end offset. The embedded broker reports an
    end offset inside the partition's last record batch (MEASURED.md): the rest of that
    batch, written before the audit started, comes in the same poll and is kept. With
    ``until_ms``, a partition is also done at its first record stamped a day past it. A
    partition read more than the reorder window past the least advanced one is paused.
    """
    summary = AuditSummary()
    pending = {tp for tp in ends if lookback.start[tp] < ends[tp]}
    order = TimeOrder((tp.partition for tp in pending), window_ms)
    total = sum(max(ends[tp] - lookback.start[tp], 0) for tp in ends)
    stop_ms = None if until_ms is None else until_ms + SEEK_SLACK_MS
    read = dict(lookback.start)
    next_progress = time.monotonic() + PROGRESS_S
    idle = 0
    paused = set(ends) - pending
    consumer.pause(*paused)
    while pending:
        _pause_ahead(consumer, pending, paused, order.ahead())
        reading = pending - paused
        polled = await consumer.getmany(*reading, timeout_ms=1000, max_records=POLL_RECORDS)
        polled = {tp: records for tp, records in polled.items() if tp in reading and records}
        idle = 0 if polled else idle + 1
        if idle >= MAX_IDLE_POLLS:  # given up: the others are read on
            summary.idle_partitions += sorted(tp.partition for tp in reading)
            for tp in reading:
                _finish(consumer, tp, pending, paused, order)
            idle = 0
            continue
        for tp, records in polled.items():
            summary.messages += len(records)
            read[tp] = records[-1].offset + 1
            if stop_ms is not None and records[-1].timestamp > stop_ms:
                records[:] = [r for r in records if r.timestamp <= stop_ms]
                read[tp] = ends[tp]
        kept, _ = lookback.recent(polled)
        for record in kept:
            event = _event(record.value)
            if event is None:
                summary.malformed += 1
                continue
            at_ms = event["at_ms"]
            wanted = (since_ms <= at_ms and (until_ms is None or at_ms < until_ms)
                      and (not alert_ids or event.get("alert_id") in alert_ids))
            if wanted:
                summary.take(event)
            order.add(record.partition, record.offset, at_ms,
                      orjson.dumps({**event, "at": format_ts(at_ms)}) + b"\n" if wanted else None)
        for tp in polled:
            if read[tp] >= ends[tp]:
                _finish(consumer, tp, pending, paused, order)
        for line in order.ready():
            write(line)
        if pending and time.monotonic() >= next_progress:
            next_progress = time.monotonic() + PROGRESS_S
            done = sum(min(read[tp], ends[tp]) - lookback.start[tp] for tp in ends)
            progress(max(done, 0), total)
    for line in order.rest():
        write(line)
    summary.out_of_order, summary.most_late_ms = order.out_of_order, order.most_late_ms
    return summary


def _pause_ahead(consumer: Any, pending: set, paused: set, ahead: set[int]) -> None:
    """Pause the pending partitions read too far ahead of the others; resume the rest."""
    for tp in pending:
        if tp.partition in ahead and tp not in paused:
            consumer.pause(tp)
            paused.add(tp)
        elif tp.partition not in ahead and tp in paused:
            consumer.resume(tp)
            paused.discard(tp)


def _finish(consumer: Any, tp: Any, pending: set, paused: set, order: TimeOrder) -> None:
    """``tp`` is read to its end (or given up): stop fetching it."""
    pending.discard(tp)
    paused.add(tp)
    consumer.pause(tp)
    order.done(tp.partition)


def _event(value: bytes | None) -> dict[str, Any] | None:
    """The message as an alert event (an object with integer ``at_ms``), or None."""
    try:
        doc = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    at_ms = doc.get("at_ms")
    if isinstance(at_ms, bool) or not isinstance(at_ms, int):
        return None
    return doc
