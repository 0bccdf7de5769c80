"""API keys and roles: who may call which route, and over which cities or sensors.

Four roles. An *integrator* posts readings; a *viewer* reads (alerts, situation, sensors,
zones, routing, maintenance windows) and changes nothing — a command centre's wall screen or a
leader's tablet; an *operator* reads what a viewer reads and acts on alerts in its cities; an
*admin* may do everything, including what the others do. A key may carry a *scope*: city codes
(``370100``, six digits ending in 00) and sensor-id prefixes (``jn-``); an item is in scope
when its city is one of the cities **or** its sensor id starts with one of the prefixes. A key
without a scope sees the whole province.

Keys come from ``CITYAGENT_API_KEYS`` (``role:key[:scope]``, comma-separated, scope entries
``|``-separated; ``role:sha256:HEX[:scope]`` for a hashed key) and from the TOML file named by
``CITYAGENT_API_KEYS_FILE``. Only SHA-256 digests are kept in memory, compared with
``hmac.compare_digest``. Clients send ``Authorization: Bearer KEY``.

Routes ask for a role with the aliases below (``ViewerDep`` to read, ``OperatorDep`` to act on
alerts, ``AdminDep`` to configure, ``IntegratorDep`` to post readings)::

    @router.get("/v1/situation")
    async def situation(principal: ViewerDep) -> ...:
        ... if principal.may_see_city(code) ...

A route that changes anything must not take ``ViewerDep`` alone: tests/api/test_roles.py lists
every route with the roles it admits, and fails on a route it does not know.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import tomllib
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.request_checks import refuse_bad_request
from cityagent.errors import ConfigError
from cityagent.settings import Settings

__all__ = (
    "ROLES",
    "CAPABILITIES",
    "Principal",
    "ApiKey",
    "KeyRing",
    "parse_api_keys",
    "load_keys_file",
    "require",
    "require_key",
    "get_key_ring",
    "IntegratorDep",
    "ViewerDep",
    "OperatorDep",
    "AdminDep",
    "AnyKeyDep",
)

ROLES: tuple[str, ...] = ("integrator", "viewer", "operator", "admin")
#: What each role may do, as ``GET /v1/me`` lists it: ``ingest`` (post readings), ``read``
#: (alerts and their stream, situation, sensors, zones, routing, maintenance windows), ``act``
#: (ack, resolve, assign, comment on alerts), ``configure`` (zones, routing, maintenance).
CAPABILITIES: dict[str, tuple[str, ...]] = {
    "integrator": ("ingest",),
    "viewer": ("read",),
    "operator": ("read", "act"),
    "admin": ("ingest", "read", "act", "configure"),
}
#: The capability each requirement stands for: ``require("viewer")`` admits every key that
#: may read (viewer, operator, admin), ``require("operator")`` every key that may act.
_NEEDS = {"integrator": "ingest", "viewer": "read", "operator": "act", "admin": "configure"}
#: Which roles each requirement admits.
_ADMITS = {need: tuple(r for r in ROLES if capability in CAPABILITIES[r])
           for need, capability in _NEEDS.items()}
_MAY = {
    "integrator": "post readings",
    "viewer": "read alerts, the situation and settings, but change nothing (a read-only key)",
    "operator": "read alerts and the situation, and act on alerts",
    "admin": "do everything",
}
_CITY = re.compile(r"^\d{4}00\Z")
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}\Z")
_KEY = re.compile(r"^[^\s,:]+\Z")

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="APIKey",
    description="An API key: `Authorization: Bearer KEY` (docs/api.md, Keys and roles).",
)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the role and scope of the key that authenticated the request.

    ``key_id`` names the key without revealing it (its configured name, or ``k`` and the
    first 8 hex digits of its SHA-256): safe for logs, rate limits and idempotency records.
    """

    role: str
    key_id: str
    cities: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    @property
    def scoped(self) -> bool:
        """True when the key is limited to some cities or sensor-id prefixes."""
        return bool(self.cities or self.prefixes)

    @property
    def scopes(self) -> tuple[str, ...]:
        """The scope entries, cities first (empty: the whole province)."""
        return (*sorted(self.cities), *self.prefixes)

    def may_see_city(self, city_code: str) -> bool:
        """True when an unscoped key, or the city is one of the key's cities."""
        return not self.scoped or str(city_code) in self.cities

    def may_see_sensor(self, sensor_id: str) -> bool:
        """True when an unscoped key, or the sensor id starts with one of the key's prefixes."""
        return not self.scoped or sensor_id.startswith(self.prefixes)

    def may_see(self, city_code: str, sensor_id: str) -> bool:
        """The scope test for one item (an alert, a reading): its city or its sensor matches."""
        return self.may_see_city(city_code) or self.may_see_sensor(sensor_id)

    def scope_mask(self, sensor_ids: np.ndarray, city_codes: np.ndarray) -> np.ndarray:
        """:meth:`may_see` over arrays of sensor ids and city codes (str arrays), as bools."""
        if not self.scoped:
            return np.ones(len(sensor_ids), dtype=bool)
        mask = np.isin(city_codes, np.array(sorted(self.cities), dtype=str))
        for prefix in self.prefixes:
            mask |= np.strings.startswith(sensor_ids, prefix)
        return mask

    def describe(self) -> str:
        """One line for error messages: role, id and scope."""
        scope = f" scoped to {'|'.join(self.scopes)}" if self.scoped else ""
        return f"{self.role} key {self.key_id}{scope}"


