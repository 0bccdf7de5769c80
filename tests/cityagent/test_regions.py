"""Tests for cityagent.regions: vendored Shandong districts and vectorised tagging."""

from __future__ import annotations

import re

import numpy as np
import pytest
import shapely

from cityagent.regions import City, District, RegionIndex, default_regions


@pytest.fixture(scope="module")
def regions() -> RegionIndex:
    return default_regions()


def test_counts(regions: RegionIndex) -> None:
    assert len(regions.cities) == 16
    assert len(regions.districts) == 137
    assert len(regions.polygons) == 137
    assert [c.code for c in regions.cities] == sorted(c.code for c in regions.cities)
    assert {c.code for c in regions.cities} == {
        f"37{n:02d}00" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17)
    }
    assert {d.city_code for d in regions.districts} == {c.code for c in regions.cities}
    assert len({d.code for d in regions.districts}) == 137
    for d in regions.districts:
        assert d.code[:4] == d.city_code[:4]
        assert regions.city(d.city_code).name == d.city_name


def test_lookups(regions: RegionIndex) -> None:
    assert regions.city("370100") == City("370100", "济南市", "Jinan")
    assert regions.city("370200").name_en == "Qingdao"
    assert regions.district("370102") == District("370102", "历下区", "370100", "济南市",
                                                  "Lixia District")
    assert regions.district("370116").name == "莱芜区"
    assert regions.district("370117").city_code == "370100"
    assert regions.district("370115").name == "济阳区"
    i = regions.district_index("370202")
    assert regions.districts[i].name == "市南区"
    for gone in ("371202", "371203", "370125", "371200"):
        with pytest.raises(KeyError):
            regions.district(gone)
    with pytest.raises(KeyError):
        regions.city("371200")  # 莱芜市, merged into 济南市 in 2019


_TYPES_EN = {"区": "District", "县": "County", "市": "City"}


def test_every_district_has_an_english_name_of_its_type(regions: RegionIndex) -> None:
    for d in regions.districts:
        assert d.name_en and d.name_en.isascii() and d.name_en == d.name_en.strip(), d
        words = d.name_en.split(" ")
        # "Lixia District": one capitalised pinyin word (an apostrophe may split syllables),
        # then the type the Chinese name ends in: 区 District, 县 County, county-level 市 City.
        assert len(words) == 2 and words[1] == _TYPES_EN[d.name[-1]], d
        assert re.fullmatch(r"[A-Z][a-z]+(?:'[a-z]+)*", words[0]), d
    for c in regions.cities:
        names = [d.name_en for d in regions.districts if d.city_code == c.code]
        assert len(set(names)) == len(names), c


@pytest.mark.parametrize(
    ("code", "name_en"),
    [
        ("370102", "Lixia District"),
        ("370703", "Hanting District"),
        ("370113", "Changqing District"),  # 长 cháng
        ("370634", "Changdao County"),  # 长 cháng
        ("370405", "Tai'erzhuang District"),
        ("370612", "Muping District"),  # 牟 mù
        ("370686", "Qixia City"),  # 栖 qī
        ("370724", "Linqu County"),
        ("371122", "Ju County"),
        ("371322", "Tancheng County"),
        ("371325", "Fei County"),  # fèi, as the county is named today (not the ancient bì)
        ("371329", "Linshu County"),
        ("371481", "Laoling City"),  # 乐 lào
        ("371503", "Chiping District"),
        ("371522", "Shen County"),  # 莘 shēn
        ("371524", "Dong'e County"),  # 阿 ē
        ("371525", "Guan County"),
        ("371722", "Shan County"),  # 单 shàn
        ("371725", "Yuncheng County"),
        ("371726", "Juancheng County"),
    ],
)
def test_known_english_district_names(regions: RegionIndex, code: str, name_en: str) -> None:
    assert regions.district(code).name_en == name_en


def test_default_is_cached() -> None:
    assert default_regions() is default_regions()


def test_polygons_valid(regions: RegionIndex) -> None:
    assert shapely.is_valid(regions.polygons).all()
    minx, miny, maxx, maxy = shapely.total_bounds(regions.polygons)
    assert 114.8 < minx and maxx < 122.8 and 34.3 < miny and maxy < 38.5


@pytest.mark.parametrize(
    ("lon", "lat", "district", "city"),
    [
        (117.0197, 36.6614, "370102", "370100"),  # 泉城广场, 历下区, 济南
        (120.3844, 36.0610, "370202", "370200"),  # 五四广场, 市南区, 青岛
        (117.676, 36.214, "370116", "370100"),  # former 莱芜市 -> 莱芜区, 济南
        (116.9917, 35.5967, "370881", "370800"),  # 曲阜孔庙, 曲阜市, 济宁
    ],
)
def test_known_points(regions: RegionIndex, lon, lat, district, city) -> None:
    idx = regions.locate(np.array([lon]), np.array([lat]))
    assert idx.dtype == np.int32
    assert regions.district_codes(idx).tolist() == [district]
    assert regions.city_codes(idx).tolist() == [city]


