"""Where an incident is: every district its member sensors are in, and how a title says it.

A flood or traffic incident is scoped per city (a rainstorm over Jinan is one alert), so its
sensors lie in many districts. Until 2026-11-25 an alert carried only the district of the
sensor that opened it: the rainstorm-jinan scenario's red flood alert of 55 gauges in 11 of
Jinan's districts was placed, titled and filtered as ``济南市莱芜区`` alone, and a dashboard
drilled into Jinan painted only 莱芜区. An incident now keeps ``district_codes``: the district of
each member, in the order the first member of each joined (so the opener's district comes
first and a listed district never moves), and its title names them (a few) or counts them.

Pure: regions in, names out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from cityagent.regions import RegionIndex

__all__ = ("MAX_DISTRICTS", "TITLE_DISTRICTS", "add_district", "districts_at", "Place", "place")

#: At most this many districts per incident. Every real incident fits (an incident is scoped
#: to one zone, district or city, and Shandong has 137 districts in all, at most 12 in one
#: city); the bound only stops an anomaly source writing made-up district codes from
#: growing an alert, and every event that carries it, without limit.
MAX_DISTRICTS = 137
#: A title names up to this many districts; more are counted ("济南市11个区县").
TITLE_DISTRICTS = 3


def add_district(codes: list[int], code: int) -> None:
    """Append ``code`` unless listed, or the list is full (``MAX_DISTRICTS``)."""
    if code not in codes and len(codes) < MAX_DISTRICTS:
        codes.append(code)


def districts_at(regions: RegionIndex, first: int, lon: Sequence[float],
                 lat: Sequence[float]) -> list[int]:
    """``first``, then the districts the points lie in, in the points' order (none twice).

    For incidents checkpointed before ``district_codes`` existed: their members' positions are
    all that says where they are. A reading is tagged by its position unless it carries a
    district already, so this is the district detection gave nearly always.
    """
    codes = [first]
    if len(lon):
        found = regions.locate(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
        for code in regions.district_code_numbers(found[found >= 0]).tolist():
            add_district(codes, int(code))
    return codes


class Place:
    """What a title says of where an incident is, in Chinese and English."""

    __slots__ = ("zh", "en", "several")

    def __init__(self, zh: str, en: str, several: bool) -> None:
        self.zh, self.en, self.several = zh, en, several


def place(regions: RegionIndex, city_name: str, codes: Iterable[int], zone_name: str = "",
          zone_name_en: str = "") -> Place:
    """The place of a title: ``济南市历下区`` for one district; ``济南市历下区、天桥区`` and
    ``Lixia District and Tianqiao District`` for up to :data:`TITLE_DISTRICTS`; ``济南市11个区县``
    and ``11 districts`` for more. A scope zone's name follows in Chinese (``·北园大街下穿通道``)
    and is the whole English place. A district of another city than the incident's (a zone
    across a city line) is named with its city."""
    codes = list(codes)
    zh_names, en_names = [], []
    for code in codes[:TITLE_DISTRICTS]:
        try:
            d = regions.district(str(code))
        except KeyError:
            zh_names.append("")
            en_names.append(f"district {code}")
            continue
        zh_names.append(d.name if d.city_name == city_name else d.city_name + d.name)
        en_names.append(d.name_en)
    if len(codes) > TITLE_DISTRICTS:
        zh, en = f"{len(codes)}个区县", f"{len(codes)} districts"
    else:
        zh = "、".join(n for n in zh_names if n)
        en = en_names[0] if len(en_names) < 2 else \
            ", ".join(en_names[:-1]) + " and " + en_names[-1]
    zone_zh = f"·{zone_name}" if zone_name else ""
    return Place(city_name + zh + zone_zh, zone_name_en or en, len(codes) > 1)
