"""The one settings object: the only code in CityAgent that reads environment variables.

Every entry point (the CLI, the Faust worker, the API, the simulator) calls
``Settings.from_env()`` once and passes plain values down; domain modules never import
this module's ``Settings`` to read configuration on their own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from cityagent.detectors.config import WINDOW_MAX_S, forget_after_s_error
from cityagent.errors import ConfigError

__all__ = ("Settings", "ENV_VARS", "bootstrap_servers", "detection_settings_from_env",
           "DETECTION_VARS", "RETENTION_H",
           "ALERTS_RETENTION_DAYS_MIN", "ALERTS_RETENTION_DAYS_MAX")

#: Retention of CityAgent's plain (delete-policy) topics, the readings topic among them: 7 days.
#: ``control.topics`` creates the topics with it; the situation's lookback may not exceed it.
RETENTION_H = 7 * 24

#: Bounds of ``CITYAGENT_ALERTS_RETENTION_DAYS``. At least the 7 days above: the API reads the
#: last 7 days of the alerts topic and restates open alerts daily within them. At most ten
#: years: longer belongs in an archive, not in a Kafka topic.
ALERTS_RETENTION_DAYS_MIN, ALERTS_RETENTION_DAYS_MAX = RETENTION_H // 24, 3650

#: The longest consumer-group session a worker may have: Faust's ``broker_request_timeout``
#: (90 s), which it refuses a longer session than.
SESSION_TIMEOUT_MAX_S = 90

#: Environment variable → (Settings field, one-line meaning). The README's table is this, row for
#: row and word for word (tests/test_docs.py checks it).
ENV_VARS: dict[str, tuple[str, str]] = {
    "CITYAGENT_KAFKA": (
        "kafka",
        "Bootstrap servers of an external Kafka (host:port,...). Unset: start the embedded broker.",
    ),
    "CITYAGENT_BROKER_PORT": ("broker_port", "Port of the embedded broker on 127.0.0.1 (default 9092)."),
    "CITYAGENT_TOPIC_PREFIX": ("topic_prefix", "Prefix of every topic name (default `city`) but the two table changelogs', which `CITYAGENT_APP_ID` begins: a second pipeline on one Kafka needs both its own prefix and its own app id."),
    "CITYAGENT_PARTITIONS": ("partitions", "Partitions of each topic created (default 8); `cityagent up --workers` is at most this."),
    "CITYAGENT_REPLICATION": ("replication", "Replication factor of topics created (default 1)."),
    "CITYAGENT_APP_ID": ("app_id", "Faust application id: consumer group and changelog names (default `cityagent`)."),
    "CITYAGENT_DETECTION": ("detection_path", "TOML file of detection settings: windows, detectors per kind, and after how long a silent sensor is forgotten (`[state] forget_after_s`, 30 days: [docs/detection.md](docs/detection.md#state-sensors-not-heard-from-are-forgotten)) (default: the packaged `cityagent/data/detection.toml`). `cityagent replay` reads it too, unless given `--config` ([docs/replay.md](docs/replay.md#the-workers-settings)), and `cityagent sim --registry` takes the pipes' pressure limits from it ([docs/simulator.md](docs/simulator.md#registry))."),
    "CITYAGENT_SENSOR_REGISTRY": ("registry_path", "Sensor registry (JSON or CSV, as `cityagent sim --registry` writes): per-sensor 警戒/保证 levels, free-flow speeds, report intervals. `cityagent replay` reads it too, unless given `--registry`."),
    "CITYAGENT_WINDOW_S": ("window_s", "Detection window in seconds (overrides the settings file; default 60, at most a year). It also caps the file's `[windows] idle_s`, and its `grace_s` unless `CITYAGENT_GRACE_S` is set, at this window (`idle_s = 600` runs as 60 s under 60): a worker, `cityagent eval` and `cityagent replay` say so at start, one line per value ([docs/detection.md](docs/detection.md#windows-event-time)). `cityagent replay` reads it unless given `--window`."),
    "CITYAGENT_GRACE_S": ("grace_s", "Grace period for late readings in seconds (overrides the settings file; default 15, at most a year). `cityagent replay` reads it unless given `--grace` (its own default is 0: it replays rows in time order)."),
    "CITYAGENT_FORGET_AFTER_S": ("forget_after_s", "Seconds after which a sensor not heard from (by its bucket's event time) is forgotten, its detection state removed (overrides `[state] forget_after_s` of the settings file; default 2592000, 30 days; 0 never, else 86400 to 315360000). See [docs/detection.md](docs/detection.md#state-sensors-not-heard-from-are-forgotten). `cityagent replay` reads it too."),
    "CITYAGENT_CHECKPOINT_S": ("checkpoint_s", "How often a worker checkpoints detection state to its changelog, seconds (default 10; 60 for the workers `cityagent up` runs on the embedded broker): each sensor bucket once per interval, spread over it."),
    "CITYAGENT_ALERTING": ("alerting_path", "TOML file of alerting settings: incident lifecycle, correlation scopes and escalation (default: the packaged `cityagent/data/alerting.toml`; format in docs/alerting.md). It replaces the packaged file whole: start from a copy of it, as what it leaves out takes the code's defaults."),
    "CITYAGENT_ZONES": ("zones_path", "Operational zones (GeoJSON FeatureCollection, format in docs/alerting.md); default: the packaged demo zones."),
    "CITYAGENT_API_HOST": ("api_host", "Address the API binds (default 127.0.0.1)."),
    "CITYAGENT_API_PORT": ("api_port", "Port of the API (default 8000)."),
    "CITYAGENT_SESSION_TIMEOUT_S": (
        "session_timeout_s",
        "Kafka consumer-group session timeout of the workers in seconds (default 10, at most 90): how fast a dead worker's partitions move. `cityagent up` waits half of it, less a second, before it starts a dead worker again.",
    ),
    "CITYAGENT_LOG_LEVEL": ("log_level", "Log level of the Faust workers (default info)."),
    "CITYAGENT_FEEDS_CATCH_UP_S": (
        "feeds_catch_up_s",
        "How long a starting worker waits, at most, to read the zones, maintenance and routing topics up to where they ended before it consumes anything, seconds (default 30): past it, it warns and judges with what it has read. See [docs/architecture.md](docs/architecture.md#a-starting-worker-reads-zones-maintenance-windows-and-routing-first).",
    ),
    "CITYAGENT_API_KEYS": (
        "api_keys",
        "API keys, comma-separated `role:key[:scope]` (role `integrator`, `viewer` (read-only, for wall screens), `operator` or `admin`; scope `|`-separated city codes or sensor-id prefixes), e.g. `admin:k1,operator:k2:370100|370200,integrator:k3:jn-,viewer:k4`. `cityagent up` without keys makes a dev admin key. See [docs/api.md](docs/api.md).",
    ),
    "CITYAGENT_API_KEYS_FILE": ("api_keys_path", "TOML file of API keys (plain or `sha256` hashed), added to `CITYAGENT_API_KEYS`; format in [docs/api.md](docs/api.md)."),
    "CITYAGENT_FUTURE_TOLERANCE_S": ("future_tolerance_s", "How far past its clock a reading may be dated, seconds (default 300, at most 86400): further ahead it is refused (API) or dropped (worker, situation), as a sensor clock that runs ahead would make its bucket-mates' readings late. See [docs/readings.md](docs/readings.md)."),
    "CITYAGENT_SITUATION_LOOKBACK_H": ("situation_lookback_h", "Hours of the readings topic a starting API re-reads into its situation model, by Kafka record time (default 24, at most 168, the topic's retention): a sensor silent for longer is unknown to a restarted API unless it is in the sensor registry. See [docs/api.md](docs/api.md#situation-and-sensors)."),
    "CITYAGENT_ALERTS_RETENTION_DAYS": ("alerts_retention_days", "Days the alerts topic keeps its events, the audit trail of every alert (`cityagent audit`): its `retention.ms` when CityAgent creates it (default 180, at least 7, at most 3650). An existing topic keeps its retention: raise it with `kafka-configs.sh`, see [docs/alerting.md](docs/alerting.md#audit-trail). A starting API reads only the last 7 days of it."),
    "CITYAGENT_API_RATE": ("api_rate", "Readings per second each API key may post, on average (default 20000)."),
    "CITYAGENT_API_BURST": ("api_burst", "Readings an API key may post at once above its rate (token bucket size; default 100000)."),
}


@dataclass(frozen=True)
class Settings:
    """Validated configuration of one CityAgent process."""

    kafka: str | None = None
    broker_port: int = 9092
    topic_prefix: str = "city"
    partitions: int = 8
    replication: int = 1
    app_id: str = "cityagent"
    detection_path: Path | None = None
    registry_path: Path | None = None
    window_s: float | None = None
    grace_s: float | None = None
    forget_after_s: float | None = None
    checkpoint_s: float = 10.0
    alerting_path: Path | None = None
    zones_path: Path | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    session_timeout_s: int = 10
    feeds_catch_up_s: float = 30.0
    log_level: str = "info"
    api_keys: str | None = field(default=None, repr=False)  # secret: never printed
    api_keys_path: Path | None = None
    api_rate: float = 20_000.0
    future_tolerance_s: float = 300.0
    situation_lookback_h: float = 24.0
    alerts_retention_days: int = 180
    api_burst: int = 100_000
    extra: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``CITYAGENT_*`` variables; raise ConfigError naming the variable that is wrong."""
        env = os.environ if environ is None else environ
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, object] = {}
        for var, (name, _doc) in ENV_VARS.items():
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            raw = raw.strip()
            kind = types[name]
            if kind == "int":
                try:
                    number = int(raw)
                except ValueError:
                    raise ConfigError(f"{var} must be a whole number; got {raw!r}") from None
                if name == "alerts_retention_days" and not (
                        ALERTS_RETENTION_DAYS_MIN <= number <= ALERTS_RETENTION_DAYS_MAX):
                    raise ConfigError(
                        f"{var} must be between {ALERTS_RETENTION_DAYS_MIN} (the API reads the "
                        f"last 7 days of the alerts topic) and {ALERTS_RETENTION_DAYS_MAX} (ten "
                        f"years); got {number}")
                if number <= 0 or (name.endswith("port") and number > 65535):
                    raise ConfigError(f"{var} is out of range; got {number}")
                values[name] = number
            elif kind in ("float | None", "float"):
                try:
                    number = float(raw)
                except ValueError:
                    raise ConfigError(f"{var} must be a number; got {raw!r}") from None
                if name == "forget_after_s":
                    values[name] = _forget_after_s(var, raw, number)
                    continue
                if not 0 <= number < float("inf") or (number == 0 and name != "grace_s"):
                    raise ConfigError(f"{var} must be a {'' if name == 'grace_s' else 'positive '}"
                                      f"number{' of 0 or more' if name == 'grace_s' else ''}; got {raw!r}")
                if name in ("window_s", "grace_s") and number > WINDOW_MAX_S:
                    raise ConfigError(f"{var} must be at most {WINDOW_MAX_S} (a year); got {raw!r}")
                values[name] = number
            elif name.endswith("_path"):
                path = Path(raw)
                if not path.is_file():
                    raise ConfigError(f"{var} names no readable file; got {raw!r}")
                values[name] = path
            else:
                values[name] = raw
        if float(values.get("future_tolerance_s", 0)) > 86_400:  # type: ignore[arg-type]
            raise ConfigError("CITYAGENT_FUTURE_TOLERANCE_S must be at most 86400 (a day); got "
                              f"{values['future_tolerance_s']!r}")
        if int(values.get("session_timeout_s", 0)) > SESSION_TIMEOUT_MAX_S:  # type: ignore[call-overload]
            # Faust refuses it as the worker starts, in a traceback, and `up` started it again.
            raise ConfigError(f"CITYAGENT_SESSION_TIMEOUT_S must be at most {SESSION_TIMEOUT_MAX_S} "
                              "(the workers' Kafka request timeout, which Faust wants no shorter); "
                              f"got {values['session_timeout_s']}")
        if float(values.get("situation_lookback_h", 0)) > RETENTION_H:  # type: ignore[arg-type]
            raise ConfigError(f"CITYAGENT_SITUATION_LOOKBACK_H must be at most {RETENTION_H} (the "
                              "readings topic's retention, 7 days); got "
                              f"{values['situation_lookback_h']!r}")
        if "kafka" in values:
            try:
                values["kafka"] = bootstrap_servers(str(values["kafka"]))
            except ValueError as exc:
                raise ConfigError(f"CITYAGENT_KAFKA {exc}") from None
        prefix = str(values.get("topic_prefix", "city"))
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", prefix):
            # Kafka refuses such names, which a producer checks only as it sends: the
            # simulator ended in a ValueError traceback on its first send.
            raise ConfigError("CITYAGENT_TOPIC_PREFIX must be 1-200 ASCII letters, digits, '.', "
                              f"'_' or '-' (it begins every topic's name); got {prefix!r}")
        if "log_level" in values and str(values["log_level"]).lower() not in _LOG_LEVELS:
            raise ConfigError(
                f"CITYAGENT_LOG_LEVEL must be one of {sorted(_LOG_LEVELS)}; got {values['log_level']!r}"
            )
        return cls(**values)  # type: ignore[arg-type]

    @property
    def future_tolerance_ms(self) -> int:
        """``future_tolerance_s`` in milliseconds."""
        return round(self.future_tolerance_s * 1000)

    @property
    def situation_lookback_ms(self) -> int:
        """``situation_lookback_h`` in milliseconds (Kafka record timestamps are)."""
        return round(self.situation_lookback_h * 3_600_000)

    @property
    def alerts_retention_ms(self) -> int:
        """``alerts_retention_days`` in milliseconds: the alerts topic's ``retention.ms``."""
        return self.alerts_retention_days * 86_400_000

    @property
    def embedded(self) -> bool:
        """True when CityAgent must start its own broker (no external Kafka configured)."""
        return self.kafka is None

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers the clients connect to."""
        return self.kafka if self.kafka else f"127.0.0.1:{self.broker_port}"

    @property
    def readings_topic(self) -> str:
        return f"{self.topic_prefix}.readings"

    @property
    def anomalies_topic(self) -> str:
        return f"{self.topic_prefix}.anomalies"

    @property
    def alerts_topic(self) -> str:
        return f"{self.topic_prefix}.alerts"

    @property
    def scopes_topic(self) -> str:
        """Anomalies re-keyed by correlation scope: the agent that owns the scope's incidents."""
        return f"{self.topic_prefix}.alert-scopes"

    @property
    def zones_topic(self) -> str:
        """Operational zones (compacted; key: zone id), read whole by every worker and API."""
        return f"{self.topic_prefix}.zones"

    @property
    def maintenance_topic(self) -> str:
        """Maintenance windows (compacted; key: window id), read whole by every worker and API."""
        return f"{self.topic_prefix}.maintenance"

    @property
    def routing_topic(self) -> str:
        """Routing rules (compacted; one key), read whole by every worker and API process."""
        return f"{self.topic_prefix}.routing"

    @property
    def idempotency_topic(self) -> str:
        """Accepted keyed POSTs of readings (``api/idempotency_log.py``), read by every API."""
        return f"{self.topic_prefix}.idempotency"

    @property
    def commands_topic(self) -> str:
        """Operators' actions on alerts, keyed by the alert's scope."""
        return f"{self.topic_prefix}.alert-commands"