@dataclass(frozen=True)
class ApiKey:
    """A configured key: its role, scope and SHA-256 digest (never the key itself)."""

    role: str
    digest: bytes
    key_id: str
    cities: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    def principal(self) -> Principal:
        return Principal(self.role, self.key_id, self.cities, self.prefixes)


class KeyRing:
    """The configured keys; authenticates a presented key in time independent of its value."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = tuple(keys)
        seen: dict[bytes, str] = {}
        for key in self._keys:
            if key.digest in seen:
                raise ConfigError(f"API key {key.key_id} is configured twice "
                                  f"(also as {seen[key.digest]}); give each key once")
            seen[key.digest] = key.key_id

    def __len__(self) -> int:
        return len(self._keys)

    @classmethod
    def from_settings(cls, settings: Settings,
                      known_cities: Collection[str] | None = None) -> KeyRing:
        """Keys of ``CITYAGENT_API_KEYS`` and ``CITYAGENT_API_KEYS_FILE``; at least one."""
        keys: list[ApiKey] = []
        if settings.api_keys:
            keys += parse_api_keys(settings.api_keys, known_cities)
        if settings.api_keys_path is not None:
            keys += load_keys_file(settings.api_keys_path, known_cities)
        if not keys:
            raise ConfigError(
                "no API keys are configured: set CITYAGENT_API_KEYS (e.g. admin:SECRET) or "
                "CITYAGENT_API_KEYS_FILE; `cityagent up` makes a dev admin key when neither is set"
            )
        return cls(keys)

    def authenticate(self, key: str) -> Principal | None:
        """The principal of this key, or None; compares against every key, never short-cut."""
        digest = hashlib.sha256(key.encode()).digest()
        found: ApiKey | None = None
        for candidate in self._keys:
            if hmac.compare_digest(candidate.digest, digest):
                found = candidate
        return found.principal() if found is not None else None


def parse_api_keys(text: str, known_cities: Collection[str] | None = None) -> list[ApiKey]:
    """Keys from ``CITYAGENT_API_KEYS``; raise ConfigError naming the entry (counted from 1)."""
    keys = []
    for number, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue  # a trailing comma
        where = f"CITYAGENT_API_KEYS entry {number}"
        parts = entry.split(":")
        role = parts[0].strip().lower()
        if len(parts) >= 3 and parts[1] == "sha256":
            digest, scope, extra = _hashed(parts[2], where), parts[3:4], parts[4:]
        else:
            digest, scope, extra = _plain(parts[1] if len(parts) > 1 else "", where), parts[2:3], parts[3:]
        if extra:
            raise ConfigError(f"{where}: too many ':'; expected role:key[:scope] with the scope "
                              f"entries separated by '|' (e.g. operator:KEY:370100|370200)")
        cities, prefixes = _scope(scope[0].split("|") if scope else [], role, where, known_cities)
        keys.append(ApiKey(_role(role, where), digest, _key_id(digest), cities, prefixes))
    return keys


def load_keys_file(path: Path, known_cities: Collection[str] | None = None) -> list[ApiKey]:
    """Keys from a TOML file of ``[[keys]]`` tables (docs/api.md); ConfigError names the table."""
    try:
        doc = tomllib.loads(Path(path).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"CITYAGENT_API_KEYS_FILE {path}: cannot read it as TOML: {exc}") from None
    tables = doc.get("keys")
    if not isinstance(tables, list) or set(doc) - {"keys"}:
        raise ConfigError(f"CITYAGENT_API_KEYS_FILE {path}: expected only [[keys]] tables "
                          f"(role, key or sha256, optional scope and name); got {sorted(doc)}")
    return [_table_key(table, f"CITYAGENT_API_KEYS_FILE {path}: [[keys]] number {n}", known_cities)
            for n, table in enumerate(tables, start=1)]


def _table_key(table: Any, where: str, known_cities: Collection[str] | None) -> ApiKey:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = sorted(set(table) - {"role", "key", "sha256", "scope", "name"})
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}; a key has role, key or "
                          "sha256, and optionally scope and name")
    if ("key" in table) == ("sha256" in table):
        raise ConfigError(f"{where}: give exactly one of 'key' (the key) or 'sha256' (its digest)")
    digest = (_plain(str(table["key"]), where) if "key" in table
              else _hashed(str(table["sha256"]), where))
    scope = table.get("scope", [])
    if isinstance(scope, str):
        scope = scope.split("|")
    if not isinstance(scope, list):
        raise ConfigError(f"{where}: 'scope' must be a list of city codes and sensor-id prefixes")
    role = str(table.get("role", "")).lower()
    cities, prefixes = _scope([str(s) for s in scope], role, where, known_cities)
    name = table.get("name")
    if name is not None and not (isinstance(name, str) and _PREFIX.match(name)):
        raise ConfigError(f"{where}: 'name' must be 1-64 letters, digits and . _ : -; got {name!r}")
    return ApiKey(_role(role, where), digest, name or _key_id(digest), cities, prefixes)


def _role(role: str, where: str) -> str:
    if role not in ROLES:
        raise ConfigError(f"{where}: role must be one of {', '.join(ROLES)}; got {role!r}")
    return role


def _plain(key: str, where: str) -> bytes:
    key = key.strip()
    if not _KEY.match(key):
        raise ConfigError(f"{where}: the key is empty or holds whitespace, ',' or ':'")
    return hashlib.sha256(key.encode()).digest()


def _hashed(hex_digest: str, where: str) -> bytes:
    hex_digest = hex_digest.strip()
    if not _HEX64.match(hex_digest):
        raise ConfigError(f"{where}: a sha256 digest is 64 hex digits "
                          f"(`printf %s KEY | sha256sum`); got {len(hex_digest)} characters")
    return bytes.fromhex(hex_digest)


def _scope(entries: list[str], role: str, where: str,
           known_cities: Collection[str] | None) -> tuple[frozenset[str], tuple[str, ...]]:
    cities: set[str] = set()
    prefixes: list[str] = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        if entry.isdigit() and len(entry) == 6:
            if not _CITY.match(entry):
                raise ConfigError(f"{where}: {entry} is not a city code; a scope takes city codes "
                                  "(6 digits ending in 00, e.g. 370100) or sensor-id prefixes")
            if known_cities is not None and entry not in known_cities:
                raise ConfigError(f"{where}: unknown city code {entry}; known: "
                                  f"{', '.join(sorted(known_cities))}")
            cities.add(entry)
        elif _PREFIX.match(entry):
            prefixes.append(entry)
        else:
            raise ConfigError(f"{where}: scope entry {entry!r} is neither a city code nor a "
                              "sensor-id prefix (letters, digits and . _ : -)")
    if (cities or prefixes) and role == "admin":
        raise ConfigError(f"{where}: an admin key takes no scope; use an operator, viewer or "
                          "integrator key")
    return frozenset(cities), tuple(prefixes)


def _key_id(digest: bytes) -> str:
    return "k" + digest.hex()[:8]


# -- FastAPI dependencies ------------------------------------------------------------------------


def get_key_ring(request: Request) -> KeyRing:
    return request.app.state.keys


def authenticate(request: Request) -> Principal:
    """The caller's principal; 401 with what to send when the key is missing or unknown."""
    header = request.headers.get("authorization")
    if not header or not header.strip():
        raise _unauthorized("missing API key: send Authorization: Bearer KEY")
    scheme, _, key = header.strip().partition(" ")
    if scheme.lower() == "bearer" and not key.strip():
        raise _unauthorized("the Authorization header says Bearer but holds no key: send "
                            "Authorization: Bearer KEY")
    if scheme.lower() != "bearer":
        raise _unauthorized(
            f"the Authorization header must be 'Bearer KEY'; got a {scheme[:20]!r} header")
    principal = get_key_ring(request).authenticate(key.strip())
    if principal is None:
        raise _unauthorized("invalid API key: it matches no configured key", 'error="invalid_token"')
    return principal


