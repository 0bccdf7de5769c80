"""Readings travel in batches: columnar, one partition key per batch, decoded straight to numpy.

Why batches: Faust spends 100-260 µs of CPU per Kafka message whatever the agent does, so one
message per reading caps a worker near 4-10k readings/s; a message carrying ~100 readings
processed with numpy reaches ~300k/s (docs/architecture.md). Why columnar: ``orjson`` decodes
a column of numbers far faster than a list of small objects, and a column becomes a numpy
array in one call.

Why buckets: every reading of one sensor must reach the same partition, always, so that its
state has one owner. A batch holds readings of one *bucket*, a stable CRC-32 hash of the
sensor id modulo ``NUM_BUCKETS``; the bucket's key (``b017``) is the Kafka message key, and
Kafka's default partitioner (murmur2, the same in every client) maps it to one partition.
``NUM_BUCKETS`` must never change on a live deployment: it would move sensors between owners.

Wire format (JSON object, one Kafka message value)::

    {"v": 2,
     "sensor_id": [...], "kind": [...],   # kind codes: 0 traffic, 1 water_level, 2 pipe_pressure
     "ts_ms": [...], "lon": [...], "lat": [...],
     "district": [...],                   # administrative code (int), 0 = not tagged yet
     "speed_kmh": [...], "flow_vph": [...], "occupancy_pct": [...],  # traffic rows only
     "level_m": [...],                    # water_level rows only
     "pressure_mpa": [...]}               # pipe_pressure rows only

A value column lists the values of the rows of its kind, in row order, so no column carries
nulls (turning JSON nulls into NaN cost more than all the rest of decoding).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from cityagent.errors import InvalidBatch
from cityagent.readings import ALL_VALUE_FIELDS, KINDS, VALUE_FIELDS, Reading

__all__ = (
    "NUM_BUCKETS",
    "ReadingBatch",
    "bucket_of",
    "bucket_key",
    "encode_batch",
    "decode_batch",
)

#: Number of sensor buckets. Fixed for the life of a deployment (see module docstring).
NUM_BUCKETS = 256
WIRE_VERSION = 2
_KIND_NAMES = np.array(KINDS)
_KIND_CODE = {kind: code for code, kind in enumerate(KINDS)}
_FIELD_KIND = {f: _KIND_CODE[k] for k, fs in VALUE_FIELDS.items() for f in fs}
_NUMPY_OPTS = orjson.OPT_SERIALIZE_NUMPY


def bucket_of(sensor_id: str) -> int:
    """The stable bucket of a sensor: CRC-32 of its UTF-8 id modulo NUM_BUCKETS."""
    return zlib.crc32(sensor_id.encode()) % NUM_BUCKETS


def bucket_key(bucket: int) -> str:
    """The Kafka message key of a bucket's batches."""
    return f"b{bucket:03d}"


