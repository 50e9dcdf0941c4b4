"""Counts of everything meterwatch has stored: the `stats --json` numbers."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ConnDep, StaffAccess
from api.schemas import StatsPublic
from meterwatch import reports

router = APIRouter(prefix="/stats", tags=["stats"])


@router.get("", response_model=StatsPublic, dependencies=[StaffAccess])
def read_stats(conn: ConnDep) -> StatsPublic:
    """Reads stored, rejected, unmatched (by reason) and ignored as duplicates; flags by kind
    and by review status; alerts by status. Exact counts."""
    return StatsPublic.model_validate(reports.stats(conn))
