"""An incident's districts: every district of its member sensors, in its alert and its title.

Floods and traffic are scoped per city, so the rainstorm-jinan scenario's red flood (55 gauges
in 11 districts, seed 1) was one alert that carried only its opener's district (莱芜区): its
title named 莱芜区 alone and a dashboard painted only it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cityagent.alert_places import MAX_DISTRICTS, add_district, districts_at, place
from cityagent.incident_alert import Alert, AlertEvent
from cityagent.incidents import AlertingConfig, IncidentEngine, ScopeState
from cityagent.regions import default_regions
from cityagent.routing import default_router
from tests.cityagent.test_incidents import MIN, T0, make, one

REGIONS = default_regions()
#: A point in each of five districts of Jinan (济南市), and the district it is in.
JINAN = {370102: (117.080, 36.655),  # 历下区
         370103: (116.990, 36.640),  # 市中区
         370104: (116.930, 36.680),  # 槐荫区
         370105: (117.000, 36.700),  # 天桥区
         370112: (117.255, 36.615)}  # 历城区


def packaged() -> IncidentEngine:
    return IncidentEngine(AlertingConfig.load(), default_router(), REGIONS)


def gauge(i: int, district: int, severity: str = "yellow"):
    return make(f"jn-wl-{i:06d}", at=JINAN[district], district=district, severity=severity,
                since=T0 + i * MIN)


def flood(districts: list[int]) -> tuple[IncidentEngine, ScopeState, list[Alert]]:
    """One gauge over 警戒 in each district, in order, through the packaged settings (floods are
    scoped per city): the alert after each."""
    eng, state = packaged(), ScopeState()
    alerts = [one(eng.on_anomaly(state, gauge(i, d), None, T0 + i * MIN))
              for i, d in enumerate(districts)]
    return eng, state, alerts


def test_the_points_are_in_the_districts_the_tests_say() -> None:
    found = REGIONS.locate(np.array([p[0] for p in JINAN.values()]),
                           np.array([p[1] for p in JINAN.values()]))
    assert REGIONS.district_code_numbers(found).tolist() == list(JINAN)


def test_a_city_wide_flood_lists_every_district_of_its_sensors_opener_first() -> None:
    _, state, alerts = flood([370104, 370102, 370104, 370105])
    assert [a.alert_id for a in alerts] == [alerts[0].alert_id] * 4  # one incident
    assert alerts[0].district_codes == ("370104",)
    assert alerts[1].district_codes == ("370104", "370102")
    # A district already listed keeps its place; a new one comes last.
    assert alerts[3].district_codes == ("370104", "370102", "370105")
    # district_code stays the opener's (槐荫区), the first of district_codes.
    assert (alerts[3].district_code, alerts[3].district_name) == ("370104", "槐荫区")
    assert state.incidents[0].district_codes == [370104, 370102, 370105]


def test_the_title_names_a_few_districts_and_counts_more() -> None:
    _, _, alerts = flood([370104, 370102, 370105, 370103, 370112])
    assert alerts[0].title_zh.startswith("济南市槐荫区 黄色")
    assert alerts[0].title_en.endswith(" at Huaiyin District (Jinan), jn-wl-000000")
    assert alerts[1].title_zh.startswith("济南市槐荫区、历下区 ")
    assert " across Huaiyin District and Lixia District (Jinan), 2 sensors" in alerts[1].title_en
    assert alerts[2].title_zh.startswith("济南市槐荫区、历下区、天桥区 橙色区域性内涝/洪水")
    assert alerts[2].title_en == ("orange area flooding across Huaiyin District, Lixia District "
                                  "and Tianqiao District (Jinan), 3 sensors")
    assert alerts[4].title_zh == "济南市5个区县 橙色区域性内涝/洪水（5个传感器）"
    assert alerts[4].title_en == "orange area flooding across 5 districts (Jinan), 5 sensors"


def test_a_scope_zone_keeps_its_name_in_the_title_of_several_districts() -> None:
    where = place(REGIONS, "济南市", [370102, 370103], "泉城广场", "Quancheng Square")
    assert (where.zh, where.en, where.several) == ("济南市历下区、市中区·泉城广场",
                                                   "Quancheng Square", True)


def test_a_district_of_another_city_is_named_with_its_city() -> None:
    where = place(REGIONS, "济南市", [370102, 370306])  # 历下区, 淄博市周村区
    assert where.zh == "济南市历下区、淄博市周村区"
    assert where.en == "Lixia District and Zhoucun District"


def test_an_alert_event_carries_the_districts_and_round_trips() -> None:
    _, _, alerts = flood([370104, 370102])
    doc = json.loads(json.dumps(alerts[1].to_dict()))
    assert doc["district_codes"] == ["370104", "370102"]
    assert Alert.from_dict(doc) == alerts[1]


def test_an_event_written_before_district_codes_loads_with_its_district() -> None:
    _, _, alerts = flood([370104, 370102])
    doc = AlertEvent(event_id="e1", type="opened", alert_id=alerts[1].alert_id,
                     scope=alerts[1].scope, actor="system", at_ms=T0,
                     alert=alerts[1]).to_dict()
    del doc["alert"]["district_codes"]  # as written before 2026-11-25
    old = AlertEvent.from_dict(json.loads(json.dumps(doc)))
    assert old.alert is not None and old.alert.district_codes == ("370104",)


def test_a_restated_event_and_a_restored_state_carry_the_districts() -> None:
    eng, state, alerts = flood([370104, 370102, 370105])
    restored = ScopeState.from_bytes(state.to_bytes())
    assert restored.incidents[0].district_codes == [370104, 370102, 370105]
    restated = [e for e in eng.tick(restored, T0 + 2 * 86_400_000) if e.type == "restated"]
    assert len(restated) == 1 and restated[0].alert is not None
    assert restated[0].alert.district_codes == ("370104", "370102", "370105")
    assert restated[0].alert.title_zh == alerts[2].title_zh


def test_a_state_checkpointed_before_district_codes_finds_them_by_member_positions() -> None:
    eng, state, alerts = flood([370104, 370102, 370105])
    doc = state.to_dict()
    for incident in doc["incidents"]:
        del incident["district_codes"]  # as checkpointed before 2026-11-25
    old = ScopeState.from_dict(json.loads(json.dumps(doc)))
    assert old.incidents[0].district_codes == []
    # The next member (历城区) joins an incident whose districts were found from its members.
    after = one(eng.on_anomaly(old, gauge(3, 370112), None, T0 + 3 * MIN))
    assert after.district_codes == ("370104", "370102", "370105", "370112")
    assert after.alert_id == alerts[0].alert_id


def test_made_up_district_codes_cannot_grow_an_alert_without_bound() -> None:
    codes: list[int] = []
    for code in range(MAX_DISTRICTS + 50):
        add_district(codes, 900_000 + code)
    add_district(codes, 900_000)  # listed already
    assert len(codes) == MAX_DISTRICTS and codes[0] == 900_000


@pytest.mark.parametrize(("lon", "lat", "codes"), [
    ([], [], [370104]),
    ([117.08, 200.0, 117.08], [36.655, 0.0, 36.655], [370104, 370102]),  # outside: none
])
def test_districts_at_positions_start_with_the_opener_and_skip_points_outside(
        lon: list[float], lat: list[float], codes: list[int]) -> None:
    assert districts_at(REGIONS, 370104, lon, lat) == codes
