"""JSON request bodies must be strict JSON: what the API can write to Kafka again.

FastAPI parses JSON bodies with Python's ``json``, which also takes ``NaN`` and ``Infinity``,
lone surrogate escapes (``"\\ud800"``, not UTF-8) and integers of any size. The API writes
what it is given to Kafka with orjson, which refuses all three: a zone named ``"\\udc00"`` or a
maintenance window ending at ``1e25`` written as an integer failed there, with a 500. This
middleware answers such bodies 400 before a route sees them, saying what is wrong.

A body declared JSON that is not JSON at all is a 400 too, saying where it breaks (FastAPI
answered 422 ``json_invalid``, or 400 "There was an error parsing the body" for bytes that
are not UTF-8, against the documented 400 "not JSON"). The ingest routes
(``/v1/readings...``) are skipped: they parse their bodies themselves with orjson, which is
strict already, and a 16 MiB body is not read twice.

A body is JSON when its ``Content-Type`` is one ingest reads as JSON
(``api.ingest.is_json_type``: ``application/json``, another ``application/*+json``,
``text/plain`` or none); any other declared type (XML, a form: what ``curl -d`` sends without ``-H``) is answered 415 naming
those, as ingest does. FastAPI itself parses only ``application/json`` and ``*+json`` bodies:
it handed the routes a form, an XML body, a ``text/plain`` one and one without
``Content-Type`` as bytes, which its validation refused with a 422 "Input should be a valid
dictionary" echoing the body. A JSON body sent as ``text/plain`` or without a type is
therefore passed on labelled ``application/json``.

Every other body is limited to ``MAX_BODY_BYTES`` (1 MiB), whatever its type, and read no
further (not at all when ``Content-Length`` says more): each of those routes writes one Kafka
record, which Kafka refuses over 1 MB anyway, and without a limit anyone, without a key, could
make the API read and parse a body of any size (76 MiB held it for 11 s, every other request
waiting, and ~500 MB).

The middleware runs before the router and the key check, so it does not answer: it leaves
its verdict (413, 415 or 400) in the request's scope and hands the route no body;
``api.request_checks`` raises it once the path (404, 405) and the key (401, 403) are checked.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from api.ingest import is_json_type, media_type_refused
from api.request_checks import BODY_PROBLEM

__all__ = ("MAX_BODY_BYTES", "StrictJson", "json_problem", "not_json_type")

#: Largest body of a route other than ingest: one Kafka record (1 MB by default) holds it.
MAX_BODY_BYTES = 1 << 20

#: Integers orjson writes: signed 64-bit and unsigned 64-bit.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _WideInt(ValueError):
    pass


def _int64(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > 20 or not _INT_MIN <= int(text) <= _INT_MAX:
        raise _WideInt(text if len(text) <= 40 else f"{text[:20]}...({len(digits)} digits)")
    return int(text)


def json_problem(body: bytes) -> str | None:
    """Why ``body`` is not strict JSON (or not JSON at all); None if it is."""
    try:
        json.loads(body, parse_int=_int64)
    except _WideInt as exc:
        return (f"request body has the integer {exc}, beyond 64 bits; send a number that "
                "fits, or text")
    except RecursionError:
        return "request body is nested too deeply"
    except ValueError as exc:  # also UnicodeDecodeError: bytes that are not UTF-8
        return f"request body is not JSON: {exc}"
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return (f"request body is not strict JSON (RFC 8259, UTF-8): {exc}; NaN, Infinity "
                "and lone surrogate escapes such as \\ud800 are refused")
    return None


#: The Content-Type a JSON body reaches the routes with (FastAPI parses only JSON types).
_JSON_HEADER = (b"content-type", b"application/json")


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def not_json_type(media_type: str) -> str:
    """The 415 detail for a body of ``media_type``, naming the types taken (JSON only: the
    routes this guards take no NDJSON, unlike ingest)."""
    return media_type_refused(media_type, send="the body", ndjson=False)


def _too_large(size: int | None) -> str:
    said = f"{size:,} bytes" if size is not None else f"over {MAX_BODY_BYTES:,} bytes"
    return (f"request body is {said}; the limit of this route is {MAX_BODY_BYTES:,} bytes "
            "(1 MiB: one Kafka record)")


class StrictJson:
    """ASGI middleware: judges a body (over 1 MiB: 413, not declared JSON: 415, not strict JSON:
    400) and leaves the verdict to be raised after the route and the key are checked
    (``api.request_checks``); the route then gets no body."""

    def __init__(self, app: Any, skip_prefixes: tuple[str, ...] = ("/v1/readings",)) -> None:
        self.app = app
        self.skip_prefixes = skip_prefixes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or scope["method"] not in _METHODS
                or scope["path"].startswith(self.skip_prefixes)):
            await self.app(scope, receive, send)
            return
        body, problem = await _judge(scope, receive)
        if body is None:  # the client went away
            return
        if problem is not None:
            scope = {**scope, BODY_PROBLEM: problem}
            body = b""
        elif body.strip() and _media_type(_content_type(scope)) in ("", "text/plain"):
            scope = {**scope, "headers": [
                *(h for h in scope["headers"] if h[0] != b"content-type"), _JSON_HEADER]}
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _content_type(scope: dict[str, Any]) -> str:
    return dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")


async def _judge(scope: dict[str, Any], receive: Any) -> tuple[bytes | None, tuple[int, str] | None]:
    """The body (None if the client went away) and what is wrong with it: (status, detail).
    A body over the limit is not read further (not at all when Content-Length says so)."""
    length = dict(scope["headers"]).get(b"content-length", b"")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        return b"", (413, _too_large(int(length)))
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None, None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:  # chunked, or a Content-Length that lied
            return b"", (413, _too_large(None))
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    if not body.strip():
        return body, None
    media_type = _media_type(_content_type(scope))
    if not is_json_type(media_type):
        return body, (415, not_json_type(media_type))
    problem = json_problem(body)
    return body, (400, problem) if problem is not None else None
