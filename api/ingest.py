"""Ingest: request bodies to validated, located reading batches, and a list of what was refused.

Three body shapes become one list of items: a JSON reading or array of readings, NDJSON (one
reading per line), and ThingsBoard telemetry (``{"ts": ms, "values": {...}}``, the device's
identity from the query or from ``values``). Every item is then checked exactly as
``cityagent.readings.parse_reading`` checks it, but column-wise, because calling it per item
(~5 µs) would cost more than all the rest of a request:

1. *Fast path.* Items whose keys are exactly a kind's fields, whose sensor id was seen valid
   before and whose numbers are plain JSON numbers become numpy columns in a few list
   comprehensions; ranges, finiteness and event time are checked on the columns.
2. *Slow path.* Every other item, and every row a column check failed, goes through
   ``parse_reading``, which accepts it or gives the field and reason of the refusal. So
   messages are those of the domain, and a valid item the fast path did not recognise (an
   RFC 3339 ``ts``, a new sensor) is still accepted.

``tests/api/test_ingest.py`` checks that both paths agree on a table of edge cases.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from api.auth import Principal
from api.duplicate_keys import duplicate_keys
from cityagent.batch import ReadingBatch
from cityagent.errors import InvalidReading
from cityagent.readings import (
    _MAX_TS_MS,  # the fast path must accept exactly what parse_ts accepts
    _MIN_TS_MS,
    _SECONDS_LIMIT,
    ALL_VALUE_FIELDS,
    FUTURE_TOLERANCE_MS,
    KINDS,
    VALUE_FIELDS,
    VALUE_RANGES,
    Reading,
    format_ts,
    parse_reading,
    shown,
)
from cityagent.regions import RegionIndex

__all__ = (
    "MAX_ITEMS",
    "JSON_TYPES",
    "NDJSON_TYPES",
    "BadBody",
    "Rejection",
    "Checked",
    "check_media_type",
    "is_json_type",
    "media_type_refused",
    "decode_body",
    "thingsboard_items",
    "check_items",
)

#: Most items one request may carry (413 beyond).
MAX_ITEMS = 50_000
#: Content types read as one JSON document (besides application/*+json); "" is none given,
#: text/plain what some gateways send for any body.
JSON_TYPES = frozenset({"", "application/json", "text/plain"})
#: Content types read as one JSON document per line, in the order a 415 names them.
_NDJSON_NAMED = ("application/x-ndjson", "application/ndjson", "application/jsonl",
                 "application/jsonlines", "application/x-jsonlines")
NDJSON_TYPES = frozenset(_NDJSON_NAMED)
#: Identity fields a ThingsBoard item may take from the query string.
TB_IDENTITY = ("sensor_id", "kind", "lon", "lat")

_KEYS = {kind: frozenset(("sensor_id", "kind", "ts", "lon", "lat", *fields))
         for kind, fields in VALUE_FIELDS.items()}
_NUMBER_TYPES = frozenset({int, float})
_KNOWN_IDS_MAX = 1_000_000


class BadBody(Exception):
    """The body as a whole cannot be read (400) or is too big (413): no item is judged."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Rejection:
    """One refused item: its index in the request, the field at fault and why."""

    index: int
    field: str | None
    reason: str
    sensor_id: str | None = None
    out_of_scope: bool = False

    def public(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason,
                "sensor_id": self.sensor_id}


@dataclass
class Checked:
    """The outcome of checking one request's items."""

    items: int
    batch: ReadingBatch  # the accepted rows, district-tagged, in request order
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def all_out_of_scope(self) -> bool:
        return bool(self.rejected) and all(r.out_of_scope for r in self.rejected)


# -- bodies -> items ------------------------------------------------------------------------------


def decode_body(body: bytes, content_type: str | None) -> tuple[list[Any], dict[int, Rejection]]:
    """The items of a JSON or NDJSON body, and the NDJSON lines that are not JSON (by index)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in NDJSON_TYPES:
        items, bad = _decode_ndjson(body)
        twice = duplicate_keys(body, items, lines=True)
        return items, {**_given_twice(items, twice), **bad}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        hint = ("" if media in ("", "application/json") or media.endswith("+json") else
                f" (Content-Type was {media}; send application/json, or application/x-ndjson "
                "for one reading per line)")
        if not hint and _looks_like_ndjson(body):
            hint = (" (it is one JSON document per line: send it with Content-Type "
                    "application/x-ndjson, or as one JSON array)")
        raise BadBody(400, f"request body is not valid JSON: {exc}{hint}") from None
    items = doc if isinstance(doc, list) else [doc]
    _check_count(len(items))
    return items, _given_twice(items, duplicate_keys(body, items))


def check_media_type(content_type: str | None) -> None:
    """415 unless the body is declared JSON or NDJSON (or not declared): XML, CSV or a form
    was read as JSON, and refused as 'not valid JSON' at best."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if is_json_type(media) or media in NDJSON_TYPES:
        return
    raise BadBody(415, media_type_refused(media, send="readings", ndjson=True))