#: One bootstrap server: a host name, an IPv4 address or a bracketed IPv6 one, and a port.
_SERVER = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")


def bootstrap_servers(raw: str) -> str:
    """Bootstrap servers checked as Kafka's ``bootstrap.servers`` is (host:port, comma-separated)
    and without blanks around the commas; ValueError saying what is wrong otherwise. Unchecked,
    a port that was no number, a ``kafka://`` URL or a stray comma waited 30 s for brokers that
    could not be named, then said so (``ValueError: invalid literal for int()``, ``Unable to
    bootstrap from ,``)."""
    servers = [server.strip() for server in raw.split(",")]
    for server in servers:
        port = _SERVER.fullmatch(server)
        if port is None or not 1 <= int(port.group(1)) <= 65535:
            raise ValueError(
                "must be the bootstrap servers as host:port, comma-separated (e.g. "
                "kafka-1:9092,kafka-2:9092; a port of 1 to 65535); "
                f"{server!r} is not one; got {raw!r}")
    return ",".join(servers)


#: The workers' detection settings: what `cityagent replay` reads of the environment.
DETECTION_VARS: tuple[str, ...] = ("CITYAGENT_DETECTION", "CITYAGENT_WINDOW_S",
                                   "CITYAGENT_GRACE_S", "CITYAGENT_FORGET_AFTER_S",
                                   "CITYAGENT_SENSOR_REGISTRY")


def detection_settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings of :data:`DETECTION_VARS` alone, checked as :meth:`Settings.from_env` checks
    them (ConfigError naming the variable); every other field is its default. For
    `cityagent replay`, which detects as the workers do but needs none of their other
    settings: a wrong ``CITYAGENT_KAFKA`` must not stop an offline replay."""
    env = os.environ if environ is None else environ
    return Settings.from_env({var: env[var] for var in DETECTION_VARS if var in env})


def _forget_after_s(var: str, raw: str, number: float) -> float:
    """The range of ``[state] forget_after_s`` of the detection settings, which it overrides."""
    if wrong := forget_after_s_error(number):
        raise ConfigError(f"{var} {wrong}; got {raw!r}")
    return number


_LOG_LEVELS = {"debug", "info", "warning", "warn", "error", "critical"}
