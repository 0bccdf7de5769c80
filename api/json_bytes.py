"""Bytes kept for long: right-sized copies of what ``orjson.dumps`` returned.

``orjson.dumps`` (3.12 and later) returns a bytes object whose allocation is its growth
buffer, rounded up, not its length: measured here with orjson 3.13, each result kept costs
~4 KB of memory however short (a 40-byte answer: 4,123 bytes), and a 1.7 KB alert event
~8 KB. Fine for an answer sent and dropped; not for the ~10,000 events the alert stream keeps
for replay (it held ~200 MB where ~30 MB of data was) or the idempotency records. A copy
sized to the content costs ~0.2 µs. Home Assistant found and fixed the same
(home-assistant/core pull requests 181240 and 181513).
"""

from __future__ import annotations

__all__ = ("right_sized",)


def right_sized(data: bytes) -> bytes:
    """``data`` in an allocation of its own length (a copy: ``bytes(data)`` would not copy)."""
    return bytes(memoryview(data))
