"""The API's read model of alerts: what the alerts topic says, indexed for operators' queries.

The alerting worker publishes one :class:`~cityagent.incident_alert.AlertEvent` per change of
an alert, each carrying the full snapshot after the change. :class:`AlertBook` applies them:
the newest snapshot (highest ``seq``) is the alert, older and duplicate ones (a redelivered
message, a worker that re-processed its input) change nothing. It keeps each alert's recent
history, the recent ``suppressed`` events, and a bounded feed of the events it applied for
the live stream (``GET /v1/alerts/stream``).

Why the stream's event ids are offsets and not a counter: the feed's order across partitions
depends on how each API process happened to read them, so a counter would mean different
things in two replicas, or in one replica before and after a restart. An id is instead, per
partition of the alerts topic, the offset up to which the feed had read when it applied the
event (``"12-0-7-3"``). Each partition's events keep their order, so that vector says exactly
which events a client has had, in any replica: :meth:`AlertBook.replay` returns the rest.

Pure: no I/O and no asyncio; ``tests/api/test_alert_book.py`` drives it without Kafka.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from api.auth import Principal
from api.json_bytes import right_sized
from cityagent.incident_alert import EVENT_TYPES, RESOLVED, AlertEvent
from cityagent.readings import format_ts
from cityagent.regions import RegionIndex
from cityagent.settings import RETENTION_H

__all__ = (
    "AlertBook",
    "AlertQuery",
    "AlertPage",
    "FeedEntry",
    "MalformedEvent",
    "InvalidCursor",
    "InvalidEventId",
    "encode_cursor",
    "decode_cursor",
    "encode_event_id",
    "decode_event_id",
    "public_alert",
)

#: A member sensor's episode (its start, escalation or end) in an alert's history: kept apart
#: from the other events there (see ``_Record``), as a storm makes hundreds of them.
_UPDATED = "updated"
#: Epoch-millisecond fields of an alert and the RFC 3339 field added next to each.
_TIMES = {"first_seen_ms": "first_seen_at", "last_seen_ms": "last_seen_at",
          "opened_ms": "opened_at", "acknowledged_at_ms": "acknowledged_at",
          "resolved_at_ms": "resolved_at"}
_INTS = ("seq", "last_seen_ms", "first_seen_ms", "opened_ms")
_TEXTS = ("alert_id", "scope", "status", "severity", "kind", "city_code", "district_code")
_LISTS = ("zone_ids", "departments", "sensors", "district_codes")
_MAX_PARTITIONS = 4096


class MalformedEvent(ValueError):
    """Raised by :meth:`AlertBook.apply` when a message is not an alert event; says why."""


class InvalidCursor(ValueError):
    """Raised when a ``cursor`` is not one this API gave out."""


class InvalidEventId(ValueError):
    """Raised when a ``Last-Event-ID`` is not one this API gave out."""


def public_alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The alert as the API serves it: its snapshot plus RFC 3339 UTC text of each time."""
    doc = dict(alert)
    for ms, text in _TIMES.items():
        value = alert.get(ms)
        doc[text] = format_ts(value) if value is not None else None
    return doc


