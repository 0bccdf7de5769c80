"""An anomaly's JSON document: what the detectors emit reads back as the same anomaly, and a
document anything else wrote is checked field by field (InvalidAnomaly, never a crash later).
"""

from __future__ import annotations

import orjson
import pytest

from cityagent.detection import Anomaly, DetectionEngine
from cityagent.detectors.config import DETECTORS, DetectionConfig, SensorProfiles
from cityagent.errors import InvalidAnomaly
from cityagent.regions import default_regions
from sensors_sim.fleet import make_fleet
from sensors_sim.generators import FleetSignals
from sensors_sim.registry import registry_rows
from sensors_sim.scenario import parse_scenario

T0 = 1_767_225_600_000  # 2026-01-01 08:00 China Standard Time


@pytest.fixture(scope="module")
def emitted() -> list[Anomaly]:
    """Every anomaly an 80-minute run of 600 sensors raises, with one of each fault at 40 min."""
    fleet = make_fleet(600, 5, default_regions())
    scenario = parse_scenario({"name": "every detector", "anomalies": [
        {"type": "spike", "place": "370100", "start": "40m", "count": 5},
        {"type": "stuck", "place": "370200", "start": "40m", "duration": "20m", "count": 5},
        {"type": "dropout", "place": "370300", "start": "40m", "duration": "20m", "count": 5},
        {"type": "drift", "place": "370100", "start": "40m", "duration": "30m", "count": 5},
        {"type": "burst", "place": "370200", "start": "40m", "duration": "20m"},
        {"type": "rainstorm", "place": "370100", "start": "40m", "duration": "30m"},
    ]})
    signals = FleetSignals(fleet, 1, breach_every_s=0, scenario=scenario)
    config = DetectionConfig.load()
    engine = DetectionEngine(config, SensorProfiles.from_rows(
        registry_rows(signals, 10, default_regions(), config)))
    state = engine.new_state()
    out: list[Anomaly] = []
    for k in range(0, 80 * 60, 10):
        out += engine.process(state, signals.tick(T0 + k * 1000), 0).anomalies
    return out


def test_every_emitted_anomaly_reads_back_from_its_json_as_itself(emitted) -> None:
    assert {a.detector for a in emitted} == set(DETECTORS)
    assert {a.phase for a in emitted} == {"start", "escalate", "end"}
    for anomaly in emitted:
        assert Anomaly.from_dict(orjson.loads(orjson.dumps(anomaly.to_dict()))) == anomaly


def test_unknown_fields_are_ignored_and_whole_numbers_may_stand_for_floats(emitted) -> None:
    doc = emitted[0].to_dict() | {"source": "another system", "observed": 3, "lon": 117}
    anomaly = Anomaly.from_dict(doc)
    assert (anomaly.observed, anomaly.lon) == (3.0, 117.0)
    assert isinstance(anomaly.observed, float)


@pytest.mark.parametrize("change, words", [
    ({"severity": "purple"}, "'severity' must be one of ['blue', 'yellow', 'orange', 'red']"),
    ({"phase": "begin"}, "'phase' must be one of"),
    ({"anomaly_id": 5}, "'anomaly_id' must be text"),
    ({"sensor_id": ""}, "'sensor_id' must not be empty"),
    ({"sensor_id": ["a"]}, "'sensor_id' must be text"),
    ({"reason": None}, "'reason' must be text"),
    ({"score": 1.5}, "'score' must be a number in [0, 1]"),
    ({"peak_score": None}, "'peak_score' must be a finite number"),
    ({"observed": "high"}, "'observed' must be a finite number"),
    ({"lat": True}, "'lat' must be a finite number"),
    ({"ts_ms": 1.5}, "'ts_ms' must be a whole number"),
    ({"since_ms": 2**70}, "'since_ms' must be a whole number (64-bit)"),
    ({"district_code": "370102"}, "'district_code' must be a whole number"),
    ({"city_code": None}, "'city_code' must be a whole number"),
])
def test_a_wrong_field_is_an_invalid_anomaly_naming_it(emitted, change: dict,
                                                       words: str) -> None:
    with pytest.raises(InvalidAnomaly) as caught:
        Anomaly.from_dict(emitted[0].to_dict() | change)
    assert words in str(caught.value)


def test_a_missing_field_or_a_document_that_is_no_object(emitted) -> None:
    doc = emitted[0].to_dict()
    del doc["severity"]
    with pytest.raises(InvalidAnomaly, match="'severity' is missing"):
        Anomaly.from_dict(doc)
    with pytest.raises(InvalidAnomaly, match="expected an object; got list"):
        Anomaly.from_dict([1, 2])
