"""The routing feed applies the routing topic's records by version (streams/routing_feed.py)."""

from __future__ import annotations

import tomllib
from importlib import resources

from cityagent.routing import default_router
from streams.routing_feed import ROUTING_KEY, RoutingFeed


def packaged() -> dict:
    return tomllib.loads(resources.files("cityagent.data").joinpath("routing.toml")
                         .read_text("utf-8"))


def test_of_two_records_of_one_version_the_later_stands_and_an_older_is_ignored() -> None:
    # Two API replicas write new rules at once: both compute version 1. The later record is
    # the one compaction keeps, so a reader of the whole log must end with it too.
    first, second = packaged(), packaged()
    first["departments"]["water"]["zh"] = "水务局一"
    second["departments"]["water"]["zh"] = "水务局二"
    feed = RoutingFeed("127.0.0.1:1", "city.routing", default_router())
    assert feed.apply(ROUTING_KEY, {"version": 1, "routing": first})
    assert feed.apply(ROUTING_KEY, {"version": 1, "routing": second})
    assert feed.version == 1 and feed.document["departments"]["water"]["zh"] == "水务局二"
    assert not feed.apply(ROUTING_KEY, {"version": 0, "routing": first})  # stale
    assert feed.document["departments"]["water"]["zh"] == "水务局二"


def test_the_worker_routes_by_the_later_record_of_one_version_too() -> None:
    """The worker's engine was kept per (maintenance windows, routing version): after a
    second record of version 1 it went on routing by the first, while its feed (and GET
    /v1/routing, and every worker started later) had the second."""
    from cityagent.incidents import AlertingConfig, IncidentEngine
    from streams.alerting import CurrentEngine
    from streams.maintenance_feed import MaintenanceFeed

    first, second = packaged(), packaged()
    second["departments"]["water"]["zh"] = "水务局二"
    routing = RoutingFeed("127.0.0.1:1", "city.routing", default_router())
    maintenance = MaintenanceFeed("127.0.0.1:1", "city.maintenance")
    current = CurrentEngine(IncidentEngine(AlertingConfig.load(), default_router()),
                            maintenance, routing)
    assert current().router is default_router() and current() is current()
    assert routing.apply(ROUTING_KEY, {"version": 1, "routing": first})
    assert current().router.names_zh(["water"]) == ("水务局",)
    assert routing.apply(ROUTING_KEY, {"version": 1, "routing": second})
    assert current().router is routing.router
    assert current().router.names_zh(["water"]) == ("水务局二",)
    assert maintenance.apply("w1", {"sensor": "jn-*", "start_ms": 0, "end_ms": 1})
    maintenance._refresh()
    assert [w.sensor for w in current().maintenance] == ["jn-*"]


def test_a_record_past_the_largest_version_is_ignored() -> None:
    """It was taken: the API's next version, one above, was a 500 past 2**64 - 1."""
    from cityagent.zones import MAX_VERSION

    feed = RoutingFeed("127.0.0.1:1", "city.routing", default_router())
    assert not feed.apply(ROUTING_KEY, {"version": MAX_VERSION + 1, "routing": packaged()})
    assert not feed.apply(ROUTING_KEY, {"version": 2**64, "routing": packaged()})
    assert feed.version == 0
    assert feed.apply(ROUTING_KEY, {"version": MAX_VERSION, "routing": packaged()})
