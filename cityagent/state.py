"""Detection state of one bucket of sensors: numpy columns, one row per sensor, as bytes.

Why columns: every detector steps all the sensors whose window closed at once, so state is
laid out as arrays indexed by a sensor's row (``index[sensor_id]``), not as a dict per
sensor. Why bytes: the Faust worker checkpoints a bucket's state as one changelog record;
``to_bytes``/``from_bytes`` are a small JSON header plus the raw arrays, ~1 KB per sensor,
and round-trip exactly (tested).

Per-sensor *parameters* (levels, free-flow speed, ...) are not state: they are rebuilt from
the configuration and the registry whenever state is loaded, so a changed registry applies
after a restart without touching the changelog.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from dataclasses import dataclass, field

import numpy as np
import orjson

from cityagent.detectors.config import DETECTORS

__all__ = ("BucketState", "Columns", "COLUMNS", "NO_TS", "TOD_SLOTS")

#: Event time meaning "never".
NO_TS = np.iinfo(np.int64).min
#: Time-of-day baselines: one slot per hour, China Standard Time.
TOD_SLOTS = 24
_D = len(DETECTORS)
_FORMAT = 1
#: The detectors of checkpoints written before the header named them (``ep_*`` columns).
_LEGACY_DETECTORS = ("level", "deviation", "change", "spike", "flatline", "silence")


def _columns(panes: int, detectors: int = _D) -> dict[str, tuple[str, tuple[int, ...], float | int]]:
    """name → (dtype, per-sensor shape, initial value); ``detectors``: the ep_* columns' width."""
    return {
        "kind": ("i1", (), -1),
        "lon": ("f8", (), np.nan),
        "lat": ("f8", (), np.nan),
        "district": ("i8", (), 0),
        "last_ts": ("i8", (), NO_TS),
        "gap_ms": ("f8", (), np.nan),  # learned report interval
        # The two open tumbling windows of a sensor, at slot k % 2.
        "win_k": ("i8", (2,), -1),
        "win_n": ("f8", (2,), 0.0),
        "win_sum": ("f8", (2,), 0.0),
        "win_min": ("f8", (2,), np.inf),
        "win_max": ("f8", (2,), -np.inf),
        # Panes of the hopping window: the last closed tumbling windows, at slot k % panes.
        "pane_k": ("i8", (panes,), -1),
        "pane_n": ("f8", (panes,), 0.0),
        "pane_sum": ("f8", (panes,), 0.0),
        # Recent robust baseline (location, absolute deviation, windows seen).
        "rec_m": ("f8", (), np.nan),
        "rec_d": ("f8", (), 0.0),
        "rec_n": ("f8", (), 0.0),
        # Time-of-day baselines.
        "tod_m": ("f4", (TOD_SLOTS,), np.nan),
        "tod_d": ("f4", (TOD_SLOTS,), 0.0),
        "tod_n": ("f4", (TOD_SLOTS,), 0.0),
        # Fast baseline (CUSUM's reference: a sudden change is relative to the last windows).
        "fast_m": ("f8", (), np.nan),
        "fast_d": ("f8", (), 0.0),
        # Two-sided CUSUM.
        "cus_pos": ("f8", (), 0.0),
        "cus_neg": ("f8", (), 0.0),
        # Trend: two-sided CUSUM of the deviation z-score (detectors.trend).
        "tr_pos": ("f8", (), 0.0),
        "tr_neg": ("f8", (), 0.0),
        # Flatline: how often this sensor's windows are flat; its smallest non-zero range.
        "flat_frac": ("f8", (), 0.0),
        "flat_n": ("f8", (), 0.0),
        "quantum": ("f8", (), np.inf),
        "last_x": ("f8", (), np.nan),  # latest reading's value (for the quantum across batches)
        # Flatline: the current run of identical readings (value, first reading's event time,
        # length), and per open window slot (k % 2) the window k in which a run reached
        # flat_min_readings (-1: none).
        "run_x": ("f8", (), np.nan),
        "run_since": ("i8", (), NO_TS),
        "run_n": ("f8", (), 0.0),
        "run_hit": ("i8", (2,), -1),
        # One episode per detector: start (window start, NO_TS = none), severity rank, peak
        # score, normal windows in a row since the last anomalous one, last observed value.
        "ep_since": ("i8", (detectors,), NO_TS),
        "ep_sev": ("i1", (detectors,), -1),
        "ep_peak": ("f8", (detectors,), 0.0),
        "ep_clear": ("i2", (detectors,), 0),
        "ep_reason": ("i2", (detectors,), 0),  # index into detectors.verdict.REASONS
    }


COLUMNS = _columns(5)
#: The columns as one value the compiled kernels take (``BucketState.columns()``).
Columns = namedtuple("Columns", tuple(COLUMNS))


