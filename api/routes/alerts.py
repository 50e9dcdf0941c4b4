"""Alerts across all accounts, for staff: the newest ones (the dashboard's live page)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from psycopg.rows import class_row

from api.deps import ConnDep, StaffReader
from api.schemas import AlertSummaryPublic

router = APIRouter(prefix="/alerts", tags=["alerts"])


@router.get("/latest", response_model=list[AlertSummaryPublic])
def read_latest_alerts(
    conn: ConnDep,
    principal: StaffReader,
    limit: Annotated[int, Query(ge=1, le=100, description="how many alerts (1-100)")] = 20,
) -> list[AlertSummaryPublic]:
    """The most recently created alerts of every account, newest first, with how many delivery
    attempts each has had."""
    with conn.cursor(row_factory=class_row(AlertSummaryPublic)) as cur:
        return cur.execute(
            """SELECT a.alert_id, a.account_id, a.rule, a.period_start, a.detected_at,
                      a.created_at, a.status, a.channels, a.message,
                      (SELECT count(*) FROM alert_deliveries d WHERE d.alert_id = a.alert_id)
                        AS attempts
                 FROM alerts AS a ORDER BY a.created_at DESC, a.alert_id DESC LIMIT %s""",
            (limit,),
        ).fetchall()
