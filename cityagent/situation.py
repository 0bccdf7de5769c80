"""The situation of the province now (一屏观全省): every sensor's latest state, summed per area.

:class:`SituationModel` folds reading batches into per-sensor numpy columns (latest values,
oldest and newest event time, reading count, arrivals of the last seconds, a short series) and
per-district minute counters, and sums them per province, city and district with one
``bincount`` per figure: a fleet of 100k+ sensors costs no Python object per sensor, and an
answer costs milliseconds.

Why stream time: a sensor is *silent* when the stream's newest event time (``stream_ms``, the
newest reading's ``ts`` across all sensors) is more than ``max(3 x interval, 120 s)`` past its
own newest reading (stream time stops at the wall clock: a device's fast clock must not
silence the others). Its interval is the one it has shown (``(newest - oldest) / (readings -
1)``), or before its second reading the registry's or its kind's expected interval. Judged on
the wall clock, a replay of yesterday would show every sensor silent; on stream time it shows
yesterday as it was. If the whole stream stops, stream time stops with it: what shows that is
``readings_per_s`` (counted by the time each record entered Kafka, over the last 10 s of the
wall clock) falling to zero.

Why only maxima, minima, counts and sums: two API replicas, or one API before and after a
restart, read the topic in different groupings and interleave its partitions differently.
These statistics, and anything computed from one sensor's own readings (which keep their order:
a sensor's readings share one partition), come out the same whatever the grouping, *over the
same readings*. A starting API reads only the last ``CITYAGENT_SITUATION_LOOKBACK_H`` hours of
the topic (default 24, by Kafka record time), so two replicas started at different times agree
only within those hours: each sensor's latest state, and what is computed from readings inside
the later start's lookback, are the same; what reaches further back (``readings_total``, a
sensor's reading count and oldest reading, hence the interval it has shown) is not. A sensor
silent for longer than the lookback is unknown to a restarted API unless the sensor registry
names it (then it is listed, silent, without a latest value); a running API forgets it too
(:meth:`SituationModel.forget`, called by the API's readings feed), so that replicas list the
same sensors and the model does not grow for good as sensor ids churn.

Domain indicators use *reporting* sensors only (a silent sensor's last value is stale): the
traffic performance index (``traffic_index`` of the latest speed against the road's free-flow
speed, averaged), gauges at or over 警戒 / 保证 (registry levels, else the kind's), and the
share of pressure sensors at or over their floor (registry ``min_pressure_mpa``, else 0.14 MPa).

Pure: numpy and the standard library; the clock comes in as arguments.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cityagent.batch import ReadingBatch
from cityagent.config_files import read_registry_rows
from cityagent.detectors.config import DetectionConfig
from cityagent.detectors.levels import traffic_index
from cityagent.detectors.registry_profiles import PROFILE_COLUMNS, SensorProfiles
from cityagent.detectors.verdict import SEVERITIES
from cityagent.errors import ConfigError
from cityagent.incident_alert import PROVINCE_CODE, RESOLVED
from cityagent.readings import FUTURE_TOLERANCE_MS, KINDS, VALUE_FIELDS, format_ts
from cityagent.regions import RegionIndex

__all__ = (
    "SituationModel",
    "Scope",
    "SensorRegistry",
    "AlertTally",
    "ALERT_KINDS",
    "SILENT_FACTOR",
    "SILENT_MIN_MS",
    "RATE_WINDOW_S",
    "TREND_MINUTES",
    "PROVINCE_NAME",
    "PROVINCE_NAME_EN",
)

SILENT_FACTOR = 3.0
SILENT_MIN_MS = 120_000
RATE_WINDOW_S = 10
TREND_MINUTES = 30
#: Alert kinds as the situation counts them; an alert of any other kind counts as generic.
ALERT_KINDS: tuple[str, ...] = ("water_level", "pipe_pressure", "traffic", "generic")
PROVINCE_NAME, PROVINCE_NAME_EN = "山东省", "Shandong"

_NEVER = np.iinfo(np.int64).min
_INT64_MAX = int(np.iinfo(np.int64).max)
_SECOND_SLOTS = RATE_WINDOW_S + 2
_TRAFFIC, _WATER, _PRESSURE = (KINDS.index(k) for k in ("traffic", "water_level", "pipe_pressure"))
_GENERIC = len(KINDS)  # a registry sensor of a kind that readings do not have
_KIND_NAMES = (*KINDS, "generic")
_CONGESTED_TPI = 6.0  # from here on a road counts as a concern when ordering worst first
_NUMERIC = {"lon", "lat", *PROFILE_COLUMNS}  # registry columns read as numbers from CSV text
#: Per-sensor columns: dtype, fill value, trailing shape.
_COLUMNS: dict[str, tuple[Any, Any, tuple[int, ...]]] = {
    "kind": (np.int8, _GENERIC, ()),
    "lon": (np.float64, np.nan, ()),
    "lat": (np.float64, np.nan, ()),
    "district": (np.int16, -1, ()),
    "ts": (np.int64, _NEVER, ()),  # newest reading's event time
    "first": (np.int64, _INT64_MAX, ()),  # oldest reading's event time
    "count": (np.int64, 0, ()),
    "latest": (np.float64, np.nan, (3,)),  # the kind's values, in VALUE_FIELDS order
    "expected_ms": (np.float64, 0.0, ()),
    "free_flow": (np.float64, np.nan, ()),
    "warning": (np.float64, np.nan, ()),
    "guaranteed": (np.float64, np.nan, ()),
    "floor": (np.float64, np.nan, ()),
    "registry": (np.int32, -1, ()),
    # Arrivals per wall-clock second (ring). 32 bits: one sensor's backfill of history (two
    # 50,000-reading posts within a second) wrapped 16 bits, and readings/s fell to a fraction.
    "seconds": (np.uint32, 0, (_SECOND_SLOTS,)),
    "written": (np.int64, 0, ()),  # readings written to the series ring
    "arrived": (np.int64, _NEVER, ()),  # when its newest reading entered the stream (~s)
}


# -- inputs: the registry and the alerts -----------------------------------------------------


@dataclass(frozen=True)
class SensorRegistry:
    """The sensor registry (`cityagent sim --registry`): one record per sensor, columnar.

    Numbers are float arrays (NaN: empty), other values object arrays of interned text, so
    100k sensors cost megabytes rather than 100k dicts.
    """

    ids: tuple[str, ...]
    columns: Mapping[str, np.ndarray]
    profiles: SensorProfiles

    @classmethod
    def load(cls, path: Path, config: DetectionConfig | None = None) -> SensorRegistry:
        """Read a ``.csv`` registry, else JSON (``{"sensors": [...]}`` or a list of objects);
        its levels are checked against ``config``'s kinds (``SensorProfiles.load``)."""
        rows = read_registry_rows(path)
        return cls.from_rows(rows, str(path), config)

    @classmethod
    def from_rows(cls, rows: list[Mapping[str, Any]], where: str = "registry",
                  config: DetectionConfig | None = None) -> SensorRegistry:
        # checks ids and threshold columns, with the kind settings a row leaves in place
        profiles = SensorProfiles.from_rows(rows, where, config)
        ids = tuple(str(row["sensor_id"]) for row in rows)
        if len(set(ids)) != len(ids):
            raise ConfigError(f"{where}: some sensor_id is listed twice")
        names = list(dict.fromkeys(k for row in rows for k in row if k != "sensor_id"))
        columns = {name: _column(name, [row.get(name) for row in rows]) for name in names}
        return cls(ids, columns, profiles)

    def __len__(self) -> int:
        return len(self.ids)

    def record(self, index: int) -> dict[str, Any]:
        """The registry's fields of one sensor (None where empty)."""
        out: dict[str, Any] = {}
        for name, column in self.columns.items():
            value = column[index]
            if column.dtype != object:
                value = None if math.isnan(value) else float(value)
            out[name] = None if value == "" else value
        return out


