"""The fleet registry: every sensor's id, kind, place, thresholds and report interval.

Written as JSON (an object with a ``sensors`` list) or CSV (one row per sensor), chosen by
the file's extension. Nothing in it depends on the clock, so the same ``--sensors`` and
``--seed`` always give a byte-identical file.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from cityagent.detectors.config import DetectionConfig
from sensors_sim.generators import FleetSignals

__all__ = ("registry_rows", "write_registry", "COLUMNS")

COLUMNS: tuple[str, ...] = (
    "sensor_id", "kind", "lon", "lat", "city_code", "city_name", "district_code",
    "district_name", "expected_interval_s", "road_class", "free_flow_kmh",
    "water_site", "warning_level_m", "guaranteed_level_m", "tidal", "min_pressure_mpa",
    "max_pressure_mpa",
)


def _limits(config: DetectionConfig) -> dict[str, float]:
    """The per-kind limits every sensor of a kind starts from (detection.toml)."""
    pressure = config.kind("pipe_pressure")
    return {"min_pressure_mpa": pressure.floor_mpa, "max_pressure_mpa": pressure.high_mpa}


def registry_rows(signals: FleetSignals, interval_s: float, regions,
                  config: DetectionConfig | None = None) -> list[dict[str, object]]:
    """One dict per sensor, with every column of :data:`COLUMNS` (None where not applicable)."""
    limits = _limits(config or DetectionConfig.load())
    names = {int(d.code): (d.name, d.city_name) for d in regions.districts}
    traffic = {int(r): i for i, r in enumerate(signals.rows["traffic"].tolist())}
    water = {int(r): i for i, r in enumerate(signals.rows["water_level"].tolist())}
    road = signals.traffic.road_class_names()
    tidal = signals.water.tide_amp > 0
    site = signals.water.site_names()
    rows = []
    for r, sensor in enumerate(signals.fleet):
        district_name, city_name = names.get(sensor.district_code, ("", ""))
        row: dict[str, object] = dict.fromkeys(COLUMNS)
        row.update(
            sensor_id=sensor.sensor_id, kind=sensor.kind, lon=round(sensor.lon, 6),
            lat=round(sensor.lat, 6), city_code=str(sensor.city_code), city_name=city_name,
            district_code=str(sensor.district_code), district_name=district_name,
            expected_interval_s=round(float(interval_s), 3),
        )
        if r in traffic:
            i = traffic[r]
            row.update(road_class=str(road[i]),
                       free_flow_kmh=round(float(signals.traffic.free_flow[i]), 1))
        elif r in water:
            i = water[r]
            row.update(water_site=str(site[i]),
                       warning_level_m=float(signals.water.warning[i]),
                       guaranteed_level_m=float(signals.water.guaranteed[i]),
                       tidal=bool(tidal[i]))
        else:
            row.update(min_pressure_mpa=limits.get("min_pressure_mpa"),
                       max_pressure_mpa=limits.get("max_pressure_mpa"))
        rows.append(row)
    return rows


def write_registry(path: Path, signals: FleetSignals, interval_s: float, regions,
                   seed: int) -> int:
    """Write the registry to ``path`` (``.csv`` → CSV, anything else → JSON); return rows."""
    rows = registry_rows(signals, interval_s, regions)
    if Path(path).suffix.lower() == ".csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        text = buf.getvalue()
    else:
        # One sensor a line: diffable, and greppable by id.
        head = json.dumps({"seed": seed, "count": len(rows), "columns": list(COLUMNS)},
                          ensure_ascii=False)[:-1]
        lines = ",\n".join(json.dumps(row, ensure_ascii=False, default=_plain) for row in rows)
        text = f'{head}, "sensors": [\n{lines}\n]}}\n'
    Path(path).write_text(text, encoding="utf-8")
    return len(rows)


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to the registry")
