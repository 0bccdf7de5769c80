"""Routing: every matching rule adds departments, faults only match fault rules, errors name the rule."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import pytest

from cityagent.errors import ConfigError
from cityagent.routing import CITY_COMMAND, Router, default_router


def packaged_doc() -> dict:
    return tomllib.loads(resources.files("cityagent.data").joinpath("routing.toml")
                         .read_text("utf-8"))


def test_the_packaged_departments_have_chinese_and_english_names() -> None:
    router = default_router()
    assert {"water", "transport", "city_management", "emergency", CITY_COMMAND,
            "province_command"} <= set(router.department_codes)
    assert router.departments["water"].zh == "水务局"
    assert router.departments["emergency"].zh == "应急管理局"
    assert router.names_zh(["city_command", "province_command"]) == ("市指挥中心", "省指挥中心")


@pytest.mark.parametrize(("kind", "reason", "zones", "severity", "expected"), [
    # A gauge approaching its warning level anywhere: water affairs only.
    ("water_level", "water.approaching", (), "blue", ("water", "city_command")),
    ("water_level", "water.warning", (), "yellow", ("water", "city_management", "city_command")),
    ("water_level", "water.guaranteed", (), "orange",
     ("water", "city_management", "emergency", "city_command")),
    # In a flood-risk zone, emergency management is told from yellow.
    ("water_level", "water.warning", ("flood_risk",), "yellow",
     ("water", "city_management", "emergency", "city_command")),
    # A flooding underpass: transport closes it, at any severity.
    ("water_level", "water.approaching", ("underpass", "flood_risk"), "blue",
     ("water", "transport", "city_management", "city_command")),
    ("pipe_pressure", "pressure.low", (), "orange", ("water", "city_command")),
    ("pipe_pressure", "pressure.critical", (), "red", ("water", "emergency", "city_command")),
    ("pipe_pressure", "pressure.low", ("key_pipe_corridor",), "orange",
     ("water", "city_management", "emergency", "city_command")),
    ("traffic", "traffic.congestion", (), "orange", ("transport", "city_command")),
    ("traffic", "traffic.congestion", ("school",), "red",
     ("transport", "emergency", "city_command")),
    ("generic", "deviation.high", (), "yellow", ("city_management", "city_command")),
    # Sensor faults: the owning department's maintenance, never emergency, whatever severity.
    ("water_level", "fault.silence", ("flood_risk",), "red", ("water", "city_command")),
    ("pipe_pressure", "fault.flatline", (), "blue", ("water", "city_command")),
    ("traffic", "fault.spike_up", (), "orange", ("transport", "city_command")),
])
def test_packaged_rules(kind: str, reason: str, zones: tuple, severity: str,
                        expected: tuple) -> None:
    assert default_router().route(kind, reason, zones, severity) == expected


def test_extra_departments_are_added_in_table_order_and_the_city_is_always_there() -> None:
    router = default_router()
    got = router.route("traffic", "traffic.congestion", (), "blue",
                       extra=["province_command", "health"])
    assert got == ("transport", "health", "city_command", "province_command")
    assert router.ordered(["zzz", "water"]) == ("water", "zzz")
    with pytest.raises(ValueError, match="severity must be one of"):
        router.route("traffic", "traffic.congestion", (), "purple")


def small(rules: list[dict]) -> dict:
    return {"departments": {"water": {"zh": "水务局", "en": "Water"},
                            "city_command": {"zh": "市指挥中心", "en": "City"},
                            "province_command": {"zh": "省指挥中心", "en": "Province"}},
            "rule": rules}


def test_zone_kind_none_matches_only_outside_every_zone_and_reason_globs() -> None:
    router = Router.from_dict(small([
        {"zone_kind": "none", "departments": ["water"]},
    ]))
    assert router.route("traffic", "traffic.congestion", (), "blue") == ("water", "city_command")
    assert router.route("traffic", "traffic.congestion", ("school",), "blue") == (
        "city_command",)
    globbed = Router.from_dict(small([{"reason": "water.*", "departments": ["water"]}]))
    assert globbed.route("water_level", "water.record", (), "red") == ("water", "city_command")
    assert globbed.route("water_level", "deviation.high", (), "red") == ("city_command",)
    # A rule without a reason never matches a fault; a wildcard reason does.
    assert Router.from_dict(small([{"departments": ["water"]}])).route(
        "water_level", "fault.silence", (), "red") == ("city_command",)
    assert Router.from_dict(small([{"reason": "*", "departments": ["water"]}])).route(
        "water_level", "fault.silence", (), "red") == ("water", "city_command")


@pytest.mark.parametrize(("rule", "words"), [
    ({"kind": "river", "departments": ["water"]}, "rule #2: kind must be one of"),
    ({"zone_kind": "Flood Risk", "departments": ["water"]}, "rule #2: zone_kind must be"),
    # A near miss of a known kind was taken as a custom kind of no zone: a rule never applied.
    ({"zone_kind": "undrpass", "departments": ["water"]},
     "rule #2: zone_kind 'undrpass' looks like a typo of 'underpass'"),
    ({"zone_kind": "nnone", "departments": ["water"]}, "looks like a typo of 'none'"),
    ({"min_severity": "purple", "departments": ["water"]}, "rule #2: min_severity must be"),
    # not text (PUT /v1/routing takes JSON): a TypeError (unhashable), a 500, before
    ({"min_severity": ["red"], "departments": ["water"]}, "rule #2: min_severity must be"),
    ({"kind": ["traffic"], "departments": ["water"]}, "rule #2: kind must be one of"),
    ({"kind": {"traffic": 1}, "departments": ["water"]}, "rule #2: kind must be one of"),
    ({"departments": []}, "rule #2: departments must be a non-empty list"),
    ({"departments": ["police"]}, "rule #2: unknown department 'police'"),
    ({"reason": "", "departments": ["water"]}, "rule #2: reason must be a glob"),
    ({"severity": "red", "departments": ["water"]}, "rule #2: unknown key 'severity'"),
])
def test_a_bad_rule_is_named_by_its_number(rule: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Router.from_dict(small([{"departments": ["water"]}, rule]), "routing.toml")


def test_a_custom_zone_kind_is_taken() -> None:
    router = Router.from_dict(small([{"zone_kind": "stadium", "departments": ["water"]}]))
    assert router.rules[0].zone_kind == "stadium"


def test_bad_department_tables_are_rejected() -> None:
    doc = small([{"departments": ["water"]}])
    del doc["departments"]["city_command"]
    with pytest.raises(ConfigError, match="department 'city_command' is missing"):
        Router.from_dict(doc)
    doc = small([{"departments": ["water"]}])
    doc["departments"]["water"] = {"zh": "水务局"}
    with pytest.raises(ConfigError, match=r"\[departments.water\]: expected exactly the keys"):
        Router.from_dict(doc)
    with pytest.raises(ConfigError, match="at least one"):
        Router.from_dict(small([]))
    with pytest.raises(ConfigError, match="unknown table 'rules'"):
        Router.from_dict({**small([]), "rules": []})


def test_the_file_is_named_when_it_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "routing.toml"
    path.write_text("[[rule]\n")
    with pytest.raises(ConfigError, match=f"cannot read routing rules from {path}"):
        Router.load(path)
    path.write_text("")
    with pytest.raises(ConfigError, match=f"{path}: expected a \\[departments"):
        Router.load(path)


def test_the_packaged_file_round_trips_through_from_dict() -> None:
    router = Router.from_dict(packaged_doc())
    assert router == default_router()
    assert all(rule.departments for rule in router.rules)