def encode_cursor(last_seen_ms: int, alert_id: str) -> str:
    """An opaque page cursor: the sort key of the last alert of the page."""
    return base64.urlsafe_b64encode(orjson.dumps([last_seen_ms, alert_id])).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The sort key a ``next_cursor`` holds; :class:`InvalidCursor` unless it is exactly what
    :func:`encode_cursor` gives (strict base64, and nothing before or after: a cursor with
    bytes appended was taken as the one before them)."""
    refused = InvalidCursor(f"cursor {cursor[:40]!r} is not one this API gave out; pass "
                            "the next_cursor of the previous page unchanged")
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        last_seen_ms, alert_id = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise refused from None
    if isinstance(last_seen_ms, bool) or not isinstance(last_seen_ms, int) \
            or not isinstance(alert_id, str) or encode_cursor(last_seen_ms, alert_id) != cursor:
        raise refused
    return last_seen_ms, alert_id


def encode_event_id(offsets: Mapping[int, int]) -> str:
    """``next offset`` per partition 0..n, joined by ``-`` (the stream's ``id:``)."""
    if not offsets:
        return "0"
    return "-".join(str(offsets.get(p, 0)) for p in range(max(offsets) + 1))


def decode_event_id(text: str) -> dict[int, int]:
    parts = text.strip().split("-")
    # isascii: str.isdigit also admits "²" (int() refuses it) and other scripts' digits.
    if not 0 < len(parts) <= _MAX_PARTITIONS or not all(
            p.isascii() and p.isdigit() and len(p) < 20 for p in parts):
        raise InvalidEventId(f"Last-Event-ID {text[:60]!r} is not an id of this stream "
                             "(numbers joined by '-', e.g. 12-0-7-3)")
    return {p: int(n) for p, n in enumerate(parts)}


@dataclass(frozen=True)
class AlertQuery:
    """Which alerts a caller asked for (every filter optional) and may see (``principal``)."""

    statuses: frozenset[str] | None = None
    severities: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    city_code: str | None = None
    district_code: str | None = None
    zone_id: str | None = None
    department: str | None = None
    bbox: tuple[float, float, float, float] | None = None  # min lon, min lat, max lon, max lat
    since_ms: int | None = None  # last_seen_ms >= since_ms
    until_ms: int | None = None  # last_seen_ms < until_ms
    principal: Principal | None = None

    @property
    def filters_alerts(self) -> bool:
        """True when some filter is on the alert's fields (suppressed events have none)."""
        return any(v is not None for k, v in vars(self).items() if k != "principal")

    def may_see(self, alert: Mapping[str, Any], members: Collection[str] = ()) -> bool:
        """Scope: a scoped key sees an alert of its cities, or with a sensor of its prefixes.

        ``members`` are the alert's sensors the book has read of (:attr:`_Record.members`):
        ``sensors`` lists only the first 20, so an alert of 50 gauges whose 30th was the
        key's was invisible to a key scoped by sensor-id prefix."""
        p = self.principal
        return p is None or not p.scoped or p.may_see_city(alert["city_code"]) or any(
            p.may_see_sensor(s) for s in alert["sensors"]) or any(
            p.may_see_sensor(s) for s in members)

    def matches(self, alert: Mapping[str, Any], members: Collection[str] = ()) -> bool:
        if self.statuses is not None and alert["status"] not in self.statuses:
            return False
        if self.severities is not None and alert["severity"] not in self.severities:
            return False
        if self.kinds is not None and alert["kind"] not in self.kinds:
            return False
        if self.city_code is not None and alert["city_code"] != self.city_code:
            return False
        # Any district of its sensors: a city-wide flood is found by each district it reaches
        # (before 2026-11-25 only by its opener's).
        if self.district_code is not None and self.district_code not in alert["district_codes"]:
            return False
        if self.zone_id is not None and self.zone_id not in alert["zone_ids"]:
            return False
        if self.department is not None and self.department not in alert["departments"]:
            return False
        if self.bbox is not None:
            min_lon, min_lat, max_lon, max_lat = self.bbox
            if not (min_lon <= alert["lon"] <= max_lon and min_lat <= alert["lat"] <= max_lat):
                return False
        last_seen = alert["last_seen_ms"]
        if self.since_ms is not None and last_seen < self.since_ms:
            return False
        if self.until_ms is not None and last_seen >= self.until_ms:
            return False
        return self.may_see(alert, members)

    def matches_entry(self, entry: FeedEntry) -> bool:
        """For the stream: the alert after the change matches, or did before it (it left)."""
        if entry.alert is None:
            return self._matches_suppressed(entry)
        return self.matches(entry.alert, entry.members) or (
            entry.previous is not None and self.matches(entry.previous, entry.members))

    def _matches_suppressed(self, entry: FeedEntry) -> bool:
        """A suppressed event has no alert, only a sensor and a place (its city and district,
        when known): the city and district filters and a key's cities apply to that place, any
        other filter (on an alert's status, severity ...) excludes it. Before, a key scoped to
        cities, or a ``city=`` stream, never got one, not even of its own city."""
        if any(v is not None for k, v in vars(self).items() if k not in _PLACE_FILTERS):
            return False
        if self.city_code is not None and entry.city_code != self.city_code:
            return False
        if self.district_code is not None and entry.district_code != self.district_code:
            return False
        p = self.principal
        return p is None or p.may_see_sensor(entry.sensor_id) or (
            entry.city_code is not None and p.may_see_city(entry.city_code))


#: The query fields a suppressed event is judged on: the key's scope and the place filters.
_PLACE_FILTERS = frozenset({"principal", "city_code", "district_code"})


@dataclass(frozen=True)
class FeedEntry:
    """One applied event, as the stream sends it."""

    position: int  # this process's count of applied events: its order of the feed
    partition: int
    offset: int
    offsets: tuple[int, ...]  # next offset per partition after this event: the stream's id
    event_id: str
    type: str
    alert: dict[str, Any] | None  # public snapshot after the change (None: suppressed)
    previous: dict[str, Any] | None  # public snapshot before it (None: new, or suppressed)
    sensor_id: str
    data: bytes  # the public event as JSON: encoded once, sent to every client
    city_code: str | None = None  # suppressed events: where the anomaly was, when known
    district_code: str | None = None
    members: Collection[str] = ()  # the alert's sensors read of so far (its record's set)


@dataclass(frozen=True)
class AlertPage:
    alerts: list[dict[str, Any]]
    next_cursor: str | None


@dataclass
class _Record:
    alert: dict[str, Any]
    #: Its events but sensor updates (opened, escalated, acknowledged, assigned, commented,
    #: resolved, restated), and its sensor updates, each bounded on its own: a storm's
    #: incident gets hundreds of ``updated`` events (one per member episode), which pushed the
    #: operators' acknowledgement, assignment and comments (their text is nowhere else) out
    #: of one shared bound of 200 within minutes.
    history: deque[dict[str, Any]]
    updates: deque[dict[str, Any]]
    events: int = 0
    changed_ms: int = 0  # event time of the change that resolved it (while resolved)
    #: Every sensor of the alert the book has read of: those its snapshots list (the first
    #: 20) and the sensor of each of its events (an anomaly of a member: its episode's start,
    #: escalation or end). What a key scoped by sensor-id prefix is judged on.
    members: set[str] = field(default_factory=set)


class AlertBook:
    """Alerts by id, newest ``seq`` wins; each alert's history; a bounded feed for the stream.

    Keeps ``history_size`` sensor updates and ``history_size`` other events per alert (see
    ``_Record``), the last ``feed_size`` applied events for
    replay to reconnecting stream clients, and the last ``suppressed_size`` suppressed events.

    A resolved alert is forgotten once the stream's time (its newest event's ``at_ms``) is
    ``resolved_for_ms`` past the alert's last change: the alerts topic keeps events that long
    (its retention), so an API started afresh would not know the alert either. Without it a
    long-running API grew with every alert it ever saw, and answered differently from a
    replica started later. Open and acknowledged alerts are never forgotten.
    """

    def __init__(self, *, history_size: int = 200, feed_size: int = 10_000,
                 suppressed_size: int = 1_000,
                 resolved_for_ms: int = RETENTION_H * 3_600_000,
                 regions: RegionIndex | None = None,
                 sensor_place: Callable[[str], tuple[str | None, str | None]] | None = None,
                 ) -> None:
        self.history_size = history_size
        self.regions = regions
        #: Where a sensor is (city, district codes), for a suppressed event scoped by zone.
        self.sensor_place = sensor_place
        self.feed_size = feed_size
        self.suppressed_size = suppressed_size
        self.resolved_for_ms = resolved_for_ms
        self.forgotten = 0  # resolved alerts dropped after resolved_for_ms
        self._stream_ms = 0  # the newest event time applied
        self._resolved: list[tuple[int, str]] = []  # heap of (change time, id) when resolved
        self.applied = 0  # events that changed the book (also the last feed position)
        self.ignored = 0  # older or duplicate events
        self._alerts: dict[str, _Record] = {}
        self._feed: deque[FeedEntry] = deque()
        self._suppressed: deque[dict[str, Any]] = deque()
        self._suppressed_ids: set[str] = set()
        self._next: dict[int, int] = {}  # partition -> offset after the last message read
        self._evicted: dict[int, int] = {}  # partition -> offset after the last entry dropped
        self._read_from: dict[int, int] = {}  # partition -> where the feed's read began
        self._ends: dict[int, int] = {}  # partition -> the topic's end offset, as last told
        #: True once the feed has said where its read of every partition began for good
        #: (:meth:`skip_to`): until then :meth:`replay` cannot tell an id older than that.
        self.resumable = False

    def __len__(self) -> int:
        return len(self._alerts)

    @property
    def next_offsets(self) -> dict[int, int]:
        """Per partition, the offset after the last message seen: where to resume reading."""
        return dict(self._next)

    def clear(self) -> None:
        """Forget every alert and event read: the alerts topic was recreated.

        A recreated topic (as when the embedded broker restarts empty, or an operator deletes
        and recreates it on Kafka) starts its offsets at 0 again and holds none of the alerts
        read before, so the book is read again from the new topic's beginning. ``applied``
        and ``ignored`` go on counting: they are this process's totals.
        """
        self._alerts.clear()
        self._resolved.clear()
        self._stream_ms = 0
        self._feed.clear()
        self._suppressed.clear()
        self._suppressed_ids.clear()
        self._next.clear()
        self._evicted.clear()
        self._read_from.clear()
        self._ends.clear()
        self.resumable = False

    def note_topic_ends(self, ends: Mapping[int, int]) -> None:
        """The alerts topic's partitions and end offsets, as the feed found them.

        Lets :meth:`past_end` tell an id of events this book has yet to read (a replica still
        catching up) from one the topic never held (it was recreated: all offsets restart at 0
        when the embedded broker restarts, as it keeps nothing). Replaces what was noted before.
        """
        self._ends = dict(ends)

    def skip_to(self, partition: int, offset: int) -> None:
        """The feed does not read ``partition`` below ``offset``: where its lookback began (7
        days ago), past the records it dropped as older.

        Those messages count as read (the stream's ids name them as had, so a client of this
        replica resumes without a reset) and as not retained (a client whose id is below
        ``offset`` never had the changes between: :meth:`replay` says it must re-list).
        """
        self._next[partition] = max(self._next.get(partition, 0), offset)
        self._read_from[partition] = max(self._read_from.get(partition, 0), offset)

    def past_end(self, seen: Mapping[int, int]) -> bool:
        """True when ``seen`` (an event id) is past the end of the feed on some partition.

        Past the end: beyond both what this book has read and what the topic held when the
        feed last asked (a partition the topic does not have holds nothing). Such an id names
        events of another topic, as after a broker that kept nothing restarted.
        """
        return any(n > max(self._next.get(p, 0), self._ends.get(p, 0))
                   for p, n in seen.items())

    # -- applying events ------------------------------------------------------------------

    def apply(self, doc: Any, *, partition: int = 0, offset: int | None = None) -> FeedEntry | None:
        """Take one message of the alerts topic; the feed entry if it changed the book.

        ``partition``/``offset`` say where it was read (by default: the next offset of
        partition 0, for tests). Raises :class:`MalformedEvent` if it is no alert event; its
        offset counts as read all the same.
        """
        if offset is None:
            offset = self._next.get(partition, 0)
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)
        event = _parse(doc)
        alert = event["alert"]
        if alert is None:
            if event["event_id"] in self._suppressed_ids:
                self.ignored += 1
                return None
            self._keep_suppressed(event)
            return self._to_feed(event, None, None, partition, offset, self._place(event))
        record = self._alerts.get(alert["alert_id"])
        if record is not None and alert["seq"] <= record.alert["seq"]:
            _add_members(record.members, event)  # read out of order: still its sensors
            self.ignored += 1
            return None
        previous = record.alert if record is not None else None
        public = public_alert(alert)
        if record is None:
            record = self._alerts[alert["alert_id"]] = _Record(
                public, deque(maxlen=self.history_size), deque(maxlen=self.history_size))
        record.alert = public
        _add_members(record.members, event)
        record.events += 1
        (record.updates if event["type"] == _UPDATED else record.history).append(
            _history_item(event))
        entry = self._to_feed(event, public, previous, partition, offset,
                              members=record.members)
        if public["status"] == RESOLVED:
            record.changed_ms = event["at_ms"]
            heapq.heappush(self._resolved, (event["at_ms"], alert["alert_id"]))
        self._forget_resolved(event["at_ms"])
        return entry

    def _forget_resolved(self, at_ms: int) -> None:
        """Drop the alerts resolved longer than ``resolved_for_ms`` before the stream's time."""
        self._stream_ms = max(self._stream_ms, at_ms)
        horizon = self._stream_ms - self.resolved_for_ms
        while self._resolved and self._resolved[0][0] < horizon:
            changed_ms, alert_id = heapq.heappop(self._resolved)
            record = self._alerts.get(alert_id)
            # An entry is stale when the alert changed since (reopened, or resolved again later).
            if (record is not None and record.alert["status"] == RESOLVED
                    and record.changed_ms == changed_ms):
                del self._alerts[alert_id]
                self.forgotten += 1

    def _keep_suppressed(self, event: dict[str, Any]) -> None:
        if len(self._suppressed) >= self.suppressed_size:
            self._suppressed_ids.discard(self._suppressed.popleft()["event_id"])
        self._suppressed.append(event)
        self._suppressed_ids.add(event["event_id"])

    def _place(self, event: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """A suppressed event's city and district codes: from its scope (``district:`` or
        ``city:``), else (a zone) from where its sensor is, when that is known."""
        kind, _, code = str(event["scope"]).partition(":")
        if kind == "district":
            try:
                city = (self.regions.district(code).city_code if self.regions is not None
                        else f"{code[:4]}00" if len(code) == 6 and code.isdigit() else None)
            except KeyError:
                city = None
            return city, code
        if kind == "city":
            return code, None
        if self.sensor_place is not None and event.get("sensor_id"):
            return self.sensor_place(event["sensor_id"])
        return None, None

    def _to_feed(self, event: dict[str, Any], public: dict[str, Any] | None,
                 previous: dict[str, Any] | None, partition: int, offset: int,
                 place: tuple[str | None, str | None] = (None, None), *,
                 members: Collection[str] = ()) -> FeedEntry:
        self.applied += 1
        where = {} if public is not None else {"city_code": place[0], "district_code": place[1]}
        # Not ``members`` (a restated event's every sensor): up to 512 KB, once a day, for
        # the book's scope checks; the stream's clients have the alert's listed sensors.
        doc = {k: v for k, v in event.items() if k != "members"}
        data = right_sized(orjson.dumps({**doc, "at": format_ts(event["at_ms"]),
                                         "alert": public, **where}))
        offsets = tuple(self._next.get(p, 0) for p in range(max(self._next) + 1))
        entry = FeedEntry(self.applied, partition, offset, offsets, event["event_id"],
                          event["type"], public, previous, event["sensor_id"] or "", data,
                          *place, members)
        if len(self._feed) >= self.feed_size:
            dropped = self._feed.popleft()
            self._evicted[dropped.partition] = max(self._evicted.get(dropped.partition, 0),
                                                   dropped.offset + 1)
        self._feed.append(entry)
        return entry

    # -- queries ----------------------------------------------------------------------------

    def get(self, alert_id: str, principal: Principal | None = None) -> dict[str, Any] | None:
        """The alert, or None when unknown or outside the principal's scope."""
        record = self._alerts.get(alert_id)
        if record is None or not AlertQuery(principal=principal).may_see(record.alert,
                                                                        record.members):
            return None
        return record.alert

    def history(self, alert_id: str) -> tuple[list[dict[str, Any]], bool]:
        """The alert's events, oldest first (by ``seq``), and whether that is all of them: the
        last ``history_size`` sensor updates and the last ``history_size`` other events."""
        record = self._alerts.get(alert_id)
        if record is None:
            return [], True
        kept = list(heapq.merge(record.history, record.updates, key=lambda h: h["seq"]))
        return kept, record.events <= len(kept)

    def query(self, query: AlertQuery, *, limit: int = 100,
              cursor: str | None = None) -> AlertPage:
        """Matching alerts, newest ``last_seen_ms`` first (then ``alert_id``, descending).

        ``cursor`` (a ``next_cursor``) continues after the page it ended: an alert that
        appears meanwhile with an older key still shows on a later page, one with a newer key
        (or updated since) belongs to the first pages.
        """
        found: Iterable[dict[str, Any]] = (
            r.alert for r in self._alerts.values() if query.matches(r.alert, r.members))
        if cursor is not None:
            after = decode_cursor(cursor)
            found = (a for a in found if _order(a) < after)
        page = heapq.nlargest(limit + 1, found, key=_order)
        more = len(page) > limit
        page = page[:limit]
        return AlertPage(page, encode_cursor(*_order(page[-1])) if more and page else None)

    def suppressed(self) -> list[dict[str, Any]]:
        """The recent suppressed events (anomalies in maintenance windows), oldest first."""
        return list(self._suppressed)

    def replay(self, seen: Mapping[int, int]) -> tuple[list[FeedEntry], bool]:
        """The retained entries a client that had ``seen`` (an event id) has not had yet.

        The flag is True when the client must re-list: some of those entries are no longer
        retained, or were never read (``seen`` is below where the feed's read began, see
        :meth:`skip_to`; an id from before this API's lookback), or ``seen`` is
        :meth:`past_end` (then there is nothing to replay: the id names no event of this feed,
        and the client resumes from :attr:`next_offsets`).
        """
        if self.past_end(seen):
            return [], True
        gap = any(seen.get(p, 0) < n for held in (self._evicted, self._read_from)
                  for p, n in held.items())
        return [e for e in self._feed if e.offset >= seen.get(e.partition, 0)], gap


def _order(alert: Mapping[str, Any]) -> tuple[int, str]:
    return alert["last_seen_ms"], alert["alert_id"]


def _add_members(members: set[str], event: Mapping[str, Any]) -> None:
    members.update(event["alert"]["sensors"])
    if event.get("members"):  # a restated event: every sensor of the alert
        members.update(event["members"])
    if isinstance(event["sensor_id"], str) and event["sensor_id"]:
        members.add(event["sensor_id"])


def _history_item(event: Mapping[str, Any]) -> dict[str, Any]:
    alert = event["alert"]
    return {
        "event_id": event["event_id"], "type": event["type"], "actor": event["actor"],
        "at_ms": event["at_ms"], "at": format_ts(event["at_ms"]), "detail": event["detail"],
        "seq": alert["seq"], "status": alert["status"], "severity": alert["severity"],
        "escalation_level": alert["escalation_level"], "assigned_to": alert["assigned_to"],
        "anomaly_id": event["anomaly_id"], "sensor_id": event["sensor_id"],
    }


def _parse(doc: Any) -> dict[str, Any]:
    """The event as plain JSON, checked enough that queries cannot trip on it."""
    try:
        event = AlertEvent.from_dict(doc).to_dict()
    except (ValueError, TypeError, KeyError) as exc:
        raise MalformedEvent(f"not an alert event: {exc}") from None
    if event["type"] not in EVENT_TYPES:
        raise MalformedEvent(f"event {event['event_id']!r}: unknown type {event['type']!r}")
    if not isinstance(event["event_id"], str) or not _is_int(event["at_ms"]):
        raise MalformedEvent(f"event {event['event_id']!r}: 'event_id' must be text and "
                             f"'at_ms' epoch milliseconds; got {event['at_ms']!r}")
    event["detail"] = event["detail"] if isinstance(event["detail"], str) else ""
    alert = event["alert"]
    if alert is None:
        if event["type"] != "suppressed":
            raise MalformedEvent(f"event {event['event_id']!r}: a {event['type']} event "
                                 "must carry its alert")
        return event
    for name in _INTS:
        if not _is_int(alert[name]):
            raise MalformedEvent(f"alert {alert['alert_id']!r}: {name!r} must be an integer; "
                                 f"got {alert[name]!r}")
    for name in _TEXTS:
        if not isinstance(alert[name], str):
            raise MalformedEvent(f"alert {alert['alert_id']!r}: {name!r} must be text; "
                                 f"got {alert[name]!r}")
    for name in _LISTS:
        if not isinstance(alert[name], list) or not all(isinstance(v, str) for v in alert[name]):
            raise MalformedEvent(f"alert {alert['alert_id']!r}: {name!r} must be a list of text")
    for name in ("lon", "lat"):
        if isinstance(alert[name], bool) or not isinstance(alert[name], int | float):
            raise MalformedEvent(f"alert {alert['alert_id']!r}: {name!r} must be a number")
    members = event.get("members")
    if members is not None and not (isinstance(members, list)
                                    and all(isinstance(v, str) for v in members)):
        raise MalformedEvent(f"event {event['event_id']!r}: 'members' must be a list of text")
    if alert["alert_id"] != event["alert_id"]:
        raise MalformedEvent(f"event {event['event_id']!r} names alert {event['alert_id']!r} "
                             f"but carries {alert['alert_id']!r}")
    return event


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
