"""Table values larger than one Kafka record: stored as parts under the key's own prefix.

Kafka (``message.max.bytes``) and Faust's producer (``producer_max_request_size``) refuse a
record over 1 MB. A state that grows with the sensors it covers (a bucket's detection state,
a district's flood incident in a province-wide rainstorm) passes that, and a worker that
cannot write its state crashes, restarts with the same state and crashes again.

:class:`PartedTable` sends every key ``<key>`` and ``<key>/<suffix>`` to the partition of
``<key>`` (the partition of the input it belongs to), so the worker that owns an input
recovers every part of its state. The detection state splits itself by rows
(``BucketState.to_parts``: each part knows the offset its rows applied). Any other value
uses :func:`write_value` / :func:`read_value` here:

* a value of at most ``PART_BYTES`` is stored as itself under its key, as before parts
  existed;
* a larger one as parts ``<key>/a0``, ``<key>/a1``, … (or ``b0``, ``b1``, …) and a *head*
  under the key naming the set, the number of parts and a digest of the value.

A large value's parts go to the set the current head does not name, then comes the head,
then the old set's parts are deleted. A restarted worker recovers a partition's records in
order up to some offset, so whichever prefix of that sequence it gets, the head names a
complete set: before the new head, the old head and its parts (not deleted yet); from it on,
the new head and its parts. The digest catches anything else: a value whose parts do not
match its head reads as unreadable (ValueError), never as another value.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping
from typing import Any

import faust
import orjson

from cityagent.state import PART_BYTES
from streams.partitions import partition_of_key
from streams.topics import PART_SEP, table_key

__all__ = ("PART_BYTES", "PartedTable", "head_keys", "read_value", "write_value",
           "delete_value")

_HEAD = b"cityagent-parts:"  # a stored value never starts so: states are JSON or numpy
_SETS = ("a", "b")


class PartedTable(faust.Table):
    """A table whose keys ``k`` and ``k/<suffix>`` all live in the partition of ``k``."""

    def partition_for_key(self, key: Any) -> int:
        text = key.decode() if isinstance(key, bytes) else str(key)
        return partition_of_key(text.strip('"').split(PART_SEP, 1)[0], self.partitions)


def head_keys(keys: Any) -> set[str]:
    """The keys of whole values among a table's keys (not parts; JSON-quoted legacy keys
    unquoted)."""
    out = set()
    for key in keys:
        text = key.decode() if isinstance(key, bytes) else str(key)
        if PART_SEP not in text:
            out.add(text.strip('"'))
    return out


def read_value(table: MutableMapping[bytes, bytes], key: str) -> bytes | None:
    """The value stored under ``key`` (None: none); ValueError if its parts are unusable."""
    stored = table.get(table_key(key))
    if stored is None or not stored.startswith(_HEAD):
        return stored
    head = _parse_head(stored)
    parts = [table.get(_part_key(key, head["set"], n)) for n in range(head["parts"])]
    if any(p is None for p in parts):
        raise ValueError(f"{head['parts']} parts expected, {sum(p is not None for p in parts)}"
                         " found")
    value = b"".join(parts)  # type: ignore[arg-type]
    if len(value) != head["bytes"] or _digest(value) != head["digest"]:
        raise ValueError("the parts do not make the value their head describes")
    return value


def write_value(table: MutableMapping[bytes, bytes], key: str, value: bytes,
                part_bytes: int = PART_BYTES) -> int:
    """Store ``value`` under ``key``, in parts if it is larger than ``part_bytes``; return
    the number of records written (parts and head)."""
    old = _current_set(table, key)
    if len(value) <= part_bytes:
        table[table_key(key)] = value
        _delete_parts(table, key, old)
        return 1
    new = _SETS[1] if old == _SETS[0] else _SETS[0]
    count = 0
    for start in range(0, len(value), part_bytes):
        table[_part_key(key, new, count)] = value[start:start + part_bytes]
        count += 1
    _delete_parts(table, key, new, first=count)  # left from an earlier use of the set
    table[table_key(key)] = _HEAD + orjson.dumps(
        {"set": new, "parts": count, "bytes": len(value), "digest": _digest(value)})
    _delete_parts(table, key, old)
    return count + 1


def delete_value(table: MutableMapping[bytes, bytes], key: str) -> None:
    """Delete the value under ``key`` with its parts."""
    old = _current_set(table, key)
    table.pop(table_key(key), None)
    _delete_parts(table, key, old)


def _current_set(table: MutableMapping[bytes, bytes], key: str) -> str | None:
    stored = table.get(table_key(key))
    if stored is None or not stored.startswith(_HEAD):
        return None
    try:
        return _parse_head(stored)["set"]
    except ValueError:
        return None


def _delete_parts(table: MutableMapping[bytes, bytes], key: str, part_set: str | None,
                  first: int = 0) -> None:
    if part_set is None:
        return
    n = first
    while _part_key(key, part_set, n) in table:
        del table[_part_key(key, part_set, n)]
        n += 1


def _parse_head(stored: bytes) -> dict[str, Any]:
    try:
        head = orjson.loads(stored[len(_HEAD):])
        if (head["set"] in _SETS and isinstance(head["parts"], int) and head["parts"] > 0
                and isinstance(head["bytes"], int) and isinstance(head["digest"], str)):
            return head
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    raise ValueError("unreadable head of a value in parts")


def _part_key(key: str, part_set: str, n: int) -> bytes:
    return table_key(f"{key}{PART_SEP}{part_set}{n}")


def _digest(value: bytes) -> str:
    return hashlib.blake2b(value, digest_size=16).hexdigest()
