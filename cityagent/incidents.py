"""Incidents: anomalies grouped by place and problem, with a lifecycle operators act on.

Detection emits one anomaly event per sensor episode change; a rainstorm makes hundreds. Here
they become *incidents*: anomalies of one **problem family** (flood, pipe, traffic, sensor
fault, other) in one **correlation scope** — the sensor's most specific operational zone of a
kind that matters to the family, else its district (its city for pipes, where neighbouring
junctions join by distance: a water network does not stop at district lines). A sensor fault
is its own incident per device, unless the sensor is already anomalous in an open incident,
which then explains it; sensors that fall *silent* are one incident per scope and kind (a
network, power or gateway cut silences many at once: one problem, not an alert per device).
An incident is one alert that is opened, updated as anomalies join (count, sensors, peak
severity, last seen), raised one severity step when enough sensors agree (three gauges over
警戒 → area flooding, two pressure drops → suspected burst),
escalated district → city → province while unacknowledged, and resolved by an operator or
after its sensors stayed normal. The settings are in ``cityagent/data/alerting.toml``.

Pure and replay-safe: no I/O and no clock (every call takes ``now_ms``, the caller's clock).
All incidents of a scope live in one :class:`ScopeState`, which the caller stores (a Faust
table keyed by :func:`scope_key`, so one agent owns each incident). Alert ids derive from the
incident key and the opening episode's start, and every applied anomaly is remembered, so a
replayed or duplicated anomaly changes nothing and emits nothing. The same anomalies in
another order can give other ids (the first to arrive opens, and names, the incident) and,
for pipes joined by distance, another grouping: docs/alerting.md, Identity and idempotency. A state keeps indexes of its
incidents (``_ScopeIndex``: never stored, built again from a loaded state on first use), so
an anomaly, a command or a tick costs about the same with ten incidents in its scope or ten
thousand.
"""

from __future__ import annotations

import fnmatch
import hashlib
import heapq
import itertools
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from cityagent.alert_places import add_district, districts_at, place
from cityagent.alerts import SEVERITY_NAMES_ZH, _reason_en, _reason_zh
from cityagent.config_files import only, table
from cityagent.detection import Anomaly
from cityagent.detectors.verdict import SEVERITIES
from cityagent.errors import ConfigError
from cityagent.incident_alert import (
    ACKNOWLEDGED,
    ESCALATION_LEVELS,
    OPEN,
    PROVINCE_CODE,
    RESOLVED,
    SYSTEM,
    Alert,
    AlertEvent,
    Command,
)
from cityagent.readings import SENSOR_ID_PATTERN
from cityagent.regions import RegionIndex, default_regions
from cityagent.routing import PROVINCE_COMMAND, Router, is_fault
from cityagent.settings import RETENTION_H
from cityagent.zones import ZONE_KINDS, Zone, ZoneIndex, kind_typo

__all__ = (
    "FAMILIES",
    "MEMBERS_BYTES",
    "AlertingConfig",
    "CorrelationRule",
    "ScopeRule",
    "EscalationConfig",
    "MaintenanceWindow",
    "Member",
    "Incident",
    "ScopeState",
    "IncidentEngine",
    "family_of",
    "home_family",
    "scope_key",
    "incident_key",
)

FAMILIES: tuple[str, ...] = ("flood", "pipe", "traffic", "sensor_fault", "other")
_FAMILY_OF_KIND = {"water_level": "flood", "pipe_pressure": "pipe", "traffic": "traffic"}
_FAULT_DETECTORS = ("flatline", "silence", "spike")
_SCOPED = ("flood", "pipe", "traffic", "other")  # families with [scope.*] settings
_RANK = {name: i for i, name in enumerate(SEVERITIES)}
_RED = len(SEVERITIES) - 1
_NEVER = -1
#: How much JSON a ``restated`` event's ``members`` may take: Kafka and Faust's producer
#: refuse a record over 1 MB, and the rest of an event is a few KB. 512 KB holds 7,825
#: sensors of the longest ids (64 characters), 34,952 of ``jn-wl-000123``.
MEMBERS_BYTES = 512 * 1024


# -- where an anomaly belongs ---------------------------------------------------------------


def family_of(anomaly: Anomaly) -> str:
    """The problem family: a device fault is ``sensor_fault`` whatever the kind."""
    if is_fault(anomaly.reason) or anomaly.detector in _FAULT_DETECTORS:
        return "sensor_fault"
    return home_family(anomaly)


def home_family(anomaly: Anomaly) -> str:
    """The family of the sensor's kind: what places it (and its faults) in a scope."""
    return _FAMILY_OF_KIND.get(anomaly.kind, "other")


def _zones_of(anomaly: Anomaly, zones: ZoneIndex | None) -> tuple[Zone, ...]:
    return zones.zones_of(anomaly.lon, anomaly.lat) if zones is not None and len(zones) else ()


def scope_key(anomaly: Anomaly, zones: ZoneIndex | None, config: AlertingConfig) -> str:
    """The state key that owns the anomaly's incidents: partition anomalies by it.

    ``zone:<id>`` for the most specific zone of a kind that scopes the sensor's family
    (``[scope.<family>] zone_kinds``), else ``district:<code>`` or ``city:<code>``
    (``level``). A sensor fault goes with its sensor's kind: that puts it in the state of the
    sensor's real incidents, which may explain it.
    """
    return _place(anomaly, _zones_of(anomaly, zones), config)[0]


def incident_key(anomaly: Anomaly, zones: ZoneIndex | None, config: AlertingConfig) -> str:
    """``family@scope`` (``sensor_fault@sensor:<id>`` for a fault other than silence):
    anomalies with the same key join the same open incident — within ``join_radius_km`` of it
    where that is set."""
    family = family_of(anomaly)
    if family == "sensor_fault":
        return _fault_group(anomaly, scope_key(anomaly, zones, config))
    return f"{family}@{scope_key(anomaly, zones, config)}"


def _fault_group(anomaly: Anomaly, scope: str) -> str:
    """The group of a sensor fault that no real incident explains: a stuck or spiking sensor
    is a job on that device (``sensor_fault@sensor:<id>``); silent sensors are one incident per
    scope and kind (``sensor_fault@<scope>/<kind>``). Many sensors falling silent together is
    one cause (a network, power or gateway cut, an integrator's one-off test), and as one
    incident per device it was thousands of alerts (and, until the state kept indexes, each
    one made the next anomaly of the scope slower). Per kind, because
    a fault goes to its sensor's owner (gauges to water affairs, roads to transport), and
    gauges and road sensors of a city share its scope."""
    if anomaly.detector == "silence":
        return f"sensor_fault@{scope}/{anomaly.kind}"
    return f"sensor_fault@sensor:{anomaly.sensor_id}"


def _place(anomaly: Anomaly, here: tuple[Zone, ...],
           config: AlertingConfig) -> tuple[str, Zone | None]:
    rule = config.scope_rule(home_family(anomaly))
    zone = next((z for z in here if rule.scopes_zone(z.zone_kind)), None)
    if zone is not None:
        return f"zone:{zone.zone_id}", zone
    if rule.level == "city":
        return f"city:{anomaly.city_code}", None
    return f"district:{anomaly.district_code}", None


# -- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorrelationRule:
    """When ``sensors`` sensors agree, the incident is area-wide (see alerting.toml)."""

    family: str
    sensors: int
    min_severity: str
    reasons: tuple[str, ...]
    scopes: tuple[str, ...]
    title_zh: str
    title_en: str

    def counts(self, anomaly: Anomaly) -> bool:
        return (_RANK[anomaly.severity] >= _RANK[self.min_severity]
                and any(fnmatch.fnmatchcase(anomaly.reason, r) for r in self.reasons))

    def applies_to(self, scope: str, zone_kind: str | None) -> bool:
        if "*" in self.scopes:
            return True
        for level in ("district", "city"):
            if scope.startswith(f"{level}:"):
                return level in self.scopes
        return zone_kind in self.scopes


