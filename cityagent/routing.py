"""Alert routing: sensor kind × zone kind × severity → the departments an alert is for.

Operators work by department (水务 water affairs, 交通 transport, 城管 city management, 应急
emergency management ...), so every alert lists whom it is for. The rules live in one file,
``cityagent/data/routing.toml``, where their semantics are documented: every matching rule adds
its departments (a union, so a new rule can only widen the audience), sensor faults match only
rules that name a ``fault.*`` reason, and the city command centre is always included.

Pure domain code: standard library only.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from cityagent.detectors.config import KIND_CODES
from cityagent.detectors.verdict import SEVERITIES
from cityagent.errors import ConfigError

__all__ = (
    "is_department_code",
    "Department",
    "Rule",
    "Router",
    "default_router",
    "CITY_COMMAND",
    "PROVINCE_COMMAND",
    "is_fault",
)

#: Every alert goes to its city's command centre (市指挥中心).
CITY_COMMAND = "city_command"
#: Incidents escalated to the province go to the provincial command centre (省指挥中心) too.
PROVINCE_COMMAND = "province_command"
DATA_FILE = "routing.toml"
_ANY = "*"
_NONE = "none"
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,39}\Z")
_RULE_KEYS = {"kind", "zone_kind", "reason", "min_severity", "departments"}
_RANK = {name: i for i, name in enumerate(SEVERITIES)}


def is_department_code(code: str) -> bool:
    """The shape of a department code (``water``, ``city_mgmt``): lower-case snake case."""
    return bool(_CODE.match(code))


def is_fault(reason: str) -> bool:
    """Whether a reason code is a sensor fault (stuck, silent, spiking device)."""
    return reason.startswith("fault.")


@dataclass(frozen=True)
class Department:
    """A department type, e.g. ``water`` 水务局 (the alert's city says which city's)."""

    code: str
    zh: str
    en: str


@dataclass(frozen=True)
class Rule:
    """One ``[[rule]]``; ``reason`` None means any reason except sensor faults."""

    number: int  # 1-based position in the file, for messages
    kind: str
    zone_kind: str
    reason: str | None
    min_severity: str
    departments: tuple[str, ...]

    def matches(self, kind: str, reason: str, zone_kinds: Iterable[str], rank: int) -> bool:
        if self.kind != _ANY and self.kind != kind:
            return False
        if rank < _RANK[self.min_severity]:
            return False
        if self.reason is None:
            if is_fault(reason):
                return False
        elif not fnmatch.fnmatchcase(reason, self.reason):
            return False
        kinds = set(zone_kinds)
        if self.zone_kind == _NONE:
            return not kinds
        return self.zone_kind == _ANY or self.zone_kind in kinds


@dataclass(frozen=True)
class Router:
    """The departments table and the rules, loaded and validated once."""

    departments: Mapping[str, Department]
    rules: tuple[Rule, ...]

    @classmethod
    def load(cls, path: Path | None = None) -> Router:
        """Read ``path`` (default: the packaged routing.toml); ConfigError names what is wrong."""
        where = str(path) if path else f"cityagent/data/{DATA_FILE}"
        try:
            text = (Path(path).read_text("utf-8") if path else
                    resources.files("cityagent.data").joinpath(DATA_FILE).read_text("utf-8"))
            doc = tomllib.loads(text)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read routing rules from {where}: {exc}") from None
        return cls.from_dict(doc, where)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "routing rules") -> Router:
        unknown = set(doc) - {"departments", "rule"}
        if unknown:
            raise ConfigError(f"{where}: unknown table {sorted(unknown)[0]!r}; "
                              "expected [departments.*] and [[rule]]")
        departments = _departments(doc.get("departments"), where)
        raw_rules = doc.get("rule", [])
        if not isinstance(raw_rules, list) or not raw_rules:
            raise ConfigError(f"{where}: expected at least one [[rule]]")
        rules = tuple(_rule(raw, i + 1, departments, where) for i, raw in enumerate(raw_rules))
        return cls(departments, rules)

    @property
    def department_codes(self) -> tuple[str, ...]:
        return tuple(self.departments)

    def route(self, kind: str, reason: str, zone_kinds: Iterable[str], severity: str, *,
              extra: Iterable[str] = ()) -> tuple[str, ...]:
        """Department codes for an alert, in the table's order; ``city_command`` always.

        ``extra`` adds departments the rules do not decide (a zone's owner, the provincial
        command centre after escalation).
        """
        if severity not in _RANK:
            raise ValueError(f"severity must be one of {list(SEVERITIES)}; got {severity!r}")
        rank = _RANK[severity]
        zone_kinds = tuple(zone_kinds)
        chosen = {CITY_COMMAND, *extra}
        for rule in self.rules:
            if rule.matches(kind, reason, zone_kinds, rank):
                chosen.update(rule.departments)
        return self.ordered(chosen)

    def ordered(self, codes: Iterable[str]) -> tuple[str, ...]:
        """Codes in the departments table's order; unknown codes last, sorted."""
        codes = set(codes)
        known = [c for c in self.departments if c in codes]
        return tuple(known + sorted(codes - set(known)))

    def names_zh(self, codes: Iterable[str]) -> tuple[str, ...]:
        """Chinese display names (市指挥中心 ...); an unknown code shows as itself."""
        return tuple(self.departments[c].zh if c in self.departments else c for c in codes)


