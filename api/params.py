"""Query parameters every route shares, checked alike: a time, with one message for it, and
no parameter a route does not take."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

from fastapi import HTTPException, Request

from cityagent.errors import InvalidReading
from cityagent.readings import parse_ts, shown

__all__ = ("time_param", "refuse_unknown_query")

#: Route → (the query parameter names it takes, its dependencies' too; those its docs list),
#: found once per route.
_TAKEN: dict[int, tuple[frozenset[str], list[str]]] = {}


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


def refuse_unknown_query(request: Request) -> None:
    """422 naming a query parameter the route does not take. FastAPI ignores them, so a typo
    was a silent wrong answer: ``GET /v1/alerts?stauts=open`` listed every alert, resolved ones
    too, and ``/v1/alerts/stream?citty=370100`` streamed the whole province."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params:
        return
    found = _TAKEN.get(id(route))
    if found is None:
        fields = list(_query_fields(dependant))
        found = _TAKEN[id(route)] = (
            frozenset(f.alias for f in fields),
            sorted({f.alias for f in fields if getattr(f.field_info, "include_in_schema", True)}))
    taken, listed = found
    unknown = [name for name in dict.fromkeys(request.query_params.keys()) if name not in taken]
    if not unknown:
        return
    takes = f"it takes {', '.join(listed)}" if listed else "it takes no query parameters"
    where = f"{request.method} {request.url.path}"
    if len(unknown) > 1:
        names = ", ".join(shown(name) for name in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise HTTPException(422, f"unknown query parameters {names}: {where} takes none of "
                                 f"them; {takes}")
    name = unknown[0]
    close = difflib.get_close_matches(name, listed, n=1) if len(name) <= 64 else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise HTTPException(422, f"unknown query parameter {shown(name)}{hint}: {where} does not "
                             f"take it; {takes}")


def _query_fields(dependant: Any) -> Iterator[Any]:
    """The query parameters (FastAPI's fields) of a route's dependant and its dependencies."""
    yield from getattr(dependant, "query_params", ())
    for sub in getattr(dependant, "dependencies", ()):
        yield from _query_fields(sub)
