"""`cityagent bench --alerting` on a small load: a worker in a child process, JSON out."""

from __future__ import annotations

import json

import orjson
import pytest

from cityagent.detection import Anomaly
from cityagent.incidents import AlertingConfig, IncidentEngine
from cityagent.regions import default_regions
from cityagent.routing import Router
from cityagent.settings import Settings
from cityagent.zones import ZoneIndex, demo_zones
from control.bench_alerting import build_anomalies, run_alerting_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_workload_is_a_storm_of_distinct_sensors_inside_their_districts() -> None:
    messages = build_anomalies(300)
    anomalies = [Anomaly.from_dict(orjson.loads(v)) for _k, v in messages]
    assert len({a.sensor_id for a in anomalies}) == 300
    assert {k.decode() for k, _v in messages} == {str(a.district_code) for a in anomalies}
    assert len({a.district_code for a in anomalies}) > 5  # all over Jinan
    assert {a.city_code for a in anomalies} == {370100}
    regions = default_regions()
    found = regions.locate(*zip(*[(a.lon, a.lat) for a in anomalies], strict=True))
    codes = regions.district_code_numbers(found).tolist()
    assert codes == [a.district_code for a in anomalies]  # each point lies in its district
    assert all(a.phase == "start" and a.kind == "water_level" for a in anomalies)
    # One scope, the hardest case the docstring promises: every anomaly on one partition.
    engine = IncidentEngine(AlertingConfig.load(None), Router.load(), regions)
    zones = ZoneIndex(demo_zones(regions))
    assert {engine.scope_key(a, zones) for a in anomalies} == {"city:370100"}


def test_alerting_bench_prints_rates_as_json(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_alerting_bench(Settings(kafka=kafka_bootstrap), anomalies=200, runs=1,
                              as_json=True)

    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("anomalies_per_s", "raw_consume_per_s", "ratio", "domain_per_s", "runs"):
        assert key in doc, key
    assert (doc["anomalies"], len(doc["runs"])) == (200, 1)
    assert 0 < doc["anomalies_per_s"] < doc["raw_consume_per_s"]
    assert doc["domain_per_s"] > 0
    assert doc["ratio"] == pytest.approx(doc["anomalies_per_s"] / doc["raw_consume_per_s"],
                                         rel=1e-3)

