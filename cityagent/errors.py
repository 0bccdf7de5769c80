"""Every error CityAgent raises on purpose, with one root so callers can catch them all.

    CityAgentError
    ├── InvalidReading        a reading failed validation (bad field, value, time or place)
    │   └── OutsideProvince   a reading's lon/lat lies in no Shandong district
    ├── InvalidBatch          a Kafka message is not a well-formed reading batch
    ├── InvalidAnomaly        a Kafka message is not a well-formed anomaly
    ├── ConfigError           a setting or config file is wrong; stops the process at startup
    ├── BrokerError           the Kafka broker cannot be started or reached
    │   └── PortInUse         the port the embedded broker or the API wants is taken
    └── RecordTooLarge        a record is larger than Kafka takes: sending it again cannot help

Messages say what, where, what was expected and what was got, so that an operator
can act on them without reading code.
"""

from __future__ import annotations

__all__ = (
    "CityAgentError",
    "InvalidReading",
    "OutsideProvince",
    "InvalidBatch",
    "InvalidAnomaly",
    "ConfigError",
    "BrokerError",
    "PortInUse",
    "RecordTooLarge",
    "describe_exception",
)


class CityAgentError(Exception):
    """Root of all errors raised by CityAgent on purpose."""


class InvalidReading(CityAgentError):
    """Raised when a reading fails validation; ``field`` names the offending field."""

    def __init__(self, reason: str, *, field: str | None = None, sensor_id: str | None = None):
        self.reason = reason
        self.field = field
        self.sensor_id = sensor_id
        where = f"reading from {sensor_id!r}: " if sensor_id else "reading: "
        super().__init__(where + reason)


class OutsideProvince(InvalidReading):
    """Raised when a reading's position is in none of Shandong's districts."""


class InvalidBatch(CityAgentError):
    """Raised when a message on the readings topic is not a well-formed reading batch."""


class InvalidAnomaly(CityAgentError):
    """Raised when an anomaly document (the anomalies topic) lacks a field or has a wrong one."""


class ConfigError(CityAgentError):
    """Raised at startup when a setting or config file is invalid; names the variable or file."""


class BrokerError(CityAgentError):
    """Raised when the Kafka broker cannot be started, or cannot be reached in time."""


class PortInUse(BrokerError):
    """Raised when a TCP port CityAgent must listen on is already taken by another process."""


class RecordTooLarge(CityAgentError):
    """Raised when Kafka refuses a record for its size (1 MB by default): unlike a BrokerError,
    a retry cannot succeed, so the API answers 413, not 503."""


def describe_exception(exc: BaseException) -> str:
    """``Name: message`` for a line that names an exception from a library, without the name
    twice: Kafka clients' errors already start their text with their class name, so the usual
    ``f"{type(exc).__name__}: {exc}"`` printed ``KafkaTimeoutError: KafkaTimeoutError: ...``."""
    name, text = type(exc).__name__, str(exc)
    if not text:
        return name
    return text if text == name or text.startswith(name + ":") else f"{name}: {text}"