def is_json_type(media: str) -> bool:
    """Whether a body of ``media`` (lower case, no parameters) is read as one JSON document."""
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


def media_type_refused(media: str, *, send: str, ndjson: bool) -> str:
    """The 415 detail for a body of ``media``, naming the types taken: the ingest routes
    (``ndjson``) take NDJSON too, the other routes (``api.strict_json``) JSON only. ``send``
    names what the client sends ("readings", "the body")."""
    hint = (" (curl -d sends that: add -H 'Content-Type: application/json')"
            if media == "application/x-www-form-urlencoded" else "")
    lines = f", or one per line ({', '.join(_NDJSON_NAMED)})" if ndjson else ""
    return (f"Content-Type {shown(media)} is not taken here{hint}; send {send} as JSON "
            f"(application/json, another application/*+json, text/plain, or no "
            f"Content-Type){lines}")


def _given_twice(items: Sequence[Any], twice: Mapping[int, str]) -> dict[int, Rejection]:
    """Refusals of the items whose object (or its ``values``) gave a key twice."""
    out = {}
    for i, key in twice.items():
        item = items[i]
        if type(item) is not dict:  # an NDJSON line orjson refused (NaN): refused as such
            continue
        where = ("its 'values' object" if isinstance(item.get("values"), dict)
                 and key in item["values"] else "this reading")
        sid = item.get("sensor_id")
        out[i] = Rejection(i, key[:64], f"key {shown(key)} is given more than once in {where}; "
                                        "parsers keep one or the other, so it is refused: give "
                                        "each key once", sid if isinstance(sid, str) else None)
    return out


def _looks_like_ndjson(body: bytes) -> bool:
    """Whether a body that is not one JSON document has two lines that each are (an NDJSON
    body sent as application/json: the parser said only 'unexpected content after document')."""
    lines = [line for line in body.split(b"\n", 2)[:2] if line.strip()]
    if len(lines) < 2:
        return False
    try:
        for line in lines:
            orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def _decode_ndjson(body: bytes) -> tuple[list[Any], dict[int, Rejection]]:
    """One item per non-blank line, each line parsed on its own. (Joining the lines into one
    array for a single parse was ~15 % faster, but took two broken lines that made one object
    together as one reading, and shifted the index of every line after them.)"""
    lines = [line for line in body.split(b"\n") if line.strip()]
    _check_count(len(lines))
    items: list[Any] = []
    bad: dict[int, Rejection] = {}
    for i, line in enumerate(lines):
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            items.append(None)
            bad[i] = Rejection(i, None, f"line {i + 1} (counting non-blank lines) is not valid "
                                        f"JSON: {exc}")
    return items, bad


def _check_count(n: int) -> None:
    if n > MAX_ITEMS:
        raise BadBody(413, f"{n} readings in one request; the limit is {MAX_ITEMS}")
    if n == 0:
        raise BadBody(422, "the request holds no readings")


def thingsboard_items(items: list[Any], identity: Mapping[str, Any],
                      now_ms: int | None = None) -> tuple[list[Any], dict[int, Rejection]]:
    """ThingsBoard telemetry items as readings; shape errors by index.

    An item is ``{"ts": ms, "values": {...}}`` or a flat ``{...}`` of values (event time: its
    ``ts`` if it has one, else now, as ThingsBoard does). ``values`` may carry ``sensor_id``, ``kind``, ``lon`` and ``lat``;
    what it lacks comes from ``identity`` (the query parameters). It may carry ``ts`` too (a
    gateway sending what it buffered): that is the event time, refused if the item's own
    ``ts`` differs.
    """
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    base = {k: v for k, v in identity.items() if v is not None}
    out: list[Any] = []
    bad: dict[int, Rejection] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            out.append(None)
            bad[i] = Rejection(i, None, "a ThingsBoard item must be a JSON object like "
                                        f'{{"ts": 1795307400000, "values": {{...}}}}; got {type(item).__name__}')
            continue
        if "values" in item:
            values, extra = item["values"], sorted(set(item) - {"ts", "values"})
            if not isinstance(values, dict) or extra:
                out.append(None)
                bad[i] = Rejection(i, extra[0][:64] if extra else "values",
                                   f"unknown field {shown(extra[0])} beside ts and values" if extra
                                   else "'values' must be a JSON object of telemetry keys")
                continue
        else:
            values = item
        ts = values.get("ts", item.get("ts", now_ms))
        if "ts" in item and "ts" in values and values["ts"] != item["ts"]:
            out.append(None)
            bad[i] = Rejection(i, "ts", f"'ts' is given twice, {shown(item['ts'])} beside 'values' "
                                        f"and {shown(values['ts'])} inside it; give one")
            continue
        out.append({**base, **values, "ts": ts})
    return out, bad


