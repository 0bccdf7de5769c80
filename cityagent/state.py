"""Detection state of one bucket of sensors: numpy columns, one row per sensor, as bytes.

Why columns: every detector steps all the sensors whose window closed at once, so state is
laid out as arrays indexed by a sensor's row (``index[sensor_id]``), not as a dict per
sensor. Why bytes: the Faust worker checkpoints a bucket's state to the changelog as a few
records (``to_parts``/``from_parts``): each a small JSON header plus the raw arrays of up to
~512 KB of rows (~0.86 KB per sensor: ``ROW_COLUMN_BYTES`` and its id), because Kafka
refuses records over 1 MB and a bucket of a large fleet holds more. They round-trip exactly (tested), also when a worker died
while a checkpoint's parts were being sent.

Per-sensor *parameters* (levels, free-flow speed, ...) are not state: they are rebuilt from
the configuration and the registry whenever state is loaded, so a changed registry applies
after a restart without touching the changelog.

Rows are only appended, except when sensors not heard from for a long time are *forgotten*
(``forget``): their rows are removed and the others move up. ``layout`` counts those
compactions, so anything that keeps row numbers outside the state knows they moved, and a
checkpoint cut short by a crash can be completed from parts written before the compaction.
"""

from __future__ import annotations

import secrets
import struct
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson

from cityagent.detectors.config import DETECTORS

__all__ = ("BucketState", "Columns", "COLUMNS", "NO_TS", "ROW_COLUMN_BYTES", "TOD_SLOTS")

#: Event time meaning "never".
NO_TS = np.iinfo(np.int64).min
#: Time-of-day baselines: one slot per hour, China Standard Time.
TOD_SLOTS = 24
_D = len(DETECTORS)
_FORMAT = 1
#: A checkpoint record's size limit: a bucket's state is written in parts of about this many
#: bytes. Kafka (``message.max.bytes``) and Faust's producer (``max_request_size``) refuse a
#: record over 1 MB by default, and a bucket holds ~0.86 KB per sensor: one record per
#: bucket crashed the worker at its first checkpoint once the fleet passed ~300k sensors.
PART_BYTES = 512 * 1024
#: A sensor id in a part's JSON header: at most 64 characters (readings.parse_reading),
#: quotes and a comma.
_MAX_ID_BYTES = 67
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
        "last_gap_ms": ("f8", (), np.nan),  # the gap of the batch before (windows._fold)
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
        # Deviation: the value of the sensor's last judged window when it was of one or two
        # readings and deviated without confirmation (NaN: it was not), which the next window
        # confirms or, if it is back, may report as a spike (detectors.deviation, .spike);
        # NaN after a checkpoint from before this column.
        "dev_pend": ("f8", (), np.nan),
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
        # Flatline: the stuck value of the open episode (NaN: none, or a checkpoint from
        # before this column), which its end event reports as expected.
        "flat_x": ("f8", (), np.nan),
        # One episode per detector: start (window start, NO_TS = none), severity rank, peak
        # score, normal windows in a row since the last anomalous one, last observed value.
        "ep_since": ("i8", (detectors,), NO_TS),
        "ep_sev": ("i1", (detectors,), -1),
        "ep_peak": ("f8", (detectors,), 0.0),
        "ep_clear": ("i2", (detectors,), 0),
        "ep_reason": ("i2", (detectors,), 0),  # index into detectors.verdict.REASONS
    }


