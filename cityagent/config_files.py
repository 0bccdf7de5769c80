"""Reading the operators' configuration files: TOML tables and the sensor registry.

The detection settings (``detectors/config.py``), the alerting rules (``incidents.py``) and
the situation model (``situation.py``) all read files an operator edits by hand, so they
share one way of saying what is wrong with one: a ``ConfigError`` naming the file, the table
and the key, never a ``KeyError`` from deep inside.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cityagent.errors import ConfigError

__all__ = ("table", "only", "read_registry_rows")


def table(doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """``doc[key]`` as a TOML table (empty when absent); a ConfigError when it is a value."""
    value = doc.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return value


def only(doc: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """A ConfigError naming the first key of ``doc`` not in ``allowed``: a misspelt key must
    not be ignored silently, as if its default were what the operator wrote."""
    unknown = set(doc) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; "
                          f"expected some of {sorted(allowed)}")


def read_registry_rows(path: Path) -> list[Mapping[str, Any]]:
    """The rows of a sensor registry: a ``.csv`` file, else JSON (``{"sensors": [...]}`` or a
    list of objects). Checking the rows is the caller's business."""
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which made the first
        # column '\ufeffsensor_id' and every row "has no sensor_id".
        text = Path(path).read_text("utf-8-sig")
    except UnicodeDecodeError as exc:  # a CSV saved as GBK, say: it was a traceback
        raise ConfigError(f"cannot read the sensor registry {path}: not UTF-8 text "
                          f"({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the sensor registry {path}: {exc}") from None
    if Path(path).suffix.lower() == ".csv":
        return list(csv.DictReader(text.splitlines()))
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"the sensor registry {path} is not JSON: {exc}") from None
    rows = doc.get("sensors") if isinstance(doc, dict) else doc
    if not isinstance(rows, list):
        raise ConfigError(f"the sensor registry {path} must hold a list of sensors")
    return rows
