"""Screenshots of every dashboard page, for the docs: `python -m dashboard.screenshots`.

Creates a throwaway database on the server of DATABASE_URL (`meterwatch_screenshots`, dropped
afterwards), fills it with `dashboard.sample`, runs the API and the dashboard in this process,
signs in as each role in headless Chromium and saves one PNG per page into docs/screenshots/
(or --out), the portal also at phone size. Needs /usr/bin/chromium and /usr/bin/chromedriver.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import psycopg
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from dashboard import harness
from dashboard.sample import SAMPLE_PASSWORD, seed_showcase
from meterwatch.db import migrate
from meterwatch.settings import Settings, get_settings

DATABASE = "meterwatch_screenshots"


@dataclass(frozen=True)
class Shot:
    name: str
    role: str
    path: str
    ready: str  # a CSS selector that shows the page has its data
    act: Callable[[webdriver.Chrome], None] | None = None
    mobile: bool = False


def _open_first_flag(driver: webdriver.Chrome) -> None:
    driver.find_element(By.CSS_SELECTOR, "#exc-queue button").click()
    WebDriverWait(driver, 20).until(
        expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, "#exc-evidence-chart .trace")
        )
    )


SHOTS = (
    Shot("live", "operator", "/", "#live-usage .trace"),
    Shot("exceptions", "operator", "/exceptions", "#exc-queue", _open_first_flag),
    Shot("account", "operator", "/account?account_id=A1", "#acct-usage .trace"),
    Shot("billing", "billing", "/billing?cycle=1|{last_month}", "#bill-verdict"),
    Shot("queues", "operator", "/queues", "#queues-unmatched-table"),
    Shot("portal", "customer", "/portal", "#portal-usage .trace"),
    Shot("portal-phone", "customer", "/portal", "#portal-usage .trace", mobile=True),
)


def _database(settings: Settings) -> tuple[str, str]:
    info = psycopg.conninfo.conninfo_to_dict(settings.require_database_url())
    admin = psycopg.conninfo.make_conninfo(**{**info, "dbname": "postgres"})  # type: ignore[arg-type]
    return admin, psycopg.conninfo.make_conninfo(**{**info, "dbname": DATABASE})  # type: ignore[arg-type]


def take(shot: Shot, driver: webdriver.Chrome, url: str, out: Path) -> Path:
    """Open one page, wait for its data, do its action and save it at full page height."""
    today = date.today()
    last_month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)  # a cycle that ended
    driver.get(url + shot.path.format(last_month=last_month.isoformat()))
    WebDriverWait(driver, 30).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, shot.ready))
    )
    if shot.act:
        shot.act(driver)
    time.sleep(1.0)  # let charts finish their transitions
    width = driver.execute_script("return window.innerWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    if not shot.mobile:
        driver.set_window_size(width, min(height + 120, 4000))
        time.sleep(0.5)
    path = out / f"{shot.name}.png"
    driver.save_screenshot(str(path))
    errors = harness.console_errors(driver)
    if errors:
        raise RuntimeError(f"the browser console has errors on {shot.path}: {errors}")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    base = get_settings()
    admin, url = _database(base)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    try:
        migrate(url)
        with psycopg.connect(url) as conn:
            users = seed_showcase(conn)
        with tempfile.TemporaryDirectory() as data_dir:
            settings = base.model_copy(
                update={"database_url": url, "data_dir": Path(data_dir), "redis_url": None}
            )
            with (
                harness.running_api(settings) as api,
                harness.running_dashboard(settings, api) as dashboard,
            ):
                for shot in SHOTS:
                    driver = (
                        harness.chromium(390, 844, mobile=True)
                        if shot.mobile
                        else harness.chromium()
                    )
                    try:
                        harness.sign_in(driver, dashboard, users[shot.role], SAMPLE_PASSWORD)
                        print(take(shot, driver, dashboard, args.out))
                    finally:
                        driver.quit()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


if __name__ == "__main__":
    main()