@dataclass(frozen=True)
class ScopeRule:
    """Where a family's sensors may form one incident (see alerting.toml)."""

    family: str
    level: str = "district"  # district or city
    zone_kinds: tuple[str, ...] = ("*",)  # zones that are their own scope for this family
    join_radius_km: float = 0.0  # 0: anywhere in the scope
    #: Another family whose open incident in the same scope this family's anomalies join
    #: when they have no incident of their own ("" = none): congestion in a flooding city.
    joins_open: str = ""
    #: Anomalies whose episodes began within ``onset_s`` of an incident's first one join it
    #: up to ``onset_radius_km`` away: one pressure wave through a network, not two events.
    onset_s: float = 0.0
    onset_radius_km: float = 0.0

    def scopes_zone(self, zone_kind: str) -> bool:
        return "*" in self.zone_kinds or zone_kind in self.zone_kinds


@dataclass(frozen=True)
class EscalationConfig:
    min_severity: str = "orange"
    city_after_s: float = 900.0
    province_after_s: float = 1800.0


@dataclass(frozen=True)
class AlertingConfig:
    """Lifecycle, correlation and escalation settings (cityagent/data/alerting.toml)."""

    resolve_after_s: float = 900.0
    history_s: float = 86400.0
    #: An open or acknowledged alert with no event for this long gets a ``restated`` event
    #: (its unchanged snapshot and every sensor): an API started afresh reads RETENTION_H of
    #: the alerts topic and knows only the alerts, and the sensors of them, its events name.
    #: An alert with more sensors than its snapshot lists is restated this often even when
    #: busy, so its unlisted sensors are named within that time too.
    restate_after_s: float = 86400.0
    echo_s: float = 7200.0
    fault_hold_s: float = 150.0
    max_sensors_listed: int = 20
    correlation_window_s: float = 1800.0
    scopes: Mapping[str, ScopeRule] = field(default_factory=dict)
    correlation: Mapping[str, CorrelationRule] = field(default_factory=dict)
    escalation: EscalationConfig = EscalationConfig()

    def scope_rule(self, family: str) -> ScopeRule:
        return self.scopes.get(family) or ScopeRule(family)

    @property
    def absorbed_by(self) -> dict[str, str]:
        """family → the family whose open incident in the same scope it joins."""
        return {f: r.joins_open for f, r in self.scopes.items() if r.joins_open}

    @classmethod
    def load(cls, path: Path | None = None) -> AlertingConfig:
        """Read ``path`` (default: the packaged alerting.toml); ConfigError names the key."""
        where = str(path) if path else "cityagent/data/alerting.toml"
        try:
            text = (Path(path).read_text("utf-8") if path else
                    resources.files("cityagent.data").joinpath("alerting.toml").read_text("utf-8"))
            doc = tomllib.loads(text)
        except UnicodeDecodeError as exc:  # a binary file, or TOML saved as GBK or UTF-16
            raise ConfigError(f"cannot read alerting settings from {where}: not UTF-8 text, "
                              f"as TOML must be ({exc.reason} at byte {exc.start})") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read alerting settings from {where}: {exc}") from None
        return cls.from_dict(doc, where)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "alerting settings") -> AlertingConfig:
        only(doc, {"lifecycle", "scope", "correlation", "escalation"}, where)
        life = table(doc, "lifecycle", where)
        scope_doc = table(doc, "scope", where)
        only(scope_doc, set(_SCOPED), f"{where} [scope]")
        scopes = {family: _scope_rule(family, raw, f"{where} [scope.{family}]")
                  for family, raw in scope_doc.items()}
        corr = table(doc, "correlation", where)
        esc = table(doc, "escalation", where)
        only(life, {"resolve_after_s", "history_s", "restate_after_s", "echo_s",
                    "fault_hold_s", "max_sensors_listed"},
             f"{where} [lifecycle]")
        only(esc, {"min_severity", "city_after_s", "province_after_s"}, f"{where} [escalation]")
        only(corr, {"window_s", *_FAMILY_OF_KIND.values()}, f"{where} [correlation]")
        rules = {family: _correlation_rule(family, raw, f"{where} [correlation.{family}]")
                 for family, raw in corr.items() if family != "window_s"}
        listed = _number(life, "max_sensors_listed", 20, f"{where} [lifecycle]")
        if listed < 1 or listed != int(listed):
            raise ConfigError(f"{where} [lifecycle]: max_sensors_listed must be a whole number "
                              f"of 1 or more; got {listed!r}")
        restate = _number(life, "restate_after_s", 86400, f"{where} [lifecycle]")
        if not 0 < restate < RETENTION_H * 3600:
            raise ConfigError(
                f"{where} [lifecycle]: restate_after_s must be above 0 and below the "
                f"{RETENTION_H} h of the alerts topic a starting API reads ({RETENTION_H * 3600}"
                f" s), or an open alert can have no event in them; got {restate!r}")
        return cls(
            resolve_after_s=_number(life, "resolve_after_s", 900, f"{where} [lifecycle]"),
            history_s=_number(life, "history_s", 86400, f"{where} [lifecycle]"),
            restate_after_s=restate,
            echo_s=_number(life, "echo_s", 7200, f"{where} [lifecycle]"),
            fault_hold_s=_number(life, "fault_hold_s", 150, f"{where} [lifecycle]"),
            max_sensors_listed=int(listed),
            correlation_window_s=_number(corr, "window_s", 1800, f"{where} [correlation]"),
            scopes=scopes,
            correlation=rules,
            escalation=EscalationConfig(
                min_severity=_severity(esc, "min_severity", "orange", f"{where} [escalation]"),
                city_after_s=_number(esc, "city_after_s", 900, f"{where} [escalation]"),
                province_after_s=_number(esc, "province_after_s", 1800, f"{where} [escalation]"),
            ),
        )


def _scope_rule(family: str, raw: Any, where: str) -> ScopeRule:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a table")
    only(raw, {"level", "zone_kinds", "join_radius_km", "joins_open", "onset_s",
               "onset_radius_km"}, where)
    joins = raw.get("joins_open", "")
    if joins not in ("", *_SCOPED) or joins == family:
        raise ConfigError(f"{where}: joins_open must be another family of {list(_SCOPED)} "
                          f"or \"\"; got {joins!r}")
    level = raw.get("level", "district")
    if level not in ("district", "city"):
        raise ConfigError(f"{where}: level must be 'district' or 'city'; got {level!r}")
    kinds = raw.get("zone_kinds", ["*"])
    if not isinstance(kinds, list) or not all(isinstance(k, str) and k for k in kinds):
        raise ConfigError(f"{where}: zone_kinds must be a list of zone kinds (or [\"*\"]); "
                          f"got {kinds!r}")
    _no_kind_typo(kinds, "zone_kinds", ("*",), where)
    return ScopeRule(family, level, tuple(kinds), _number(raw, "join_radius_km", 0, where),
                     joins, _number(raw, "onset_s", 0, where),
                     _number(raw, "onset_radius_km", 0, where))


