"""Shandong districts and cities, and vectorised point-in-polygon tagging.

Sensor events arrive in batches of thousands of (lon, lat) points, and every one must be tagged
with the district (区/县/县级市) and prefecture city it lies in. Doing that point by point in
Python costs ~14 µs a point; here the 137 district polygons are loaded once, prepared and put in
an STR-tree, and a whole batch is tagged with two vectorised shapely calls (bounding-box query,
then exact intersects on prepared polygons): over a million points a second.

The boundaries are vendored in ``cityagent/data/shandong_districts.json`` (see ``SOURCE.md``
beside it: MIT, datum not stated and likely GCJ-02, accurate to roughly a kilometre), with
today's (post-2019) district codes and names, and English names for districts and cities.

Pure domain code: imports only numpy, shapely and the standard library.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import shape

__all__ = ["City", "District", "RegionIndex", "default_regions", "DATA_FILE"]

DATA_FILE = "shandong_districts.json"
_NO_REGION = -1


@dataclass(frozen=True)
class District:
    """A county-level division (区, 县 or 县级市), e.g. ``370102`` 历下区 (Lixia District) of 济南市.

    ``name_en`` is the pinyin romanisation plus the type: "Lixia District", "Shan County",
    "Laoling City".
    """

    code: str
    name: str
    city_code: str
    city_name: str
    name_en: str


@dataclass(frozen=True)
class City:
    """A prefecture-level city, e.g. ``370100`` 济南市 (Jinan)."""

    code: str
    name: str
    name_en: str


class RegionIndex:
    """Shandong's districts, indexed once for fast vectorised point-in-polygon tagging."""

    districts: tuple[District, ...]
    cities: tuple[City, ...]
    polygons: np.ndarray  # object array of shapely (Multi)Polygons; index i <-> districts[i]

    def __init__(self, districts: list[District], cities: list[City], polygons: list) -> None:
        if len(districts) != len(polygons):
            raise ValueError("districts and polygons differ in length")
        self.districts = tuple(districts)
        self.cities = tuple(sorted(cities, key=lambda c: c.code))
        self.polygons = np.asarray(polygons, dtype=object)
        self._district_by_code = {d.code: d for d in self.districts}
        self._city_by_code = {c.code: c for c in self.cities}
        if len(self._district_by_code) != len(self.districts):
            raise ValueError("duplicate district codes")
        if len(self._city_by_code) != len(self.cities):
            raise ValueError("duplicate city codes")
        for d in self.districts:
            if d.city_code not in self._city_by_code:
                raise ValueError(f"district {d.code} refers to unknown city {d.city_code}")
        self._district_index = {d.code: i for i, d in enumerate(self.districts)}
        # Lookup tables with a trailing "" so that index -1 maps to "".
        self._district_code_arr = np.array([d.code for d in self.districts] + [""])
        self._city_code_arr = np.array([d.city_code for d in self.districts] + [""])
        # Index -1 (no district) picks the trailing entry in these lookup arrays.
        self._district_code_int = np.array([int(d.code) for d in self.districts] + [0], dtype=np.int64)
        # is_district_code's table: True at each district's code (codes are 6-digit numbers).
        self._is_code = np.zeros(int(self._district_code_int.max()) + 1, dtype=np.bool_)
        self._is_code[self._district_code_int[:-1]] = True
        shapely.prepare(self.polygons)
        self._tree = shapely.STRtree(self.polygons)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | None = None) -> RegionIndex:
        """Load a districts FeatureCollection; by default the vendored Shandong file."""
        if path is None:
            text = resources.files("cityagent").joinpath("data", DATA_FILE).read_text("utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        return cls.from_geojson(json.loads(text))

    @classmethod
    def from_geojson(cls, fc: dict) -> RegionIndex:
        districts: list[District] = []
        polygons = []
        cities: dict[str, City] = {}
        for feat in fc["features"]:
            p = feat["properties"]
            districts.append(
                District(
                    code=str(p["district_code"]),
                    name=p["district_name"],
                    city_code=str(p["city_code"]),
                    city_name=p["city_name"],
                    name_en=p["district_name_en"],
                )
            )
            cities.setdefault(
                str(p["city_code"]),
                City(code=str(p["city_code"]), name=p["city_name"], name_en=p["city_name_en"]),
            )
            polygons.append(shape(feat["geometry"]))
        return cls(districts, list(cities.values()), polygons)

    # -- lookups ----------------------------------------------------------------------------------

    def district(self, code: str) -> District:
        """The district with this code; ``KeyError`` if unknown."""
        return self._district_by_code[code]

    def district_index(self, code: str) -> int:
        """Index of the district with this code (into ``districts``); ``KeyError`` if unknown."""
        return self._district_index[code]

    def city(self, code: str) -> City:
        """The city with this code (e.g. ``"370100"``); ``KeyError`` if unknown."""
        return self._city_by_code[code]

    # -- vectorised tagging -------------------------------------------------------------------

    def locate(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Return an int32 array of district indices (into self.districts), -1 where the point is in no district.

        ``lon``/``lat`` are broadcast together; NaN or infinite coordinates give -1. A point on a
        border shared by several districts gets the lowest of their indices.
        """
        x, y = np.broadcast_arrays(
            np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        )
        out = np.full(x.shape, _NO_REGION, dtype=np.int32)
        xf, yf = x.ravel(), y.ravel()
        ok = np.flatnonzero(np.isfinite(xf) & np.isfinite(yf))
        if ok.size == 0:
            return out
        points = shapely.points(xf[ok], yf[ok])
        # Bounding-box candidates: (input index, tree index) pairs ...
        inp, cand = self._tree.query(points)
        # ... filtered exactly against the prepared polygons.
        hit = shapely.intersects(self.polygons[cand], points[inp])
        inp, cand = inp[hit], cand[hit]
        found = np.full(ok.size, np.iinfo(np.int32).max, dtype=np.int32)
        np.minimum.at(found, inp, cand.astype(np.int32))
        found[found == np.iinfo(np.int32).max] = _NO_REGION
        out.reshape(-1)[ok] = found
        return out

    def district_codes(self, idx: np.ndarray) -> np.ndarray:
        """District codes (str array) for indices from :meth:`locate`; ``""`` where -1."""
        return self._district_code_arr[np.asarray(idx)]

    def district_code_numbers(self, idx: np.ndarray) -> np.ndarray:
        """District codes as int64 (e.g. 370102) for indices from :meth:`locate`; 0 where -1.

        The form reading batches carry on the wire (``cityagent.batch``).
        """
        return self._district_code_int[np.asarray(idx)]

    def is_district_code(self, codes: np.ndarray) -> np.ndarray:
        """Per int code: is it one of these districts' (0 and foreign codes are not)?"""
        codes = np.asarray(codes, dtype=np.int64)
        out = np.zeros(codes.shape, dtype=np.bool_)
        fits = (codes > 0) & (codes < len(self._is_code))
        out[fits] = self._is_code[codes[fits]]
        return out

    def city_codes(self, idx: np.ndarray) -> np.ndarray:
        """City codes (str array, e.g. ``"370100"``) for indices from :meth:`locate`; ``""`` where -1."""
        return self._city_code_arr[np.asarray(idx)]

    def random_points(
        self, district_index: int, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """n uniformly random points inside that district (rejection sampling in its bbox) — used by the simulator.

        Every returned point ``locate``s to ``district_index`` (points in the negligible slivers
        where neighbouring polygons overlap are rejected too).
        """
        if not 0 <= district_index < len(self.districts):
            raise IndexError(f"district index {district_index} out of range")
        if n <= 0:
            return np.empty(0), np.empty(0)
        poly = self.polygons[district_index]
        minx, miny, maxx, maxy = poly.bounds
        bbox_area = (maxx - minx) * (maxy - miny)
        accept = max(poly.area / bbox_area, 0.01) if bbox_area > 0 else 0.01
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        have = 0
        while have < n:
            m = int((n - have) / accept * 1.2) + 16
            x = rng.uniform(minx, maxx, m)
            y = rng.uniform(miny, maxy, m)
            keep = shapely.contains_xy(poly, x, y)
            x, y = x[keep], y[keep]
            keep = self.locate(x, y) == district_index
            xs.append(x[keep])
            ys.append(y[keep])
            have += int(keep.sum())
        return np.concatenate(xs)[:n], np.concatenate(ys)[:n]


@functools.cache
def default_regions() -> RegionIndex:
    """The vendored Shandong :class:`RegionIndex`, loaded once per process."""
    return RegionIndex.load()
