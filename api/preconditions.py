"""Conditional requests: ``ETag`` on reads, ``If-None-Match`` (304) on them, ``If-Match`` on writes.

Two admins who each read a zone (the routing rules, a maintenance window) at version 7 and
each write their change both got 202, and the later silently replaced the earlier. The reads answer with an
``ETag`` carrying the version (``"7"``); a write that sends ``If-Match: "7"`` (or the version
it read as ``"version": 7`` in its body) is refused with a 412 naming the current version
when the thing has changed since. Without either, a write goes through as before.

The check is against what this API process has read of the compacted topic, with its own
writes not read back yet laid over it (``api.write_ledger``); the writes of one process run
one at a time (``api.routes.zones``, ``api.routes.maintenance``), so within one process two writes from the same version
cannot both pass. Two API replicas each check against their own read: see docs/api.md.

A read sent again with the ``ETag`` it gave as ``If-None-Match`` is a bodyless 304 while that
is still the answer (:func:`conditional_get`): a client polling the zones (or a browser's
cache) got the whole body every time, though it had it already.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
from fastapi import HTTPException, Request, Response

from cityagent.zones import MAX_VERSION

__all__ = ("etag", "digest_etag", "conditional_get", "none_match_names", "not_modified",
           "check_preconditions", "body_version", "WRITE_RESPONSES")

#: One entity tag of a list (RFC 9110 §8.8.3): optional W/, then a quoted string of etagc.
_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')


#: Beside an ``ETag``: a client (a browser) may keep the answer, but asks again with
#: ``If-None-Match`` before it uses it, and a 304 says it is still the answer.
REVALIDATE = {"Cache-Control": "no-cache"}


#: The OpenAPI answers :func:`check_preconditions` adds to a write.
WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "If-Match or If-None-Match is neither * nor quoted entity tags."},
    412: {"description": "If-Match (or the body's 'version') names a version that is not the "
                         "current one, which the detail and the ETag header give; or "
                         "If-None-Match: * and it exists."},
}


def not_modified(etag_description: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI answers :func:`conditional_get` adds to a GET: its 304 and 400."""
    header = {"ETag": {"description": etag_description, "schema": {"type": "string"}}}
    return {304: {"description": "Not Modified: If-None-Match names the ETag (W/ or not), or "
                                 "is *: the answer has not changed since it was given; no "
                                 "body.", "headers": header},
            400: {"description": "If-None-Match is neither * nor quoted entity tags."}}


def etag(version: int) -> str:
    """The strong entity tag of a version: ``"7"``."""
    return f'"{version}"'


def digest_etag(content: Any) -> str:
    """The strong entity tag of an answer with no version of its own: 20 hex digits of the
    SHA-256 of its JSON, so any change to what is answered changes it."""
    return f'"{hashlib.sha256(orjson.dumps(content)).hexdigest()[:20]}"'


def conditional_get(request: Request, response: Response, tag: str) -> Response | None:
    """Give a GET's answer ``tag`` as its ETag; return the 304 Not Modified to answer instead
    when its ``If-None-Match`` names ``tag`` or is ``*`` (RFC 9110 §13.1.2: weak comparison,
    so ``W/"7"`` names ``"7"``), None when the whole answer is due.

    Call it once the answer would be a 200 (a 404 or 503 ignores the header, §13.2.1). The
    304 carries the ETag and no body. A malformed ``If-None-Match`` is a 400, as on writes.
    ``If-Modified-Since`` is not supported (no answer has a ``Last-Modified``): ignored."""
    headers = {"ETag": tag, **REVALIDATE}
    if none_match_names(request, tag):
        return Response(status_code=304, headers=headers)
    response.headers.update(headers)
    return None


def none_match_names(request: Request, tag: str) -> bool:
    """Whether the request's ``If-None-Match`` names ``tag`` (weakly: ``W/"7"`` names
    ``"7"``) or is ``*``; 400 when it is malformed."""
    tags = _tags(request, "If-None-Match")
    return tags is not None and (tags == [] or any(f'"{opaque}"' == tag for _weak, opaque in tags))