def _correlation_rule(family: str, raw: Any, where: str) -> CorrelationRule:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a table")
    only(raw, {"sensors", "min_severity", "reasons", "scopes", "title_zh", "title_en"}, where)
    sensors = _number(raw, "sensors", 3, where)
    if sensors < 2 or sensors != int(sensors):
        raise ConfigError(f"{where}: sensors must be a whole number of 2 or more; got {sensors!r}")
    lists = {}
    for key in ("reasons", "scopes"):
        value = raw.get(key, ["*"])
        if not isinstance(value, list) or not value or not all(
                isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where}: {key} must be a non-empty list of text; got {value!r}")
        lists[key] = tuple(value)
    _no_kind_typo(lists["scopes"], "scopes", ("*", "district", "city"), where)
    titles = {}
    for key in ("title_zh", "title_en"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: {key} must be non-empty text; got {value!r}")
        titles[key] = value
    return CorrelationRule(family, int(sensors), _severity(raw, "min_severity", "yellow", where),
                           lists["reasons"], lists["scopes"], **titles)


def _no_kind_typo(kinds: Any, key: str, others: tuple[str, ...], where: str) -> None:
    """A ConfigError for a near miss of a known zone kind (or of ``others``): custom kinds
    are allowed, so 'undrpass' would be one, of no zone, and the setting would never apply."""
    for kind in kinds:
        typo = kind_typo(kind, others)
        if typo:
            raise ConfigError(f"{where}: {key} entry {kind!r} looks like a typo of {typo!r}; "
                              f"expected {list(others)}, one of {list(ZONE_KINDS)} or a "
                              "distinct custom kind")


def _number(table: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value < 0):
        raise ConfigError(f"{where}: {key} must be a number of 0 or more; got {value!r}")
    return float(value)


def _severity(table: Mapping[str, Any], key: str, default: str, where: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or value not in _RANK:  # an array is unhashable
        raise ConfigError(f"{where}: {key} must be one of {list(SEVERITIES)}; got {value!r}")
    return value



#: A maintenance window's ``sensor``: a sensor id, or a prefix of one ending in ``*``.
_WINDOW_SENSOR = re.compile(rf"^{SENSOR_ID_PATTERN}\*?\Z")

@dataclass(frozen=True)
class MaintenanceWindow:
    """Sensors under maintenance: their anomalies are recorded as suppressed, not alerted.

    ``sensor`` is a sensor id, or a prefix ending in ``*`` (``jn-wl-*``); the window covers
    anomalies detected at event time ``start_ms <= ts_ms < end_ms``.
    """

    sensor: str
    start_ms: int
    end_ms: int
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.sensor, str) or not _WINDOW_SENSOR.match(self.sensor):
            raise ConfigError(f"maintenance window: 'sensor' must be a sensor id (1-64 of "
                              f"A-Z a-z 0-9 . _ : -, a letter or digit first) or such a prefix "
                              f"ending in '*'; got {str(self.sensor)[:80]!r}")
        if not (type(self.start_ms) is int and type(self.end_ms) is int
                and 0 <= self.start_ms < self.end_ms):
            raise ConfigError(f"maintenance window for {self.sensor!r}: need whole-number "
                              f"epoch ms with start_ms < end_ms; got {self.start_ms!r}, "
                              f"{self.end_ms!r}")
        if not isinstance(self.note, str) or len(self.note) > 2000:
            raise ConfigError(f"maintenance window for {self.sensor!r}: 'note' must be text of "
                              "at most 2000 characters")

    def status(self, now_ms: int) -> str:
        """``scheduled``, ``in_force`` or ``ended`` at wall-clock ``now_ms``."""
        if now_ms < self.start_ms:
            return "scheduled"
        return "in_force" if now_ms < self.end_ms else "ended"

    def covers(self, sensor_id: str, ts_ms: int) -> bool:
        if not self.start_ms <= ts_ms < self.end_ms:
            return False
        if self.sensor.endswith("*"):
            return sensor_id.startswith(self.sensor[:-1])
        return sensor_id == self.sensor

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> MaintenanceWindow:
        if not isinstance(doc, Mapping):
            raise ConfigError("maintenance window: expected an object")
        return cls(doc.get("sensor"), doc.get("start_ms"), doc.get("end_ms"),  # type: ignore[arg-type]
                   doc.get("note", ""))  # type: ignore[arg-type]


# -- state ----------------------------------------------------------------------------------


@dataclass
class Member:
    """One sensor of an incident."""

    sensor_id: str
    lon: float
    lat: float
    active: list[str]  # anomaly ids of its episodes that have not ended
    rank: int  # highest severity rank it reached
    corr_rank: int  # highest rank of its anomalies that count for correlation; -1 if none
    corr_last_ms: int  # event time of its latest such anomaly
    last_seen_ms: int  # event time of its latest anomaly
    normal_since_ms: int | None  # engine clock when its last episode ended; None while active


@dataclass
class Incident:
    """One incident of a scope: everything its alert shows, plus what replays are checked
    against (``applied`` anomaly events, ``episodes``, ``commands``)."""

    alert_id: str
    group: str  # family@scope (see incident_key)
    key: str  # the group, plus ~<opening sensor> where incidents join by distance
    scope: str
    family: str
    kind: str
    status: str
    district_code: int
    city_code: int
    lon: float
    lat: float
    zone_name: str  # the scope zone's names, "" for a district scope
    zone_name_en: str
    zone_kind: str
    zone_adjust: int
    zone_ids: list[str]
    zone_kinds: list[str]
    zone_departments: list[str]
    reason: str
    reason_zh: str
    reason_en: str
    headline_rank: int
    members: dict[str, Member]
    episodes: dict[str, int]  # anomaly id → highest severity rank applied
    applied: set[str]  # "anomaly_id:phase:rank" of every anomaly event applied
    anomaly_count: int
    peak_score: float
    base_rank: int  # highest member severity
    severity_rank: int  # after correlation and the zone's adjustment; never falls while open
    correlated: bool
    departments: list[str]
    first_seen_ms: int
    last_seen_ms: int
    opened_ms: int
    acknowledged_by: str | None = None
    acknowledged_at_ms: int | None = None
    assigned_to: str | None = None
    resolved_by: str | None = None
    resolved_at_ms: int | None = None
    escalation_level: str = ESCALATION_LEVELS[0]
    severe_since_ms: int | None = None  # engine clock when it reached the escalation severity
    level_since_ms: int | None = None  # engine clock of its current escalation level
    closed_ms: int | None = None  # engine clock when resolved: history is kept from then
    last_event_ms: int | None = None  # engine clock of its latest event (None: before 2026-11-24)
    #: Engine clock of its latest event that named every member: any event while the
    #: snapshot lists them all, else a ``restated`` one (its ``members``). None: before
    #: 2026-11-25.
    roster_ms: int | None = None
    comments: int = 0
    seq: int = 0
    #: Members with an episode that has not ended, kept as they change: counting them for
    #: every alert event cost O(members) per event, ~0.4 ms at 3,500 members.
    active_members: int = 0
    commands: list[str] = field(default_factory=list)
    #: Every district of its members, the opener's first (``cityagent.alert_places``). Empty
    #: in a state checkpointed before 2026-11-25: the engine then finds them by the members'
    #: positions (``IncidentEngine._districts``).
    district_codes: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["applied"] = sorted(self.applied)
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Incident:
        values = {f.name: doc[f.name] for f in fields(cls) if f.name in doc}
        values["members"] = {k: Member(**m) for k, m in doc["members"].items()}
        values["applied"] = set(doc["applied"])
        values["active_members"] = sum(1 for m in values["members"].values() if m.active)
        incident = cls(**values)
        if incident.status not in (OPEN, ACKNOWLEDGED, RESOLVED):
            raise ValueError(f"incident {incident.alert_id!r}: bad status {incident.status!r}")
        return incident


@dataclass
class ScopeState:
    """Every incident of one scope key, open and recently resolved; the caller stores it."""

    incidents: list[Incident] = field(default_factory=list)
    suppressed: dict[str, int] = field(default_factory=dict)  # applied key → engine clock
    #: Sensor faults held back for ``fault_hold_s`` (applied key → the anomaly as a dict): a
    #: step change's first reading looks like a spike; if the sensor's real anomaly follows,
    #: the fault joins that incident instead of being an alert of its own.
    held: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        """Nothing worth keeping: the caller may delete the key."""
        return not self.incidents and not self.suppressed and not self.held

    def find(self, alert_id: str) -> Incident | None:
        return self._index().by_id.get(alert_id)

    def current(self, group: str) -> list[Incident]:
        """The open or acknowledged incidents of ``group``."""
        return list(self._index().open.get(group, {}).values())

    def _index(self) -> _ScopeIndex:
        """The derived indexes (not stored: built on first use after a load). Built again
        whenever ``incidents`` or ``held`` was replaced or changed size other than through
        the engine; the engine is the only writer of a state's incidents."""
        ix: _ScopeIndex | None = self.__dict__.get("_ix")
        if (ix is None or ix.incidents is not self.incidents
                or ix.n_incidents != len(self.incidents) or ix.held is not self.held
                or ix.n_held != len(self.held)):
            ix = _ScopeIndex(self)
            self.__dict__["_ix"] = ix
        return ix

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "incidents": [i.to_dict() for i in self.incidents],
                "suppressed": dict(self.suppressed), "held": dict(self.held)}

    @classmethod
    def from_dict(cls, doc: Any) -> ScopeState:
        """ValueError for anything that is not a state this module wrote."""
        try:
            if doc.get("v") != 1:
                raise ValueError(f"unknown state version {doc.get('v')!r}")
            return cls([Incident.from_dict(i) for i in doc["incidents"]],
                       {str(k): int(v) for k, v in doc["suppressed"].items()},
                       {str(k): dict(v) for k, v in doc.get("held", {}).items()})
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an incident scope state: {type(exc).__name__}: {exc}") from None

    def to_bytes(self) -> bytes:
        """``to_dict`` as compact UTF-8 JSON. orjson writes the dataclasses itself, ~30x
        faster than ``asdict`` and the json module (a 3,000-sensor incident: 1.4 ms, not 48),
        with the same bytes."""
        doc = {"v": 1, "incidents": self.incidents, "suppressed": self.suppressed,
               "held": self.held}
        return orjson.dumps(doc, default=_sorted_set)

    @classmethod
    def from_bytes(cls, data: bytes) -> ScopeState:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not an incident scope state: {exc}") from None
        return cls.from_dict(doc)