# -- items -> checked batch -----------------------------------------------------------------------


_known_ids: set[str] = set()


def check_items(items: Sequence[Any], regions: RegionIndex, principal: Principal | None = None,
                preset: Mapping[int, Rejection] | None = None,
                now_ms: int | None = None,
                known_kinds: Callable[[list[str]], np.ndarray] | None = None,
                future_tolerance_ms: int = FUTURE_TOLERANCE_MS) -> Checked:
    """Validate, locate and scope-check the items; accepted rows and rejections by index.

    ``preset`` holds items already refused while decoding (their index, already judged);
    ``now_ms`` is the server's clock (default: now), which no reading may be far ahead of;
    ``known_kinds`` gives the kind code each sensor id is known as (-1: not known), which a
    reading under that id must have (``SituationModel.kind_codes``).
    """
    preset = preset or {}
    rows = _Rows()
    slow: list[int] = []
    groups: dict[str, list[int]] = {kind: [] for kind in KINDS}
    for i, item in enumerate(items):
        if i in preset:
            continue
        if type(item) is dict:
            kind = item.get("kind")
            sid = item.get("sensor_id")
            if (type(kind) is str and kind in _KEYS and item.keys() == _KEYS[kind]
                    and type(sid) is str and sid in _known_ids):
                groups[kind].append(i)
                continue
        slow.append(i)
    for kind, index in groups.items():
        if index:
            slow += _fast_kind(items, kind, index, rows)
    rejected = list(preset.values())
    rejected += _slow(items, sorted(slow), rows)
    batch, index = rows.batch()
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    batch, index, more = _not_ahead(batch, index, now_ms, future_tolerance_ms)
    rejected += more
    if known_kinds is not None:
        batch, index, more = _own_kind(batch, index, known_kinds)
        rejected += more
    batch, index, more = _locate_and_scope(batch, index, regions, principal)
    rejected += more
    rejected.sort(key=lambda r: r.index)
    return Checked(len(items), batch, rejected)


class _Rows:
    """Accepted rows gathered column by column, in any order; :meth:`batch` sorts them."""

    def __init__(self) -> None:
        self.index: list[np.ndarray] = []
        self.sensor_id: list[Any] = []
        self.kind: list[np.ndarray] = []
        self.ts_ms: list[np.ndarray] = []
        self.lon: list[np.ndarray] = []
        self.lat: list[np.ndarray] = []
        self.values: list[dict[str, np.ndarray]] = []

    def add(self, index: np.ndarray, sensor_id: list[str], kind: np.ndarray, ts_ms: np.ndarray,
            lon: np.ndarray, lat: np.ndarray, values: dict[str, np.ndarray]) -> None:
        self.index.append(index)
        self.sensor_id += sensor_id
        self.kind.append(kind)
        self.ts_ms.append(ts_ms)
        self.lon.append(lon)
        self.lat.append(lat)
        self.values.append(values)

    def batch(self) -> tuple[ReadingBatch, np.ndarray]:
        if not self.index:
            empty = np.zeros(0)
            return ReadingBatch(np.zeros(0, dtype=str), np.zeros(0, dtype=str),
                                np.zeros(0, dtype=np.int64), empty, empty,
                                np.zeros(0, dtype=np.int64),
                                {f: empty for f in ALL_VALUE_FIELDS}), np.zeros(0, dtype=np.int64)
        index = np.concatenate(self.index)
        n = len(index)
        values = {}
        for name in ALL_VALUE_FIELDS:
            values[name] = np.concatenate([v.get(name, np.full(len(i), np.nan))
                                           for v, i in zip(self.values, self.index, strict=True)])
        batch = ReadingBatch(
            sensor_id=np.array(self.sensor_id, dtype=str), kind=np.concatenate(self.kind),
            ts_ms=np.concatenate(self.ts_ms), lon=np.concatenate(self.lon),
            lat=np.concatenate(self.lat), district=np.zeros(n, dtype=np.int64), values=values)
        order = np.argsort(index, kind="stable")
        return batch.take(order), index[order]


