"""The `cityagent bench` workload: every reading of a run, made and encoded before any timing,
with the level breaches that time the worker planted in known messages.

Readings come in rounds of one reading per sensor, event time advancing 1 s per round, all
values inside the thresholds; each chunk of ``per_message`` × 256 readings is split by sensor
bucket into messages of ~``per_message`` readings. Where the markers go and why is in
``control/bench.py``'s docstring (step 5); this module only builds the data, deterministically
for a seed, so its tests need no broker.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from cityagent.batch import NUM_BUCKETS, ReadingBatch, encode_batch
from cityagent.errors import CityAgentError
from cityagent.readings import ALL_VALUE_FIELDS
from cityagent.regions import default_regions
from streams.partitions import partition_of_key

__all__ = ("PARTITIONS", "PER_MESSAGE", "BENCH_WINDOW_S", "BenchError", "Marker", "Workload",
           "build_workload")

PARTITIONS = 8
#: Default readings per Kafka message: what a producer sending >=128k readings/s puts in a
#: bucket's message with a one-second accumulation window (256 buckets).
PER_MESSAGE = 500
BENCH_WINDOW_S = 1.0
_T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: event time of round 0
_SENSOR_KINDS = ("traffic", "water_level", "pipe_pressure")  # cycled by sensor index
#: A breaching value per kind at detection.toml's defaults (no registry): level 4.5 m over the
#: 4.0 m 警戒 (yellow); 0.13 MPa under the 0.14 MPa floor (orange); 5 km/h, traffic index 10
#: against the 60 km/h default free flow. Normal values are generated well inside every level.
#: A marker is one reading, so it must not be a jump of 6 scales or more from a warm baseline:
#: a window of one reading that jumps so far alone is held until the next window confirms
#: it (``detectors.deviation``), and a one-reading marker never is. Against the generated
#: spread (levels 1-3 m, scale ~0.63 m; pressures 0.28-0.45 MPa, ~0.053 MPa) these are ~4
#: and ~4.4 scales; the 9.9 m and 0.05 MPa used before 2026-11-25 were 12.6 and 5.9, and
#: workloads of 20 rounds or more lost markers to the hold.
_BREACH = {"water_level": ("level_m", 4.5), "pipe_pressure": ("pressure_mpa", 0.13),
           "traffic": ("speed_kmh", 5.0)}


class BenchError(CityAgentError):
    """The benchmark could not measure (worker died, timed out, data lost)."""


@dataclass(frozen=True)
class Marker:
    """A planted breach, and the message whose processing closes its window (detects it)."""

    sensor_id: str
    ts_ms: int
    partition: int
    closed_by: int  # position in the partition of the message closing its window


@dataclass(frozen=True)
class Workload:
    """Every message of a run, encoded, with the markers planted in it."""

    messages: list[tuple[bytes, bytes, int]]  # (key, value, partition), in produce order
    readings: int
    sensors: int
    start_markers: list[Marker]
    end_markers: list[Marker]
    #: Readings in the messages processed between each partition's start and end detection
    #: (after the start marker's closing message, up to the end marker's): what is timed.
    timed_readings: int
    #: Partitions whose timing includes sensors' first readings (no message of theirs comes
    #: after the last one bringing a new sensor: too few readings per sensor).
    first_seen_timed: int = 0

    @property
    def mean_readings_per_message(self) -> float:
        return self.readings / max(len(self.messages), 1)


def _sensor_table(sensors: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per sensor: id, kind, position inside a random district, and that district's code."""
    regions = default_regions()
    ids = np.array([f"bench-{i:07d}" for i in range(sensors)], dtype=str)
    kinds = np.array(_SENSOR_KINDS, dtype=str)[np.arange(sensors) % len(_SENSOR_KINDS)]
    district_idx = rng.integers(0, len(regions.districts), sensors)
    lon = np.empty(sensors)
    lat = np.empty(sensors)
    for d in np.unique(district_idx).tolist():
        rows = np.flatnonzero(district_idx == d)
        lon[rows], lat[rows] = regions.random_points(d, rows.size, rng)
    codes = np.array([int(x.code) for x in regions.districts], dtype=np.int64)[district_idx]
    return {"sensor_id": ids, "kind": kinds, "lon": lon, "lat": lat, "district": codes}