class _ScopeIndex:
    """What the engine looks up in a :class:`ScopeState`, kept as it changes so that an
    anomaly, a command or a tick costs the same with 10 or 12,000 incidents in the scope.

    Until 2026-11-24 every anomaly scanned every incident of its scope several times
    (duplicate check, resolved incidents and their echoes, the open incidents of its group,
    the alert ids taken), and every tick all of them: ~2.6 ms per anomaly with 12,000
    incidents in one scope (a mass flatline after ``fault_hold_s``, or resolved incidents
    kept for ``history_s``), quadratic overall. Derived from the state alone and never
    stored: the checkpoint format is unchanged, and a state read from one builds its index
    on first use. Incidents are numbered in list order (``ord``): where the scans took the
    first match in list order, the index takes the lowest number.
    """

    __slots__ = ("incidents", "n_incidents", "held", "n_held", "next_ord", "ord_of", "by_ord",
                 "by_id", "applied", "open", "episodes", "echoes", "closing", "due",
                 "due_config", "held_next", "held_ord", "held_by_sensor", "held_by_episode",
                 "held_due")

    def __init__(self, state: ScopeState) -> None:
        self.incidents = state.incidents
        self.held = state.held
        self.next_ord = 0
        self.ord_of: dict[int, int] = {}  # id(incident) → its number
        self.by_ord: dict[int, Incident] = {}
        self.by_id: dict[str, Incident] = {}  # alert id → incident (the first, as find was)
        self.applied: dict[str, int] = {}  # applied key → how many incidents hold it
        self.open: dict[str, dict[int, Incident]] = {}  # group → its unresolved, in order
        self.episodes: dict[str, dict[int, Incident]] = {}  # anomaly id → incidents with it
        #: sensor → incidents resolved by the system it is a member of (echo candidates)
        self.echoes: dict[str, dict[int, Incident]] = {}
        self.closing: list[tuple[int, int]] = []  # heap of (closed_ms, ord) of resolved ones
        #: heap of (due ms, ord): when an unresolved incident may auto-resolve or escalate
        #: (an entry may be early or stale: the tick checks as before); built by the tick
        #: for its engine's settings
        self.due: list[tuple[float, int]] = []
        self.due_config: AlertingConfig | None = None
        self.held_next = 0
        self.held_ord: dict[str, int] = {}  # held key → its number, in the dict's order
        self.held_by_sensor: dict[Any, dict[str, None]] = {}
        self.held_by_episode: dict[Any, dict[str, None]] = {}
        self.held_due: list[tuple[int, int, str]] = []  # heap of (ts_ms, number, key)
        self.n_incidents = 0
        for incident in self.incidents:
            self.add(incident)
        self.n_held = 0
        for key, doc in self.held.items():
            self._held(key, doc)

    # -- incidents ----------------------------------------------------------------------

    def add(self, incident: Incident) -> None:
        """Index an incident just appended to the state's list."""
        n = self.next_ord
        self.next_ord += 1
        self.n_incidents += 1
        self.ord_of[id(incident)] = n
        self.by_ord[n] = incident
        self.by_id.setdefault(incident.alert_id, incident)
        for key in incident.applied:
            self.applied[key] = self.applied.get(key, 0) + 1
        for anomaly_id in incident.episodes:
            self.episodes.setdefault(anomaly_id, {})[n] = incident
        if incident.status == RESOLVED:
            self.resolved(incident)
        else:
            self.open.setdefault(incident.group, {})[n] = incident

    def remove(self, incident: Incident) -> None:
        """Forget an incident the state's list no longer holds."""
        n = self.ord_of.pop(id(incident))
        del self.by_ord[n]
        self.n_incidents -= 1
        if self.by_id.get(incident.alert_id) is incident:
            del self.by_id[incident.alert_id]
        for key in incident.applied:
            left = self.applied[key] - 1
            if left:
                self.applied[key] = left
            else:
                del self.applied[key]
        for anomaly_id in incident.episodes:
            _drop(self.episodes, anomaly_id, n)
        _drop(self.open, incident.group, n)
        if incident.status == RESOLVED and incident.resolved_by == SYSTEM:
            for sensor_id in incident.members:
                _drop(self.echoes, sensor_id, n)

    def note_applied(self, incident: Incident, key: str) -> None:
        if key not in incident.applied:
            incident.applied.add(key)
            self.applied[key] = self.applied.get(key, 0) + 1

    def note_episode(self, incident: Incident, anomaly_id: str) -> None:
        self.episodes.setdefault(anomaly_id, {})[self.ord_of[id(incident)]] = incident

    def resolved(self, incident: Incident) -> None:
        """An incident that has just become (or was loaded) resolved."""
        n = self.ord_of[id(incident)]
        _drop(self.open, incident.group, n)
        heapq.heappush(self.closing, (incident.closed_ms or 0, n))
        if incident.resolved_by == SYSTEM:
            for sensor_id in incident.members:
                self.echoes.setdefault(sensor_id, {})[n] = incident

    def first_open(self, group: str) -> Incident | None:
        return next(iter(self.open.get(group, {}).values()), None)

    def open_with_episode(self, anomaly_id: str) -> Incident | None:
        """The first unresolved incident (in list order) the episode belongs to."""
        found = [(n, i) for n, i in self.episodes.get(anomaly_id, {}).items()
                 if i.status != RESOLVED]
        return min(found, key=lambda pair: pair[0])[1] if found else None

    def watch(self, incident: Incident, due: float | None) -> None:
        if due is not None:
            heapq.heappush(self.due, (due, self.ord_of[id(incident)]))

    def pop_due(self, now_ms: int) -> list[Incident]:
        """Unresolved incidents whose auto-resolution, escalation or restatement may be due,
        in order."""
        found: dict[int, Incident] = {}
        while self.due and self.due[0][0] <= now_ms + 1:  # + 1: never late by a rounding
            n = heapq.heappop(self.due)[1]
            incident = self.by_ord.get(n)
            if incident is not None and incident.status != RESOLVED:
                found[n] = incident
        return [found[n] for n in sorted(found)]

    def pop_closed(self, now_ms: int, keep_ms: float) -> bool:
        """Whether a resolved incident has been kept ``keep_ms``: ``_forget`` then filters."""
        expired = False
        while self.closing and now_ms - self.closing[0][0] >= keep_ms:
            expired |= heapq.heappop(self.closing)[1] in self.by_ord
        return expired

    # -- held faults --------------------------------------------------------------------

    def hold(self, key: str, doc: dict[str, Any]) -> None:
        self.held[key] = doc
        self._held(key, doc)

    def _held(self, key: str, doc: Mapping[str, Any]) -> None:
        n = self.held_next
        self.held_next += 1
        self.n_held += 1
        self.held_ord[key] = n
        self.held_by_sensor.setdefault(doc.get("sensor_id"), {})[key] = None
        self.held_by_episode.setdefault(doc.get("anomaly_id"), {})[key] = None
        heapq.heappush(self.held_due, (int(doc.get("ts_ms", 0)), n, key))

    def unhold(self, key: str) -> dict[str, Any]:
        doc = self.held.pop(key)
        self.n_held -= 1
        del self.held_ord[key]
        _drop(self.held_by_sensor, doc.get("sensor_id"), key)
        _drop(self.held_by_episode, doc.get("anomaly_id"), key)
        return doc

    def held_of_sensor(self, sensor_id: str) -> list[str]:
        """The held keys of a sensor, in the held dict's order."""
        keys = self.held_by_sensor.get(sensor_id)
        return sorted(keys, key=self.held_ord.__getitem__) if keys else []

    def releasable(self, anomaly_id: str | None, now_ms: int, hold_ms: float) -> list[str]:
        """The held keys that are due (or of the episode ``anomaly_id``), in dict order."""
        found = set(self.held_by_episode.get(anomaly_id, ()))
        while self.held_due and self.held_due[0][0] + hold_ms <= now_ms:
            _, n, key = heapq.heappop(self.held_due)
            if self.held_ord.get(key) == n:
                found.add(key)
        return sorted(found, key=self.held_ord.__getitem__)