def _fast_kind(items: Sequence[Any], kind: str, index: list[int], rows: _Rows) -> list[int]:
    """Column checks of the fast-path items of one kind; return the indices that need slow."""
    picked = [items[i] for i in index]
    columns = {"ts": [d["ts"] for d in picked], "lon": [d["lon"] for d in picked],
               "lat": [d["lat"] for d in picked]}
    for name in VALUE_FIELDS[kind]:
        columns[name] = [d[name] for d in picked]
    ok = np.ones(len(index), dtype=bool)
    arrays: dict[str, np.ndarray] = {}
    for name, column in columns.items():
        arrays[name], good = _numbers(column)
        ok &= good
    ts = arrays["ts"]
    with np.errstate(invalid="ignore", over="ignore"):
        ts_ms = np.where(np.abs(ts) < _SECONDS_LIMIT, np.rint(ts * 1000), np.rint(ts))
        ok &= (ts_ms >= _MIN_TS_MS) & (ts_ms < _MAX_TS_MS)  # NaN fails both
        ok &= (arrays["lon"] >= -180) & (arrays["lon"] <= 180)
        ok &= (arrays["lat"] >= -90) & (arrays["lat"] <= 90)
        for name in VALUE_FIELDS[kind]:
            low, high = VALUE_RANGES[name]
            ok &= (arrays[name] >= low) & (arrays[name] <= high)
    good = np.flatnonzero(ok)
    if len(good):
        rows.add(np.asarray(index)[good], [picked[g]["sensor_id"] for g in good.tolist()],
                 np.full(len(good), kind), ts_ms[good].astype(np.int64), arrays["lon"][good],
                 arrays["lat"][good], {f: arrays[f][good] for f in VALUE_FIELDS[kind]})
    return [index[b] for b in np.flatnonzero(~ok).tolist()]