def _column(name: str, values: list[Any]) -> np.ndarray:
    """JSON numbers (and CSV text of the numeric columns) as floats; the rest as objects."""
    present = [v for v in values if v is not None and v != ""]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
    if present and (numeric or name in _NUMERIC):
        try:
            return np.array([math.nan if v is None or v == "" else float(v) for v in values])
        except (TypeError, ValueError):
            pass
    out = np.empty(len(values), dtype=object)
    out[:] = [sys.intern(v) if isinstance(v, str) else v for v in values]
    return out


@dataclass(frozen=True)
class AlertTally:
    """Alerts as columns, for counting: where, how severe, what kind, and when open.

    ``start_ms`` is the event time the alert's first anomaly began, ``end_ms`` the time it was
    resolved (the largest int64 while it is not). Built from the alerts' public snapshots.

    An alert counts in every district of its sensors (``district_codes``): ``area_alert[i]``
    (a row of the other columns) is in district ``area_district[i]``. Until 2026-11-25 an alert
    counted in its opener's district only, and a city-wide flood over 12 of Jinan's districts
    showed as an open alert in one of them.
    """

    city: np.ndarray  # index into regions.cities, -1 when none
    severity: np.ndarray  # index into SEVERITIES
    kind: np.ndarray  # index into ALERT_KINDS
    open: np.ndarray  # bool: not resolved (open or acknowledged)
    start_ms: np.ndarray
    end_ms: np.ndarray
    area_alert: np.ndarray  # a row of the columns above
    area_district: np.ndarray  # index into regions.districts

    @classmethod
    def from_alerts(cls, alerts: Iterable[Mapping[str, Any]],
                    regions: RegionIndex | None = None) -> AlertTally:
        cities = {c.code: i for i, c in enumerate(regions.cities)} if regions else {}
        districts = {d.code: i for i, d in enumerate(regions.districts)} if regions else {}
        severity = {s: i for i, s in enumerate(SEVERITIES)}
        kind = {k: i for i, k in enumerate(ALERT_KINDS)}
        rows, areas = [], []
        for n, a in enumerate(alerts):
            resolved = a["status"] == RESOLVED
            end = (a.get("resolved_at_ms") or a["last_seen_ms"]) if resolved else _INT64_MAX
            rows.append((cities.get(a["city_code"], -1), severity.get(a["severity"], 0),
                         kind.get(a["kind"], len(ALERT_KINDS) - 1), int(not resolved),
                         int(a["first_seen_ms"]), int(end)))
            # Before 2026-11-25 an event had only its opener's district_code.
            for code in dict.fromkeys(a.get("district_codes") or (a["district_code"],)):
                if code in districts:
                    areas.append((n, districts[code]))
        cols = [np.array(c, dtype=np.int64) for c in zip(*rows, strict=True)] if rows else \
            [np.zeros(0, dtype=np.int64)] * 6
        pairs = np.array(areas, dtype=np.int64).reshape(-1, 2)
        return cls(*cols[:3], cols[3].astype(bool), cols[4], cols[5], pairs[:, 0], pairs[:, 1])


@dataclass(frozen=True)
class Scope:
    """What a caller may see: a mask over the model's sensors and the cities it sees whole.

    ``Scope()`` sees everything. A key scoped to cities sees them whole; one scoped (also) by
    sensor-id prefix sees those sensors wherever they are, ``partial`` is then True: the
    per-district minute counters cannot be split by sensor, so such a key's trend gives
    ``readings_per_s`` and ``traffic_index`` only for the cities it sees whole.
    """

    sensors: np.ndarray | None = None
    cities: frozenset[str] | None = None
    partial: bool = False


@dataclass(frozen=True)
class _View:
    """One answer's per-sensor figures, computed once and summed per area."""

    as_of: int
    now_ms: int
    sel: np.ndarray  # visible
    reporting: np.ndarray
    age_ratio: np.ndarray  # time since the newest reading / the silence limit
    recent: np.ndarray  # arrivals within the rate window
    duration_s: float
    tpi: np.ndarray  # NaN unless a reporting traffic sensor
    over_warning: np.ndarray
    over_guaranteed: np.ndarray
    pressure_seen: np.ndarray
    pressure_ok: np.ndarray
    alerts: AlertTally
    scope: Scope


# -- the model ----------------------------------------------------------------------------


def _merge_order(gid: np.ndarray, ts: np.ndarray, held: int) -> np.ndarray:
    """The order of a merge's readings: by ring, event time, the held (the first ``held``)
    before the batch's at one time, else as given; ``np.lexsort((source, ts, gid))``.

    As one int64 key and a stable sort when the key fits 63 bits: the held readings are one
    sorted run and the batch's another, which the stable sort merges in about linear time;
    lexsort's three passes took ~0.6 s for 1.2 million held readings (a backfill with every
    sensor late), the event loop of the API stalled meanwhile."""
    if not len(ts):
        return np.zeros(0, dtype=np.int64)
    low = int(ts.min())
    ts_bits = (int(ts.max()) - low).bit_length()
    gid_bits = int(gid.max()).bit_length()
    source = np.arange(len(ts)) >= held
    if gid_bits + ts_bits + 1 > 63:
        return np.lexsort((source, ts, gid))
    key = (gid.astype(np.int64) << (ts_bits + 1)) | ((ts - low) << 1) | source
    return np.argsort(key, kind="stable")