@dataclass(frozen=True, eq=False)
class ReadingBatch:
    """Readings as parallel numpy columns. Values absent for a reading's kind are NaN."""

    sensor_id: np.ndarray  # str (object dtype when decoded from the wire)
    kind: np.ndarray  # str, one of KINDS
    ts_ms: np.ndarray  # int64
    lon: np.ndarray  # float64
    lat: np.ndarray  # float64
    district: np.ndarray  # int64 administrative code, 0 = not tagged
    values: dict[str, np.ndarray]  # float64 per value field
    #: ``kind`` as wire codes (``kind_codes()``), when known: decoding has them, and the
    #: detectors, which work on codes, then need not compare kind names per batch.
    codes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ts_ms)

    @classmethod
    def from_readings(
        cls, readings: Sequence[Reading], districts: Sequence[int] | np.ndarray | None = None
    ) -> ReadingBatch:
        """Columns from validated readings; ``districts`` are their codes when already known."""
        n = len(readings)
        values = {f: np.full(n, np.nan) for f in ALL_VALUE_FIELDS}
        for i, r in enumerate(readings):
            for name, v in r.values.items():
                values[name][i] = v
        return cls(
            sensor_id=np.array([r.sensor_id for r in readings], dtype=str),
            kind=np.array([r.kind for r in readings], dtype=str),
            ts_ms=np.fromiter((r.ts_ms for r in readings), dtype=np.int64, count=n),
            lon=np.fromiter((r.lon for r in readings), dtype=np.float64, count=n),
            lat=np.fromiter((r.lat for r in readings), dtype=np.float64, count=n),
            district=(
                np.zeros(n, dtype=np.int64)
                if districts is None
                else np.asarray(districts, dtype=np.int64)
            ),
            values=values,
        )

    def take(self, index: np.ndarray) -> ReadingBatch:
        """The rows at ``index`` (an int or bool array), as a new batch."""
        return ReadingBatch(
            sensor_id=self.sensor_id[index],
            kind=self.kind[index],
            ts_ms=self.ts_ms[index],
            lon=self.lon[index],
            lat=self.lat[index],
            district=self.district[index],
            values={k: v[index] for k, v in self.values.items()},
            codes=None if self.codes is None else self.codes[index],
        )

    def with_districts(self, district: np.ndarray) -> ReadingBatch:
        """The same rows tagged with these district codes."""
        return ReadingBatch(
            self.sensor_id, self.kind, self.ts_ms, self.lon, self.lat,
            np.asarray(district, dtype=np.int64), self.values, self.codes,
        )

    def kind_codes(self) -> np.ndarray:
        """The kind of each row as its wire code (the index in KINDS; -1: not one of them)."""
        if self.codes is not None:
            return self.codes
        codes = np.full(len(self), -1, dtype=np.int64)
        for code, kind in enumerate(KINDS):
            codes[self.kind == kind] = code
        return codes

    def buckets(self) -> np.ndarray:
        """The bucket of each row."""
        return np.fromiter((bucket_of(s) for s in self.sensor_id.tolist()), dtype=np.int64, count=len(self))

    def split_by_bucket(self, max_rows: int = 500) -> Iterable[tuple[str, ReadingBatch]]:
        """(key, batch) pairs, one bucket each, at most ``max_rows`` rows per batch, in row order."""
        buckets = self.buckets()
        order = np.argsort(buckets, kind="stable")
        sorted_buckets = buckets[order]
        starts = np.flatnonzero(np.r_[True, sorted_buckets[1:] != sorted_buckets[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            key = bucket_key(int(sorted_buckets[start]))
            for chunk in range(start, end, max_rows):
                yield key, self.take(order[chunk : min(end, chunk + max_rows)])

    def readings(self) -> list[Reading]:
        """Back to Reading objects (for tests, replay and small batches; slow on big ones)."""
        out = []
        for i in range(len(self)):
            kind = str(self.kind[i])
            vals = {f: float(self.values[f][i]) for f in VALUE_FIELDS[kind]}
            out.append(
                Reading(str(self.sensor_id[i]), kind, int(self.ts_ms[i]),
                        float(self.lon[i]), float(self.lat[i]), vals)
            )
        return out


def encode_batch(batch: ReadingBatch) -> bytes:
    """The batch as one compact JSON message value (see the wire format above)."""
    codes = batch.kind_codes()
    doc: dict[str, object] = {
        "v": WIRE_VERSION,
        "sensor_id": batch.sensor_id.tolist(),
        "kind": codes,
        "ts_ms": batch.ts_ms,
        "lon": batch.lon,
        "lat": batch.lat,
        "district": batch.district,
    }
    for name in ALL_VALUE_FIELDS:
        doc[name] = batch.values[name][codes == _FIELD_KIND[name]]
    return orjson.dumps(doc, option=_NUMPY_OPTS)


def _all_texts(items: list) -> bool:
    """Is every item a str? ``str.join`` checks in C, ~3x faster than collecting the types."""
    try:
        "".join(items)
    except TypeError:
        return False
    return True


def decode_batch(data: bytes | str) -> ReadingBatch:
    """A batch from its JSON message value; raise InvalidBatch when it is malformed.

    The producers (API, simulator) validate every reading; this still checks shapes and
    kinds, because anything may write to a Kafka topic.
    """
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidBatch(f"message is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("v") != WIRE_VERSION:
        got = doc.get("v") if isinstance(doc, dict) else type(doc).__name__
        raise InvalidBatch(f"expected a batch object with \"v\": {WIRE_VERSION}; got {got!r}")
    try:
        ids = doc["sensor_id"]
        if not isinstance(ids, list) or not _all_texts(ids):
            raise InvalidBatch("batch column 'sensor_id' must be a list of texts")
        # Object dtype: the ids stay the str objects orjson made (a fixed-width str array
        # costs a copy per id, and the detection state maps ids through a dict anyway).
        sensor_id = np.array(ids, dtype=object)
        n = len(sensor_id)
        codes = np.array(doc["kind"], dtype=np.int64)
        if codes.shape != (n,):
            raise InvalidBatch(f"batch columns differ in length (sensor_id has {n})")
        if n and (codes.min() < 0 or codes.max() >= len(KINDS)):
            raise InvalidBatch(f"batch has an unknown kind code; expected 0-{len(KINDS) - 1}")
        ts_ms = np.array(doc["ts_ms"], dtype=np.int64)
        lon = np.array(doc["lon"], dtype=np.float64)
        lat = np.array(doc["lat"], dtype=np.float64)
        district = np.array(doc.get("district") or np.zeros(n), dtype=np.int64)
        values = {}
        of_kind = [codes == code for code in range(len(KINDS))]
        for name in ALL_VALUE_FIELDS:
            column = np.full(n, np.nan)
            column[of_kind[_FIELD_KIND[name]]] = np.array(doc.get(name) or [], dtype=np.float64)
            values[name] = column
    except KeyError as exc:
        raise InvalidBatch(f"batch lacks column {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise InvalidBatch(f"batch has a column of the wrong type or length: {exc}") from None
    except OverflowError:  # numpy's error for an integer beyond 64 bits in a JSON column
        raise InvalidBatch("batch has an integer beyond 64 bits (ts_ms, kind or district)") from None
    if any(c.shape != (n,) for c in (ts_ms, lon, lat, district)):
        raise InvalidBatch(f"batch columns differ in length (sensor_id has {n})")
    return ReadingBatch(sensor_id, _KIND_NAMES[codes], ts_ms, lon, lat, district, values, codes)
