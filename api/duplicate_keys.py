"""Keys given twice in a JSON object of a readings body: found cheaply, named exactly.

orjson, like Python's ``json`` and most parsers, keeps the last of a key an object gives
twice, and says nothing: ``{"level_m": 2.4, ..., "level_m": 9.9}`` was stored as 9.9. Which
one a parser keeps varies (some keep the first, some refuse), so the item is ambiguous, and
ingest refuses it, naming the key (RFC 8259: names within an object SHOULD be unique).

Why two steps: parsing with ``json.loads(object_pairs_hook=...)``, which sees every pair, is
~4x slower than orjson (~4 ms against ~1 ms for 1,000 readings on the 2-core machine), about
the cost of the rest of the request. So a body is first *counted*: with no backslash in it,
every ``"`` delimits a string and a key is the only string followed by ``:``. If no colon has
whitespace before it, the colons right after a ``"`` are every key of the body (plus strings
that begin with ``:``), and if they are exactly as many as the parsed objects hold, no object
lost a key (~0.1 ms per 1,000 readings, numpy). Only a body that fails the count (a backslash,
``"key" :``, nested objects beyond ThingsBoard's ``values``, or a key given twice) is parsed
again with every pair, to find which item gave which key twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ("duplicate_keys",)

_QUOTE, _COLON, _SPACE = ord('"'), ord(":"), ord(" ")


def duplicate_keys(body: bytes, items: Sequence[Any], *, lines: bool = False) -> dict[int, str]:
    """Item index → the first key its object (or its ``values`` object) gives twice.

    ``items`` are the body's items as parsed (a JSON array's elements, a lone object as item
    0, or with ``lines`` one per non-blank NDJSON line, ``None`` for a line that is no JSON).
    """
    if _counted_unique(body, items):
        return {}
    return _find(body, lines)


def _counted_unique(body: bytes, items: Sequence[Any]) -> bool:
    """True when counting proves that no object of ``items`` had a key twice."""
    if b"\\" in body:  # an escaped quote or key (``"l\u0065vel_m"``) defeats the count
        return False
    raw = np.frombuffer(body, dtype=np.uint8)
    before = raw[np.flatnonzero(raw == _COLON) - 1]
    if (before <= _SPACE).any():  # "key" : 1 — that colon is not right after its key
        return False
    keys = int(np.count_nonzero(before == _QUOTE))
    objects = [item for item in items if type(item) is dict]
    held = sum(map(len, objects))
    if keys != held:  # ThingsBoard: each item's values object holds keys too
        held += sum(len(v) for item in objects if type(v := item.get("values")) is dict)
    return keys == held


class _Twice(dict):  # type: ignore[type-arg]
    """An object that gave ``key`` more than once (the parser kept the last)."""

    key: str


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    twice = _Twice(obj)
    for key, _ in pairs:
        if key in seen:
            twice.key = key
            break
        seen.add(key)
    return twice


def _find(body: bytes, lines: bool) -> dict[int, str]:
    """Parse again, seeing every pair: which items gave a key twice."""
    docs: list[Any] = []
    if lines:
        for line in (line for line in body.split(b"\n") if line.strip()):
            try:
                docs.append(json.loads(line, object_pairs_hook=_pairs))
            except (ValueError, RecursionError):  # refused already as a line that is not JSON
                docs.append(None)
    else:
        try:
            doc = json.loads(body, object_pairs_hook=_pairs)
        except (ValueError, RecursionError):  # orjson took it: leave it to the item checks
            return {}
        docs = doc if isinstance(doc, list) else [doc]
    found: dict[int, str] = {}
    for i, doc in enumerate(docs):
        if isinstance(doc, _Twice):
            found[i] = doc.key
        elif isinstance(doc, dict) and isinstance(doc.get("values"), _Twice):
            found[i] = doc["values"].key
    return found