class SituationModel:
    """Per-sensor latest state and per-district minute counters, folded from reading batches.

    Keeps at most ``series_budget`` recent readings in all (``series_depth`` per sensor while
    the fleet is small, fewer as it grows), for the charts of one sensor.
    """

    def __init__(self, regions: RegionIndex, config: DetectionConfig | None = None,
                 registry: SensorRegistry | None = None, *, series_depth: int = 360,
                 series_budget: int = 2_000_000,
                 future_tolerance_ms: int = FUTURE_TOLERANCE_MS) -> None:
        self.regions = regions
        self.config = config or DetectionConfig.load()
        self.registry = registry
        self.series_depth = series_depth
        self.series_budget = series_budget
        self.future_tolerance_ms = future_tolerance_ms
        self.readings_total = 0
        self.readings_future_total = 0  # dropped: dated too far past the wall clock
        self.readings_wrong_kind_total = 0  # dropped: of another kind than their sensor's
        self.stream_ms: int | None = None
        self.version = 0  # changes with every fold
        self._n = 0
        self._index: dict[str, int] = {}
        self._ids = np.zeros(0, dtype="U1")
        self._cols: dict[str, np.ndarray] = {}
        self._depth = series_depth
        self._series_ts = np.zeros((0, series_depth), dtype=np.int64)
        self._series_val = np.zeros((0, series_depth, 3), dtype=np.float32)
        self._by_id: tuple[int, np.ndarray, np.ndarray] | None = None  # (n, rows, ids) cache
        n_districts = len(regions.districts)
        codes = np.array([int(d.code) for d in regions.districts], dtype=np.int64)
        self._district_order = np.argsort(codes)
        self._district_sorted = codes[self._district_order]
        city_of = {c.code: i for i, c in enumerate(regions.cities)}
        # Index -1 (no district) picks each lookup table's trailing entry.
        self._district_city = np.array([city_of[d.city_code] for d in regions.districts] + [-1])
        self._city_codes = np.array([c.code for c in regions.cities] + [""])
        self._district_codes = np.array([d.code for d in regions.districts] + [""])
        self._minute_of_slot = np.full(TREND_MINUTES, -1, dtype=np.int64)
        self._minute_count = np.zeros((n_districts + 1, TREND_MINUTES), dtype=np.int64)
        self._minute_tpi = np.zeros((n_districts + 1, TREND_MINUTES))
        self._minute_tpi_n = np.zeros((n_districts + 1, TREND_MINUTES), dtype=np.int64)
        self._second_of_slot = np.full(_SECOND_SLOTS, -1, dtype=np.int64)
        self._grow(1024)
        if registry is not None and len(registry):
            self._add_registry(registry)

    def __len__(self) -> int:
        return self._n

    @property
    def sensor_ids(self) -> np.ndarray:
        """Every known sensor's id (str array, the model's row order)."""
        return self._ids[: self._n]

    @property
    def city_codes(self) -> np.ndarray:
        """Every known sensor's city code (str array, ``""`` when not located)."""
        return self._city_codes[self._district_city[self._cols["district"][: self._n]]]

    # -- folding readings -------------------------------------------------------------------

    def update(self, batch: ReadingBatch, now_ms: int,
               arrived_ms: int | np.ndarray | None = None) -> int:
        """Fold a batch in; ``arrived_ms``: when each row entered the stream (default now).

        Returns the rows folded: readings dated more than ``future_tolerance_ms`` past
        ``now_ms`` are not (a sensor sending China time as UTC is 8 h ahead), nor readings of
        another kind than their sensor's (its first reading's, or the registry's), which
        detection drops too: two devices given one id.
        """
        arrived = np.broadcast_to(np.asarray(now_ms if arrived_ms is None else arrived_ms,
                                             dtype=np.int64), (len(batch),))
        ahead = batch.ts_ms > now_ms + self.future_tolerance_ms
        if ahead.any():
            self.readings_future_total += int(ahead.sum())
            batch, arrived = batch.take(~ahead), arrived[~ahead]
        if len(batch) == 0:
            return 0
        kind = batch.kind_codes()
        rows = self._rows(batch, kind)
        own = self._cols["kind"][rows]
        wrong = (own != kind) & (own != _GENERIC)
        if wrong.any():
            self.readings_wrong_kind_total += int(wrong.sum())
            keep = ~wrong
            batch, arrived, kind, rows = batch.take(keep), arrived[keep], kind[keep], rows[keep]
            if len(batch) == 0:
                return 0
        ts = batch.ts_ms
        values = np.full((len(batch), 3), np.nan)
        for code, name in enumerate(KINDS):
            mine = kind == code
            for j, field in enumerate(VALUE_FIELDS[name]):
                values[mine, j] = batch.values[field][mine]
        newest = int(ts.max())
        self.stream_ms = newest if self.stream_ms is None else max(self.stream_ms, newest)
        order = np.lexsort((ts, rows))  # by sensor, then event time, then arrival
        self._fold_latest(rows, ts, kind, values, batch, order)
        self._fold_arrivals(rows, arrived, now_ms)
        self._fold_minutes(rows, ts, kind, values, batch.district)
        self.readings_total += len(batch)
        self.version += 1
        return len(batch)

    def _rows(self, batch: ReadingBatch, kind: np.ndarray) -> np.ndarray:
        """Each row's sensor row, adding the sensors not seen before."""
        get = self._index.get
        ids = batch.sensor_id.tolist()
        rows = np.array([get(s, -1) for s in ids], dtype=np.int64)
        new = np.flatnonzero(rows < 0)
        if new.size:
            _, first = np.unique(batch.sensor_id[new], return_index=True)
            first = new[np.sort(first)]
            self._add([ids[i] for i in first], kind[first])
            rows[new] = [self._index[ids[i]] for i in new.tolist()]
        return rows

    def _fold_latest(self, rows: np.ndarray, ts: np.ndarray, kind: np.ndarray,
                     values: np.ndarray, batch: ReadingBatch, order: np.ndarray) -> None:
        c = self._cols
        by_sensor, by_ts = rows[order], ts[order]
        starts = np.flatnonzero(np.r_[True, by_sensor[1:] != by_sensor[:-1]])
        sizes = np.diff(np.r_[starts, len(order)])
        sensors = by_sensor[starts]
        c["count"][sensors] += sizes
        c["first"][sensors] = np.minimum(c["first"][sensors], by_ts[starts])
        self._fold_series(*self._could_be_kept(by_sensor, by_ts, values[order]))
        last = order[starts + sizes - 1]
        newer = ts[last] >= c["ts"][sensors]  # a later arrival of the same time wins
        sensors, last = sensors[newer], last[newer]
        c["ts"][sensors] = ts[last]
        c["latest"][sensors] = values[last]
        c["kind"][sensors] = kind[last]
        c["lon"][sensors], c["lat"][sensors] = batch.lon[last], batch.lat[last]
        district = self._district_index(batch.district[last])
        tagged = district >= 0
        c["district"][sensors[tagged]] = district[tagged]

    def _could_be_kept(self, by_sensor: np.ndarray, by_ts: np.ndarray, values: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The readings (sorted by sensor, then time) that may enter their sensor's series, and
        their groups' starts and sizes: not those older than every reading of a full ring, as
        its ``depth`` held ones are newer. A backfill older than the rings merged them whole
        (a sort of every held reading of every late sensor) to keep none of it."""
        written = self._cols["written"][by_sensor]
        full = written >= self._depth
        oldest = self._series_ts[by_sensor, written % self._depth]  # a full ring's oldest
        kept = ~(full & (by_ts < oldest))
        if not kept.all():
            by_sensor, by_ts, values = by_sensor[kept], by_ts[kept], values[kept]
        starts = np.flatnonzero(np.r_[True, by_sensor[1:] != by_sensor[:-1]]) if len(by_sensor) \
            else np.zeros(0, dtype=np.int64)
        return by_sensor, by_ts, values, starts, np.diff(np.r_[starts, len(by_sensor)])

    def _fold_series(self, by_sensor: np.ndarray, by_ts: np.ndarray, values: np.ndarray,
                     starts: np.ndarray, sizes: np.ndarray) -> None:
        """Keep each sensor's newest readings by event time, at most a ring's worth.

        Each ring is kept in event-time order from its next slot on, so a reading no older than
        a sensor's newest held one is appended, overwriting the oldest. A sensor with an older
        reading in the batch (a late one) has its ring merged instead: appended, a late reading
        pushed out a newer one (with the ring full, the newest 360 lost one of theirs to it).
        """
        written = self._cols["written"]
        sensors = by_sensor[starts]
        held = written[sensors]
        newest = np.where(held > 0, self._series_ts[sensors, (held - 1) % self._depth], _NEVER)
        late = by_ts[starts] < newest  # the batch is sorted: its first is its oldest
        group = np.repeat(np.arange(len(starts)), sizes)
        if late.any():
            self._merge_series(by_sensor, by_ts, values, group, late)
        rank = np.arange(len(by_sensor)) - starts[group]
        keep = ~late[group] & (rank >= sizes[group] - self._depth)  # only the newest fit
        sensor = by_sensor[keep]
        slot = (written[sensor] + rank[keep]) % self._depth
        self._series_ts[sensor, slot] = by_ts[keep]
        self._series_val[sensor, slot] = values[keep]
        written[sensors[~late]] += sizes[~late]

    def _merge_series(self, by_sensor: np.ndarray, by_ts: np.ndarray, values: np.ndarray,
                      group: np.ndarray, late: np.ndarray) -> None:
        """The rings of the sensors with a late reading: what they hold and the batch's
        readings, the newest ``depth`` by event time, rewritten in order from slot 0."""
        depth, written = self._depth, self._cols["written"]
        new = late[group]
        sensors = np.unique(by_sensor[new])  # the late groups' sensors, in order
        held = np.minimum(written[sensors], depth)
        owner = np.repeat(np.arange(len(sensors)), held)
        first = np.repeat(written[sensors] - held, held)
        slots = (first + np.arange(len(owner)) - np.repeat(np.cumsum(held) - held, held)) % depth
        rows = sensors[owner]
        gid = np.r_[owner, np.searchsorted(sensors, by_sensor[new])]
        ts = np.r_[self._series_ts[rows, slots], by_ts[new]]
        vals = np.concatenate([self._series_val[rows, slots], values[new].astype(np.float32)])
        order = _merge_order(gid, ts, len(owner))
        gid, ts, vals = gid[order], ts[order], vals[order]
        total = np.bincount(gid, minlength=len(sensors))
        begin = np.cumsum(total) - total
        rank = np.arange(len(gid)) - begin[gid]
        drop = np.maximum(total - depth, 0)
        keep = rank >= drop[gid]
        slot = (rank - drop[gid])[keep]
        self._series_ts[sensors[gid[keep]], slot] = ts[keep]
        self._series_val[sensors[gid[keep]], slot] = vals[keep]
        written[sensors] = np.minimum(total, depth)

    def _fold_arrivals(self, rows: np.ndarray, arrived: np.ndarray, now_ms: int) -> None:
        now_s = now_ms // 1000
        second = np.minimum(arrived // 1000, now_s)
        recent = second > now_s - _SECOND_SLOTS
        seconds = self._cols["seconds"]
        for s in np.unique(second[recent]).tolist():
            slot = s % _SECOND_SLOTS
            if self._second_of_slot[slot] < s:
                seconds[: self._n, slot] = 0
                self._second_of_slot[slot] = s
        slot = second % _SECOND_SLOTS
        ok = recent & (self._second_of_slot[slot] == second)
        np.add.at(seconds, (rows[ok], slot[ok]), 1)
        # Not np.maximum.at (~6 % of a fold): of a sensor's rows the last assignment wins, an
        # arrival of this fold, off its newest by the seconds a poll spans; forget() looks a
        # lookback (hours) back.
        latest = self._cols["arrived"]
        latest[rows] = np.maximum(latest[rows], arrived)

    def _fold_minutes(self, rows: np.ndarray, ts: np.ndarray, kind: np.ndarray,
                      values: np.ndarray, district: np.ndarray) -> None:
        """Count each reading in the minute of its event time, in the district it was taken
        in (the sensor's, when the reading is not tagged): not the district the sensor is in
        now, which depends on what was folded before, so a sensor that moved would put its
        earlier minutes elsewhere after a restart than in the API that saw it move."""
        assert self.stream_ms is not None
        minute = ts // 60_000
        recent = minute > self.stream_ms // 60_000 - TREND_MINUTES
        for m in np.unique(minute[recent]).tolist():
            slot = m % TREND_MINUTES
            if self._minute_of_slot[slot] < m:
                for counter in (self._minute_count, self._minute_tpi, self._minute_tpi_n):
                    counter[:, slot] = 0
                self._minute_of_slot[slot] = m
        slot = minute % TREND_MINUTES
        ok = recent & (self._minute_of_slot[slot] == minute)
        area = self._district_index(district)
        untagged = area < 0
        area[untagged] = self._cols["district"][rows[untagged]]
        area[area < 0] = len(self.regions.districts)
        np.add.at(self._minute_count, (area[ok], slot[ok]), 1)
        traffic = np.flatnonzero(ok & (kind == _TRAFFIC))
        tpi = traffic_index(values[traffic, 0], self._cols["free_flow"][rows[traffic]])
        traffic, tpi = traffic[np.isfinite(tpi)], tpi[np.isfinite(tpi)]
        np.add.at(self._minute_tpi, (area[traffic], slot[traffic]), tpi)
        np.add.at(self._minute_tpi_n, (area[traffic], slot[traffic]), 1)

    def _district_index(self, codes: np.ndarray) -> np.ndarray:
        """District codes (int, 0 = not tagged) to indices into regions.districts, -1 if none."""
        if not len(self._district_sorted):
            return np.full(len(codes), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._district_sorted, codes),
                         len(self._district_sorted) - 1)
        return np.where(self._district_sorted[pos] == codes, self._district_order[pos], -1)

    # -- sensors and storage ----------------------------------------------------------------

    def _add(self, ids: list[str], kind: np.ndarray) -> np.ndarray:
        """New rows for these sensors, with their kind's default thresholds."""
        start = self._n
        rows = np.arange(start, start + len(ids))
        self._grow(start + len(ids))
        width = max((len(s) for s in ids), default=1)
        if width > self._ids.dtype.itemsize // 4:
            self._ids = self._ids.astype(f"U{width}")
        self._ids[rows] = ids
        self._index.update(zip(ids, rows.tolist(), strict=True))
        self._n += len(ids)
        c = self._cols
        c["kind"][rows] = kind
        for code, name in enumerate(_KIND_NAMES):
            mine = rows[kind == code]
            kc = self.config.kind(name)
            c["expected_ms"][mine] = kc.expected_interval_s * 1000.0
            c["free_flow"][mine] = kc.free_flow_kmh
            c["warning"][mine], c["guaranteed"][mine] = kc.warning_m, kc.guaranteed_m
            c["floor"][mine] = kc.floor_mpa
        return rows

    def _add_registry(self, registry: SensorRegistry) -> None:
        kinds = registry.columns.get("kind")
        code = {k: i for i, k in enumerate(KINDS)}
        kind = np.array([code.get(k, _GENERIC) for k in kinds] if kinds is not None
                        else [_GENERIC] * len(registry), dtype=np.int8)
        rows = self._add(list(registry.ids), kind)
        c = self._cols
        c["registry"][rows] = np.arange(len(registry))
        for name in ("lon", "lat"):
            column = registry.columns.get(name)
            if column is not None and column.dtype != object:
                c[name][rows] = column
        district = registry.columns.get("district_code")
        if district is not None:
            known = {d.code: i for i, d in enumerate(self.regions.districts)}
            c["district"][rows] = [known.get(str(d), -1) for d in district]
        target = {"expected_interval_s": ("expected_ms", 1000.0), "free_flow_kmh": ("free_flow", 1),
                  "warning_m": ("warning", 1), "guaranteed_m": ("guaranteed", 1),
                  "floor_mpa": ("floor", 1)}
        for sensor, values in registry.profiles.by_sensor.items():
            row = self._index[sensor]
            for name, value in values.items():
                if name in target:
                    column, scale = target[name]
                    c[column][row] = value * scale

    def _grow(self, need: int) -> None:
        capacity = len(self._cols["kind"]) if self._cols else 0
        if need <= capacity:
            return
        capacity = max(1024, capacity)
        while capacity < need:
            capacity *= 2
        n = self._n
        for name, (dtype, fill, shape) in _COLUMNS.items():
            column = np.full((capacity, *shape), fill, dtype=dtype)
            if name in self._cols:
                column[:n] = self._cols[name][:n]
            self._cols[name] = column
        ids = np.zeros(capacity, dtype=self._ids.dtype)
        ids[:n] = self._ids[:n]
        self._ids = ids
        self._resize_series(capacity)

    def _resize_series(self, capacity: int) -> None:
        """Room for ``capacity`` sensors; a smaller ring each when over the global budget."""
        old = self._depth
        depth = max(1, min(self.series_depth, self.series_budget // capacity))
        ts = np.full((capacity, depth), _NEVER, dtype=np.int64)
        val = np.full((capacity, depth, 3), np.nan, dtype=np.float32)
        n = self._n
        if n:
            written = self._cols["written"][:n, None]
            pos = written - depth + np.arange(depth)  # the newest `depth` readings of each
            ok = (pos >= 0) & (pos >= written - old)
            rows = np.broadcast_to(np.arange(n)[:, None], pos.shape)
            src, dst = np.where(ok, pos % old, 0), pos % depth
            ts[rows[ok], dst[ok]] = self._series_ts[rows[ok], src[ok]]
            val[rows[ok], dst[ok]] = self._series_val[rows[ok], src[ok]]
        self._series_ts, self._series_val, self._depth = ts, val, depth

    def forget(self, arrived_before_ms: int) -> int:
        """Drop the sensors whose readings all entered the stream before ``arrived_before_ms``
        (Kafka record time) and that the registry does not name; return how many.

        A starting API reads only the lookback of the topic, so it does not know them: without
        this, a replica that had run for weeks listed every sensor id it had ever seen (ids
        churn: replaced, re-registered, test devices), growing for good, and answered other
        totals than a replica started yesterday. The feed calls it with ``now - lookback``.
        The rows kept stay in their order with what they held; running totals
        (``readings_total``) and the per-minute trend keep what the dropped sensors added.
        """
        c, n = self._cols, self._n
        gone = (c["arrived"][:n] < arrived_before_ms) & (c["registry"][:n] < 0)
        dropped = int(gone.sum())
        if not dropped:
            return 0
        keep = np.flatnonzero(~gone)
        kept = len(keep)
        for name, column in c.items():
            column[:kept] = column[keep]
            column[kept:n] = _COLUMNS[name][1]
        self._series_ts[:kept] = self._series_ts[keep]
        self._series_ts[kept:n] = _NEVER
        self._series_val[:kept] = self._series_val[keep]
        self._series_val[kept:n] = np.nan
        self._ids[:kept] = self._ids[keep]
        self._ids[kept:n] = ""
        self._n = kept
        self._index = {s: i for i, s in enumerate(self._ids[:kept].tolist())}
        self._by_id = None
        self.version += 1
        return dropped

    # -- answers ------------------------------------------------------------------------------

    def as_of_ms(self, now_ms: int) -> int:
        """The time the answers are for: stream time, but never past ``now_ms`` (the wall
        clock), and ``now_ms`` before any reading.

        Why the cap: readings up to ``future_tolerance_ms`` ahead of the clock are folded (a
        device's clock a few minutes fast), and judged on such a reading's time every sensor
        that reports each minute was past its 180 s limit: one fast device made the province
        look silent. A replay of the past is behind the clock, so the cap does not touch it.
        """
        return min(self.stream_ms, now_ms) if self.stream_ms is not None else now_ms

    def situation(self, now_ms: int, scope: Scope | None = None,
                  alerts: AlertTally | None = None) -> dict[str, Any]:
        """The province and its cities: ``{"as_of", "as_of_ms", "province", "cities"}``."""
        view = self._view(now_ms, scope, alerts)
        zero = np.zeros(self._n, dtype=np.int64)
        city = self._district_city[self._cols["district"][: self._n]]
        province = self._summaries(view, zero, 1, np.zeros(len(view.alerts.city), np.int64))[0]
        province.update(code=PROVINCE_CODE, name=PROVINCE_NAME, name_en=PROVINCE_NAME_EN)
        province["trend"] = self._trend(view, None)
        cities = self._summaries(view, city, len(self.regions.cities), view.alerts.city)
        listed = self._listed_cities(view, city)
        out = []
        for i, c in enumerate(self.regions.cities):
            if i in listed:
                cities[i].update(code=c.code, name=c.name, name_en=c.name_en)
                cities[i]["trend"] = self._trend(view, i)
                out.append(cities[i])
        return {**_as_of(view.as_of), "province": _first_keys(province),
                "cities": [_first_keys(c) for c in out]}

    def city_situation(self, city_code: str, now_ms: int, scope: Scope | None = None,
                       alerts: AlertTally | None = None, *,
                       max_sensors: int = 2000) -> dict[str, Any]:
        """One city, its districts, and its sensors worst first (at most ``max_sensors``)."""
        index = next(i for i, c in enumerate(self.regions.cities) if c.code == city_code)
        view = self._view(now_ms, scope, alerts)
        district = self._cols["district"][: self._n].astype(np.int64)
        city = self._district_city[district]
        summary = self._summaries(view, np.where(city == index, 0, -1), 1,
                                  np.where(view.alerts.city == index, 0, -1))[0]
        c = self.regions.cities[index]
        summary.update(code=c.code, name=c.name, name_en=c.name_en, trend=self._trend(view, index))
        mine = [i for i, d in enumerate(self.regions.districts) if d.city_code == city_code]
        districts = self._summaries(view, district, len(self.regions.districts),
                                    view.alerts.area_district, view.alerts.area_alert)
        for i in mine:
            d = self.regions.districts[i]
            districts[i].update(code=d.code, name=d.name, name_en=d.name_en)
        rows = self._worst_first(view, np.flatnonzero(view.sel & (city == index)))[:max_sensors]
        return {**_as_of(view.as_of), "city": _first_keys(summary),
                "districts": [_first_keys(districts[i]) for i in mine],
                "sensors": [self._item(r, view) for r in rows.tolist()]}

    def sensors(self, now_ms: int, scope: Scope | None = None, *, city: str | None = None,
                district: str | None = None, kind: str | None = None,
                status: str | None = None, after: str | None = None,
                limit: int = 100) -> tuple[list[dict[str, Any]], str | None, int]:
        """A page of sensors in id order after ``after``; its next ``after`` and the total."""
        view = self._view(now_ms, scope, AlertTally.from_alerts(()))
        rows, ids = self._sorted_by_id()
        c = self._cols
        keep = view.sel[rows].copy()
        if city is not None:
            keep &= self.city_codes[rows] == city
        if district is not None:
            keep &= self._district_codes[c["district"][rows]] == district
        if kind is not None:
            keep &= c["kind"][rows] == _KIND_NAMES.index(kind)
        if status is not None:
            keep &= view.reporting[rows] == (status == "reporting")
        total = int(keep.sum())
        if after is not None:
            keep[: np.searchsorted(ids, after, side="right")] = False
        page = rows[np.flatnonzero(keep)[: limit + 1]]
        more = len(page) > limit
        page = page[:limit]
        items = [self._item(r, view) for r in page.tolist()]
        return items, (items[-1]["sensor_id"] if more and items else None), total

    def sensor(self, sensor_id: str, now_ms: int) -> dict[str, Any] | None:
        """One sensor as the lists show it, or None when unknown."""
        row = self._index.get(sensor_id)
        if row is None:
            return None
        view = self._view(now_ms, Scope(), AlertTally.from_alerts(()))
        return self._item(row, view)

    def readings(self, sensor_id: str, *, since_ms: int | None = None,
                 limit: int | None = None) -> list[dict[str, Any]] | None:
        """The sensor's recent readings kept in memory, oldest first; None when unknown."""
        row = self._index.get(sensor_id)
        if row is None:
            return None
        written = int(self._cols["written"][row])
        held = min(written, self._depth)
        slots = (written - held + np.arange(held)) % self._depth
        ts = self._series_ts[row, slots]
        values = self._series_val[row, slots]
        order = np.argsort(ts, kind="stable")
        ts, values = ts[order], values[order]
        if since_ms is not None:
            values, ts = values[ts >= since_ms], ts[ts >= since_ms]
        if limit is not None:
            start = max(len(ts) - limit, 0)
            ts, values = ts[start:], values[start:]
        fields = _fields(int(self._cols["kind"][row]))
        text = values.astype(str)  # float32's shortest text: 2.41, not 2.4100000858
        return [{"ts_ms": t, "ts": format_ts(t),
                 **{f: (None if v == "nan" else float(v)) for f, v in zip(fields, vs, strict=False)}}
                for t, vs in zip(ts.tolist(), text.tolist(), strict=True)]

    def kind_codes(self, sensor_ids: list[str]) -> np.ndarray:
        """Each sensor's kind code (the index in KINDS), -1 when not known (or generic)."""
        get = self._index.get
        rows = np.fromiter((get(s, -1) for s in sensor_ids), dtype=np.int64,
                           count=len(sensor_ids))
        known = rows >= 0
        codes = np.full(len(sensor_ids), -1, dtype=np.int64)
        if known.any():
            codes[known] = self._cols["kind"][rows[known]]
        codes[codes == _GENERIC] = -1
        return codes

    def place_of(self, sensor_id: str) -> tuple[str | None, str | None]:
        """The sensor's city and district codes as its readings put it; Nones when unknown."""
        row = self._index.get(sensor_id)
        if row is None:
            return None, None
        district = int(self._cols["district"][row])
        if district < 0:
            return None, None
        return (str(self._city_codes[self._district_city[district]]),
                str(self._district_codes[district]))

    def kind_of(self, sensor_id: str) -> str | None:
        row = self._index.get(sensor_id)
        return None if row is None else _KIND_NAMES[int(self._cols["kind"][row])]

    # -- internals of the answers -----------------------------------------------------------

    def _view(self, now_ms: int, scope: Scope | None, alerts: AlertTally | None) -> _View:
        scope = scope or Scope()
        n, c = self._n, self._cols
        as_of = self.as_of_ms(now_ms)
        count, ts, first = c["count"][:n], c["ts"][:n], c["first"][:n]
        seen = count > 0
        span = np.where(seen, ts - np.where(seen, first, 0), 0)
        learned = span / np.maximum(count - 1, 1)
        interval = np.where((count >= 2) & (span > 0), learned, c["expected_ms"][:n])
        limit = np.maximum(SILENT_FACTOR * interval, SILENT_MIN_MS)
        age = as_of - np.where(seen, ts, as_of)
        reporting = seen & (age <= limit)
        now_s = now_ms // 1000
        slots = np.flatnonzero((self._second_of_slot > now_s - RATE_WINDOW_S - 1)
                               & (self._second_of_slot <= now_s))
        recent = c["seconds"][:n][:, slots].sum(axis=1, dtype=np.int64)
        kind, latest = c["kind"][:n], c["latest"][:n]
        traffic = reporting & (kind == _TRAFFIC)
        tpi = np.where(traffic, traffic_index(latest[:, 0], c["free_flow"][:n]), np.nan)
        water = reporting & (kind == _WATER)
        pressure = reporting & (kind == _PRESSURE) & np.isfinite(latest[:, 0])
        sel = np.ones(n, dtype=bool) if scope.sensors is None else scope.sensors[:n]
        return _View(
            as_of=as_of, now_ms=now_ms, sel=sel, reporting=reporting,
            age_ratio=np.where(seen, age / limit, np.inf),
            recent=recent.astype(np.float64), duration_s=RATE_WINDOW_S + (now_ms % 1000) / 1000,
            tpi=tpi, over_warning=water & (latest[:, 0] >= c["warning"][:n]),
            over_guaranteed=water & (latest[:, 0] >= c["guaranteed"][:n]),
            pressure_seen=pressure, pressure_ok=pressure & (latest[:, 0] >= c["floor"][:n]),
            alerts=alerts if alerts is not None else AlertTally.from_alerts(()), scope=scope)

    def _summaries(self, v: _View, group: np.ndarray, size: int, alert_group: np.ndarray,
                   alert_rows: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Each group's figures; alert ``alert_rows[i]`` (default: row i) counts in group
        ``alert_group[i]`` (-1: none), so an alert may count in several groups."""
        s = v.sel & (group >= 0)
        g = group[s]

        def count(mask: np.ndarray | None = None) -> np.ndarray:
            return np.bincount(g if mask is None else group[s & mask], minlength=size)

        total, reporting = count(), count(v.reporting)
        rate = np.bincount(g, weights=v.recent[s], minlength=size) / v.duration_s
        has_tpi = np.isfinite(v.tpi)
        tpi_sum = np.bincount(group[s & has_tpi], weights=v.tpi[s & has_tpi], minlength=size)
        tpi_n = count(has_tpi)
        warning, guaranteed = count(v.over_warning), count(v.over_guaranteed)
        p_ok, p_n = count(v.pressure_ok), count(v.pressure_seen)
        a = v.alerts
        rows = np.arange(len(a.open)) if alert_rows is None else alert_rows
        live = a.open[rows] & (alert_group >= 0)
        ag, live_rows = alert_group[live], rows[live]
        by_sev = np.bincount(ag * len(SEVERITIES) + a.severity[live_rows],
                             minlength=size * len(SEVERITIES)).reshape(size, -1)
        by_kind = np.bincount(ag * len(ALERT_KINDS) + a.kind[live_rows],
                              minlength=size * len(ALERT_KINDS)).reshape(size, -1)
        out = []
        for i in range(size):
            worst = [sev for sev, k in zip(SEVERITIES, by_sev[i].tolist(), strict=True) if k]
            out.append({
                "sensors": {"total": int(total[i]), "reporting": int(reporting[i]),
                            "silent": int(total[i] - reporting[i])},
                "readings_per_s": round(float(rate[i]), 3),
                "alerts": {"open": int(by_sev[i].sum()),
                           "by_severity": dict(zip(SEVERITIES, by_sev[i].tolist(), strict=True)),
                           "by_kind": dict(zip(ALERT_KINDS, by_kind[i].tolist(), strict=True)),
                           "worst": worst[-1] if worst else None},
                "indicators": {
                    "traffic_index": round(float(tpi_sum[i] / tpi_n[i]), 2) if tpi_n[i] else None,
                    "gauges_over_warning": int(warning[i]),
                    "gauges_over_guaranteed": int(guaranteed[i]),
                    "pressure_compliance": round(float(p_ok[i] / p_n[i]), 4) if p_n[i] else None,
                },
            })
        return out

    def _trend(self, v: _View, city: int | None) -> list[dict[str, Any]]:
        """One point per minute of stream time, the last 30 minutes (province if city None).

        The last point is the minute stream time is in: ``complete`` False, and no
        ``readings_per_s``. Rated over its seconds so far, it spiked: readings come at instants
        (a simulator round, a sensor's 60 s beat), so the span from the minute's start to the
        newest reading, which holds the readings *at* both ends, counted one beat more than
        its length (a fleet reporting every 10 s at 10 readings/s showed 100 readings/s at the
        minute's first round, 20 at its second); and the rest of the minute's readings from
        other partitions and late senders were still to come. Its open alerts (at stream time)
        and mean traffic index (a mean, not a rate) stand as they are."""
        newest = v.as_of // 60_000
        minutes = np.arange(newest - TREND_MINUTES + 1, newest + 1)
        slots = minutes % TREND_MINUTES
        held = self._minute_of_slot[slots] == minutes
        whole = v.scope.cities is None or (
            city is not None and self.regions.cities[city].code in v.scope.cities) or (
            city is None and not v.scope.partial)
        rows = self._trend_rows(v.scope, city)
        counts = np.where(held, self._minute_count[rows][:, slots].sum(axis=0), 0)
        tpi = np.where(held, self._minute_tpi[rows][:, slots].sum(axis=0), 0.0)
        tpi_n = np.where(held, self._minute_tpi_n[rows][:, slots].sum(axis=0), 0)
        a = v.alerts
        mine = a.city == city if city is not None else np.ones(len(a.city), dtype=bool)
        ends = np.minimum((minutes + 1) * 60_000 - 1, v.as_of)
        open_at = ((a.start_ms[mine, None] <= ends) & (a.end_ms[mine, None] > ends)).sum(axis=0)
        return [{"t_ms": int(m) * 60_000,
                 "readings_per_s": round(k / 60, 3) if whole and m < newest else None,
                 "open_alerts": int(o),
                 "traffic_index": round(float(t / n), 2) if whole and n else None,
                 "complete": m < newest}
                for m, k, o, t, n in zip(minutes.tolist(), counts.tolist(), open_at.tolist(),
                                         tpi.tolist(), tpi_n.tolist(), strict=True)]

    def _trend_rows(self, scope: Scope, city: int | None) -> np.ndarray:
        """The minute counters' rows (districts, and the untagged row) an area's trend sums."""
        areas = self._district_city  # per district, then -1 for the untagged row
        if city is not None:
            return np.flatnonzero(areas == city)
        if scope.cities is None:
            return np.arange(len(areas))
        wanted = [i for i, c in enumerate(self.regions.cities) if c.code in scope.cities]
        return np.flatnonzero(np.isin(areas, wanted))

    def _listed_cities(self, v: _View, city: np.ndarray) -> set[int]:
        if v.scope.cities is None:
            return set(range(len(self.regions.cities)))
        listed = {i for i, c in enumerate(self.regions.cities) if c.code in v.scope.cities}
        listed |= set(np.unique(city[v.sel & (city >= 0)]).tolist())
        return listed | set(np.unique(v.alerts.city[v.alerts.city >= 0]).tolist())

    def _worst_first(self, v: _View, rows: np.ndarray) -> np.ndarray:
        """Over 保证, then over 警戒 / under the pressure floor / congested, then silent."""
        c = self._cols
        latest = c["latest"][rows, 0]
        warning, guaranteed, floor = c["warning"][rows], c["guaranteed"][rows], c["floor"][rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            water = np.nan_to_num((latest - warning) / np.maximum(guaranteed - warning, 1e-9))
            low = np.nan_to_num((floor - latest) / floor)
        tpi = np.nan_to_num(v.tpi[rows])
        level = np.zeros(len(rows))
        level = np.where(v.pressure_seen[rows] & ~v.pressure_ok[rows], 2 + np.clip(low, 0, 0.99), level)
        level = np.where(tpi >= _CONGESTED_TPI, 2 + tpi / 10.01, level)
        level = np.where(v.over_warning[rows], 2 + np.clip(water, 0, 0.99), level)
        level = np.where(v.over_guaranteed[rows], 3 + np.clip(water - 1, 0, 0.99), level)
        with np.errstate(divide="ignore"):
            overdue = np.clip(1 - 1 / v.age_ratio[rows], 0, 0.99)  # never seen: the most
        level = np.where(v.reporting[rows], level, 1 + overdue)
        return rows[np.lexsort((self._ids[rows], -level))]

    def _item(self, row: int, v: _View) -> dict[str, Any]:
        c = self._cols
        kind = int(c["kind"][row])
        district = int(c["district"][row])
        seen = c["count"][row] > 0
        ts = int(c["ts"][row]) if seen else None
        item: dict[str, Any] = {
            "sensor_id": str(self._ids[row]), "kind": _KIND_NAMES[kind],
            "lon": _number(c["lon"][row]), "lat": _number(c["lat"][row]),
            "district_code": str(self._district_codes[district]) or None,
            "district_name": self.regions.districts[district].name if district >= 0 else None,
            "city_code": str(self._city_codes[self._district_city[district]]) or None,
            "status": "reporting" if v.reporting[row] else "silent",
            "latest": ({f: _number(x) for f, x in zip(_fields(kind), c["latest"][row].tolist(),
                                                       strict=False)} if seen else {}),
            "ts_ms": ts, "ts": format_ts(ts) if ts is not None else None,
        }
        index = int(c["registry"][row])
        if index >= 0 and self.registry is not None:
            for name, value in self.registry.record(index).items():
                item.setdefault(name, value)
        return item

    def _sorted_by_id(self) -> tuple[np.ndarray, np.ndarray]:
        if self._by_id is None or self._by_id[0] != self._n:
            ids = self._ids[: self._n]
            rows = np.argsort(ids, kind="stable")
            self._by_id = (self._n, rows, ids[rows])
        return self._by_id[1], self._by_id[2]


def _fields(kind: int) -> tuple[str, ...]:
    return VALUE_FIELDS[KINDS[kind]] if kind < len(KINDS) else ()


def _number(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _as_of(as_of_ms: int) -> dict[str, Any]:
    return {"as_of": format_ts(as_of_ms), "as_of_ms": int(as_of_ms)}


def _first_keys(summary: dict[str, Any]) -> dict[str, Any]:
    """Code and names first, as the contract lists them."""
    head = {k: summary.pop(k) for k in ("code", "name", "name_en") if k in summary}
    return {**head, **summary}
