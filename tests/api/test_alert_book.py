"""The alert book: newest seq wins, history, filters, pagination, scope, feed and replay.

Pure: no Kafka. ``alert_event`` builds events with the real ``Alert``/``AlertEvent`` records,
so a change of their fields shows here; the API tests import it.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from api.alert_book import (
    AlertBook,
    AlertQuery,
    InvalidCursor,
    InvalidEventId,
    MalformedEvent,
    decode_cursor,
    decode_event_id,
    encode_cursor,
    encode_event_id,
    public_alert,
)
from api.auth import Principal
from cityagent.incident_alert import Alert, AlertEvent
from cityagent.regions import default_regions

T0 = 1_795_307_400_000  # 2026-11-22T00:30:00Z
MIN = 60_000
JINAN, QINGDAO = ("370100", "济南市", "370102", "历下区"), ("370200", "青岛市", "370202", "市南区")


def alert_event(alert_id: str = "inc-1", *, seq: int = 1, type: str = "opened",
                actor: str = "system", detail: str = "", where: tuple[str, ...] = JINAN,
                **fields: Any) -> dict[str, Any]:
    """An AlertEvent as the alerting worker publishes it; ``fields`` override the alert."""
    city_code, city_name, district_code, district_name = where
    values: dict[str, Any] = dict(
        alert_id=alert_id, scope=f"district:{district_code}",
        incident_key=f"flood@district:{district_code}", status="open", severity="orange",
        kind="water_level", family="flood", reason="water.guaranteed",
        title_zh=f"{city_name}{district_name} 橙色水位超保证", title_en="orange water level",
        reason_zh="水位超过保证水位", reason_en="water level above the guaranteed level",
        province_code="370000", city_code=city_code, city_name=city_name,
        district_code=district_code, district_name=district_name, zone_ids=(),
        zone_kinds=(), departments=("water", "city_command"),
        departments_zh=("水务局", "市指挥中心"), sensors=(f"{city_code[:3]}-wl-{alert_id}",),
        sensor_count=1, active_sensor_count=1, anomaly_count=1, peak_score=2.5,
        correlated=False, lon=117.02 if where == JINAN else 120.38,
        lat=36.66 if where == JINAN else 36.07, first_seen_ms=T0, last_seen_ms=T0,
        opened_ms=T0 + 500, acknowledged_by=None, acknowledged_at_ms=None, assigned_to=None,
        resolved_by=None, resolved_at_ms=None, escalation_level="district", comments=0, seq=seq)
    values.update(fields)
    values.setdefault("district_codes", (values["district_code"],))
    alert = Alert(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    return AlertEvent(event_id=f"{alert_id}-{seq}", type=type, alert_id=alert_id,
                      scope=alert.scope, actor=actor, at_ms=alert.last_seen_ms, alert=alert,
                      detail=detail).to_dict()


def suppressed_event(n: int, sensor: str = "jn-wl-9") -> dict[str, Any]:
    return AlertEvent(event_id=f"sup-{n}", type="suppressed", alert_id="",
                      scope="district:370102", actor="system", at_ms=T0 + n, alert=None,
                      anomaly_id=f"an-{n}", sensor_id=sensor, detail="pump maintenance").to_dict()


def ids(alerts: list[dict[str, Any]]) -> list[str]:
    return [a["alert_id"] for a in alerts]


# -- applying events -------------------------------------------------------------------------


def test_the_newest_seq_wins_and_older_or_duplicate_events_change_nothing() -> None:
    book = AlertBook()
    assert book.apply(alert_event(seq=1)) is not None
    acked = alert_event(seq=2, type="acknowledged", status="acknowledged", actor="op1",
                        acknowledged_by="op1", acknowledged_at_ms=T0 + MIN)
    assert book.apply(acked) is not None
    assert book.apply(alert_event(seq=1)) is None  # a late older snapshot
    assert book.apply(acked) is None  # a redelivered one
    alert = book.get("inc-1")
    assert alert is not None and alert["status"] == "acknowledged" and alert["seq"] == 2
    assert alert["acknowledged_at"] == "2026-11-22T00:31:00.000Z"
    assert (book.applied, book.ignored, len(book)) == (2, 2, 1)
    history, complete = book.history("inc-1")
    assert [(h["type"], h["seq"], h["actor"]) for h in history] == [
        ("opened", 1, "system"), ("acknowledged", 2, "op1")]
    assert complete and history[1]["status"] == "acknowledged"


def test_history_is_bounded_and_says_so() -> None:
    book = AlertBook(history_size=3)
    for seq in range(1, 6):
        book.apply(alert_event(seq=seq, type="opened" if seq == 1 else "updated"))
    history, complete = book.history("inc-1")
    assert [h["seq"] for h in history] == [1, 3, 4, 5] and not complete  # opened stays
    assert book.history("nope") == ([], True)


def test_a_storm_of_sensor_updates_keeps_the_operators_events_in_the_history() -> None:
    # A rainstorm's flood incident in Jinan (123 sensors) had 326 events when 张三 acknowledged,
    # assigned and commented on it, and hundreds more updates as the gauges receded: with one
    # bound of 200 the opened event went first, then the operators' events, the comment's text
    # with them (the snapshot only counts comments).
    book = AlertBook(history_size=5)
    book.apply(alert_event(seq=1))
    seq = 1
    for type, fields in (("acknowledged", {"status": "acknowledged", "acknowledged_by": "张三@ops"}),
                         ("assigned", {"assigned_to": "槐荫排水一队"}),
                         ("commented", {"comments": 1})):
        for _ in range(4):
            seq += 1
            book.apply(alert_event(seq=seq, type="updated"))
        seq += 1
        book.apply(alert_event(seq=seq, type=type, actor="张三@ops", detail="泵车已到达现场"
                               if type == "commented" else "", **fields))
    for _ in range(300):
        seq += 1
        book.apply(alert_event(seq=seq, type="updated", status="acknowledged"))
    history, complete = book.history("inc-1")
    assert [h["type"] for h in history if h["type"] != "updated"] == [
        "opened", "acknowledged", "assigned", "commented"]
    assert [h["detail"] for h in history if h["type"] == "commented"] == ["泵车已到达现场"]
    updates = [h["seq"] for h in history if h["type"] == "updated"]
    assert updates == list(range(seq - 4, seq + 1)) and not complete
    assert [h["seq"] for h in history] == sorted(h["seq"] for h in history)


@pytest.mark.parametrize("doc, words", [
    ("text", "expected an object"),
    ({"event_id": "e"}, "not an alert event"),
    (alert_event() | {"type": "exploded"}, "unknown type 'exploded'"),
    (alert_event() | {"alert": None}, "must carry its alert"),
    (alert_event() | {"alert_id": "inc-2"}, "names alert 'inc-2' but carries 'inc-1'"),
    (alert_event() | {"at_ms": "noon"}, "'at_ms' epoch milliseconds"),
    ({**alert_event(), "alert": {**alert_event()["alert"], "seq": "7"}}, "'seq' must be an integer"),
    ({**alert_event(), "alert": {**alert_event()["alert"], "city_code": 370100}},
     "'city_code' must be text"),
    ({**alert_event(), "alert": {**alert_event()["alert"], "zone_ids": "z1"}}, "'zone_ids' must be"),
    ({**alert_event(), "alert": {**alert_event()["alert"], "lon": None}}, "'lon' must be a number"),
    ({**alert_event(), "alert": {**alert_event()["alert"], "district_codes": "370102"}},
     "'district_codes' must be a list of text"),
    (alert_event() | {"members": "jn-wl-1"}, "'members' must be a list of text"),
    (alert_event() | {"members": [7]}, "'members' must be a list of text"),
    ({**alert_event(), "alert": {k: v for k, v in alert_event()["alert"].items() if k != "seq"}},
     "'seq' is missing"),
])
def test_malformed_messages_are_refused_with_a_reason_and_still_read(doc: Any, words: str) -> None:
    book = AlertBook()
    with pytest.raises(MalformedEvent) as caught:
        book.apply(doc, partition=2, offset=7)
    assert words in str(caught.value)
    assert book.next_offsets == {2: 8} and len(book) == 0


def test_unknown_extra_fields_are_tolerated() -> None:
    doc = alert_event()
    doc["new_field"] = 1
    doc["alert"]["new_alert_field"] = "x"
    book = AlertBook()
    assert book.apply(doc) is not None and book.get("inc-1") is not None


def test_suppressed_events_are_kept_bounded_and_deduplicated() -> None:
    book = AlertBook(suppressed_size=2)
    for n in (1, 2, 2, 3):
        book.apply(suppressed_event(n))
    assert [e["event_id"] for e in book.suppressed()] == ["sup-2", "sup-3"]
    assert book.ignored == 1 and len(book) == 0
    assert book.apply(suppressed_event(1)) is not None  # forgotten, so new again


def test_public_alert_adds_rfc3339_times() -> None:
    doc = public_alert(alert_event(resolved_at_ms=T0 + 2 * MIN)["alert"])
    assert doc["first_seen_at"] == "2026-11-22T00:30:00.000Z"
    assert doc["opened_at"] == "2026-11-22T00:30:00.500Z"
    assert doc["resolved_at"] == "2026-11-22T00:32:00.000Z" and doc["acknowledged_at"] is None


# -- queries -----------------------------------------------------------------------------------


def sample_book() -> AlertBook:
    book = AlertBook()
    book.apply(alert_event("jn-a", last_seen_ms=T0 + 1 * MIN, severity="red",
                           zone_ids=["jn-flood-old-city"], zone_kinds=["flood_risk"]))
    book.apply(alert_event("jn-b", last_seen_ms=T0 + 2 * MIN, severity="blue", kind="traffic",
                           family="traffic", departments=["transport", "city_command"]))
    book.apply(alert_event("jn-c", last_seen_ms=T0 + 3 * MIN, status="resolved",
                           district_code="370103", district_name="市中区", lon=116.99, lat=36.64))
    book.apply(alert_event("qd-a", last_seen_ms=T0 + 4 * MIN, where=QINGDAO, severity="yellow"))
    book.apply(alert_event("qd-b", last_seen_ms=T0 + 5 * MIN, where=QINGDAO,
                           status="acknowledged", kind="pipe_pressure"))
    return book


@pytest.mark.parametrize("query, expected", [
    (AlertQuery(), ["qd-b", "qd-a", "jn-c", "jn-b", "jn-a"]),
    (AlertQuery(statuses=frozenset({"open"})), ["qd-a", "jn-b", "jn-a"]),
    (AlertQuery(statuses=frozenset({"acknowledged", "resolved"})), ["qd-b", "jn-c"]),
    (AlertQuery(severities=frozenset({"red", "blue"})), ["jn-b", "jn-a"]),
    (AlertQuery(kinds=frozenset({"traffic", "pipe_pressure"})), ["qd-b", "jn-b"]),
    (AlertQuery(city_code="370100"), ["jn-c", "jn-b", "jn-a"]),
    (AlertQuery(district_code="370103"), ["jn-c"]),
    (AlertQuery(zone_id="jn-flood-old-city"), ["jn-a"]),
    (AlertQuery(department="transport"), ["jn-b"]),
    (AlertQuery(department="city_command", city_code="370200"), ["qd-b", "qd-a"]),
    (AlertQuery(bbox=(116.9, 36.6, 117.0, 36.7)), ["jn-c"]),
    (AlertQuery(bbox=(116.9, 36.6, 117.2, 36.8)), ["jn-c", "jn-b", "jn-a"]),
    (AlertQuery(since_ms=T0 + 3 * MIN), ["qd-b", "qd-a", "jn-c"]),
    (AlertQuery(until_ms=T0 + 3 * MIN), ["jn-b", "jn-a"]),
    (AlertQuery(since_ms=T0 + 2 * MIN, until_ms=T0 + 4 * MIN), ["jn-c", "jn-b"]),
])
def test_filters(query: AlertQuery, expected: list[str]) -> None:
    assert ids(sample_book().query(query).alerts) == expected


def test_scoped_principals_see_only_their_cities_or_sensor_prefixes() -> None:
    book = sample_book()
    jinan = Principal("operator", "kjn", frozenset({"370100"}))
    assert ids(book.query(AlertQuery(principal=jinan)).alerts) == ["jn-c", "jn-b", "jn-a"]
    assert ids(book.query(AlertQuery(city_code="370200", principal=jinan)).alerts) == []
    assert book.get("qd-a", jinan) is None and book.get("jn-a", jinan) is not None
    assert book.get("qd-a", Principal("admin", "kadm")) is not None
    by_prefix = Principal("operator", "kpre", prefixes=("370-wl-qd-a",))
    assert ids(book.query(AlertQuery(principal=by_prefix)).alerts) == ["qd-a"]


def test_pages_follow_the_cursor_and_stay_stable_under_inserts() -> None:
    book = AlertBook()
    for n in range(7):  # two alerts share each last_seen: the id breaks the tie
        book.apply(alert_event(f"inc-{n}", last_seen_ms=T0 + (n // 2) * MIN))
    first = book.query(AlertQuery(), limit=3)
    assert ids(first.alerts) == ["inc-6", "inc-5", "inc-4"]
    assert first.next_cursor == encode_cursor(T0 + 2 * MIN, "inc-4")
    # New alerts arrive between pages: a newer one belongs to page one, an older one to later.
    book.apply(alert_event("inc-new", last_seen_ms=T0 + 9 * MIN))
    book.apply(alert_event("inc-0a", last_seen_ms=T0))
    second = book.query(AlertQuery(), limit=3, cursor=first.next_cursor)
    assert ids(second.alerts) == ["inc-3", "inc-2", "inc-1"]
    third = book.query(AlertQuery(), limit=3, cursor=second.next_cursor)
    assert ids(third.alerts) == ["inc-0a", "inc-0"] and third.next_cursor is None
    assert book.query(AlertQuery(), limit=9).next_cursor is None


@pytest.mark.parametrize("cursor", ["", "not-base64!", "WzFd", encode_cursor(1, "a")[:-3]])
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor, match="not one this API gave out"):
        decode_cursor(cursor)


# -- feed, event ids and replay ------------------------------------------------------------------


def test_event_ids_are_next_offsets_per_partition() -> None:
    book = AlertBook()
    book.apply(alert_event("a"), partition=1, offset=4)
    entry = book.apply(alert_event("b"), partition=0, offset=0)
    assert entry is not None and entry.offsets == (1, 5) and entry.position == 2
    assert encode_event_id(dict(enumerate(entry.offsets))) == "1-5"
    assert decode_event_id("1-5") == {0: 1, 1: 5} and encode_event_id({}) == "0"
    for bad in ("", "1--2", "a-1", "-1", "1" * 25):
        with pytest.raises(InvalidEventId):
            decode_event_id(bad)


def test_an_event_id_of_one_replica_resumes_on_another() -> None:
    """Replicas read the partitions interleaved differently; an id means the same in both."""
    p0 = [alert_event(f"z{n}", last_seen_ms=T0 + n) for n in range(4)]
    p1 = [alert_event(f"y{n}", last_seen_ms=T0 + n) for n in range(4)]
    replica_a, replica_b = AlertBook(), AlertBook()
    for n in range(4):  # a: p0 then p1 alternately; b: all of p1 first
        replica_a.apply(p0[n], partition=0, offset=n)
        replica_a.apply(p1[n], partition=1, offset=n)
    for n in range(4):
        replica_b.apply(p1[n], partition=1, offset=n)
    for n in range(4):
        replica_b.apply(p0[n], partition=0, offset=n)
    # A client had the first three events of replica a: z0, y0, z1.
    had = replica_a.replay({})[0][2].offsets
    rest_a, gap_a = replica_a.replay(dict(enumerate(had)))
    rest_b, gap_b = replica_b.replay(dict(enumerate(had)))
    assert not gap_a and not gap_b
    assert sorted(e.event_id for e in rest_a) == sorted(e.event_id for e in rest_b) == [
        "y1-1", "y2-1", "y3-1", "z2-1", "z3-1"]


def test_replay_reports_a_gap_once_events_were_dropped() -> None:
    book = AlertBook(feed_size=3)
    for n in range(5):
        book.apply(alert_event(f"inc-{n}"))
    entries, gap = book.replay({0: 1})
    assert gap and [e.event_id for e in entries] == ["inc-2-1", "inc-3-1", "inc-4-1"]
    entries, gap = book.replay({0: 4})
    assert not gap and [e.event_id for e in entries] == ["inc-4-1"]


def test_an_id_from_before_where_the_feed_began_reading_asks_for_a_reset() -> None:
    """A fresh API reads the last 7 days: on partition 0 from offset 3, on partition 1 (only
    older events) from its end, 2. A client that had less missed changes this API never read.
    Before 2026-11-24 it resumed without a word."""
    book = AlertBook()
    book.skip_to(0, 3)
    book.skip_to(1, 2)
    book.note_topic_ends({0: 5, 1: 2})
    for n in (3, 4):
        book.apply(alert_event(f"i{n}"), partition=0, offset=n)
    for seen in ({0: 1, 1: 2}, {0: 3, 1: 0}, {0: 4}, {}):
        entries, gap = book.replay(seen)
        assert gap, seen
    entries, gap = book.replay({0: 3, 1: 2})
    assert not gap and [e.event_id for e in entries] == ["i3-1", "i4-1"]
    entries, gap = book.replay({0: 4, 1: 2})
    assert not gap and [e.event_id for e in entries] == ["i4-1"]
    # The ids this book gives count what it skipped as had, so they resume here without a reset.
    assert book.next_offsets == {0: 5, 1: 2} and entries[0].offsets == (5, 2)
    assert book.replay(dict(enumerate(entries[0].offsets))) == ([], False)
    book.skip_to(1, 1)  # the start never moves back
    assert book.replay({0: 3, 1: 1})[1]


def test_a_city_wide_alert_is_found_by_every_district_of_its_sensors() -> None:
    """The district filter (list and stream) matched the opener's district only: a flood over
    槐荫区, 历下区 and 天桥区 opened in 槐荫区 was not found with ?district=370102 (历下区)."""
    book = AlertBook()
    entry = book.apply(alert_event("jn-flood", district_code="370104", district_name="槐荫区",
                                   district_codes=["370104", "370102", "370105"]))
    book.apply(alert_event("jn-one", district_code="370103", district_name="市中区"))
    for code in ("370104", "370102", "370105"):
        assert ids(book.query(AlertQuery(district_code=code)).alerts) == ["jn-flood"]
        assert entry is not None and AlertQuery(district_code=code).matches_entry(entry)
    assert ids(book.query(AlertQuery(district_code="370103")).alerts) == ["jn-one"]
    alert = book.get("jn-flood")
    assert alert is not None and alert["district_codes"] == ["370104", "370102", "370105"]
    assert alert["district_code"] == "370104"  # the opener's, as before


def test_an_event_written_before_district_codes_is_read_with_its_one_district() -> None:
    """What a starting API reads of the week before the field existed."""
    old = alert_event("jn-old", district_code="370103", district_name="市中区")
    del old["alert"]["district_codes"]
    book = AlertBook()
    assert book.apply(old) is not None
    alert = book.get("jn-old")
    assert alert is not None and alert["district_codes"] == ["370103"]
    assert ids(book.query(AlertQuery(district_code="370103")).alerts) == ["jn-old"]
    assert orjson.loads(book.replay({})[0][0].data)["alert"]["district_codes"] == ["370103"]


def test_a_stream_filter_also_sees_an_alert_leave_it() -> None:
    book = AlertBook()
    book.apply(alert_event(seq=1))
    resolved = book.apply(alert_event(seq=2, type="resolved", status="resolved"))
    assert resolved is not None and resolved.previous is not None
    assert AlertQuery(statuses=frozenset({"open"})).matches_entry(resolved)
    assert not AlertQuery(statuses=frozenset({"acknowledged"})).matches_entry(resolved)
    assert not AlertQuery(city_code="370200").matches_entry(resolved)


def test_suppressed_events_reach_streams_that_may_see_their_sensor_or_city() -> None:
    """A key scoped to cities, and a city= stream, got no suppressed event, not even of its
    own city, while an unscoped, unfiltered stream got them all."""
    entry = AlertBook().apply(suppressed_event(1, sensor="jn-wl-9"))  # scope district:370102
    assert entry is not None and entry.alert is None
    assert (entry.city_code, entry.district_code) == ("370100", "370102")
    data = orjson.loads(entry.data)
    assert (data["city_code"], data["district_code"]) == ("370100", "370102")
    assert AlertQuery().matches_entry(entry)
    assert not AlertQuery(severities=frozenset({"red"})).matches_entry(entry)
    assert AlertQuery(principal=Principal("operator", "k", prefixes=("jn-",))).matches_entry(entry)
    jinan = Principal("operator", "k", frozenset({"370100"}))
    assert AlertQuery(principal=jinan).matches_entry(entry)
    assert AlertQuery(principal=jinan, city_code="370100",
                      district_code="370102").matches_entry(entry)
    assert AlertQuery(city_code="370100").matches_entry(entry)
    assert not AlertQuery(city_code="370200").matches_entry(entry)
    assert not AlertQuery(district_code="370103").matches_entry(entry)
    assert not AlertQuery(principal=Principal("operator", "k", frozenset({"370200"}))
                          ).matches_entry(entry)
    assert not AlertQuery(principal=jinan, statuses=frozenset({"open"})).matches_entry(entry)


def test_a_suppressed_event_is_placed_by_its_scope_or_where_its_sensor_is() -> None:
    places = {"qd-wl-1": ("370200", "370202")}
    book = AlertBook(regions=default_regions(), sensor_place=lambda s: places.get(s, (None, None)))
    for n, (scope, sensor, place) in enumerate((
            ("district:370202", "x-1", ("370200", "370202")),
            ("city:370300", "x-2", ("370300", None)),
            ("zone:qd-flood-1", "qd-wl-1", ("370200", "370202")),   # where its sensor is
            ("zone:qd-flood-1", "qd-unknown", (None, None)))):       # not known: unscoped only
        doc = {**suppressed_event(n, sensor=sensor), "scope": scope}
        entry = book.apply(doc)
        assert entry is not None and (entry.city_code, entry.district_code) == place, scope
        qingdao = AlertQuery(principal=Principal("viewer", "k", frozenset({"370200"})))
        assert qingdao.matches_entry(entry) == (place[0] == "370200"), scope
        assert AlertQuery().matches_entry(entry)


def test_feed_positions_increase_and_data_is_the_public_event() -> None:
    book = AlertBook()
    positions = [book.apply(alert_event(f"i{n}")).position  # type: ignore[union-attr]
                 for n in range(3)]
    assert positions == [1, 2, 3]
    data = orjson.loads(book.replay({})[0][-1].data)
    assert data["alert"]["opened_at"] == "2026-11-22T00:30:00.500Z"
    assert data["at"] == "2026-11-22T00:30:00.000Z" and data["type"] == "opened"


def test_an_id_past_the_end_of_the_feed_asks_for_a_reset() -> None:
    """A recreated topic (a broker that kept nothing restarted) starts its offsets at 0 again."""
    book = AlertBook()
    for n in range(3):
        book.apply(alert_event(f"i{n}"), partition=0, offset=n)
    book.note_topic_ends({0: 3, 1: 0})  # the topic: two partitions, the second empty
    for seen in ({0: 99_999_999}, {0: 4}, {0: 1, 1: 1}, {0: 1, 1: 0, 2: 5},
                 dict.fromkeys(range(8), 99_999_999)):
        assert book.past_end(seen), seen
        assert book.replay(seen) == ([], True), seen
    for seen in ({0: 3}, {0: 3, 1: 0}, {0: 1, 1: 0, 2: 0}, {}):
        assert not book.past_end(seen), seen
    entries, gap = book.replay({0: 1})
    assert not gap and [e.event_id for e in entries] == ["i1-1", "i2-1"]


def test_an_id_the_feed_has_yet_to_read_is_not_past_the_end() -> None:
    """A replica still reading the topic: the id is within what the topic holds, so no reset."""
    book = AlertBook()
    book.note_topic_ends({0: 10})
    book.apply(alert_event("i0"), partition=0, offset=0)
    assert not book.past_end({0: 10}) and book.replay({0: 10}) == ([], False)
    assert book.past_end({0: 11})
    book.note_topic_ends({0: 0})  # the topic was recreated: what the book read still counts
    assert not book.past_end({0: 1}) and book.past_end({0: 2})


def test_a_resolved_alert_is_forgotten_once_the_topics_retention_has_passed() -> None:
    """As an API started afresh would not know it (its events are gone from the topic)."""
    book = AlertBook(resolved_for_ms=60 * MIN)
    book.apply(alert_event("done", seq=2, type="resolved", status="resolved",
                           resolved_by="op", resolved_at_ms=T0, last_seen_ms=T0))
    book.apply(alert_event("open", last_seen_ms=T0))
    book.apply(alert_event("late", seq=2, type="resolved", status="resolved",
                           last_seen_ms=T0 + 30 * MIN))
    book.apply(alert_event("late", seq=3, type="commented", status="resolved",  # changed since
                           last_seen_ms=T0 + 59 * MIN, comments=1))
    book.apply(alert_event("tick", last_seen_ms=T0 + 60 * MIN))  # the retention, not past it
    assert {a["alert_id"] for a in book.query(AlertQuery()).alerts} == {
        "done", "open", "late", "tick"}
    book.apply(alert_event("tock", last_seen_ms=T0 + 60 * MIN + 1))
    assert {a["alert_id"] for a in book.query(AlertQuery()).alerts} == {"open", "late", "tick",
                                                                       "tock"}
    assert book.get("done") is None and book.forgotten == 1
    book.apply(alert_event("tock", seq=2, last_seen_ms=T0 + 120 * MIN))
    assert book.get("late") is None and book.get("open") is not None  # open: never forgotten
    assert book.forgotten == 2


@pytest.mark.parametrize("restate", [True, False])
def test_an_api_started_after_a_week_still_shows_an_alert_open_that_long(restate: bool) -> None:
    """A fresh API knows only the events the alerts topic still holds (RETENTION_H). The
    engine restates a quiet open alert daily, so there is always one; without that, an alert
    open nine days with no change was unknown to an API started then."""
    from dataclasses import replace

    from cityagent.detection import Anomaly
    from cityagent.incidents import AlertingConfig, IncidentEngine, ScopeState
    from cityagent.routing import default_router
    from cityagent.settings import RETENTION_H

    config = AlertingConfig.load()
    if not restate:
        config = replace(config, restate_after_s=1e15)
    engine, state, day = IncidentEngine(config, default_router()), ScopeState(), 1440 * MIN
    gauge = Anomaly(
        anomaly_id="a1", phase="start", sensor_id="jn-wl-000001", kind="water_level",
        detector="level", reason="water.warning", score=0.7, peak_score=0.7, severity="yellow",
        field="level_m", observed=4.2, expected=4.0, window_start_ms=T0 - MIN,
        window_end_ms=T0, since_ms=T0, ts_ms=T0, detected_at_ms=T0, lon=117.08, lat=36.655,
        district_code=370102, city_code=370100)
    events = engine.on_anomaly(state, gauge, None, T0)
    for n in range(1, 10):
        events += engine.tick(state, T0 + n * day)
    now = T0 + 9 * day
    kept = [e for e in events if e.at_ms > now - RETENTION_H * 60 * MIN]
    fresh = AlertBook()
    for offset, event in enumerate(kept):
        fresh.apply(event.to_dict(), partition=0, offset=offset)
    shown = fresh.get(events[0].alert_id)
    if restate:
        assert [e.type for e in kept] == ["restated"] * 7
        assert shown is not None and shown["status"] == "open"
        assert shown["title_zh"] == events[0].alert.title_zh and shown["seq"] == 10
    else:
        assert kept == [] and shown is None


def test_a_prefix_scoped_key_sees_an_alert_through_any_of_its_sensors_not_only_the_listed() -> None:
    """An alert lists its first 20 sensors (``max_sensors_listed``); a key scoped by sensor-id
    prefix was judged on that list only, so a 50-gauge flood whose 30th gauge was the key's
    was invisible to it: not listed, 404, not counted, not streamed. The book now keeps every
    sensor its events named. The alert is made by the incident engine."""
    from cityagent.detection import Anomaly, anomaly_id
    from cityagent.incidents import AlertingConfig, IncidentEngine, ScopeState
    from cityagent.routing import default_router

    engine = IncidentEngine(AlertingConfig.load(), default_router())
    assert engine.config.max_sensors_listed == 20
    state, events = ScopeState(), []
    sensors = [f"jn-wl-{i:06d}" for i in range(50)]
    sensors[29] = "lx-pump-000030"  # the water company's own gauge, the 30th to join
    for i, sensor in enumerate(sensors):
        ts = T0 + i * 10_000
        anomaly = Anomaly(
            anomaly_id=anomaly_id(sensor, "level", ts), phase="start", sensor_id=sensor,
            kind="water_level", detector="level", reason="water.warning", score=0.8,
            peak_score=1.0, severity="yellow", field="level_m", observed=4.3, expected=4.0,
            window_start_ms=ts - MIN, window_end_ms=ts, since_ms=ts, ts_ms=ts,
            detected_at_ms=ts, lon=117.02 + i * 1e-4, lat=36.66, district_code=370102,
            city_code=370100)
        events += engine.on_anomaly(state, anomaly, None, ts)
    assert len({e.alert_id for e in events}) == 1
    last = events[-1].alert
    assert last.sensor_count == 50 and len(last.sensors) == 20
    assert "lx-pump-000030" not in last.sensors

    book = AlertBook()
    entries = [book.apply(e.to_dict()) for e in events]
    water_co = Principal("operator", "water-co", prefixes=("lx-pump-",))
    other = Principal("operator", "other-co", prefixes=("wf-",))
    alert_id = last.alert_id
    assert book.get(alert_id, water_co) is not None
    assert ids(book.query(AlertQuery(principal=water_co)).alerts) == [alert_id]
    assert entries[-1] is not None and AlertQuery(principal=water_co).matches_entry(entries[-1])
    # ... and a key of other prefixes (and not of 济南) still does not.
    assert book.get(alert_id, other) is None
    assert book.query(AlertQuery(principal=other)).alerts == []
    assert not AlertQuery(principal=other).matches_entry(entries[-1])


def _flood_of_50(engine, state, ts0: int) -> list[AlertEvent]:
    """A 50-gauge flood whose 30th gauge (``lx-pump-000030``) is the water company's; every
    gauge stays over the line."""
    from cityagent.detection import Anomaly, anomaly_id

    events: list[AlertEvent] = []
    for i in range(50):
        sensor = "lx-pump-000030" if i == 29 else f"jn-wl-{i:06d}"
        ts = ts0 + i * 10_000
        events += engine.on_anomaly(state, Anomaly(
            anomaly_id=anomaly_id(sensor, "level", ts), phase="start", sensor_id=sensor,
            kind="water_level", detector="level", reason="water.warning", score=0.8,
            peak_score=1.0, severity="yellow", field="level_m", observed=4.3, expected=4.0,
            window_start_ms=ts - MIN, window_end_ms=ts, since_ms=ts, ts_ms=ts,
            detected_at_ms=ts, lon=117.02 + i * 1e-4, lat=36.66, district_code=370102,
            city_code=370100), None, ts)
    return events


def _gauge_again(engine, state, ts: int) -> list[AlertEvent]:
    """Gauge 0 (a listed one) ends its episode and starts another: two ``updated`` events."""
    from cityagent.detection import Anomaly, anomaly_id

    events: list[AlertEvent] = []
    for phase, since in (("end", ts - 6 * 60 * MIN), ("start", ts)):
        events += engine.on_anomaly(state, Anomaly(
            anomaly_id=anomaly_id("jn-wl-000000", "level", since), phase=phase,
            sensor_id="jn-wl-000000", kind="water_level", detector="level",
            reason="water.warning", score=0.8, peak_score=1.0, severity="yellow",
            field="level_m", observed=4.3, expected=4.0, window_start_ms=ts - MIN,
            window_end_ms=ts, since_ms=since, ts_ms=ts, detected_at_ms=ts, lon=117.02,
            lat=36.66, district_code=370102, city_code=370100), None, ts)
    return events


@pytest.mark.parametrize("busy", [False, True])
def test_a_prefix_scoped_key_sees_an_alert_of_its_unlisted_sensor_after_an_api_restart(
        busy: bool) -> None:
    """An API started nine days into a 50-gauge flood reads the last 7 days of the alerts
    topic. The water company's gauge, the 30th (not among the 20 listed), had its only event
    on day 0: before 2026-11-25 that API did not know it, and the company's key (``lx-pump-``)
    did not see the flood, whether the alert had been quiet (``restated`` daily, 20 sensors
    listed) or busy (another gauge's updates every 6 hours, never restated). A ``restated``
    event now carries every sensor (``members``), and an alert with more sensors than it lists
    is restated daily even when busy."""
    from cityagent.incidents import AlertingConfig, IncidentEngine, ScopeState
    from cityagent.routing import default_router
    from cityagent.settings import RETENTION_H

    engine, state = IncidentEngine(AlertingConfig.load(), default_router()), ScopeState()
    events = _flood_of_50(engine, state, T0)
    for hour in range(6, 9 * 24 + 1, 6):
        if busy:
            events += _gauge_again(engine, state, T0 + hour * 60 * MIN)
        events += engine.tick(state, T0 + hour * 60 * MIN)
    now = T0 + 9 * 24 * 60 * MIN
    kept = [e for e in events if e.at_ms > now - RETENTION_H * 60 * MIN]
    assert kept and "lx-pump-000030" not in {e.sensor_id for e in kept}
    fresh = AlertBook()
    for offset, event in enumerate(kept):
        fresh.apply(event.to_dict(), partition=0, offset=offset)
    alert_id = events[0].alert_id
    water_co = Principal("operator", "water-co", prefixes=("lx-pump-",))
    assert fresh.get(alert_id, water_co) is not None
    assert ids(fresh.query(AlertQuery(principal=water_co)).alerts) == [alert_id]
    assert fresh.get(alert_id, Principal("operator", "other-co", prefixes=("wf-",))) is None


def test_a_restated_events_sensors_count_for_scope_but_are_not_streamed() -> None:
    """``members`` is for the book's scope checks; the stream sends the event without it
    (a restatement of a 30,000-sensor flood holds ~500 KB of them, daily)."""
    book = AlertBook()
    book.apply(alert_event())
    restated = alert_event(seq=2, type="restated") | {"members": ["370-wl-inc-1", "lx-9"]}
    entry = book.apply(restated)
    assert entry is not None and "members" not in orjson.loads(entry.data)
    assert orjson.loads(entry.data)["type"] == "restated"
    assert book.get("inc-1", Principal("viewer", "k", prefixes=("lx-",))) is not None