def _drop(index: dict[Any, dict[Any, Any]], key: Any, member: Any) -> None:
    entries = index.get(key)
    if entries is not None:
        entries.pop(member, None)
        if not entries:
            del index[key]


def _sorted_set(value: Any) -> list[Any]:
    """How ``to_bytes`` writes a set (``Incident.applied``): sorted, as ``to_dict`` does."""
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot store a {type(value).__name__} in an incident state")


def _applied_key(anomaly: Anomaly) -> str:
    return f"{anomaly.anomaly_id}:{anomaly.phase}:{_RANK.get(anomaly.severity, 0)}"


def _digest(text: str, size: int = 10) -> str:
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


# -- the engine -----------------------------------------------------------------------------


@dataclass(eq=False)
class IncidentEngine:
    """Turns anomalies, operator commands and the passing of time into alert events.

    Every method mutates the given :class:`ScopeState` and returns the events to publish,
    in order. ``maintenance`` may be replaced at any time (``dataclasses.replace``).
    """

    config: AlertingConfig
    router: Router
    regions: RegionIndex = field(default_factory=default_regions)
    maintenance: tuple[MaintenanceWindow, ...] = ()

    # -- anomalies ------------------------------------------------------------------------

    def scope_key(self, anomaly: Anomaly, zones: ZoneIndex | None) -> str:
        """The state key that owns ``anomaly`` (see :func:`scope_key`)."""
        return scope_key(anomaly, zones, self.config)

    def on_anomaly(self, state: ScopeState, anomaly: Anomaly, zones: ZoneIndex | None,
                   now_ms: int, *, held_release: bool = False) -> list[AlertEvent]:
        """Apply one anomaly event: open or update an incident, or (at its end) mark its
        sensor normal. ``state`` must be the one of :meth:`scope_key`."""
        applied = _applied_key(anomaly)
        ix = state._index()
        if (applied in state.suppressed or (applied in state.held and not held_release)
                or applied in ix.applied):
            return []  # a replay or a duplicate
        here = _zones_of(anomaly, zones)
        scope, zone = _place(anomaly, here, self.config)
        window = next((w for w in self.maintenance
                       if w.covers(anomaly.sensor_id, anomaly.ts_ms)), None)
        if window is not None:
            state.suppressed[applied] = now_ms
            return [_suppressed(anomaly, scope, window, now_ms)]
        if anomaly.phase == "end":
            events = self._release(state, anomaly.anomaly_id, zones, now_ms)
            ix = state._index()
            incident = ix.open_with_episode(anomaly.anomaly_id)
            return events + ([] if incident is None
                             else self._end(ix, incident, anomaly, applied, now_ms))
        if self._settled(ix, anomaly):
            return []
        family = family_of(anomaly)
        host = self._host(ix, anomaly, scope) if family == "sensor_fault" else None
        if (family == "sensor_fault" and self.config.fault_hold_s > 0
                and not anomaly.detector == "silence"
                and host is None and not held_release):
            ix.hold(applied, anomaly.to_dict())
            return []
        if family == "sensor_fault":
            incident = host
            group = _fault_group(anomaly, scope)
            if incident is None:
                incident = ix.first_open(group)
            zone = None  # a broken device is not made worse by where it stands
        else:
            group = f"{family}@{scope}"
            incident = self._nearest(list(ix.open.get(group, {}).values()), anomaly)
            if incident is None and family in self.config.absorbed_by:
                # Congestion while the same scope floods is the flood's (a rainstorm is one
                # incident for the command centre, routed to water affairs and transport).
                incident = ix.first_open(f"{self.config.absorbed_by[family]}@{scope}")
        kind = "updated"
        if incident is None:
            incident = self._open(state, ix, group, scope, family, anomaly, zone, now_ms)
            kind = "opened"
        self._join(ix, incident, anomaly, applied, here, now_ms)
        if family != "sensor_fault":
            for key in ix.held_of_sensor(anomaly.sensor_id):  # its held faults were this, early
                doc = ix.unhold(key)
                self._join(ix, incident, Anomaly.from_dict(doc), key, here, now_ms)
        return [self._event(incident, kind, SYSTEM, now_ms, anomaly=anomaly)]

    def _release(self, state: ScopeState, anomaly_id: str | None, zones: ZoneIndex | None,
                 now_ms: int) -> list[AlertEvent]:
        """Open held faults that are due (or, given an id, that episode's: it has ended)."""
        hold_ms = self.config.fault_hold_s * 1000
        events: list[AlertEvent] = []
        ix = state._index()
        for key in ix.releasable(anomaly_id, now_ms, hold_ms):
            doc = ix.unhold(key)
            events += self.on_anomaly(state, Anomaly.from_dict(doc), zones, now_ms,
                                      held_release=True)
        return events

    def _settled(self, ix: _ScopeIndex, anomaly: Anomaly) -> bool:
        """Whether the anomaly's episode belongs to a resolved incident and says nothing new
        (a severity not above what that incident saw): an operator closed it."""
        rank = _RANK[anomaly.severity]
        if any(i.status == RESOLVED and i.episodes.get(anomaly.anomaly_id, -1) >= rank
               for i in ix.episodes.get(anomaly.anomaly_id, {}).values()):
            return True
        # The echo of an auto-resolved incident: a member sensor's new, no more severe episode
        # (a burst main's pressure rising back once repaired) within ``echo_s``
        # after the resolution is that incident's tail, not a new one.
        window_ms = self.config.echo_s * 1000
        return any(i.status == RESOLVED and i.resolved_by == SYSTEM
                   and anomaly.sensor_id in i.members
                   and rank <= i.severity_rank and i.resolved_at_ms is not None
                   and int(anomaly.ts_ms) - i.resolved_at_ms <= window_ms
                   for i in ix.echoes.get(anomaly.sensor_id, {}).values())

    def _host(self, ix: _ScopeIndex, anomaly: Anomaly, scope: str) -> Incident | None:
        """The open real incident a faulty sensor is an active member of: a gauge that goes
        silent or stuck in a flood is part of the flood, not a separate job."""
        for incident in ix.open.get(f"{home_family(anomaly)}@{scope}", {}).values():
            member = incident.members.get(anomaly.sensor_id)
            if member is not None and member.active:
                return incident
        return None

    def _nearest(self, incidents: list[Incident], anomaly: Anomaly) -> Incident | None:
        """The incident the anomaly joins: the one its sensor is already in (a burst's
        pressure rising back is the same burst), else the group's only one, or the nearest
        within the radius."""
        if not incidents:
            return None
        for incident in incidents:
            if anomaly.sensor_id in incident.members:
                return incident
        rule = self.config.scope_rule(incidents[0].family)
        if rule.join_radius_km <= 0:
            return incidents[0]
        best, best_km = None, rule.join_radius_km
        for incident in incidents:
            for m in incident.members.values():
                km = _km(anomaly.lon, anomaly.lat, m.lon, m.lat)
                if km <= best_km:
                    best, best_km = incident, km
        if best is None and rule.onset_s > 0:
            best_km = rule.onset_radius_km
            for incident in incidents:
                if abs(int(anomaly.since_ms) - incident.first_seen_ms) > rule.onset_s * 1000:
                    continue
                for m in incident.members.values():
                    km = _km(anomaly.lon, anomaly.lat, m.lon, m.lat)
                    if km <= best_km:
                        best, best_km = incident, km
        return best

    def _open(self, state: ScopeState, ix: _ScopeIndex, group: str, scope: str, family: str,
              anomaly: Anomaly, zone: Zone | None, now_ms: int) -> Incident:
        key = group
        if family != "sensor_fault" and self.config.scope_rule(family).join_radius_km > 0:
            key = f"{group}~{anomaly.sensor_id}"
        taken = ix.by_id
        n = 1
        alert_id = "inc-" + _digest(f"{key}|{anomaly.since_ms}")
        while alert_id in taken:  # a new incident after one with the same opening resolved
            n += 1
            alert_id = "inc-" + _digest(f"{key}|{anomaly.since_ms}|{n}")
        incident = Incident(
            alert_id=alert_id, group=group, key=key, scope=scope, family=family,
            kind=anomaly.kind, status=OPEN, district_code=int(anomaly.district_code),
            city_code=int(anomaly.city_code), lon=anomaly.lon, lat=anomaly.lat,
            zone_name=zone.name if zone else "", zone_name_en=zone.name_en if zone else "",
            zone_kind=zone.zone_kind if zone else "",
            zone_adjust=zone.severity_adjust if zone else 0,
            zone_ids=[], zone_kinds=[], zone_departments=[], reason=anomaly.reason,
            reason_zh=_reason_zh(anomaly), reason_en=_reason_en(anomaly), headline_rank=-1,
            members={}, episodes={}, applied=set(), anomaly_count=0, peak_score=0.0,
            base_rank=0, severity_rank=0, correlated=False, departments=[],
            first_seen_ms=int(anomaly.since_ms), last_seen_ms=int(anomaly.ts_ms),
            opened_ms=int(now_ms), district_codes=[int(anomaly.district_code)],
        )
        state.incidents.append(incident)
        ix.add(incident)
        self._watch(ix, incident)  # for its restatement, if nothing else comes due first
        return incident

    def _join(self, ix: _ScopeIndex, incident: Incident, anomaly: Anomaly, applied: str,
              here: tuple[Zone, ...], now_ms: int) -> None:
        rank = _RANK[anomaly.severity]
        ix.note_applied(incident, applied)
        if anomaly.anomaly_id not in incident.episodes:
            ix.note_episode(incident, anomaly.anomaly_id)
        incident.episodes[anomaly.anomaly_id] = max(rank, incident.episodes.get(
            anomaly.anomaly_id, -1))
        member = incident.members.get(anomaly.sensor_id)
        if member is None:
            member = Member(anomaly.sensor_id, anomaly.lon, anomaly.lat, [], rank, -1, _NEVER,
                            int(anomaly.ts_ms), None)
            incident.members[anomaly.sensor_id] = member
        if anomaly.anomaly_id not in member.active:
            incident.active_members += not member.active
            member.active.append(anomaly.anomaly_id)
        member.rank = max(member.rank, rank)
        member.last_seen_ms = max(member.last_seen_ms, int(anomaly.ts_ms))
        member.normal_since_ms = None
        rule = self.config.correlation.get(incident.family)
        if rule is not None and rule.counts(anomaly):
            member.corr_rank = max(member.corr_rank, rank)
            member.corr_last_ms = max(member.corr_last_ms, int(anomaly.ts_ms))
        incident.anomaly_count += 1
        incident.peak_score = max(incident.peak_score, float(anomaly.peak_score))
        incident.first_seen_ms = min(incident.first_seen_ms, int(anomaly.since_ms))
        incident.last_seen_ms = max(incident.last_seen_ms, int(anomaly.ts_ms))
        add_district(self._districts(incident), int(anomaly.district_code))
        if rank > incident.headline_rank and family_of(anomaly) == incident.family:
            # The headline is the worst anomaly of the incident's own family: a flood that
            # absorbed a red jam (joins_open) or a member's fault still reads as a flood.
            incident.headline_rank = rank
            incident.reason = anomaly.reason
            incident.reason_zh, incident.reason_en = _reason_zh(anomaly), _reason_en(anomaly)
        for zone in here:
            _add(incident.zone_ids, zone.zone_id)
            _add(incident.zone_kinds, zone.zone_kind)
            _add(incident.zone_departments, zone.department)
            if incident.family != "sensor_fault" and zone.severity_adjust > incident.zone_adjust:
                # A city-wide flood reaching a school is more severe than one in the fields.
                incident.zone_adjust = zone.severity_adjust
        incident.base_rank = max(incident.base_rank, rank)
        if anomaly.kind != incident.kind and not is_fault(anomaly.reason):
            # Another kind joined (congestion in a flood): its departments are told too.
            routed = self.router.route(anomaly.kind, anomaly.reason, incident.zone_kinds,
                                       anomaly.severity)
            incident.departments = list(self.router.ordered({*incident.departments, *routed}))
        if rule is not None and not incident.correlated:
            incident.correlated = self._agree(incident, rule, int(anomaly.ts_ms))
        if self._reassess(incident, now_ms):
            self._watch(ix, incident)

    def _agree(self, incident: Incident, rule: CorrelationRule, event_ms: int) -> bool:
        """Whether enough distinct sensors of the scope agree, now or within the window."""
        if not rule.applies_to(incident.scope, incident.zone_kind or None):
            return False
        window_ms = self.config.correlation_window_s * 1000
        floor = _RANK[rule.min_severity]
        agreeing = sum(1 for m in incident.members.values()
                       if m.corr_rank >= floor
                       and (m.active or event_ms - m.corr_last_ms <= window_ms))
        return agreeing >= rule.sensors

    def _end(self, ix: _ScopeIndex, incident: Incident, anomaly: Anomaly, applied: str,
             now_ms: int) -> list[AlertEvent]:
        ix.note_applied(incident, applied)
        member = incident.members.get(anomaly.sensor_id)
        if member is None or anomaly.anomaly_id not in member.active:
            return []
        member.active.remove(anomaly.anomaly_id)
        if member.active:
            return []
        incident.active_members -= 1
        member.normal_since_ms = int(now_ms)
        if not incident.active_members:
            self._watch(ix, incident)
        return [self._event(incident, "updated", SYSTEM, now_ms, anomaly=anomaly)]

    def _reassess(self, incident: Incident, now_ms: int) -> bool:
        """Severity (member peak, +1 if area-wide, + the zone's adjustment) and recipients;
        True if the incident has just become severe (its escalation clock starts)."""
        rank = incident.base_rank + int(incident.correlated) + incident.zone_adjust
        incident.severity_rank = max(incident.severity_rank, min(max(rank, 0), _RED))
        esc = self.config.escalation
        severe = (incident.severity_rank >= _RANK[esc.min_severity]
                  and incident.severe_since_ms is None and incident.status == OPEN)
        if severe:
            incident.severe_since_ms = incident.level_since_ms = int(now_ms)
        extra = [] if incident.family == "sensor_fault" else list(incident.zone_departments)
        if incident.escalation_level == ESCALATION_LEVELS[-1]:
            extra.append(PROVINCE_COMMAND)
        routed = self.router.route(incident.kind, incident.reason, incident.zone_kinds,
                                   SEVERITIES[incident.severity_rank], extra=extra)
        incident.departments = list(self.router.ordered({*incident.departments, *routed}))
        return severe

    # -- commands ---------------------------------------------------------------------------

    def on_command(self, state: ScopeState, command: Command, now_ms: int) -> list[AlertEvent]:
        """Apply an operator's command to the alert it names (if this state holds it).

        A command id seen before, an alert not in this state, or an action that changes
        nothing (ack of an acknowledged alert, anything but a comment on a resolved one)
        emits nothing.
        """
        ix = state._index()
        incident = ix.by_id.get(command.alert_id)
        if incident is None or command.command_id in incident.commands:
            return []
        incident.commands.append(command.command_id)
        at = int(command.at_ms)
        if command.action == "comment":
            incident.comments += 1
            return [self._event(incident, "commented", command.actor, at, detail=command.text)]
        if incident.status == RESOLVED:
            return []
        if command.action == "ack":
            if incident.status != OPEN:
                return []
            incident.status = ACKNOWLEDGED
            incident.acknowledged_by, incident.acknowledged_at_ms = command.actor, at
            return [self._event(incident, "acknowledged", command.actor, at,
                                detail=command.text)]
        if command.action == "assign":
            incident.assigned_to = command.assignee
            # The note is kept after the assignee: the event's detail is all the audit trail
            # has of it (before, an assign's note was dropped).
            detail = str(command.assignee) + (f" — {command.text}" if command.text else "")
            return [self._event(incident, "assigned", command.actor, at, detail=detail)]
        self._resolve(ix, incident, command.actor, at, now_ms)
        return [self._event(incident, "resolved", command.actor, at, detail=command.text)]

    def _resolve(self, ix: _ScopeIndex, incident: Incident, actor: str, at_ms: int,
                 now_ms: int) -> None:
        incident.status = RESOLVED
        incident.resolved_by = actor
        incident.resolved_at_ms = int(at_ms)
        incident.closed_ms = int(now_ms)
        ix.resolved(incident)

    # -- time -------------------------------------------------------------------------------

    def tick(self, state: ScopeState, now_ms: int) -> list[AlertEvent]:
        """Auto-resolve, escalate and forget what is older than the history; call it often."""
        events: list[AlertEvent] = self._release(state, None, None, now_ms)
        ix = state._index()
        if ix.due_config is not self.config:  # first tick since a load, or other settings
            ix.due_config, ix.due = self.config, []
            for incident in ix.by_ord.values():
                self._watch(ix, incident)
        resolve_ms = self.config.resolve_after_s * 1000
        due = ix.pop_due(now_ms)  # the only incidents the old scan of all could change
        for incident in due:
            members = incident.members.values()
            if members and not incident.active_members:
                calm = max(m.normal_since_ms or 0 for m in members)
                if now_ms - calm >= resolve_ms:
                    self._resolve(ix, incident, SYSTEM, now_ms, now_ms)
                    events.append(self._event(incident, "resolved", SYSTEM, now_ms,
                                              detail="sensors normal"))
                    continue
            events += self._escalate(incident, now_ms)
            events += self._restate(incident, now_ms)
        for incident in due:
            self._watch(ix, incident)
        self._forget(state, ix, now_ms)
        return events

    def _watch(self, ix: _ScopeIndex, incident: Incident) -> None:
        """Tell the tick when to look at ``incident`` again (due times are of this engine's
        settings: a state ticked by an engine with others rebuilds them)."""
        if ix.due_config is self.config:
            ix.watch(incident, self._next_due(incident))

    def _next_due(self, incident: Incident) -> float | None:
        """When the tick may next change the incident (auto-resolve, escalate or restate);
        None once resolved. Never later than the tick's own test (``tick``, ``_escalate``,
        ``_restate``)."""
        if incident.status == RESOLVED:
            return None
        due = self._roster_ms(incident) + self.config.restate_after_s * 1000
        if incident.members and not incident.active_members:
            calm = max(m.normal_since_ms or 0 for m in incident.members.values())
            due = min(due, calm + self.config.resolve_after_s * 1000)
        if incident.status == OPEN and incident.level_since_ms is not None:
            level = ESCALATION_LEVELS.index(incident.escalation_level)
            if level + 1 < len(ESCALATION_LEVELS):
                due = min(due, incident.level_since_ms
                          + self._delays()[ESCALATION_LEVELS[level + 1]])
        return due

    @staticmethod
    def _last_event_ms(incident: Incident) -> int:
        # State written before last_event_ms existed: its opening is the safe guess (a long
        # open alert is then restated at the first tick, which is what it may need).
        return incident.opened_ms if incident.last_event_ms is None else incident.last_event_ms

    def _roster_ms(self, incident: Incident) -> int:
        """When an event last named every member (never after its latest event)."""
        if incident.roster_ms is not None:
            return incident.roster_ms
        if len(incident.members) <= self.config.max_sensors_listed:
            return self._last_event_ms(incident)  # every snapshot listed them all
        return incident.opened_ms  # state from before 2026-11-25: the safe guess, as above

    def _restate(self, incident: Incident, now_ms: int) -> list[AlertEvent]:
        """A ``restated`` event for an open or acknowledged alert whose events have not
        named every member sensor for restate_after_s: quiet that long, or, with more members
        than its snapshot lists, not restated that long.

        Why: an API started afresh reads RETENTION_H of the alerts topic (which keeps months);
        an alert open longer than that with no change would have no event there, and the API
        would not show it. And it would know only the members those events name: the listed
        ones and those with an anomaly since. A key scoped by sensor-id prefix that sees the
        alert through an unlisted member's anomaly of last week would not see it there. The
        unchanged snapshot, republished under the next ``seq`` with every member, keeps both.
        """
        if incident.status == RESOLVED:
            return []
        if now_ms - self._roster_ms(incident) < self.config.restate_after_s * 1000:
            return []
        return [self._event(incident, "restated", SYSTEM, now_ms)]

    def _delays(self) -> dict[str, float]:
        esc = self.config.escalation
        return {"city": esc.city_after_s * 1000, "province": esc.province_after_s * 1000}

    def _escalate(self, incident: Incident, now_ms: int) -> list[AlertEvent]:
        if incident.status != OPEN or incident.level_since_ms is None:
            return []
        delays = self._delays()
        events = []
        level = ESCALATION_LEVELS.index(incident.escalation_level)
        while level + 1 < len(ESCALATION_LEVELS):
            target = ESCALATION_LEVELS[level + 1]
            due = incident.level_since_ms + delays[target]
            if now_ms < due:
                break
            level += 1
            incident.escalation_level = target
            incident.level_since_ms = int(due)  # due time: the same whatever the tick rate
            self._reassess(incident, now_ms)
            events.append(self._event(incident, "escalated", SYSTEM, int(due), detail=target))
        return events

    def _forget(self, state: ScopeState, ix: _ScopeIndex, now_ms: int) -> None:
        keep_ms = self.config.history_s * 1000
        if ix.pop_closed(now_ms, keep_ms):  # else the filter below would keep every one
            kept = [i for i in state.incidents if i.status != RESOLVED
                    or now_ms - (i.closed_ms or 0) < keep_ms]
            if len(kept) != len(state.incidents):
                ids = {id(i) for i in kept}
                for incident in state.incidents:
                    if id(incident) not in ids:
                        ix.remove(incident)
            state.incidents = ix.incidents = kept
        state.suppressed = {k: t for k, t in state.suppressed.items() if now_ms - t < keep_ms}

    # -- events -----------------------------------------------------------------------------

    def _event(self, incident: Incident, kind: str, actor: str, at_ms: int, *,
               anomaly: Anomaly | None = None, detail: str | None = None) -> AlertEvent:
        incident.seq += 1
        incident.last_event_ms = int(at_ms)
        members = _members(incident) if kind == "restated" else None
        if members is not None or len(incident.members) <= self.config.max_sensors_listed:
            incident.roster_ms = int(at_ms)
        return AlertEvent(
            event_id=_digest(f"{incident.alert_id}|{incident.seq}", 12),
            type=kind, alert_id=incident.alert_id, scope=incident.scope, actor=actor,
            at_ms=int(at_ms), alert=self.snapshot(incident),
            anomaly_id=anomaly.anomaly_id if anomaly else None,
            sensor_id=anomaly.sensor_id if anomaly else None, detail=detail or "",
            members=members)

    def snapshot(self, incident: Incident) -> Alert:
        """The alert as operators see it now."""
        district_name, district_en, city_name, city_en = self._names(incident)
        severity = SEVERITIES[incident.severity_rank]
        rule = self.config.correlation.get(incident.family)
        area = incident.correlated and rule is not None
        head_zh = rule.title_zh if area else incident.reason_zh
        head_en = rule.title_en if area else incident.reason_en
        n = len(incident.members)
        sensors = list(itertools.islice(incident.members, self.config.max_sensors_listed))
        codes = self._districts(incident)
        where_zh = city_name + district_name + (f"·{incident.zone_name}"
                                                if incident.zone_name else "")
        where_en, at_en = incident.zone_name_en or district_en, "at"
        if len(codes) > 1:  # a city-wide flood: name its districts, or count them
            where = place(self.regions, city_name, codes, incident.zone_name,
                          incident.zone_name_en)
            where_zh, where_en = where.zh, where.en
            at_en = "at" if incident.zone_name_en else "across"
        count_zh = f"（{n}个传感器）" if n > 1 else f"（{sensors[0]}）" if sensors else ""
        count_en = f", {n} sensors" if n > 1 else f", {sensors[0]}" if sensors else ""
        return Alert(
            alert_id=incident.alert_id, scope=incident.scope, incident_key=incident.key,
            status=incident.status, severity=severity, kind=incident.kind,
            family=incident.family, reason=incident.reason,
            title_zh=f"{where_zh} {SEVERITY_NAMES_ZH[severity]}{head_zh}{count_zh}",
            title_en=f"{severity} {head_en} {at_en} {where_en} ({city_en}){count_en}",
            reason_zh=incident.reason_zh, reason_en=incident.reason_en,
            province_code=PROVINCE_CODE, city_code=str(incident.city_code), city_name=city_name,
            district_code=str(incident.district_code), district_name=district_name,
            district_codes=tuple(str(c) for c in codes),
            zone_ids=tuple(incident.zone_ids), zone_kinds=tuple(incident.zone_kinds),
            departments=tuple(incident.departments),
            departments_zh=self.router.names_zh(incident.departments),
            sensors=tuple(sensors), sensor_count=n,
            active_sensor_count=incident.active_members,
            anomaly_count=incident.anomaly_count, peak_score=round(incident.peak_score, 4),
            correlated=incident.correlated, lon=incident.lon, lat=incident.lat,
            first_seen_ms=incident.first_seen_ms, last_seen_ms=incident.last_seen_ms,
            opened_ms=incident.opened_ms, acknowledged_by=incident.acknowledged_by,
            acknowledged_at_ms=incident.acknowledged_at_ms, assigned_to=incident.assigned_to,
            resolved_by=incident.resolved_by, resolved_at_ms=incident.resolved_at_ms,
            escalation_level=incident.escalation_level, comments=incident.comments,
            seq=incident.seq,
        )

    def _districts(self, incident: Incident) -> list[int]:
        """The incident's ``district_codes``; for one checkpointed before they existed, first
        found from its opener's district and its members' positions."""
        if not incident.district_codes:
            members = incident.members.values()
            incident.district_codes = districts_at(
                self.regions, incident.district_code, [m.lon for m in members],
                [m.lat for m in members])
        return incident.district_codes

    def _names(self, incident: Incident) -> tuple[str, str, str, str]:
        """District name, its English name, city name, its English name (codes if unknown)."""
        try:
            district = self.regions.district(str(incident.district_code))
            district_name, district_en = district.name, district.name_en
        except KeyError:
            district_name, district_en = "", f"district {incident.district_code}"
        try:
            city = self.regions.city(str(incident.city_code))
            return district_name, district_en, city.name, city.name_en
        except KeyError:
            return district_name, district_en, "", str(incident.city_code)