def _numbers(column: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """The column as float64, and which entries are plain JSON numbers (not bool, str, None)."""
    if set(map(type, column)) <= _NUMBER_TYPES:
        try:
            return np.array(column, dtype=np.float64), np.ones(len(column), dtype=bool)
        except OverflowError:  # an integer too big for a float: let parse_reading judge it
            pass
    good = np.array([type(v) in _NUMBER_TYPES and (type(v) is float or abs(v) < 2**63)
                     for v in column])
    out = np.full(len(column), np.nan)
    out[good] = np.array([v for v, g in zip(column, good.tolist(), strict=True) if g],
                         dtype=np.float64)
    return out, good


def _slow(items: Sequence[Any], index: list[int], rows: _Rows) -> list[Rejection]:
    """parse_reading per item: the accepted become rows, the rest rejections with reasons."""
    readings: list[Reading] = []
    accepted: list[int] = []
    rejected: list[Rejection] = []
    for i in index:
        item = items[i]
        try:
            reading = _parse(item)
        except InvalidReading as exc:
            sid = exc.sensor_id
            if sid is None and isinstance(item, dict) and isinstance(item.get("sensor_id"), str):
                sid = item["sensor_id"][:64]
            reason = exc.reason
            if exc.field == "values":
                reason += "; ThingsBoard telemetry goes to POST /v1/readings/thingsboard"
            rejected.append(Rejection(i, exc.field, reason, sid))
            continue
        readings.append(reading)
        accepted.append(i)
        if len(_known_ids) >= _KNOWN_IDS_MAX:
            _known_ids.clear()
        _known_ids.add(reading.sensor_id)
    if readings:
        b = ReadingBatch.from_readings(readings)
        rows.add(np.array(accepted, dtype=np.int64), b.sensor_id.tolist(), b.kind, b.ts_ms,
                 b.lon, b.lat, b.values)
    return rejected


def _parse(item: Any) -> Reading:
    """parse_reading, with JSON it does not expect (a list as kind) refused, never raised."""
    if isinstance(item, dict) and isinstance(item.get("kind"), list | dict):
        raise InvalidReading(f"'kind' must be one of {list(KINDS)}; got {shown(item['kind'])}",
                             field="kind", sensor_id=item.get("sensor_id")
                             if isinstance(item.get("sensor_id"), str) else None)
    try:
        return parse_reading(item)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidReading(f"the reading cannot be validated: {exc}") from None


def _not_ahead(batch: ReadingBatch, index: np.ndarray, now_ms: int, tolerance_ms: int
               ) -> tuple[ReadingBatch, np.ndarray, list[Rejection]]:
    """Refuse rows dated more than ``tolerance_ms`` past the server's clock: detection and
    the situation would drop them (one such sensor would make its bucket-mates' readings late
    and every other sensor look silent), so the integrator is told now, with the likely cause."""
    ahead = batch.ts_ms > now_ms + tolerance_ms
    if not ahead.any():
        return batch, index, []
    rejected = []
    for r in np.flatnonzero(ahead).tolist():
        hours = (int(batch.ts_ms[r]) - now_ms) / 3_600_000
        rejected.append(Rejection(
            int(index[r]), "ts",
            f"ts {format_ts(int(batch.ts_ms[r]))} is {hours:,.2f} h past the server's clock "
            f"({format_ts(now_ms)}); readings may be at most "
            f"{_duration(tolerance_ms)} ahead (CITYAGENT_FUTURE_TOLERANCE_S). Send UTC or a "
            "time with its offset: a "
            "sensor that sends China time as UTC is 8 h ahead",
            str(batch.sensor_id[r])))
    return batch.take(~ahead), index[~ahead], rejected


def _duration(ms: int) -> str:
    return f"{ms / 60_000:g} min" if ms % 60_000 == 0 else f"{ms / 1000:g} s"


def _own_kind(batch: ReadingBatch, index: np.ndarray,
              known_kinds: Callable[[list[str]], np.ndarray]
              ) -> tuple[ReadingBatch, np.ndarray, list[Rejection]]:
    """Refuse rows whose kind is not their sensor's: detection would drop them (it judges a
    sensor by the kind it first reported; a road's 60 km/h read as a 60 m water level would
    be a red flood alarm), so the integrator is told now. A sensor not known yet takes the
    kind of its first reading in this request (the item with the lowest index), as the
    worker will."""
    if not len(batch):
        return batch, index, []
    ids = batch.sensor_id.tolist()
    own = np.asarray(known_kinds(ids)).copy()
    codes = batch.kind_codes()
    first_item: dict[str, int] = {}
    new_rows = np.flatnonzero(own < 0)
    if len(new_rows):
        first_kind: dict[str, int] = {}
        for r in new_rows[np.argsort(index[new_rows], kind="stable")].tolist():
            if ids[r] not in first_kind:
                first_kind[ids[r]] = int(codes[r])
                first_item[ids[r]] = int(index[r])
        own[new_rows] = [first_kind[ids[r]] for r in new_rows.tolist()]
    wrong = own != codes
    if not wrong.any():
        return batch, index, []

    def reason(r: int) -> str:
        known = (f" (its first reading, item {first_item[ids[r]]} of this request)"
                 if ids[r] in first_item else "")
        return (f"sensor {ids[r]!r} is a {KINDS[int(own[r])]} sensor{known}; this reading "
                f"says {str(batch.kind[r])}. Give each device its own sensor_id")

    rejected = [Rejection(int(index[r]), "kind", reason(r), ids[r])
                for r in np.flatnonzero(wrong).tolist()]
    return batch.take(~wrong), index[~wrong], rejected


def _locate_and_scope(batch: ReadingBatch, index: np.ndarray, regions: RegionIndex,
                      principal: Principal | None
                      ) -> tuple[ReadingBatch, np.ndarray, list[Rejection]]:
    """Tag districts; refuse rows outside Shandong and rows outside the key's scope."""
    if not len(batch):
        return batch, index, []
    found = regions.locate(batch.lon, batch.lat)
    inside = found >= 0
    rejected = [
        Rejection(int(index[r]), "lon",
                  f"position lon={batch.lon[r]:g}, lat={batch.lat[r]:g} is outside Shandong "
                  "province (in none of its districts); positions are WGS84 [lon, lat], lon first",
                  str(batch.sensor_id[r]))
        for r in np.flatnonzero(~inside).tolist()
    ]
    keep = inside
    if principal is not None and principal.scoped:
        cities = regions.city_codes(found)
        in_scope = principal.scope_mask(batch.sensor_id, cities)
        for r in np.flatnonzero(inside & ~in_scope).tolist():
            rejected.append(Rejection(
                int(index[r]), "sensor_id",
                f"outside this key's scope ({'|'.join(principal.scopes)}): sensor "
                f"{str(batch.sensor_id[r])!r} in city {cities[r]} {regions.city(str(cities[r])).name}",
                str(batch.sensor_id[r]), out_of_scope=True))
        keep = inside & in_scope
    tagged = batch.with_districts(regions.district_code_numbers(found))
    if keep.all():
        return tagged, index, rejected
    return tagged.take(keep), index[keep], rejected
