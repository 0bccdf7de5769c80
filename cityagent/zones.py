"""Operational zones (flood-risk areas, underpasses, schools ...) and the point index over them.

Administrative places (province → city → district) come from the boundary data
(:mod:`cityagent.regions`); *operational* zones are drawn by departments and arrive as GeoJSON
— from files and from the API. Each zone is a Polygon/MultiPolygon with a kind, an owning
department and a severity adjustment (−2..+2 steps: an anomaly in a hospital's zone matters
more). A zone is validated before anything uses it, with errors that name the feature, the
property, what was expected and what was got.

Zones change while workers run, so a :class:`ZoneSet` is an immutable value with a version:
``upsert``/``delete`` return a new set. The carrier is a compacted Kafka topic (key: zone id;
value: ``{"version", "feature"}``), wired by the integrator; :func:`zone_record` and
:func:`apply_record` are the two ends. :class:`ZoneIndex` answers "which zones is this point
in" for whole batches with one STR-tree query.

Pure domain code: numpy, shapely and the standard library.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from cityagent.errors import ConfigError
from cityagent.regions import RegionIndex, default_regions
from cityagent.routing import default_router, is_department_code

__all__ = (
    "ZONE_KINDS",
    "MIN_AREA_M2",
    "MAX_AREA_M2",
    "MIN_INSIDE_FRACTION",
    "Zone",
    "ZoneError",
    "ZoneSet",
    "ZoneIndex",
    "parse_zone",
    "zone_record",
    "delete_record",
    "apply_record",
    "area_m2",
    "inside_fraction",
    "DEMO_ZONES_FILE",
    "MAX_VERSION",
    "demo_zones",
    "ANY_DEPARTMENT",
    "kind_typo",
)

#: Known zone kinds and their display names (中文, English). Custom kinds are allowed when
#: they are snake_case and not a near-miss of a known one ("flood_risks" is rejected as a
#: typo of "flood_risk"): departments add their own kinds (stadium, reservoir ...) without a
#: code change, and routing rules can name them; a typo still fails loudly.
ZONE_KINDS: dict[str, tuple[str, str]] = {
    "flood_risk": ("易涝/洪水风险区", "flood risk area"),
    "underpass": ("下穿通道", "underpass"),
    "school": ("学校", "school"),
    "hospital": ("医院", "hospital"),
    "key_pipe_corridor": ("重点供水管廊", "key pipe corridor"),
}
#: Sane size of a zone, m²: from a small underpass (100 m²) to a large river basin section.
MIN_AREA_M2 = 100.0
MAX_AREA_M2 = 5_000e6
#: Share of a zone's area that must lie inside Shandong's districts. The vendored boundaries
#: are accurate to about a kilometre, so a zone along a border or the coast may stick out a
#: little.
MIN_INSIDE_FRACTION = 0.99
#: The packaged demo zones (synthetic, see the file's description), under cityagent/data.
DEMO_ZONES_FILE = "zones/shandong-demo-zones.geojson"
#: ``departments`` that takes any department code (snake_case): for readers of the zones topic.
#: Its records were checked against the routing rules in force when the API wrote them, which
#: may have more departments than routing.toml (``PUT /v1/routing``); the routing topic is
#: another feed, which a reader may not have read yet.
ANY_DEPARTMENT: Collection[str] = frozenset({"*any department code*"})
#: Largest version of a zone set or routing document: 2**53 - 1, the largest whole number every
#: JSON reader keeps exact (JavaScript's, the dashboard's, reads numbers as doubles: 2**53 + 1
#: reads as 2**53, so two versions looked equal). A version counts changes, one at a time, so
#: only a file or record written by hand gets near it; past 2**64 - 1 orjson cannot write it,
#: and the API's next version (one above) was a 500.
MAX_VERSION = 2**53 - 1
#: How a zone error names a FeatureCollection (its file, when read from one, comes first).
_COLLECTION = "the zone collection"
_ZONE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
_SNAKE = re.compile(r"^[a-z][a-z0-9_]{1,39}\Z")
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON = 111_320.0


class ZoneError(ConfigError):
    """Raised when a zone (GeoJSON feature) or a zone-topic record is invalid.

    ``feature`` is the feature's index in its collection (None for a single feature),
    ``zone_id`` its id when known and ``property`` the offending property or ``"geometry"``.

    The message is one sentence naming the field and the zone: ``reason`` is what is wrong
    with them, ``field`` says what of the zone it is about (``property 'name'``, ``the area``)
    and ``subject`` overrides the zone's name (a collection, a topic record; ``""``: the reason
    is the whole sentence). So ``property 'name' of zone 'jn-1' (feature #3) must be non-empty
    text``, not ``zone feature #3 ('jn-1'): property 'name' must be ...``, and never
    ``zone: ...`` with no zone named.
    """

    def __init__(self, reason: str, *, feature: int | None = None, zone_id: str | None = None,
                 property: str | None = None, source: str | None = None,
                 field: str | None = None, subject: str | None = None) -> None:
        self.reason = reason
        self.feature = feature
        self.zone_id = zone_id
        self.property = property
        self.field = field
        self.subject = subject
        self.source = source
        if subject is None:
            subject = f"zone {zone_id!r}" if zone_id else "the zone"
            if feature is not None:
                subject = f"{subject} (feature #{feature})" if zone_id else f"feature #{feature}"
        sentence = " ".join(p for p in (f"{field} of {subject}" if field else subject, reason)
                            if p)
        super().__init__(f"{source + ': ' if source else ''}{sentence}")

    def at(self, source: str) -> ZoneError:
        """The same error, said of ``source`` (the file it was read from)."""
        return ZoneError(self.reason, feature=self.feature, zone_id=self.zone_id,
                         property=self.property, source=source, field=self.field,
                         subject=self.subject)


@dataclass(frozen=True, eq=False)
class Zone:
    """One operational zone; ``version`` is the zone set's version when it last changed."""

    zone_id: str
    name: str  # display name, Chinese
    name_en: str
    zone_kind: str
    department: str  # the owning department's code (routing.toml)
    severity_adjust: int  # -2..+2 severity steps for anomalies inside
    geometry: BaseGeometry = field(repr=False)  # Polygon or MultiPolygon, lon/lat
    area_m2: float
    properties: Mapping[str, Any] = field(default_factory=dict, repr=False)  # others, kept
    version: int = 0

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(min lon, min lat, max lon, max lat)."""
        return tuple(self.geometry.bounds)  # type: ignore[return-value]

    @property
    def kind_names(self) -> tuple[str, str]:
        """(中文, English) name of the zone kind; a custom kind is its own name."""
        return ZONE_KINDS.get(self.zone_kind, (self.zone_kind, self.zone_kind))

    def to_feature(self) -> dict[str, Any]:
        """The zone as a GeoJSON Feature (what :func:`parse_zone` reads back)."""
        props = {**self.properties, "zone_id": self.zone_id, "name": self.name,
                 "name_en": self.name_en, "zone_kind": self.zone_kind,
                 "department": self.department, "severity_adjust": self.severity_adjust}
        geometry = json.loads(json.dumps(mapping(self.geometry)))  # tuples → lists
        return {"type": "Feature", "properties": props, "geometry": geometry}

    def same_content(self, other: Zone) -> bool:
        return _canonical(self.to_feature()) == _canonical(other.to_feature())


def area_m2(geometry: BaseGeometry) -> float:
    """Area in m² in a local equirectangular projection centred on the geometry.

    x = Δlon·cos(lat₀)·111.32 km, y = lat·110.57 km: within about 0.5 % of the geodesic
    area for anything a city would draw (tens of km across), with no projection library.
    """
    if geometry.is_empty:
        return 0.0
    lat0 = math.radians(geometry.centroid.y)
    kx = _M_PER_DEG_LON * math.cos(lat0)
    projected = shapely.transform(geometry, lambda xy: xy * np.array([kx, _M_PER_DEG_LAT]))
    return float(projected.area)


def parse_zone(feature: Any, regions: RegionIndex | None = None, *,
               departments: Collection[str] | None = None, index: int | None = None) -> Zone:
    """Validate a GeoJSON Feature and build its :class:`Zone`; :class:`ZoneError` if invalid.

    ``departments`` are the known department codes (default: those of routing.toml);
    ``index`` is the feature's place in its collection, for messages.
    """
    if departments is None:
        departments = default_router().department_codes
    regions = regions or default_regions()
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        got = feature.get("type") if isinstance(feature, Mapping) else type(feature).__name__
        raise ZoneError(f"must be a GeoJSON Feature; got {got!r}", feature=index)
    props = feature.get("properties")
    if not isinstance(props, Mapping):
        raise ZoneError("must be an object with zone_id, name, zone_kind and department; "
                        f"got {_short(props)}", feature=index, property="properties",
                        field="'properties'")
    zone_id = _zone_id(props, index)

    def fail(reason: str, prop: str, field: str | None = None) -> ZoneError:
        """``field`` of the zone ``reason``: by default the property ``prop``."""
        return ZoneError(reason, feature=index, zone_id=zone_id, property=prop,
                         field=f"property {prop!r}" if field is None else field or None)

    name = props.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail(f"must be non-empty text (the display name); got {name!r}",
                   "name")
    name_en = props.get("name_en", name)
    if not isinstance(name_en, str):
        raise fail(f"must be text; got {_short(name_en)}", "name_en")
    kind = _zone_kind(props.get("zone_kind"), fail)
    department = props.get("department")
    if departments is ANY_DEPARTMENT:
        if not isinstance(department, str) or not is_department_code(department):
            raise fail("must be a department code (snake_case, of the "
                       f"routing rules); got {department!r}", "department")
    elif department not in departments:
        raise fail(f"must be one of {sorted(departments)}; got {_short(department)}",
                   "department")
    adjust = props.get("severity_adjust", 0)
    if isinstance(adjust, bool) or not isinstance(adjust, int) or not -2 <= adjust <= 2:
        raise fail(f"must be a whole number of severity steps "
                   f"from -2 to 2; got {adjust!r}", "severity_adjust")
    geometry = _geometry(feature.get("geometry"), fail)
    size = area_m2(geometry)
    if not MIN_AREA_M2 <= size <= MAX_AREA_M2:
        raise fail(f"must be between {MIN_AREA_M2:g} m² and {MAX_AREA_M2 / 1e6:g} km²; "
                   f"got {size:,.0f} m² ({size / 1e6:.4g} km²)", "geometry", "the area")
    inside = inside_fraction(geometry, regions)
    if inside < MIN_INSIDE_FRACTION:
        raise fail(f"must lie inside Shandong: at least {MIN_INSIDE_FRACTION:.0%} of its area "
                   f"within the province's districts; got {inside:.1%}", "geometry", "")
    known = {"zone_id", "name", "name_en", "zone_kind", "department", "severity_adjust"}
    return Zone(zone_id, name.strip(), name_en.strip() or name.strip(), kind, str(department),
                adjust, geometry, size, {k: v for k, v in props.items() if k not in known})


def _zone_id(props: Mapping[str, Any], index: int | None) -> str:
    zone_id = props.get("zone_id")
    if zone_id is None:
        raise ZoneError("is missing; expected an id like 'jn-flood-01'",
                        feature=index, property="zone_id", field="property 'zone_id'")
    if not isinstance(zone_id, str) or not _ZONE_ID.match(zone_id):
        raise ZoneError("must be 1-64 letters, digits or _.:- (starting with a letter or "
                        f"digit); got {_short(zone_id)}", feature=index, property="zone_id",
                        field="property 'zone_id'")
    return zone_id


def kind_typo(kind: str, others: Collection[str] = ()) -> str | None:
    """The known zone kind (or one of ``others``) that ``kind`` is a near miss of
    (``flood_risks``: ``flood_risk``), else None: zones, routing rules and alerting settings
    take custom kinds, so a misspelt known one would otherwise be a kind of its own."""
    known = [*ZONE_KINDS, *others]
    if kind in known:
        return None
    close = difflib.get_close_matches(kind, known, n=1, cutoff=0.8)
    return close[0] if close else None


def _zone_kind(kind: Any, fail) -> str:
    known = list(ZONE_KINDS)
    if kind in ZONE_KINDS:
        return kind
    if not isinstance(kind, str) or not _SNAKE.match(kind):
        raise fail(f"must be one of {known} or a custom snake_case kind; got {_short(kind)}",
                   "zone_kind")
    typo = kind_typo(kind)
    if typo:
        raise fail(f"is {kind!r}, which looks like a typo of {typo!r}; "
                   f"expected one of {known} or a distinct custom kind", "zone_kind")
    return kind


def _geometry(raw: Any, fail) -> BaseGeometry:
    if not isinstance(raw, Mapping) or raw.get("type") not in ("Polygon", "MultiPolygon"):
        got = raw.get("type") if isinstance(raw, Mapping) else raw
        raise fail(f"must be a Polygon or MultiPolygon; got {_short(got)}", "geometry",
                   "the geometry")
    try:
        geometry = shape(raw)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError,
            shapely.errors.GEOSException) as exc:
        raise fail(f"cannot be built from its coordinates: {exc}", "geometry",
                   "the geometry") from None
    if geometry.is_empty:
        raise fail("is empty; expected at least one ring of 4 or more positions",
                   "geometry", "the geometry")
    xy = shapely.get_coordinates(geometry)
    if not np.isfinite(xy).all():
        raise fail("has a coordinate that is not a finite number", "geometry",
                   "the geometry")
    x, y = xy[:, 0], xy[:, 1]
    if ((x >= 34) & (x <= 39) & (y >= 114) & (y <= 123)).mean() > 0.5:
        raise fail("look like lat/lon (x 34-39, y 114-123); GeoJSON wants "
                   "lon, lat (Shandong is about lon 114.8-122.7, lat 34.4-38.4)", "geometry",
                   "the coordinates")
    if (np.abs(y) > 90).any() or (np.abs(x) > 180).any():
        raise fail("are out of range: GeoJSON wants lon (-180..180), lat (-90..90); "
                   f"got x {x.min():g}..{x.max():g}, y {y.min():g}..{y.max():g}", "geometry",
                   "the coordinates")
    if not geometry.is_valid:
        raise fail(f"is not valid: {explain_validity(geometry)} (rings must not cross "
                   "themselves or each other)", "geometry", "the geometry")
    return geometry


@functools.cache
def _district_tree(regions: RegionIndex) -> shapely.STRtree:
    return shapely.STRtree(regions.polygons)


def inside_fraction(geometry: BaseGeometry, regions: RegionIndex) -> float:
    """Share of ``geometry``'s area inside the province's districts (which do not overlap)."""
    if geometry.area == 0:
        return 0.0
    candidates = _district_tree(regions).query(geometry)
    if candidates.size == 0:
        return 0.0
    parts = shapely.intersection(regions.polygons[candidates], geometry)
    return min(1.0, float(shapely.area(parts).sum()) / geometry.area)


def _canonical(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, eq=False)
class ZoneSet:
    """An immutable, versioned set of zones; changes return a new set.

    ``version`` increases with every change (the highest version applied);
    ``content_hash`` identifies the content alone, so two workers can check they agree.
    """

    zones: Mapping[str, Zone] = field(default_factory=dict)  # zone id → zone, sorted by id
    version: int = 0

    def __len__(self) -> int:
        return len(self.zones)

    def __contains__(self, zone_id: object) -> bool:
        return zone_id in self.zones

    def __getitem__(self, zone_id: str) -> Zone:
        return self.zones[zone_id]

    @functools.cached_property
    def content_hash(self) -> str:
        features = [self.zones[k].to_feature() for k in sorted(self.zones)]
        return hashlib.sha256(_canonical(features).encode()).hexdigest()[:16]

    def upsert(self, zone: Zone) -> ZoneSet:
        """A new set with ``zone`` added or replaced (``self`` if nothing changes)."""
        old = self.zones.get(zone.zone_id)
        if old is not None and old.same_content(zone):
            return self
        version = self.version + 1
        return self._with({**self.zones, zone.zone_id: replace(zone, version=version)}, version)

    def delete(self, zone_id: str) -> ZoneSet:
        """A new set without ``zone_id`` (``self`` if it is not there)."""
        if zone_id not in self.zones:
            return self
        zones = {k: v for k, v in self.zones.items() if k != zone_id}
        return self._with(zones, self.version + 1)

    def _with(self, zones: Mapping[str, Zone], version: int) -> ZoneSet:
        return ZoneSet({k: zones[k] for k in sorted(zones)}, version)

    @classmethod
    def from_geojson(cls, collection: Any, regions: RegionIndex | None = None, *,
                     departments: Collection[str] | None = None) -> ZoneSet:
        """Every feature of a FeatureCollection, validated; version from ``collection``'s
        ``version`` member if it has one, else 1 (0 when empty)."""
        if not isinstance(collection, Mapping) or collection.get("type") != "FeatureCollection":
            got = (collection.get("type") if isinstance(collection, Mapping)
                   else type(collection).__name__)
            raise ZoneError(f"must be a GeoJSON FeatureCollection; got {_short(got)}",
                            subject=_COLLECTION)
        features = collection.get("features")
        if not isinstance(features, list):
            raise ZoneError("must be a list of GeoJSON Features; got "
                            f"{_short(features)}", field="'features'", subject=_COLLECTION)
        version = collection.get("version", 1 if features else 0)
        if not _is_version(version):
            raise ZoneError(f"must be a whole number from 0 to {MAX_VERSION} (2**53 - 1); "
                            f"got {_short(version)}", field="'version'", subject=_COLLECTION)
        zones: dict[str, Zone] = {}
        for i, feature in enumerate(features):
            zone = parse_zone(feature, regions, departments=departments, index=i)
            if zone.zone_id in zones:
                raise ZoneError("is that of an earlier feature too; each zone needs its own id",
                                feature=i, zone_id=zone.zone_id, property="zone_id",
                                field="property 'zone_id'")
            zones[zone.zone_id] = replace(zone, version=version)
        return cls({k: zones[k] for k in sorted(zones)}, version)

    @classmethod
    def load(cls, path: Path | str, regions: RegionIndex | None = None, *,
             departments: Collection[str] | None = None) -> ZoneSet:
        """Read a GeoJSON FeatureCollection file; errors name the file."""
        try:
            doc = json.loads(Path(path).read_text("utf-8"))
        except UnicodeDecodeError as exc:  # a binary file, or GeoJSON saved as GBK or UTF-16
            raise ZoneError(f"cannot read zones from {path}: not UTF-8 text, as GeoJSON must "
                            f"be ({exc.reason} at byte {exc.start})", subject="") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ZoneError(f"cannot read zones from {path}: {exc}", subject="") from None
        try:
            return cls.from_geojson(doc, regions, departments=departments)
        except ZoneError as exc:
            raise exc.at(str(path)) from None

    def to_feature_collection(self) -> dict[str, Any]:
        return {"type": "FeatureCollection", "version": self.version,
                "content_hash": self.content_hash,
                "features": [z.to_feature() for z in self.zones.values()]}


def demo_zones(regions: RegionIndex | None = None) -> ZoneSet:
    """The packaged synthetic demo zones (Jinan, Qingdao, Linyi)."""
    text = resources.files("cityagent.data").joinpath(DEMO_ZONES_FILE).read_text("utf-8")
    try:
        return ZoneSet.from_geojson(json.loads(text), regions)
    except ZoneError as exc:
        raise exc.at(DEMO_ZONES_FILE) from None


def zone_record(zone: Zone) -> tuple[str, dict[str, Any]]:
    """The zone-topic record of an upsert: key = zone id, value = ``{"version", "feature"}``."""
    return zone.zone_id, {"version": zone.version, "feature": zone.to_feature()}


def delete_record(zone_id: str, version: int) -> tuple[str, dict[str, Any]]:
    """A delete that carries its version (``feature`` null). A plain null value (a Kafka
    tombstone, which compaction eventually drops) deletes too, but carries no version."""
    return zone_id, {"version": version, "feature": None}


def apply_record(zones: ZoneSet, key: str, value: Mapping[str, Any] | None,
                 regions: RegionIndex | None = None, *,
                 departments: Collection[str] | None = None) -> ZoneSet:
    """The zone set after one zone-topic record.

    Records older than the zone's current version are ignored, so re-reading the topic from
    the start (a new worker, a rebalance) converges on the same set. A record of the *same*
    version is applied: two API replicas writing one zone at once both compute the next
    version, and the later record is the write that stands, as it is the one compaction keeps
    (ignoring it, a reader that saw both kept the first while one that started after
    compaction had the second). The set's version becomes the highest version applied.
    """
    if value is None:
        return zones.delete(key) if key in zones else zones
    if not isinstance(value, Mapping) or "version" not in value or "feature" not in value:
        raise ZoneError("must be null or {'version': int, 'feature': Feature or null}; "
                        f"got {_short(value)}", zone_id=key, subject=f"zones-topic record {key!r}")
    version = value["version"]
    if not _is_version(version):
        raise ZoneError(f"must be a whole number from 0 to {MAX_VERSION} (2**53 - 1); got "
                        f"{_short(version)}", zone_id=key, property="version",
                        field="'version'", subject=f"zones-topic record {key!r}")
    current = zones.zones.get(key)
    if current is not None and version < current.version:
        return zones  # stale
    top = max(zones.version, version)
    if value["feature"] is None:
        rest = {k: v for k, v in zones.zones.items() if k != key}
        return zones._with(rest, top) if current is not None or top != zones.version else zones
    zone = parse_zone(value["feature"], regions, departments=departments)
    if zone.zone_id != key:
        raise ZoneError(f"holds zone {zone.zone_id!r}; a record's key must be its feature's "
                        "zone_id (the key is what compaction keeps)", zone_id=zone.zone_id,
                        property="zone_id", subject=f"zones-topic record {key!r}")
    return zones._with({**zones.zones, key: replace(zone, version=version)}, top)


def _is_version(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, int)
            and 0 <= value <= MAX_VERSION)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class ZoneIndex:
    """The zones of a :class:`ZoneSet` in an STR-tree, for vectorised point lookups."""

    def __init__(self, zones: ZoneSet) -> None:
        self.zone_set = zones
        # Most specific first: smaller zones before the larger ones that contain them.
        self.zones: tuple[Zone, ...] = tuple(sorted(zones.zones.values(),
                                                    key=lambda z: (z.area_m2, z.zone_id)))
        self.geometries = np.array([z.geometry for z in self.zones], dtype=object)
        shapely.prepare(self.geometries)
        self._tree = shapely.STRtree(self.geometries)

    @property
    def version(self) -> int:
        return self.zone_set.version

    @property
    def content_hash(self) -> str:
        return self.zone_set.content_hash

    def __len__(self) -> int:
        return len(self.zones)

    def zones_at(self, lon: np.ndarray, lat: np.ndarray) -> list[tuple[int, ...]]:
        """Per point, the indices (into ``zones``) of the zones it lies in, most specific
        (smallest) first; a point on a zone's edge is in it. NaN gives ``()``."""
        x = np.asarray(lon, dtype=np.float64).ravel()
        y = np.asarray(lat, dtype=np.float64).ravel()
        out: list[tuple[int, ...]] = [()] * x.size
        if not len(self.zones) or x.size == 0:
            return out
        points = shapely.points(x, y)
        inp, hit = self._tree.query(points, predicate="intersects")
        if inp.size == 0:
            return out
        order = np.lexsort((hit, inp))  # zones are stored most specific first
        inp, hit = inp[order], hit[order]
        starts = np.flatnonzero(np.r_[True, inp[1:] != inp[:-1]])
        for point, group in zip(inp[starts].tolist(), np.split(hit, starts[1:]), strict=True):
            out[point] = tuple(group.tolist())
        return out

    def zones_of(self, lon: float, lat: float) -> tuple[Zone, ...]:
        """The zones one point lies in, most specific first."""
        return tuple(self.zones[i] for i in self.zones_at(np.array([lon]), np.array([lat]))[0])

    def ids(self, indices: Iterable[int]) -> tuple[str, ...]:
        return tuple(self.zones[i].zone_id for i in indices)
