"""The simulated sensor fleet: N sensors over Shandong's 16 cities, weighted by city.

Each city gets a number of sensors proportional to its weight in :data:`CITY_WEIGHTS`
(resident population, 2020 census, millions, rounded), with at least one sensor per city when
``n >= 16``: the counts are a largest-remainder apportionment of ``n - 16`` on top of one sensor
each. Sensors ``0..15`` are one per city in code order (so ``n < 16`` takes the first ``n``
cities); the cities of the rest are a seeded shuffle of the remaining counts. Sensor ``i`` is of
kind ``i mod 3`` (traffic, water level, pipe pressure); its district is a random one of its city
and its position a uniformly random point inside that district. Ids are stable and readable:
``jn-wl-000042`` is sensor 42, a water-level gauge in 济南 (Jinan). The same ``n`` and
``seed`` always give the same fleet.

Built vectorised (one ``random_points`` call per district), so 100k sensors take well under
a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cityagent.regions import RegionIndex

__all__ = (
    "Sensor", "make_fleet", "city_counts", "FLEET_KINDS", "CITY_ABBREV", "CITY_WEIGHTS",
    "KIND_ABBREV",
)

#: Kinds in the order sensors cycle through them.
FLEET_KINDS: tuple[str, ...] = ("traffic", "water_level", "pipe_pressure")
KIND_ABBREV: dict[str, str] = {"traffic": "tr", "water_level": "wl", "pipe_pressure": "pp"}

#: Prefecture city code → the abbreviation that starts its sensors' ids.
CITY_ABBREV: dict[str, str] = {
    "370100": "jn",  # 济南
    "370200": "qd",  # 青岛
    "370300": "zb",  # 淄博
    "370400": "zz",  # 枣庄
    "370500": "dy",  # 东营
    "370600": "yt",  # 烟台
    "370700": "wf",  # 潍坊
    "370800": "jng",  # 济宁
    "370900": "ta",  # 泰安
    "371000": "wh",  # 威海
    "371100": "rz",  # 日照
    "371300": "ly",  # 临沂
    "371400": "dz",  # 德州
    "371500": "lc",  # 聊城
    "371600": "bz",  # 滨州
    "371700": "hz",  # 菏泽
}

#: Prefecture city code → its weight in the fleet: resident population in millions at the
#: 2020 (seventh) national census, rounded to 0.1 (approximate; Shandong statistical yearbook /
#: the cities' census bulletins). Only the ratios matter.
CITY_WEIGHTS: dict[str, float] = {
    "370100": 9.2,  # 济南
    "370200": 10.1,  # 青岛
    "370300": 4.7,  # 淄博
    "370400": 3.9,  # 枣庄
    "370500": 2.2,  # 东营
    "370600": 7.1,  # 烟台
    "370700": 9.4,  # 潍坊
    "370800": 8.4,  # 济宁
    "370900": 5.5,  # 泰安
    "371000": 2.9,  # 威海
    "371100": 3.0,  # 日照
    "371300": 11.0,  # 临沂
    "371400": 5.6,  # 德州
    "371500": 6.0,  # 聊城
    "371600": 3.9,  # 滨州
    "371700": 8.8,  # 菏泽
}


def city_counts(n: int, weights: np.ndarray) -> np.ndarray:
    """Sensors per city: one each (the first ``n`` cities if ``n`` is smaller), the rest
    apportioned by ``weights`` with the largest-remainder method. Sums to ``n``."""
    k = len(weights)
    counts = np.zeros(k, dtype=np.int64)
    counts[: min(n, k)] = 1
    extra = n - int(counts.sum())
    if extra > 0:
        share = np.asarray(weights, dtype=np.float64)
        quota = extra * share / share.sum()
        add = np.floor(quota).astype(np.int64)
        left = extra - int(add.sum())
        # Largest remainders first; ties to the lower city index (stable sort).
        order = np.argsort(-(quota - add), kind="stable")
        add[order[:left]] += 1
        counts += add
    return counts


@dataclass(frozen=True)
class Sensor:
    """One simulated sensor, fixed in place for its whole life."""

    sensor_id: str
    kind: str
    lon: float
    lat: float
    district_code: int  # e.g. 370102 (历下区)
    city_code: int  # e.g. 370100 (济南市)


def make_fleet(n: int, seed: int, regions: RegionIndex) -> list[Sensor]:
    """``n`` sensors weighted by city, kinds round robin; identical for the same ``seed``."""
    if n < 0:
        raise ValueError(f"a fleet needs n >= 0 sensors; got {n}")
    if n == 0:
        return []
    rng = np.random.default_rng(seed)
    cities = [c.code for c in regions.cities]
    # District indices of each city, in index order.
    by_city = {
        code: np.array([i for i, d in enumerate(regions.districts) if d.city_code == code])
        for code in cities
    }
    index = np.arange(n)
    weights = np.array([CITY_WEIGHTS.get(code, 1.0) for code in cities])
    counts = city_counts(n, weights)
    head = min(n, len(cities))
    rest = np.repeat(np.arange(len(cities)), counts - (np.arange(len(cities)) < head))
    city_of = np.concatenate([np.arange(head), rng.permutation(rest)]).astype(np.int64)
    district_of = np.empty(n, dtype=np.int64)
    for c, code in enumerate(cities):
        rows = np.flatnonzero(city_of == c)
        if rows.size:
            district_of[rows] = rng.choice(by_city[code], size=rows.size)
    lon = np.empty(n)
    lat = np.empty(n)
    for d in np.unique(district_of).tolist():
        rows = np.flatnonzero(district_of == d)
        lon[rows], lat[rows] = regions.random_points(d, rows.size, rng)
    sensors = []
    for i, d, x, y in zip(
        index.tolist(), district_of.tolist(), lon.tolist(), lat.tolist(), strict=True
    ):
        kind = FLEET_KINDS[i % len(FLEET_KINDS)]
        district = regions.districts[d]
        abbrev = CITY_ABBREV.get(district.city_code, f"c{district.city_code}")
        sensors.append(
            Sensor(
                sensor_id=f"{abbrev}-{KIND_ABBREV[kind]}-{i:06d}",
                kind=kind,
                lon=x,
                lat=y,
                district_code=int(district.code),
                city_code=int(district.city_code),
            )
        )
    return sensors
