"""The simulated fleet: deterministic, weighted by city, every sensor inside its district."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cityagent.regions import default_regions
from sensors_sim.fleet import (
    CITY_ABBREV,
    CITY_WEIGHTS,
    KIND_ABBREV,
    Sensor,
    city_counts,
    make_fleet,
)


@pytest.fixture(scope="module")
def regions():
    return default_regions()


def test_same_seed_same_fleet(regions):
    assert make_fleet(500, 7, regions) == make_fleet(500, 7, regions)
    assert make_fleet(500, 7, regions) != make_fleet(500, 8, regions)


def test_ids_unique_and_readable(regions):
    fleet = make_fleet(2000, 1, regions)
    ids = [s.sensor_id for s in fleet]
    assert len(set(ids)) == len(ids)
    pattern = re.compile(r"^[a-z]{2,3}-(tr|wl|pp)-\d{6}$")
    for i, s in enumerate(fleet):
        assert pattern.match(s.sensor_id), s.sensor_id
        assert s.sensor_id == f"{CITY_ABBREV[str(s.city_code)]}-{KIND_ABBREV[s.kind]}-{i:06d}"
    assert fleet[0].sensor_id == "jn-tr-000000"
    assert fleet[1].sensor_id.startswith("qd-wl-")


def test_every_city_every_kind(regions):
    fleet = make_fleet(16, 3, regions)
    assert {s.city_code for s in fleet} == {int(c.code) for c in regions.cities}
    big = make_fleet(4800, 3, regions)
    cities, per_city = np.unique([s.city_code for s in big], return_counts=True)
    assert len(per_city) == 16 and per_city.sum() == 4800
    expected = city_counts(4800, np.array([CITY_WEIGHTS[str(c)] for c in cities]))
    assert per_city.tolist() == expected.tolist()
    assert per_city[cities == 371300] > 3 * per_city[cities == 370500]  # 临沂 vs 东营
    kinds = [s.kind for s in big]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "traffic": 1600, "water_level": 1600, "pipe_pressure": 1600,
    }


def test_city_counts_apportion_by_weight():
    weights = np.array(list(CITY_WEIGHTS.values()))
    for n in (0, 1, 15, 16, 17, 100, 999, 100_000):
        counts = city_counts(n, weights)
        assert counts.sum() == n
        if n >= 16:
            assert counts.min() >= 1
            # Within one sensor of the exact quota of the n - 16 beyond one each.
            quota = 1 + (n - 16) * weights / weights.sum()
            assert np.abs(counts - quota).max() < 1.0
        else:
            assert counts.tolist() == [1] * n + [0] * (16 - n)


def test_hundred_thousand_share_per_city_matches_weight(regions):
    fleet = make_fleet(100_000, 7, regions)
    cities, per_city = np.unique([s.city_code for s in fleet], return_counts=True)
    weights = np.array([CITY_WEIGHTS[str(c)] for c in cities])
    share = per_city / per_city.sum()
    np.testing.assert_allclose(share, weights / weights.sum(), atol=0.002)
    # Every city gets its share of every kind (kinds cycle, cities are shuffled).
    kinds = np.array([s.kind for s in fleet])
    city = np.array([s.city_code for s in fleet])
    for c, count in zip(cities.tolist(), per_city.tolist(), strict=True):
        wl = int(((city == c) & (kinds == "water_level")).sum())
        assert abs(wl - count / 3) < 0.05 * count + 20


def test_positions_locate_to_their_district(regions):
    fleet = make_fleet(3000, 11, regions)
    lon = np.array([s.lon for s in fleet])
    lat = np.array([s.lat for s in fleet])
    idx = regions.locate(lon, lat)
    assert (idx >= 0).all()
    assert regions.district_codes(idx).astype(int).tolist() == [s.district_code for s in fleet]
    assert regions.city_codes(idx).astype(int).tolist() == [s.city_code for s in fleet]
    for s in fleet[:50]:
        assert regions.district(str(s.district_code)).city_code == str(s.city_code)


def test_small_and_empty_fleets(regions):
    assert make_fleet(0, 1, regions) == []
    (only,) = make_fleet(1, 1, regions)
    assert isinstance(only, Sensor) and only.city_code == 370100
    with pytest.raises(ValueError):
        make_fleet(-1, 1, regions)


def test_hundred_thousand_sensors(regions):
    # How fast: `cityagent sim --bench` prints the time the fleet took to build.
    fleet = make_fleet(100_000, 7, regions)
    assert len(fleet) == 100_000
    assert len({s.sensor_id for s in fleet}) == 100_000
