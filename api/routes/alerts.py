"""GET /v1/alerts: the alerts operators see, newest first."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query

from api.deps import AlertBookDep, RegionsDep
from api.schemas import AlertsPublic
from cityagent.readings import format_ts
from cityagent.regions import RegionIndex

router = APIRouter(tags=["alerts"])


@router.get("/v1/alerts", response_model=AlertsPublic)
async def list_alerts(
    book: AlertBookDep,
    regions: RegionsDep,
    city: Annotated[
        str | None,
        Query(description="City code (370100) or name (济南 / 济南市 / Jinan)", examples=["370100"]),
    ] = None,
    status: Annotated[Literal["open", "resolved"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Alerts, newest breach first, optionally only one city's or one status."""
    city_code = _city_code(regions, city) if city else None
    alerts = book.query(city_code=city_code, status=status, limit=limit)
    return {"count": len(alerts), "alerts": [_public(a) for a in alerts]}


def _city_code(regions: RegionIndex, city: str) -> str:
    wanted = city.strip().lower()
    for c in regions.cities:
        names = {c.code, c.name, c.name.removesuffix("市"), c.name_en.lower()}
        if wanted in names:
            return c.code
    raise HTTPException(
        422,
        f"unknown city {city!r}; give a code like 370100 or a name like 济南 or Jinan "
        f"(one of {', '.join(c.name for c in regions.cities)})",
    )


def _public(alert: dict[str, Any]) -> dict[str, Any]:
    resolved = alert.get("resolved_at_ms")
    return {
        **alert,
        "opened_at": format_ts(alert["opened_at_ms"]),
        "updated_at": format_ts(alert["updated_at_ms"]),
        "resolved_at": format_ts(resolved) if resolved is not None else None,
    }
