"""What the alerting agent says and hears: alert snapshots, alert events, operator commands.

An incident (:mod:`cityagent.incidents`) is shown to operators as an :class:`Alert`; every
change of it is an :class:`AlertEvent` on the alerts topic carrying who, when and the full
snapshot after the change, so the topic is the audit trail and its newest event per alert id is
the alert. Operators act through :class:`Command` records on a commands topic. All three are
plain JSON (``to_dict``/``from_dict``) and hold no behaviour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from cityagent.errors import CityAgentError

__all__ = (
    "Alert",
    "AlertEvent",
    "Command",
    "InvalidCommand",
    "STATUSES",
    "EVENT_TYPES",
    "ACTIONS",
    "ESCALATION_LEVELS",
    "PROVINCE_CODE",
    "SYSTEM",
)

OPEN, ACKNOWLEDGED, RESOLVED = "open", "acknowledged", "resolved"
STATUSES: tuple[str, ...] = (OPEN, ACKNOWLEDGED, RESOLVED)
EVENT_TYPES: tuple[str, ...] = ("opened", "updated", "escalated", "acknowledged", "assigned",
                                "commented", "resolved", "restated", "suppressed")
ACTIONS: tuple[str, ...] = ("ack", "resolve", "assign", "comment")
#: Whose command centre owns an incident; unacknowledged severe incidents move up.
ESCALATION_LEVELS: tuple[str, ...] = ("district", "city", "province")
PROVINCE_CODE = "370000"  # 山东省
#: The actor of changes the agent makes by itself (open, update, escalate, auto-resolve).
SYSTEM = "system"
_MAX_TEXT = 2000


class InvalidCommand(CityAgentError, ValueError):
    """Raised when an operator command is malformed; the message names the field."""


def _shallow(record: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """A flat record's fields as JSON-ready values (tuples become lists).

    Not ``dataclasses.asdict``: it deep-copies every value, and an alert event is built for
    every anomaly an incident takes in; with it ``AlertEvent.to_dict`` cost ~140 µs, most of
    the alerting domain's time per anomaly. The records hold only str, numbers, None and
    tuples of str, so a shallow copy gives the same document.
    """
    doc = {}
    for name in names:
        value = getattr(record, name)
        doc[name] = list(value) if isinstance(value, tuple) else value
    return doc


def _from(cls, doc: Mapping[str, Any]):
    """Build a record dataclass from JSON; tuple fields accept lists. ValueError if wrong."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"{cls.__name__}: expected an object; got {type(doc).__name__}")
    values = {}
    for f in fields(cls):
        if f.name not in doc:
            raise ValueError(f"{cls.__name__}: {f.name!r} is missing")
        value = doc[f.name]
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


@dataclass(frozen=True)
class Alert:
    """A snapshot of one incident's alert; the newest snapshot (highest ``seq``) is the alert."""

    alert_id: str
    scope: str  # the correlation scope that owns it: key commands for this alert by it
    incident_key: str  # family@scope
    status: str  # open, acknowledged, resolved
    severity: str  # blue, yellow, orange, red (after correlation and zone adjustment)
    kind: str
    family: str  # flood, pipe, traffic, sensor_fault, other
    reason: str  # the headline anomaly's reason code
    title_zh: str
    title_en: str
    reason_zh: str
    reason_en: str
    province_code: str
    city_code: str
    city_name: str
    district_code: str  # the district of the sensor that opened it (district_codes[0])
    district_name: str
    #: Every district of its member sensors, the opener's first, then in the order the first
    #: member of each joined (a listed one never moves); at most 137 (``MAX_DISTRICTS``).
    district_codes: tuple[str, ...]
    zone_ids: tuple[str, ...]
    zone_kinds: tuple[str, ...]
    departments: tuple[str, ...]  # codes (routing.toml); city_command always
    departments_zh: tuple[str, ...]
    sensors: tuple[str, ...]  # the first members, capped (max_sensors_listed)
    sensor_count: int
    active_sensor_count: int  # members still anomalous
    anomaly_count: int
    peak_score: float
    correlated: bool  # several sensors: an area-wide incident (severity raised one step)
    lon: float  # where the first anomaly was
    lat: float
    first_seen_ms: int  # event time the first member's episode began
    last_seen_ms: int  # event time of the latest anomaly
    opened_ms: int  # engine clock when opened
    acknowledged_by: str | None
    acknowledged_at_ms: int | None
    assigned_to: str | None
    resolved_by: str | None
    resolved_at_ms: int | None
    escalation_level: str  # district, city, province
    comments: int
    seq: int  # increases by one per event of this alert

    def to_dict(self) -> dict[str, Any]:
        return _shallow(self, _ALERT_FIELDS)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Alert:
        """An alert snapshot from JSON; one written before 2026-11-25 has no
        ``district_codes``, and its ``district_code`` is taken as the only one."""
        if isinstance(doc, Mapping) and "district_codes" not in doc and "district_code" in doc:
            doc = {**doc, "district_codes": [doc["district_code"]]}
        return _from(cls, doc)


