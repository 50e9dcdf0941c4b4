"""Flags: findings about one meter over a time span."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ConnDep
from api.schemas import FlagPublic
from meterwatch import reports

router = APIRouter(prefix="/flags", tags=["flags"])

LimitQuery = Annotated[int, Query(ge=1, le=500, description="how many flags (1-500)")]


@router.get("/latest", response_model=list[FlagPublic])
def read_latest_flags(conn: ConnDep, limit: LimitQuery = 20) -> list[FlagPublic]:
    """The most recently detected flags, newest detection (data time) first."""
    return [FlagPublic.model_validate(flag) for flag in reports.latest_flags(conn, limit)]