def _km(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Distance in km, equirectangular: exact enough within a city."""
    kx = 111.32 * math.cos(math.radians((lat1 + lat2) / 2))
    return math.hypot((lon1 - lon2) * kx, (lat1 - lat2) * 110.57)


def _members(incident: Incident) -> tuple[str, ...]:
    """Every member sensor, in the order they joined, up to MEMBERS_BYTES of JSON.

    Past the bound the list stops: it keeps the earliest members, whose own events are the
    oldest, and a later one is named by its own events (those of the last RETENTION_H).
    """
    out: list[str] = []
    size = 0
    for sensor_id in incident.members:
        size += len(orjson.dumps(sensor_id)) + 1  # its quoted text and a comma
        if size > MEMBERS_BYTES:
            break
        out.append(sensor_id)
    return tuple(out)


def _add(items: list[str], value: str) -> None:
    if value not in items:
        items.append(value)


def _suppressed(anomaly: Anomaly, scope: str, window: MaintenanceWindow,
                now_ms: int) -> AlertEvent:
    return AlertEvent(
        event_id=_digest(f"suppressed|{_applied_key(anomaly)}", 12), type="suppressed",
        alert_id="", scope=scope, actor=SYSTEM, at_ms=int(now_ms), alert=None,
        anomaly_id=anomaly.anomaly_id, sensor_id=anomaly.sensor_id,
        detail=window.note or f"maintenance {window.sensor}")