def _tags(request: Request, header: str) -> list[tuple[bool, str]] | None:
    """``header``'s entity tags as (weak, opaque) pairs, [] for ``*``, None when absent;
    400 when it is neither ``*`` nor a list of quoted tags."""
    value = request.headers.get(header)
    if value is None:
        return None
    if value.strip() == "*":
        return []
    tags, at = [], 0
    while at < len(value):
        found = _TAG.match(value, at)
        if found is None or found.end() == at:
            raise HTTPException(400, f"{header} must be * or entity tags in double quotes, "
                                     f'such as "7" (an ETag a GET gave); got {value[:80]!r}')
        tags.append((found.group(1) is not None, found.group(2)))
        at = found.end()
    if not tags:
        raise HTTPException(400, f"{header} is empty; send * or an entity tag such as \"7\"")
    return tags


def body_version(body: dict[str, Any], what: str) -> int | None:
    """The ``version`` member of a write's body, removed from it (the version its sender read:
    honoured as ``If-Match`` is); None when absent; 422 when it is not a version."""
    if "version" not in body:
        return None
    version = body.pop("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
        shown = repr(version) if len(repr(version)) <= 40 else f"{repr(version)[:40]}..."
        raise HTTPException(422, f"'version' of {what} must be the version you read (a whole "
                                 f"number from 0 to {MAX_VERSION}, as GET gives it), or left "
                                 f"out to write whatever the version now; got {shown}")
    return version


def check_preconditions(request: Request, current: int | None, what: str, *,
                        read_version: int | None = None, hint: str = "") -> None:
    """412 when the write's preconditions fail against ``current`` (the version this API has
    read; None: the thing does not exist). ``read_version`` is the body's ``version``.

    ``If-Match`` (strong comparison, RFC 9110 §13.1.1): ``*`` holds when the thing exists, a
    list of tags when one of them is the current version's. ``If-None-Match`` (weak
    comparison): ``*`` holds when it does not exist (create, never replace), a list when none
    is the current version's. A body ``version`` is the same check as ``If-Match`` with its
    tag; given with an ``If-Match`` that names another version it is a 422. ``hint`` ends the
    412 of a version that is not the current one."""
    if_match = _tags(request, "If-Match")
    if_none = _tags(request, "If-None-Match")
    said = "If-Match"
    if read_version is not None:
        if if_match and str(read_version) not in {tag for weak, tag in if_match if not weak}:
            raise HTTPException(422, f"the body's 'version' {read_version} is not the version "
                                     f"If-Match names ({request.headers['If-Match'][:80]}); "
                                     "send the version you read in one of them")
        if_match, said = [(False, str(read_version))], "the body's 'version'"
    if if_match is not None:
        _check_if_match(if_match, said, current, what, hint)
    if if_none is not None and current is not None and (
            if_none == [] or any(tag == str(current) for _weak, tag in if_none)):
        asked = ("If-None-Match: * asks that it does not exist yet" if if_none == []
                 else f"If-None-Match: {_listed(if_none)}")
        raise _failed(f"{what} exists, at version {current} ({asked}); GET it, or leave "
                      "If-None-Match out to replace it", current)


def _check_if_match(tags: list[tuple[bool, str]], said: str, current: int | None,
                    what: str, hint: str) -> None:
    if current is None:
        raise _failed(f"{what} does not exist now " + (
            "(If-Match: * asks that it does); leave If-Match out to create it" if not tags
            else f"({said}: {_listed(tags)}): it was deleted since you read it; leave "
                 f"{said} out to create it anew"), None)
    if tags and not any(not weak and tag == str(current) for weak, tag in tags):
        if (True, str(current)) in tags:
            raise _failed(f'{what} is at version {current}, but If-Match names it weak, '
                          f'W/"{current}", and a weak tag never matches (If-Match compares '
                          f'strongly); send If-Match: "{current}"', current)
        header = said == "If-Match"
        send = f'If-Match: "{current}"' if header else f"'version': {current}"
        raise _failed(f"{what} is at version {current}, not {_listed(tags) if header else tags[0][1]} "
                      f"({said}): it changed since you read it; GET it again, apply your "
                      f"change to what it is now, and send {send}{hint}", current)


def _listed(tags: list[tuple[bool, str]]) -> str:
    return " or ".join(f'{"W/" if weak else ""}"{tag}"' for weak, tag in tags[:5])


def _failed(detail: str, current: int | None) -> HTTPException:
    headers = {"ETag": etag(current)} if current is not None else None
    return HTTPException(412, detail, headers=headers)
