"""``GET /v1/me``: who the caller is, for clients that adapt to their key.

The dashboard asks it once per key: a viewer key (read-only) gets no action buttons, and a
scoped key's map and tiles show its cities. Any configured key may ask, whatever its role; the
answer names the key by its non-secret id only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.auth import CAPABILITIES, AnyKeyDep
from api.schemas import MePublic

__all__ = ("router",)

router = APIRouter(tags=["keys"])


@router.get("/v1/me", response_model=MePublic, responses={
    401: {"description": "No API key, or an unknown one."}})
async def me(principal: AnyKeyDep) -> dict[str, Any]:
    """The caller's role, scope and key id, and what the key may do (``may``): ``ingest``,
    ``read``, ``act`` (on alerts), ``configure`` (zones, routing, maintenance)."""
    scope = ({"cities": sorted(principal.cities), "sensor_prefixes": list(principal.prefixes)}
             if principal.scoped else None)
    return {"role": principal.role, "key_id": principal.key_id, "scope": scope,
            "may": list(CAPABILITIES[principal.role])}
