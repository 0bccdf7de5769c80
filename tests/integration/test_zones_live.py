"""Zones change without a restart: an admin PUTs a zone, the running worker alerts with it.

The API validates the zone and writes a versioned record on the compacted zones topic; the
worker and the API both read that topic whole. An anomaly inside the new zone, published after
the change, must come back as an alert that names the zone — with the worker never restarted.
"""

from __future__ import annotations

import dataclasses
import time

import httpx
import orjson
import pytest
from kafka import KafkaProducer

from cityagent.detection import Anomaly, anomaly_id
from control.topics import ensure_topics, pipeline_topics
from tests.helpers import (
    AUTH,
    OPERATOR_KEY,
    consume_all,
    consume_records,
    free_port,
    start_api,
    start_worker,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A small school zone in 市南区, Qingdao (not one of the demo zones).
SCHOOL = {"type": "Feature",
          "properties": {"name": "测试学校", "name_en": "Test school", "zone_kind": "school",
                         "department": "education", "severity_adjust": 1},
          "geometry": {"type": "Polygon", "coordinates": [[[120.380, 36.060], [120.384, 36.060],
                                                           [120.384, 36.063], [120.380, 36.063],
                                                           [120.380, 36.060]]]}}


def anomaly(sensor: str, since_ms: int, **changes: object) -> dict:
    """A water-level anomaly at the test school (``changes``: other Anomaly fields)."""
    return dataclasses.replace(Anomaly(
        anomaly_id=anomaly_id(sensor, "level", since_ms), phase="start", sensor_id=sensor,
        kind="water_level", detector="level", reason="water.warning", score=0.7,
        peak_score=0.7, severity="yellow", field="level_m", observed=4.2, expected=4.0,
        window_start_ms=since_ms, window_end_ms=since_ms + 2000, since_ms=since_ms,
        ts_ms=since_ms + 2000, detected_at_ms=since_ms + 2500, lon=120.382, lat=36.061,
        district_code=370202, city_code=370200), **changes).to_dict()


def send_anomalies(settings, *anomalies: dict) -> None:
    """Publish anomalies as the detection agent does (key: their district), acknowledged."""
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    for value in anomalies:
        producer.send(settings.anomalies_topic, key=b"370202", value=orjson.dumps(value))
    producer.flush()
    producer.close()


def names(event: dict, sensor: str) -> bool:
    """The alert event is about ``sensor``: its alert has it among its sensors."""
    return bool(event["alert"]) and sensor in event["alert"]["sensors"]


def test_a_zone_put_over_http_reaches_the_running_worker(settings_factory, tmp_path) -> None:
    settings = settings_factory(api_port=free_port())
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    worker = start_worker(settings, tmp_path / "worker.log")
    api = start_api(settings, tmp_path / "api.log")
    url = f"http://127.0.0.1:{settings.api_port}/v1/zones"
    try:
        before = httpx.get(url, headers=AUTH).json()
        assert "qd-test-school" not in {f["properties"]["zone_id"] for f in before["features"]}
        # Records no zone client writes: skipped by every process that follows the topic
        # (a key that is not UTF-8 stopped their followers for good before 2026-11-24).
        junk = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        junk.send(settings.zones_topic, key=b"\xff\xfe", value=b"{}")
        junk.send(settings.zones_topic, key=b"qd-junk", value=b"not json")
        junk.flush()
        junk.close()
        # Invalid zones are refused with the reason, and nothing is written.
        swapped = orjson.loads(orjson.dumps(SCHOOL))
        swapped["geometry"]["coordinates"] = [[[y, x] for x, y in ring]
                                              for ring in SCHOOL["geometry"]["coordinates"]]
        bad = httpx.put(f"{url}/qd-bad", json=swapped, headers=AUTH)
        assert bad.status_code == 422 and "lon" in bad.text, bad.text
        operator = {"authorization": f"Bearer {OPERATOR_KEY}"}
        assert httpx.put(f"{url}/qd-test-school", json=SCHOOL, headers=operator).status_code == 403

        put = httpx.put(f"{url}/qd-test-school", json=SCHOOL, headers=AUTH)
        assert put.status_code == 202, put.text
        version = put.json()["version"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = httpx.get(url, headers=AUTH).json()
            if "qd-test-school" in {f["properties"]["zone_id"] for f in now["features"]}:
                break
            time.sleep(0.3)
        assert now["version"] == version and now["content_hash"] != before["content_hash"]

        # The worker (started before the change) places an anomaly inside the new zone in it.
        worker.wait_for_log(f"zones: version {version},")  # the worker's zone feed has it
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        since = int(time.time() * 1000) - 60_000
        producer.send(settings.anomalies_topic, key=b"370202",
                      value=orjson.dumps(anomaly("qd-wl-school-1", since)))
        producer.flush()
        producer.close()
        events = consume_all(settings.bootstrap, settings.alerts_topic, timeout_s=60,
                             until=lambda v: any(e["type"] == "opened" for e in v), watch=(worker,))
        opened = next(e for e in events if e["type"] == "opened")["alert"]
        assert "qd-test-school" in opened["zone_ids"], (opened, worker.log_tail())
        assert "school" in opened["zone_kinds"] and "education" in opened["departments"]
        assert opened["severity"] == "orange"  # yellow + the school's adjustment

        # Deleting it is versioned too.
        gone = httpx.delete(f"{url}/qd-test-school", headers=AUTH)
        assert gone.status_code == 202 and gone.json()["version"] > version
        assert httpx.delete(f"{url}/no-such-zone", headers=AUTH).status_code == 404
    finally:
        api.stop()
        worker.stop()


def test_a_maintenance_window_suppresses_and_records(settings_factory, tmp_path) -> None:
    settings = settings_factory(api_port=free_port())
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    worker = start_worker(settings, tmp_path / "worker.log")
    api = start_api(settings, tmp_path / "api.log")
    url = f"http://127.0.0.1:{settings.api_port}/v1/maintenance"
    now = int(time.time() * 1000)
    try:
        bad = httpx.put(f"{url}/w1", json={"sensor": "qd-wl-*", "start_ms": now, "end_ms": 5},
                        headers=AUTH)
        assert bad.status_code == 422 and "start_ms < end_ms" in bad.text
        for body, words in (
            ({"sensor": "济南*", "start_ms": now, "end_ms": now + 1}, "must be a sensor id"),
            ({"sensor": "a", "start_ms": 0, "end_ms": 1}, "must lie between now and 2100"),
            ({"sensor": "a", "start_ms": now, "end_ms": now + 60_000, "foo": 1}, "unknown field"),
        ):
            refused = httpx.put(f"{url}/w0", json=body, headers=AUTH)
            assert refused.status_code == 422 and words in refused.text, refused.text
        window = {"sensor": "qd-wl-maint-*", "start_ms": now - 3_600_000,
                  "end_ms": now + 3_600_000, "note": "检修 gauge cleaning"}
        assert httpx.put(f"{url}/w1", json=window, headers=AUTH).status_code == 202
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "w1" not in httpx.get(url, headers=AUTH).json()["windows"]:
            time.sleep(0.3)
        worker.wait_for_log("maintenance: 1 windows")  # the worker's maintenance feed has it
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        for sensor in ("qd-wl-maint-1", "qd-wl-other-1"):
            producer.send(settings.anomalies_topic, key=b"370202",
                          value=orjson.dumps(anomaly(sensor, now - 60_000)))
        producer.flush()
        producer.close()
        events = consume_all(settings.bootstrap, settings.alerts_topic, timeout_s=60,
                             until=lambda v: {e["type"] for e in v} >= {"suppressed", "opened"}, watch=(worker,))
    finally:
        api.stop()
        worker.stop()
    suppressed = [e for e in events if e["type"] == "suppressed"]
    assert [e["sensor_id"] for e in suppressed] == ["qd-wl-maint-1"], worker.log_tail()
    assert suppressed[0]["alert"] is None and suppressed[0]["detail"] == "检修 gauge cleaning"
    opened = [e["alert"] for e in events if e["type"] == "opened"]
    assert [a["sensors"] for a in opened] == [["qd-wl-other-1"]]


def test_routing_changes_live_and_duplicates_make_one_alert(settings_factory, tmp_path) -> None:
    import threading
    import tomllib
    from importlib import resources

    settings = settings_factory(api_port=free_port())
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    worker = start_worker(settings, tmp_path / "worker.log")
    api = start_api(settings, tmp_path / "api.log")
    url = f"http://127.0.0.1:{settings.api_port}/v1/routing"
    doc = tomllib.loads(resources.files("cityagent.data").joinpath("routing.toml")
                        .read_text("utf-8"))
    try:
        assert httpx.get(url, headers=AUTH).json()["version"] == 0
        broken = {**doc, "rule": [*doc["rule"], {"kind": "water_level", "departments": ["nobody"]}]}
        bad = httpx.put(url, json=broken, headers=AUTH)
        assert bad.status_code == 422 and "nobody" in bad.text, bad.text
        # Emergency management on every water-level alert, from yellow (was orange).
        doc["rule"].append({"kind": "water_level", "zone_kind": "*", "min_severity": "yellow",
                            "departments": ["emergency"]})
        put = httpx.put(url, json=doc, headers=AUTH)
        assert put.status_code == 202 and put.json()["version"] == 1, put.text
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and httpx.get(url, headers=AUTH).json()["version"] != 1:
            time.sleep(0.3)
        worker.wait_for_log("routing: version 1,")  # the worker's routing feed has it

        # The same anomaly, five times, from two producers at once (a retrying publisher).
        value = orjson.dumps(anomaly("qd-wl-dup-1", int(time.time() * 1000) - 60_000))

        def send() -> None:
            producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
            for _ in range(5):
                producer.send(settings.anomalies_topic, key=b"370202", value=value)
            producer.flush()
            producer.close()

        threads = [threading.Thread(target=send) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Then another gauge of the city, on the same partition after every duplicate: the
        # worker applies a scope's anomalies in order and publishes its events in order, so
        # once this one's event is on the alerts topic, every duplicate has been through.
        send_anomalies(settings, anomaly("qd-wl-dup-2", int(time.time() * 1000) - 50_000))
        events = consume_all(settings.bootstrap, settings.alerts_topic, timeout_s=60,
                             until=lambda v: any(names(e, "qd-wl-dup-2") for e in v),
                             watch=(worker,))
    finally:
        api.stop()
        worker.stop()
    assert [e["type"] for e in events] == ["opened", "updated"], (events, worker.log_tail())
    assert events[0]["alert"]["sensors"] == ["qd-wl-dup-1"]
    assert "emergency" in events[0]["alert"]["departments"]
    assert events[0]["alert"]["severity"] == "yellow"




# A key pipe corridor east of the school: pipe anomalies inside it form their incidents in the
# zone's own scope (alerting.toml, [scope.pipe]), which the worker's ``scope`` agent decides.
CORRIDOR = {"type": "Feature",
            "properties": {"zone_id": "qd-test-corridor", "name": "测试干管", "name_en":
                           "Test main", "zone_kind": "key_pipe_corridor", "department": "water",
                           "severity_adjust": 1},
            "geometry": {"type": "Polygon", "coordinates": [[[120.390, 36.060], [120.394, 36.060],
                                                             [120.394, 36.063], [120.390, 36.063],
                                                             [120.390, 36.060]]]}}


def test_a_worker_judges_its_first_anomalies_with_what_was_set_while_none_ran(
        settings_factory, tmp_path) -> None:
    """A maintenance window, a zone and routing rules written while no worker ran are in force
    for the anomalies already waiting when a worker starts: it reads the three topics up to
    where they ended at its start before it consumes anything (streams/feeds.py).

    Deterministic on purpose: the anomalies are sent before the worker starts, and the zone
    has a history of 5,000 edits before its last one (the embedded broker never compacts), so
    the worker needs a second or more to read the zones topic. Before 2026-11-24 the ``scope``
    agent placed the pipe anomaly within milliseconds of the worker being ready, before the
    zones topic was read at all: in its city's scope, not the corridor's."""
    import tomllib
    from importlib import resources

    from cityagent.regions import default_regions
    from cityagent.routing import Router
    from cityagent.zones import demo_zones, parse_zone, zone_record

    settings = settings_factory()
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    now = int(time.time() * 1000)
    regions, router = default_regions(), Router.load()
    corridor = parse_zone(CORRIDOR, regions, departments=router.department_codes)
    version = demo_zones(regions).version
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=100)

    def send(topic: str, key: str, value: object) -> None:
        producer.send(topic, key=key.encode(), value=orjson.dumps(value))

    for _ in range(5_000):  # its history: a park, once
        version += 1
        send(settings.zones_topic, *zone_record(dataclasses.replace(
            corridor, zone_kind="park", department="transport", severity_adjust=0,
            version=version)))
    send(settings.zones_topic, *zone_record(dataclasses.replace(corridor, version=version + 1)))
    doc = tomllib.loads(resources.files("cityagent.data").joinpath("routing.toml")
                        .read_text("utf-8"))
    doc["rule"].append({"kind": "water_level", "zone_kind": "*", "min_severity": "yellow",
                        "departments": ["emergency"]})
    send(settings.routing_topic, "rules", {"version": 1, "routing": doc})
    # Windows in one producer batch, the one that matters last: the embedded broker reports
    # the topic's end as the last batch's first offset + 1, short of it.
    for n in range(9):
        send(settings.maintenance_topic, f"w-other-{n}", {
            "sensor": f"qd-wl-elsewhere-{n}", "start_ms": now - 3_600_000,
            "end_ms": now + 3_600_000, "note": ""})
    send(settings.maintenance_topic, "w1", {
        "sensor": "qd-wl-maint-*", "start_ms": now - 3_600_000, "end_ms": now + 3_600_000,
        "note": "检修 gauge cleaning"})
    producer.flush()
    pipe = {"kind": "pipe_pressure", "reason": "pressure.low", "field": "pressure_mpa",
            "observed": 0.12, "expected": 0.3, "lon": 120.392}
    for value in (anomaly("qd-wl-maint-1", now - 60_000), anomaly("qd-wl-open-1", now - 60_000),
                  anomaly("qd-pp-corridor-1", now - 60_000, **pipe)):
        producer.send(settings.anomalies_topic, key=b"370202", value=orjson.dumps(value))
    producer.flush()
    producer.close()

    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        consume_all(settings.bootstrap, settings.alerts_topic, timeout_s=60, watch=(worker,),
                    until=lambda v: len(v) >= 3)
        # A second pipe sensor of the corridor, once the worker has read every zone: it joins
        # the incident the first one opened (a worker that placed the first one in its city's
        # scope opened a second incident for the same corridor here).
        worker.wait_for_log(f"zones: version {version + 1},")
        late = orjson.dumps(anomaly("qd-pp-corridor-2", now - 30_000, **{**pipe, "lon": 120.393}))
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        producer.send(settings.anomalies_topic, key=b"370202", value=late)
        producer.flush()
        producer.close()
        consume_records(settings.bootstrap, settings.alerts_topic, timeout_s=60,
                        watch=(worker,), until=lambda rs: len(rs) >= 4)
        # Then one more gauge of each incident, on the same partition after all the rest:
        # the worker applies a scope's anomalies in order and publishes its events in order,
        # so once both have their event, an event the worker should not have sent for what
        # came before is on the topic too.
        markers = {"qd-wl-open-2": anomaly("qd-wl-open-2", now - 20_000),
                   "qd-pp-corridor-3": anomaly("qd-pp-corridor-3", now - 20_000,
                                               **{**pipe, "lon": 120.391})}
        send_anomalies(settings, *markers.values())
        records = consume_records(
            settings.bootstrap, settings.alerts_topic, timeout_s=60, watch=(worker,),
            until=lambda rs: all(any(names(orjson.loads(r.value), m) for r in rs)
                                 for m in markers))
    finally:
        worker.stop()
    marked = [r for r in records if any(names(orjson.loads(r.value), m) for m in markers)]
    assert [orjson.loads(r.value)["type"] for r in marked] == ["updated", "updated"], marked
    records = [r for r in records if r not in marked]
    events = [orjson.loads(r.value) for r in records]
    detail = (events, worker.log_tail())
    assert [e["sensor_id"] for e in events if e["type"] == "suppressed"] == ["qd-wl-maint-1"], \
        detail
    opened = {a["sensors"][0]: a for a in (e["alert"] for e in events if e["type"] == "opened")}
    assert sorted(opened) == ["qd-pp-corridor-1", "qd-wl-open-1"], detail
    assert "emergency" in opened["qd-wl-open-1"]["departments"], detail  # routing version 1
    main = opened["qd-pp-corridor-1"]
    assert main["zone_kinds"] == ["key_pipe_corridor"] and main["severity"] == "orange", detail
    # One incident for the corridor, in the corridor's scope (the alerts' key: its owner).
    pipe_keys = {r.key for r, e in zip(records, events, strict=True)
                 if e["alert"] and e["alert"]["family"] == "pipe"}
    assert pipe_keys == {b"zone:qd-test-corridor"}, detail
    joined = [e["alert"] for e in events if e["type"] == "updated"]
    assert [a["alert_id"] for a in joined] == [main["alert_id"]], detail
    assert sorted(joined[0]["sensors"]) == ["qd-pp-corridor-1", "qd-pp-corridor-2"], detail
    assert "worker: zones, maintenance and routing caught up" in worker.log_path.read_text()