COLUMNS = _columns(5)
#: Bytes of one sensor's columns (default 5 panes): 844 in memory; a checkpoint adds its id,
#: ~15 bytes for ids such as ``jn-wl-000001`` and at most 67 (``row_bytes``). Each pane more
#: adds 24, each detector 21. The docs quote it (``tests/test_docs.py`` checks that they do).
ROW_COLUMN_BYTES = sum(np.dtype(dtype).itemsize * int(np.prod(shape, dtype=np.int64))
                       for dtype, shape, _ in COLUMNS.values())
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
    #: Identifies one life of this state across checkpoints: parts of another epoch (left by
    #: a state that was started afresh) are never combined with this one's.
    epoch: int = field(default_factory=lambda: _new_epoch())
    #: Per row, the offset of the last message applied to it, while that differs between
    #: rows (restored from parts of two checkpoints); None when every row is at last_offset.
    row_offsets: np.ndarray | None = field(default=None, repr=False)
    #: How many times rows were removed (``forget``): a row number is only meaningful with
    #: the layout it was taken in. Checkpointed (see ``from_parts``).
    layout: int = 0
    #: Event time at which ``forget`` was last considered (the engine does so once an hour
    #: of event time). Checkpointed, so a restarted worker forgets when this one would have.
    forget_checked_ms: int = int(NO_TS)
    #: Per-sensor parameters, derived from the configuration (never checkpointed).
    params_cache: tuple[object, tuple[int, int], object] | None = field(default=None, repr=False)

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

    def forget(self, before_ms: int) -> list[str]:
        """Remove the rows of the sensors last heard from before ``before_ms`` (event time,
        ``last_ts``; a row never heard from — every reading of it late, or without the value
        its kind watches — holds nothing learned and goes too); return their ids.

        Every column is compacted, and ``ids``, ``index`` and ``row_offsets`` with them; the
        rows kept stay in their order and hold exactly what they held. The storage past them
        is fresh, so a sensor added later (a forgotten one reporting again among them) starts
        from the initial values. ``layout`` counts up and the parameter cache is dropped: row
        numbers taken before mean other sensors now."""
        stale = self.cols["last_ts"] < before_ms
        if not stale.any():
            return []
        keep = ~stale
        gone = [self.ids[i] for i in np.flatnonzero(stale).tolist()]
        kept = [self.ids[i] for i in np.flatnonzero(keep).tolist()]
        n = len(kept)
        capacity = max(n, 64)
        for name, (dtype, shape, init) in _columns(self.panes).items():
            column = np.full((capacity, *shape), init, dtype=dtype)
            column[:n] = self.cols[name][keep]
            self._store[name] = column
        self.cols = {name: column[:n] for name, column in self._store.items()}
        self._columns = None
        self.ids[:] = kept  # in place: whoever holds ids or index sees the new rows
        self.index.clear()
        self.index.update((s, i) for i, s in enumerate(kept))
        if self.row_offsets is not None:
            offsets = self.row_offsets[keep]
            self.row_offsets = None if (offsets >= self.last_offset).all() else offsets
        self.params_cache = None
        self.layout += 1
        return gone

    def to_bytes(self) -> bytes:
        """The whole state as one record: JSON header (ids, shapes, counters) + raw arrays."""
        return self._encode(0, len(self), {})

    def to_parts(self, max_bytes: int = PART_BYTES) -> list[bytes]:
        """A checkpoint as records of at most about ``max_bytes`` each: rows in order, part
        ``i`` holding the rows after those of parts ``0..i-1``. Every part repeats the
        bucket's counters and says which offset its rows have applied, so parts written by
        two checkpoints (a worker died while its producer sent one) still restore exactly
        (``from_parts``). Always at least one part."""
        per_row = self.row_bytes()
        rows = max(1, max_bytes // per_row)
        n = len(self)
        starts = range(0, max(n, 1), rows)
        return [self._encode(row0, min(n, row0 + rows),
                             {"part": i, "parts": len(starts), "row0": row0})
                for i, row0 in enumerate(starts)]

    def row_bytes(self) -> int:
        """Bytes one sensor adds to a checkpoint: its columns and, at most, its id."""
        columns = sum(c.itemsize * int(np.prod(c.shape[1:], dtype=np.int64))
                      for c in self.cols.values())
        return columns + _MAX_ID_BYTES

    def _encode(self, row0: int, row1: int, extra: dict) -> bytes:
        names = list(self.cols)
        head = {
            "format": _FORMAT, "panes": self.panes, "ids": self.ids[row0:row1], "columns": names,
            "detectors": list(DETECTORS), "epoch": self.epoch,
            "watermark": self.watermark, "last_offset": self.last_offset,
            "late_total": self.late_total, "clock_ms": self.clock_ms, "layout": self.layout,
            "forget_checked_ms": self.forget_checked_ms, **extra,
        }
        if self.row_offsets is not None:  # still replaying after a restore from mixed parts
            head["row_offsets"] = self.row_offsets[row0:row1].tolist()
        header = orjson.dumps(head)
        # One copy: bytes.join reads the arrays' buffers (a tobytes() per column first was
        # ~40x slower, and a checkpoint writes every bucket's ~1 MB at once).
        return b"".join([struct.pack("<I", len(header)), header,
                         *(np.ascontiguousarray(self.cols[n][row0:row1]) for n in names)])

    @classmethod
    def from_bytes(cls, data: bytes) -> BucketState:
        """The state a one-record checkpoint holds; ValueError when it is not one."""
        return cls.from_parts([data])

    @classmethod
    def from_parts(cls, parts: Sequence[bytes]) -> BucketState:
        """The state that checkpoint parts hold (``to_parts``; a ``to_bytes`` record is a
        one-part checkpoint); ValueError when they are not one.

        Parts of another epoch than the first (left behind by a state that was started
        afresh) are ignored. Parts written by two checkpoints (a worker died while its
        producer was sending the second) are combined: the bucket's counters and event time
        are the older checkpoint's, and ``row_offsets`` says which offset each row has
        applied, so the messages redelivered after the older one are applied to exactly
        the rows that lack them (``unapplied``). Sensors whose part never arrived start
        afresh; their readings all came after the older checkpoint and are redelivered.

        Parts written after sensors were forgotten (a higher ``layout``) hold the rows in
        other places than the parts written before. When such a checkpoint is complete, the
        parts of earlier layouts still under higher part numbers are leftovers and ignored;
        when it was cut short, the sensors its missing parts held are taken, by id, from the
        earlier parts (at their older offsets: redelivered messages are applied to them as
        above). A sensor forgotten in between can come back then, with its old state; it is
        forgotten again at the next check."""
        if not parts or any(len(p) < 4 for p in parts):
            raise ValueError("not a detection-state checkpoint (too short)")
        try:
            return cls._combine([_decode(p) for p in parts])
        except (KeyError, TypeError, IndexError, orjson.JSONDecodeError, struct.error) as exc:
            raise ValueError(f"not a readable detection-state checkpoint: {exc!r}") from None

    @classmethod
    def _combine(cls, decoded: list[_Part]) -> BucketState:
        epoch = decoded[0][0].get("epoch")
        mine = [d for d in decoded if d[0].get("epoch") == epoch]
        layout = max(_layout(d[0]) for d in mine)
        decoded = sorted((d for d in mine if _layout(d[0]) == layout),
                         key=lambda d: int(d[0].get("row0", 0)))
        panes = int(decoded[0][0]["panes"])
        ids: list[str] = []
        for head, part_ids, _cols in decoded:
            if int(head.get("row0", 0)) != len(ids) or int(head["panes"]) != panes:
                raise ValueError("checkpoint parts do not fit together (row ranges or panes differ)")
            ids.extend(part_ids)
        last = decoded[-1][0]
        if int(last.get("part", 0)) + 1 < int(last.get("parts", 1)):  # cut short
            moved = _moved_rows([d for d in mine if _layout(d[0]) < layout], set(ids), panes)
            decoded += moved
            ids.extend(s for _head, part_ids, _cols in moved for s in part_ids)
        offsets = np.concatenate([
            np.asarray(head.get("row_offsets") or [int(head["last_offset"])] * len(part_ids),
                       dtype=np.int64)
            for head, part_ids, _cols in decoded])
        oldest = min((d[0] for d in decoded), key=lambda head: int(head["last_offset"]))
        last_offset = max(int(d[0]["last_offset"]) for d in decoded)
        cols = {name: np.concatenate([d[2][name] for d in decoded])
                for name in decoded[0][2]}
        state = cls(
            panes=int(oldest["panes"]), ids=ids, index={s: i for i, s in enumerate(ids)},
            cols=cols, watermark=int(oldest["watermark"]), last_offset=last_offset,
            late_total=int(oldest["late_total"]), clock_ms=int(oldest.get("clock_ms", 0)),
            epoch=int(epoch) if epoch is not None else _new_epoch(), layout=layout,
            forget_checked_ms=int(oldest.get("forget_checked_ms", NO_TS)),
        )
        if len(offsets) != len(ids):
            raise ValueError("checkpoint row offsets do not match its rows")
        if len(offsets) and (offsets != last_offset).any():
            state.row_offsets = offsets
        return state

    def unapplied(self, sensor_ids: np.ndarray, offset: int) -> np.ndarray | None:
        """Which rows of the message at ``offset`` this state still has to apply: None for
        all of them (a message after every one it holds), else a bool mask, all False for
        a redelivered message it holds entirely."""
        if offset > self.last_offset:
            return None
        if self.row_offsets is None:
            return np.zeros(len(sensor_ids), dtype=bool)
        known = len(self.row_offsets)
        rows = np.fromiter((self.index.get(s, known) for s in sensor_ids.tolist()),
                           dtype=np.int64, count=len(sensor_ids))
        applied = np.append(self.row_offsets, -1)[np.minimum(rows, known)]
        return applied < offset

    def applied(self, offset: int) -> None:
        """Record that the message at ``offset`` has been applied (to the rows that lacked it)."""
        if self.row_offsets is not None:
            grown = np.full(len(self), offset, dtype=np.int64)  # sensors added since: all
            grown[: len(self.row_offsets)] = np.maximum(self.row_offsets, offset)
            self.row_offsets = None if (grown >= self.last_offset).all() else grown
        self.last_offset = max(self.last_offset, offset)


def _new_epoch() -> int:
    return secrets.randbits(62)


#: A decoded checkpoint record: its header, its ids, its columns.
_Part = tuple[dict, list[str], dict[str, np.ndarray]]


def _layout(head: dict) -> int:
    return int(head.get("layout", 0))  # checkpoints from before forgetting: never compacted


def _moved_rows(earlier: list[_Part], known: set[str], panes: int) -> list[_Part]:
    """From parts written before sensors were forgotten (``earlier``), the rows of the
    sensors not in ``known``, as parts of their own (their row offsets with them): a
    compacted checkpoint cut short lacks them. The latest layout first, a sensor once."""
    out = []
    for head, part_ids, cols in sorted(earlier, key=lambda d: (-_layout(d[0]),
                                                                int(d[0].get("row0", 0)))):
        if int(head["panes"]) != panes:
            raise ValueError("checkpoint parts do not fit together (row ranges or panes differ)")
        take = [i for i, s in enumerate(part_ids) if s not in known]
        if not take:
            continue
        known.update(part_ids[i] for i in take)
        offsets = head.get("row_offsets") or [int(head["last_offset"])] * len(part_ids)
        out.append(({**head, "row_offsets": [offsets[i] for i in take]},
                    [part_ids[i] for i in take], {n: c[take] for n, c in cols.items()}))
    return out


def _decode(data: bytes) -> _Part:
    """One record's header, ids and columns (the columns of today's layout)."""
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
    if offset != len(data):
        raise ValueError(f"checkpoint is {len(data)} bytes; its header describes {offset}")
    return head, ids, cols