@dataclass(eq=False)
class BucketState:
    """Detection state of the sensors of one bucket (or of any set of sensors: replay, eval)."""

    panes: int = 5
    ids: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    cols: dict[str, np.ndarray] = field(default_factory=dict)
    #: Event time of the bucket: the latest reading's timestamp (or advanced by the clock).
    watermark: int = int(NO_TS)
    #: Kafka offset of the last message applied (the worker skips re-deliveries up to it).
    last_offset: int = -1
    #: Readings that came after their window had closed (counted, never silently lost).
    late_total: int = 0
    #: Wall clock (ms) when the worker last moved the watermark (a batch, or its idle timer);
    #: 0 = never. Checkpointed, so that a worker restoring the state knows how long the
    #: bucket was idle while no worker ran: that downtime is event time too (silence).
    clock_ms: int = 0
    #: Per-sensor parameters, derived from the configuration (never checkpointed).
    params_cache: tuple[object, int, object] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.cols:
            self.cols = {name: np.full((0, *shape), init, dtype=dtype)
                         for name, (dtype, shape, init) in _columns(self.panes).items()}
        #: Column storage with room to grow; ``cols`` are views of its first len(self) rows.
        self._store = dict(self.cols)
        self._columns: Columns | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def columns(self) -> Columns:
        """The columns as a namedtuple for the compiled kernels (the same arrays as ``cols``)."""
        if self._columns is None or len(self._columns.kind) != len(self.ids):
            self._columns = Columns(**self.cols)
        return self._columns

    def rows_of(self, sensor_ids: np.ndarray | list[str]) -> tuple[np.ndarray, list[str]]:
        """The state row of each id, adding rows for sensors not seen before; also the new ids."""
        index = self.index
        listed = sensor_ids.tolist() if isinstance(sensor_ids, np.ndarray) else sensor_ids
        try:  # the common case, every sensor known: one C-level pass
            return np.fromiter(map(index.__getitem__, listed), dtype=np.int64,
                               count=len(listed)), []
        except KeyError:
            pass
        new: list[str] = []
        for s in dict.fromkeys(s for s in listed if s not in index):
            index[s] = len(self.ids)
            self.ids.append(s)
            new.append(s)
        self._grow(len(new))
        return np.fromiter(map(index.__getitem__, listed), dtype=np.int64, count=len(listed)), new

    def _grow(self, extra: int) -> None:
        """Room for ``extra`` more rows (already in ``ids``): storage doubles when full, so a
        bucket filling up with new sensors copies its columns a few times, not per batch."""
        n = len(self.ids)
        capacity = len(next(iter(self._store.values())))
        if n > capacity:
            capacity = max(n, 2 * capacity, 64)
            specs = _columns(self.panes)
            for name, (dtype, shape, init) in specs.items():
                grown = np.full((capacity, *shape), init, dtype=dtype)
                old = self._store[name]
                grown[: len(old)] = old
                self._store[name] = grown
        self.cols = {name: column[:n] for name, column in self._store.items()}
        self._columns = None

    def to_bytes(self) -> bytes:
        """A checkpoint: JSON header (ids, shapes, counters) + the raw arrays."""
        names = list(self.cols)
        header = orjson.dumps({
            "format": _FORMAT, "panes": self.panes, "ids": self.ids, "columns": names,
            "detectors": list(DETECTORS),
            "watermark": self.watermark, "last_offset": self.last_offset,
            "late_total": self.late_total, "clock_ms": self.clock_ms,
        })
        # One copy: bytes.join reads the arrays' buffers (a tobytes() per column first was
        # ~40x slower, and a checkpoint writes every bucket's ~1 MB at once).
        return b"".join([struct.pack("<I", len(header)), header,
                         *(np.ascontiguousarray(self.cols[n]) for n in names)])

    @classmethod
    def from_bytes(cls, data: bytes) -> BucketState:
        """The state a checkpoint holds; ValueError when it is not one."""
        if len(data) < 4:
            raise ValueError("not a detection-state checkpoint (too short)")
        try:
            return cls._from_bytes(data)
        except (KeyError, TypeError, IndexError, orjson.JSONDecodeError, struct.error) as exc:
            raise ValueError(f"not a readable detection-state checkpoint: {exc!r}") from None

    @classmethod
    def _from_bytes(cls, data: bytes) -> BucketState:
        (size,) = struct.unpack_from("<I", data)
        head = orjson.loads(data[4 : 4 + size])
        if not isinstance(head, dict) or head.get("format") != _FORMAT:
            raise ValueError("not a detection-state checkpoint of a known format")
        panes = int(head["panes"])
        stored = list(head.get("detectors", _LEGACY_DETECTORS))
        specs = _columns(panes, len(stored))
        ids = list(head["ids"])
        n = len(ids)
        cols = {}
        offset = 4 + size
        for name in head["columns"]:
            dtype, shape, _init = specs[name]
            count = n * int(np.prod(shape, dtype=np.int64))
            array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            cols[name] = array.reshape((n, *shape)).copy()
            offset += array.nbytes
        specs = _columns(panes)
        if stored != list(DETECTORS):  # a detector added or moved since: episodes by name
            for name in [c for c in cols if c.startswith("ep_")]:
                dtype, shape, init = specs[name]
                old, cols[name] = cols[name], np.full((n, *shape), init, dtype=dtype)
                for i, det in enumerate(DETECTORS):
                    if det in stored:
                        cols[name][:, i] = old[:, stored.index(det)]
        for name, (dtype, shape, init) in specs.items():  # columns added since: defaults
            cols.setdefault(name, np.full((n, *shape), init, dtype=dtype))
        return cls(
            panes=panes, ids=ids, index={s: i for i, s in enumerate(ids)}, cols=cols,
            watermark=int(head["watermark"]), last_offset=int(head["last_offset"]),
            late_total=int(head["late_total"]), clock_ms=int(head.get("clock_ms", 0)),
        )
