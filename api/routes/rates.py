"""Rate plans, as `meterwatch import-rates` loaded them."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ConnDep, StaffReader
from api.schemas import RatePlanPublic
from billing.rates import list_plans

router = APIRouter(prefix="/rate-plans", tags=["billing"])


@router.get("", response_model=list[RatePlanPublic])
def read_rate_plans(conn: ConnDep, principal: StaffReader) -> list[RatePlanPublic]:
    """Every rate plan with its fixed charge and tiers."""
    return [
        RatePlanPublic.model_validate({**vars(plan), "tiers": [vars(t) for t in plan.tiers]})
        for plan in list_plans(conn)
    ]