@functools.cache
def require(role: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting keys of ``role`` and of the roles that may do more (admin keys
    everything, operator keys what viewer keys do); 401 / 403 otherwise.

    Cached, so every use of one role is the same dependency and runs once per request.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}; got {role!r}")
    return _dependency(_ADMITS[role], f"require_{role}")


def _dependency(admits: tuple[str, ...], name: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        _doc: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    ) -> Principal:
        principal = authenticate(request)
        if principal.role not in admits:
            needs = ", ".join(admits[:-1]) + f" or {admits[-1]}" if len(admits) > 1 else admits[0]
            article = "an" if needs[0] in "aeiou" else "a"
            raise HTTPException(
                403,
                f"this {principal.describe()} may {_MAY[principal.role]}; "
                f"{request.method} {request.url.path} needs {article} {needs} key",
            )
        refuse_bad_request(request)  # after the key: api.request_checks
        return principal

    dependency.__name__ = name
    dependency.admits = admits  # type: ignore[attr-defined]  # for tests/api/test_roles.py
    return dependency


#: A dependency admitting any configured key, whatever its role (``GET /v1/me``).
require_key = _dependency(ROLES, "require_key")


def _unauthorized(detail: str, params: str = "") -> HTTPException:
    challenge = f"Bearer {params}".strip()
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


#: Route parameters: ``principal: ViewerDep`` admits viewer, operator and admin keys (to read),
#: ``OperatorDep`` operator and admin keys (to act on alerts), and so on.
IntegratorDep = Annotated[Principal, Depends(require("integrator"))]
ViewerDep = Annotated[Principal, Depends(require("viewer"))]
OperatorDep = Annotated[Principal, Depends(require("operator"))]
AdminDep = Annotated[Principal, Depends(require("admin"))]
AnyKeyDep = Annotated[Principal, Depends(require_key)]