@pytest.mark.parametrize(
    ("lon", "lat"),
    [
        (116.40, 39.90),  # Beijing
        (121.47, 31.23),  # Shanghai
        (123.0, 37.0),  # Yellow Sea east of Weihai
        (np.nan, 36.0),
        (117.0, np.nan),
        (np.inf, 36.0),
    ],
)
def test_outside_points(regions: RegionIndex, lon, lat) -> None:
    idx = regions.locate(np.array([lon]), np.array([lat]))
    assert idx.tolist() == [-1]
    assert regions.district_codes(idx).tolist() == [""]
    assert regions.city_codes(idx).tolist() == [""]


def test_locate_shapes(regions: RegionIndex) -> None:
    assert regions.locate(np.array([]), np.array([])).shape == (0,)
    grid = regions.locate(np.full((2, 3), 117.0197), np.full((2, 3), 36.6614))
    assert grid.shape == (2, 3)
    assert (regions.district_codes(grid) == "370102").all()
    mixed = regions.locate([117.0197, np.nan, 116.40], [36.6614, 36.0, 39.90])
    assert regions.district_codes(mixed).tolist() == ["370102", "", ""]


def test_vectorised_matches_loop(regions: RegionIndex) -> None:
    rng = np.random.default_rng(20240601)
    lon = rng.uniform(114.8, 122.8, 5000)
    lat = rng.uniform(34.3, 38.5, 5000)
    got = regions.locate(lon, lat)
    inside_some = 0
    for k in range(lon.size):
        hits = [
            i
            for i, poly in enumerate(regions.polygons)
            if shapely.contains_xy(poly, lon[k], lat[k])
        ]
        if len(hits) == 1:
            assert got[k] == hits[0], k
        elif not hits:
            # Only allowed to differ when the point lies exactly on a border.
            if got[k] != -1:
                assert shapely.intersects(regions.polygons[got[k]], shapely.Point(lon[k], lat[k]))
        else:  # in two districts (overlap sliver): lowest index wins
            assert got[k] == min(hits), k
        inside_some += bool(hits)
    assert 1500 < inside_some < 3500  # the province fills about half its bbox


def test_representative_points_locate_to_self(regions: RegionIndex) -> None:
    rp = shapely.point_on_surface(regions.polygons)  # representative_point()
    idx = regions.locate(shapely.get_x(rp), shapely.get_y(rp))
    assert idx.tolist() == list(range(len(regions.districts)))


@pytest.mark.parametrize("code", ["370102", "370202", "370634", "371002", "370116", "371703"])
def test_random_points(regions: RegionIndex, code: str) -> None:
    i = regions.district_index(code)
    rng = np.random.default_rng(7)
    lon, lat = regions.random_points(i, 500, rng)
    assert lon.shape == lat.shape == (500,)
    assert (regions.locate(lon, lat) == i).all()
    assert shapely.contains_xy(regions.polygons[i], lon, lat).all()
    # Reproducible with the same seed.
    lon2, lat2 = regions.random_points(i, 500, np.random.default_rng(7))
    assert np.array_equal(lon, lon2) and np.array_equal(lat, lat2)


def test_random_points_all_districts(regions: RegionIndex) -> None:
    rng = np.random.default_rng(1)
    for i in range(len(regions.districts)):
        lon, lat = regions.random_points(i, 20, rng)
        assert (regions.locate(lon, lat) == i).all()
    assert regions.random_points(0, 0, rng)[0].shape == (0,)
    with pytest.raises(IndexError):
        regions.random_points(len(regions.districts), 1, rng)


def test_load_explicit_path(tmp_path) -> None:
    import json

    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {
                    "district_code": "999901",
                    "district_name": "甲区",
                    "district_name_en": "Jia District",
                    "city_code": "999900",
                    "city_name": "测试市",
                    "city_name_en": "Test",
                },
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[0, 0], [2, 0], [2, 2], [0, 2], [0, 0]]],
                },
            },
            {
                "type": "Feature",
                "properties": {
                    "district_code": "999902",
                    "district_name": "乙区",
                    "district_name_en": "Yi District",
                    "city_code": "999900",
                    "city_name": "测试市",
                    "city_name_en": "Test",
                },
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[2, 0], [4, 0], [4, 2], [2, 2], [2, 0]]],
                },
            },
        ],
    }
    p = tmp_path / "d.json"
    p.write_text(json.dumps(fc, ensure_ascii=False), encoding="utf-8")
    r = RegionIndex.load(p)
    assert len(r.districts) == 2 and len(r.cities) == 1
    # (2, 1) is on the shared border: lowest index wins; (4, 1) on the outer border counts.
    idx = r.locate(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([1.0, 1.0, 1.0, 1.0, 1.0]))
    assert idx.tolist() == [0, 0, 1, 1, -1]


def test_district_code_numbers_match_the_text_codes_and_zero_outside() -> None:
    regions = default_regions()
    idx = regions.locate(np.array([117.0197, 116.40]), np.array([36.6614, 39.90]))
    assert regions.district_code_numbers(idx).tolist() == [370102, 0]
