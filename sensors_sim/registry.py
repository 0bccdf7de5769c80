"""The fleet registry: every sensor's id, kind, place, thresholds and report interval.

Written as JSON (an object with a ``sensors`` list) or CSV (one row per sensor), chosen by
the file's extension. Nothing in it depends on the clock, so the same ``--sensors``,
``--seed`` and detection settings always give a byte-identical file.

The pipes' pressure limits are the detection settings' ``floor_mpa`` and ``high_mpa``, read
as the workers and `cityagent replay` read them (:func:`detection_config_from_env`): with the
packaged file only, a registry written on a host with ``CITYAGENT_DETECTION`` gave every
simulated pipe the packaged limits, which then overrode that file's in the workers of
`cityagent up --simulate`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cityagent.detectors.config import DetectionConfig
from cityagent.settings import detection_settings_from_env
from sensors_sim.generators import FleetSignals

__all__ = ("registry_rows", "write_registry", "detection_config_from_env", "settings_note",
           "COLUMNS")

#: The workers' detection variables the registry is written by (not the registry's own).
_DETECTION_VARS = ("CITYAGENT_DETECTION", "CITYAGENT_WINDOW_S", "CITYAGENT_GRACE_S",
                   "CITYAGENT_FORGET_AFTER_S")

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


def detection_config_from_env(
        environ: Mapping[str, str] | None = None) -> tuple[DetectionConfig, str]:
    """The detection settings as the workers load them (``CITYAGENT_DETECTION``, else the
    packaged file; ``CITYAGENT_WINDOW_S``, ``_GRACE_S`` and ``_FORGET_AFTER_S`` checked as
    they check them), and the file's name with where it came from. ConfigError naming the
    variable or the file that is wrong. ``CITYAGENT_SENSOR_REGISTRY`` is not read: it may
    name the very file being written."""
    env = os.environ if environ is None else environ
    settings = detection_settings_from_env({v: env[v] for v in _DETECTION_VARS if v in env})
    config = DetectionConfig.load(settings.detection_path, window_s=settings.window_s,
                                  grace_s=settings.grace_s,
                                  forget_after_s=settings.forget_after_s)
    where = (f"{settings.detection_path} (CITYAGENT_DETECTION)" if settings.detection_path
             else "cityagent/data/detection.toml (packaged)")
    return config, where


def settings_note(config: DetectionConfig, where: str, interval_s: float) -> str:
    """What the registry's values came from, for the line that says it was written."""
    limits = _limits(config)
    return (f"pipe pressure limits {limits['min_pressure_mpa']:g}-"
            f"{limits['max_pressure_mpa']:g} MPa from {where}, report interval "
            f"{interval_s:g} s (the tick times --accelerate)")


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
                   seed: int, config: DetectionConfig | None = None) -> int:
    """Write the registry to ``path`` (``.csv`` → CSV, anything else → JSON); return rows.
    ``config``: the detection settings the pipes' limits come from (default: packaged)."""
    rows = registry_rows(signals, interval_s, regions, config)
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
