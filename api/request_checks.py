"""The order in which a request is refused, the same on every route.

1. No such path: 404; a method the path does not take: 405 (Starlette's router). Whatever the
   body, its type or the query: ``POST /v1/nonexistent`` with an XML body was a 415.
2. The key: 401 without a valid one, then 403 for a role that may not use the route
   (``api.auth``). Nothing about the request itself is told to a client without a key.
3. The request itself: the body's size (413), type (415) and strictness (400), judged by the
   ``api.strict_json.StrictJson`` middleware before any route reads the body (it never reads
   more than 1 MiB and a too-large body is not read at all), and a query parameter the route
   does not take (422, ``api.params.refuse_unknown_query``).
4. The route's own checks (a bad query value, the body's fields: 422; and so on).

The middleware cannot answer 3 itself: it runs before the router and the key check. So it
hands the route no body and leaves its verdict in the request's scope; this module raises it
after the key check: from the key dependency (``api.auth``) on a route that takes a key, from
the app-wide dependency :func:`check_request` on one that does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import HTTPException, Request

from api.params import refuse_unknown_query

__all__ = ("BODY_PROBLEM", "check_request", "refuse_bad_request")

#: Scope key of the middleware's verdict on the body: (status, detail), absent when it is fine.
BODY_PROBLEM = "cityagent.body_problem"
#: Route → whether it takes a key (a dependency of ``api.auth`` in its tree), found once.
_KEYED: dict[int, bool] = {}


def refuse_bad_request(request: Request) -> None:
    """413/415/400 for the body the middleware refused, 422 for an unknown query parameter."""
    if request.scope.get(BODY_PROBLEM) is not None:
        status, detail = request.scope.pop(BODY_PROBLEM)
        raise HTTPException(status, detail)
    refuse_unknown_query(request)


def check_request(request: Request) -> None:
    """App-wide dependency (it runs before a route's own): the checks of a route without a
    key now; on a route that takes a key, its key dependency runs them after the key."""
    route = request.scope.get("route")
    keyed = _KEYED.get(id(route))
    if keyed is None:
        dependant = getattr(route, "dependant", None)
        keyed = _KEYED[id(route)] = dependant is not None and any(
            hasattr(call, "admits") for call in _calls(dependant))
    if not keyed:
        refuse_bad_request(request)


def _calls(dependant: Any) -> Iterator[Any]:
    for sub in getattr(dependant, "dependencies", ()):
        yield sub.call
        yield from _calls(sub)
