"""Query parameters several routes share, checked alike: a time, with one message for it."""

from __future__ import annotations

from fastapi import HTTPException

from cityagent.errors import InvalidReading
from cityagent.readings import parse_ts

__all__ = ("time_param",)


def time_param(value: str | None, name: str) -> int | None:
    """``value`` (RFC 3339 with an offset, or epoch seconds or ms) as epoch ms; 422 naming
    ``name`` otherwise. None stays None."""
    if value is None:
        return None
    text = value.strip()
    try:
        # isascii: "²" is a digit to str.isdigit; int() refuses it, and over 4300 digits.
        return parse_ts(int(text) if text.isascii() and text.isdigit() else text)
    except (InvalidReading, ValueError) as exc:
        if isinstance(exc, InvalidReading) and "must lie between" in exc.reason:
            raise HTTPException(422, f"{name} must lie between 2000 and 2100; got "
                                     f"{value!r}") from None
        raise HTTPException(422, f"{name} must be an RFC 3339 time with an offset "
                                 "(2026-11-22T08:30:00+08:00, + written %2B in a URL) or epoch "
                                 f"seconds or milliseconds; got {value!r}") from None