def _chunk(table: dict[str, np.ndarray], start: int, stop: int,
           rng: np.random.Generator) -> ReadingBatch:
    """Readings ``start``..``stop`` of the stream: reading i is sensor i % S in round i // S."""
    n_sensors = len(table["sensor_id"])
    i = np.arange(start, stop, dtype=np.int64)
    s = i % n_sensors
    n = len(i)
    kind = table["kind"][s]
    values = {f: np.full(n, np.nan) for f in ALL_VALUE_FIELDS}
    traffic, water, pipe = (kind == k for k in ("traffic", "water_level", "pipe_pressure"))
    values["speed_kmh"][traffic] = rng.uniform(30.0, 80.0, int(traffic.sum()))
    values["flow_vph"][traffic] = rng.uniform(200.0, 1800.0, int(traffic.sum()))
    values["occupancy_pct"][traffic] = rng.uniform(5.0, 40.0, int(traffic.sum()))
    values["level_m"][water] = rng.uniform(1.0, 3.0, int(water.sum()))
    values["pressure_mpa"][pipe] = rng.uniform(0.28, 0.45, int(pipe.sum()))
    return ReadingBatch(
        sensor_id=table["sensor_id"][s],
        kind=kind,
        ts_ms=_T0_MS + (i // n_sensors) * 1000,
        lon=table["lon"][s],
        lat=table["lat"][s],
        district=table["district"][s],
        values=values,
    )


def _plant(batch: ReadingBatch, row: int) -> tuple[str, int]:
    """Make ``row`` of ``batch`` breach a level; return its (sensor_id, ts_ms)."""
    field, value = _BREACH[str(batch.kind[row])]
    batch.values[field][row] = value
    return str(batch.sensor_id[row]), int(batch.ts_ms[row])


def _level_rows(batch: ReadingBatch) -> np.ndarray:
    """The water-level and pipe-pressure rows: a breach of theirs shows in a single window."""
    return np.flatnonzero(np.isin(batch.kind, ("water_level", "pipe_pressure")))


def _marker_row(batch: ReadingBatch, ts_ms: int | None = None) -> int | None:
    """A row of ``batch`` (at ``ts_ms``, if given) whose breach a single window shows: a
    water level or a pipe pressure (traffic is judged on a hopping mean of five windows)."""
    rows = _level_rows(batch)
    if ts_ms is not None:
        rows = rows[batch.ts_ms[rows] == ts_ms]
    return int(rows[0]) if len(rows) else None


def _last_new_sensor(batches: list[tuple[bytes, ReadingBatch, int]], indexes: list[int]) -> int:
    """Position (in ``indexes``) of the last message that brings a sensor not seen before."""
    seen: set[str] = set()
    last_new = -1
    for pos, index in enumerate(indexes):
        ids = batches[index][1].sensor_id.tolist()
        if not seen.issuperset(ids):
            seen.update(ids)
            last_new = pos
    return last_new


def _start_marker(batches: list[tuple[bytes, ReadingBatch, int]], indexes: list[int],
                  avoid: str, step: int, after: int) -> tuple[str, int, int] | None:
    """Plant the start breach in the partition (messages ``indexes``) in the first water or
    pipe reading (not of sensor ``avoid``) of a message after position ``after`` whose
    window a message of its bucket closes. Return (sensor, ts, position of the closing
    message: the same one, or a later one)."""
    for pos in range(after + 1, len(indexes)):
        key, batch, _p = batches[indexes[pos]]
        rows = [r for r in _level_rows(batch).tolist() if batch.sensor_id[r] != avoid]
        if not rows:
            continue
        row = min(rows, key=lambda r: int(batch.ts_ms[r]))  # the earliest window closes first
        window_end = (int(batch.ts_ms[row]) // step + 1) * step
        for later in range(pos, len(indexes)):
            k, b, _p = batches[indexes[later]]
            if k == key and int(b.ts_ms.max()) >= window_end:
                sensor, ts = _plant(batch, row)
                return sensor, ts, later
    return None


def build_workload(readings: int, sensors: int, partitions: int = PARTITIONS,
                   seed: int = 20261122, per_message: int = PER_MESSAGE) -> Workload:
    """All messages of a run, markers planted, encoded; deterministic for a seed.

    After the readings, every bucket gets one *flush* message: one reading a round later,
    so that the last round's windows close in event time (as the next round would) instead
    of waiting for the worker's idle timer.
    """
    rng = np.random.default_rng(seed)
    table = _sensor_table(sensors, rng)
    batches: list[tuple[bytes, ReadingBatch, int]] = []
    chunk_readings = per_message * NUM_BUCKETS  # ~per_message rows per bucket per chunk
    for start in range(0, readings, chunk_readings):
        chunk = _chunk(table, start, min(readings, start + chunk_readings), rng)
        for key, part in chunk.split_by_bucket(max_rows=2 * per_message):
            kb = key.encode()
            batches.append((kb, part, partition_of_key(kb, partitions)))
    last: dict[bytes, ReadingBatch] = {}
    for kb, batch, _p in batches:
        last[kb] = batch
    flushes: dict[bytes, ReadingBatch] = {}
    for kb, batch in last.items():
        row = int(np.argmax(batch.ts_ms))
        flush = batch.take(np.array([row]))
        flushes[kb] = dataclasses.replace(flush, ts_ms=flush.ts_ms + int(BENCH_WINDOW_S * 1000))
        batches.append((kb, flushes[kb], partition_of_key(kb, partitions)))
    by_partition: dict[int, list[int]] = {}
    for index, (_k, _b, p) in enumerate(batches):
        by_partition.setdefault(p, []).append(index)
    step = int(BENCH_WINDOW_S * 1000)
    starts: list[Marker] = []
    ends: list[Marker] = []
    timed = 0
    first_seen_timed = 0
    for p, indexes in sorted(by_partition.items()):
        # End: the last round of a bucket whose flush message is among the partition's last
        # (the latest with a water or pipe reading in that round); the flush closes it.
        body_of: dict[bytes, int] = {}
        for pos, index in enumerate(indexes):
            if batches[index][1] is not flushes.get(batches[index][0]):
                body_of[batches[index][0]] = pos
        for pos in range(len(indexes) - 1, -1, -1):
            key = batches[indexes[pos]][0]
            if batches[indexes[pos]][1] is not flushes.get(key):
                raise BenchError(f"partition {p}: no bucket ends on a water or pipe reading, where the "
                                 "bench plants the level breach that times it; use more --sensors")
            body = batches[indexes[body_of[key]]][1]
            row = _marker_row(body, int(body.ts_ms.max()))
            if row is not None:
                break
        end_sensor, end_ts = _plant(body, row)
        end_pos = pos
        ends.append(Marker(end_sensor, end_ts, p, end_pos))
        # Start: once the partition has seen every sensor, so that first-seen costs (a
        # bucket's state growing, paid once per sensor in a worker's life) are not timed. A
        # workload so small that a bucket's only message holds all its readings never gets
        # there: its timing starts at the partition's first message, and says so.
        start = _start_marker(batches, indexes, end_sensor, step, _last_new_sensor(batches, indexes))
        if start is None:
            first_seen_timed += 1
            start = _start_marker(batches, indexes, end_sensor, step, -1)
        if start is None:
            raise BenchError(f"partition {p}: no water or pipe reading whose window closes "
                             f"before the end; use more readings per sensor")
        sensor, ts, start_pos = start
        if start_pos >= end_pos:
            raise BenchError(f"partition {p}: too few rounds to time; use more readings per sensor")
        starts.append(Marker(sensor, ts, p, start_pos))
        timed += sum(len(batches[i][1]) for i in indexes[start_pos + 1: end_pos + 1])
    messages = [(k, encode_batch(b), p) for k, b, p in batches]
    total = sum(len(b) for _k, b, _p in batches)
    return Workload(messages, total, sensors, starts, ends, timed, first_seen_timed)