@dataclass(frozen=True)
class AlertEvent:
    """One state change: who (``actor``), when (``at_ms``), what (``type``) and the result.

    ``alert`` is None only for ``suppressed`` events (an anomaly of a sensor in a maintenance
    window: recorded, no alert opened); those name the anomaly and the window's note.

    ``members`` is set on ``restated`` events only: every sensor of the alert (its snapshot
    lists the first ``max_sensors_listed``), up to a size bound (see
    ``cityagent.incidents.MEMBERS_BYTES``). Why: an API started afresh reads a week of the
    alerts topic, and a sensor whose last event in the alert is older was unknown to it, so a
    key scoped by that sensor's id prefix no longer saw the alert. Other events leave it out
    of their JSON (``None``), as they did before it existed.
    """

    event_id: str  # deterministic: re-processing the same input gives the same id
    type: str
    alert_id: str  # "" for suppressed
    scope: str
    actor: str  # "system" or the operator
    at_ms: int
    alert: Alert | None
    anomaly_id: str | None = None
    sensor_id: str | None = None
    detail: str = ""  # comment text, assignee, maintenance note, escalation target
    members: tuple[str, ...] | None = None  # restated events: every sensor (see above)

    def to_dict(self) -> dict[str, Any]:
        doc = _shallow(self, _EVENT_FIELDS)
        doc["alert"] = None if self.alert is None else self.alert.to_dict()
        if self.members is None:
            del doc["members"]
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> AlertEvent:
        if not isinstance(doc, Mapping):
            raise ValueError(f"AlertEvent: expected an object; got {type(doc).__name__}")
        alert, members = doc.get("alert"), doc.get("members")
        return cls(**{**{f.name: doc.get(f.name) for f in fields(cls) if f.name in doc},
                      "alert": None if alert is None else Alert.from_dict(alert),
                      "members": tuple(members) if isinstance(members, list) else members})


_ALERT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Alert))
_EVENT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(AlertEvent))


@dataclass(frozen=True)
class Command:
    """An operator's action on an alert; ``command_id`` makes a redelivered command harmless."""

    command_id: str
    alert_id: str
    action: str  # ack, resolve, assign, comment
    actor: str  # who: the operator's id or name
    at_ms: int  # when the operator acted
    assignee: str | None = None  # required for assign
    text: str | None = None  # required for comment; optional note on the others

    def __post_init__(self) -> None:
        for name in ("command_id", "alert_id", "actor"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or len(value) > 200:
                raise InvalidCommand(f"command: {name!r} must be non-empty text of at most "
                                     f"200 characters; got {value!r}")
        where = f"command {self.command_id!r}"
        if self.action not in ACTIONS:
            raise InvalidCommand(f"{where}: 'action' must be one of {list(ACTIONS)}; "
                                 f"got {self.action!r}")
        if (isinstance(self.at_ms, bool) or not isinstance(self.at_ms, int | float)
                or not math.isfinite(self.at_ms) or self.at_ms < 0):
            raise InvalidCommand(f"{where}: 'at_ms' must be epoch milliseconds; "
                                 f"got {self.at_ms!r}")
        if self.action == "assign" and not (isinstance(self.assignee, str)
                                            and self.assignee.strip()):
            raise InvalidCommand(f"{where}: 'assignee' must be given for assign; "
                                 f"got {self.assignee!r}")
        if self.action == "comment" and not (isinstance(self.text, str) and self.text.strip()):
            raise InvalidCommand(f"{where}: 'text' must be given for comment; got {self.text!r}")
        if self.text is not None and (not isinstance(self.text, str) or len(self.text) > _MAX_TEXT):
            raise InvalidCommand(f"{where}: 'text' must be text of at most {_MAX_TEXT} "
                                 "characters")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Any) -> Command:
        """Parse a command from the commands topic; :class:`InvalidCommand` names the field."""
        if not isinstance(doc, Mapping):
            raise InvalidCommand(f"command: expected an object; got {type(doc).__name__}")
        unknown = set(doc) - {f.name for f in fields(cls)}
        if unknown:
            raise InvalidCommand(f"command: unknown field {sorted(unknown)[0]!r}")
        missing = [n for n in ("command_id", "alert_id", "action", "actor", "at_ms")
                   if n not in doc]
        if missing:
            raise InvalidCommand(f"command: {missing[0]!r} is missing")
        command = cls(**doc)
        return command if isinstance(command.at_ms, int) else \
            cls(**{**doc, "at_ms": int(command.at_ms)})
