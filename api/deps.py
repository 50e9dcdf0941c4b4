"""Dependencies of the route handlers, as named aliases: declare `conn: ConnDep` to get a
pooled database connection for the request, `settings: SettingsDep` for the settings.

`staff_access` is where staff authentication and roles plug in (a later issue): the staff
routes already depend on it, so adding them changes this one function, not the routes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import psycopg
from fastapi import Depends, Request

from api.resources import Resources
from meterwatch.settings import Settings


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_app_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_conn(resources: ResourcesDep) -> Iterator[psycopg.Connection]:
    """A connection from the pool for the length of the request, in one transaction that
    commits when the handler returns and rolls back if it raises. A database that cannot be
    reached surfaces as psycopg.OperationalError, which the app answers with 503."""
    resources.ensure_migrated()
    with resources.pool.connection() as conn:
        yield conn


ConnDep = Annotated[psycopg.Connection, Depends(get_conn)]


def staff_access() -> None:
    """Who may use the staff routes. There is no authentication yet: until the issue that adds
    it, run the API only where the utility's network already limits who reaches it."""


StaffAccess = Depends(staff_access)