@functools.cache
def default_router() -> Router:
    """The packaged routing rules, loaded once per process."""
    return Router.load()


def _departments(raw: Any, where: str) -> dict[str, Department]:
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{where}: expected a [departments.<code>] table per department")
    out = {}
    for code, entry in raw.items():
        at = f"{where}: [departments.{code}]"
        if not _CODE.match(code):
            raise ConfigError(f"{at}: a department code must be snake_case; got {code!r}")
        if not isinstance(entry, Mapping) or set(entry) != {"zh", "en"}:
            got = sorted(entry) if isinstance(entry, Mapping) else entry
            raise ConfigError(f"{at}: expected exactly the keys zh and en; got {got!r}")
        if not all(isinstance(entry[k], str) and entry[k].strip() for k in ("zh", "en")):
            raise ConfigError(f"{at}: zh and en must be non-empty text")
        out[code] = Department(code, entry["zh"], entry["en"])
    for required in (CITY_COMMAND, PROVINCE_COMMAND):
        if required not in out:
            raise ConfigError(f"{where}: department {required!r} is missing; every alert goes "
                              "to the city command centre and escalations to the province's")
    return out


def _rule(raw: Any, number: int, departments: Mapping[str, Department], where: str) -> Rule:
    at = f"{where}: rule #{number}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{at}: expected a table")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise ConfigError(f"{at}: unknown key {sorted(unknown)[0]!r}; "
                          f"expected some of {sorted(_RULE_KEYS)}")
    kind = raw.get("kind", _ANY)
    # Not text (an array or a table of the JSON PUT /v1/routing takes) is unhashable: isinstance first.
    if not isinstance(kind, str) or (kind != _ANY and kind not in KIND_CODES):
        raise ConfigError(f"{at}: kind must be one of {[*KIND_CODES, _ANY]}; got {kind!r}")
    zone_kind = raw.get("zone_kind", _ANY)
    if not isinstance(zone_kind, str) or (zone_kind not in (_ANY, _NONE)
                                          and not _CODE.match(zone_kind)):
        raise ConfigError(f"{at}: zone_kind must be '*', 'none' or a snake_case zone kind; "
                          f"got {zone_kind!r}")
    from cityagent.zones import ZONE_KINDS, kind_typo  # here: cityagent.zones imports this module

    typo = kind_typo(zone_kind, (_ANY, _NONE))
    if typo:
        raise ConfigError(f"{at}: zone_kind {zone_kind!r} looks like a typo of {typo!r}; "
                          f"expected '*', 'none', one of {list(ZONE_KINDS)} or a distinct "
                          "custom kind")
    reason = raw.get("reason")
    if reason is not None and (not isinstance(reason, str) or not reason.strip()):
        raise ConfigError(f"{at}: reason must be a glob like 'fault.*'; got {reason!r}")
    severity = raw.get("min_severity", SEVERITIES[0])
    if not isinstance(severity, str) or severity not in _RANK:
        raise ConfigError(f"{at}: min_severity must be one of {list(SEVERITIES)}; "
                          f"got {severity!r}")
    codes = raw.get("departments")
    if not isinstance(codes, list) or not codes or not all(isinstance(c, str) for c in codes):
        raise ConfigError(f"{at}: departments must be a non-empty list of department codes; "
                          f"got {codes!r}")
    for code in codes:
        if code not in departments:
            raise ConfigError(f"{at}: unknown department {code!r}; expected one of "
                              f"{list(departments)}")
    return Rule(number, kind, zone_kind, reason, severity, tuple(codes))
