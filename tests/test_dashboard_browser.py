"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium and chromedriver),
against the real API under uvicorn on a seeded TimescaleDB database (`dashboard.sample`): every
page loads without a console error; the live page's numbers move while the dataflow commits
reads; a flag reviewed in the browser changes in the database and the audit log; a billing
clerk closes a cycle with an override; a customer sees their own usage, changes their alert
settings and downloads their data, and reaches neither another account nor the staff pages.

One database, API, dashboard and browser serve the whole module (the tests run in file order;
what one changes, a later one does not depend on).
"""

from __future__ import annotations

import csv
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import DatabaseFactory
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec

from dashboard import harness
from dashboard.sample import SAMPLE_PASSWORD, seed_showcase
from meterwatch.settings import Settings
from stream.runner import execute, file_flow

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (harness.CHROMIUM.exists() and harness.CHROMEDRIVER.exists()),
        reason="needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium "
        "chromium-driver)",
    ),
]
WAIT_S = 60  # a busy 2-core CI machine: generous, and only ever paid on failure


@dataclass
class Stack:
    database_url: str
    dashboard: str
    settings: Settings
    users: dict[str, str]
    driver: webdriver.Chrome
    signed_in_as: str | None = None

    def sign_in(self, role: str) -> None:
        if self.signed_in_as != role:
            harness.sign_in(self.driver, self.dashboard, self.users[role], SAMPLE_PASSWORD)
            self.signed_in_as = role

    def open(self, path: str, ready: str) -> None:
        """Open a page and wait for the element that shows it has its data."""
        self.driver.get(self.dashboard + path)
        self.wait_for(ready)

    def until(self, condition: Any) -> Any:
        return harness.wait_until(self.driver, condition, WAIT_S)

    def wait_for(self, selector: str) -> None:
        harness.wait_until(
            self.driver, ec.presence_of_element_located((By.CSS_SELECTOR, selector)), WAIT_S
        )

    def wait_for_text(self, selector: str, text: str) -> None:
        harness.wait_until(
            self.driver, ec.text_to_be_present_in_element((By.CSS_SELECTOR, selector), text), WAIT_S
        )

    def text(self, selector: str) -> str:
        return str(self.driver.find_element(By.CSS_SELECTOR, selector).text)


@pytest.fixture(scope="module")
def stack(
    timescale_databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    url = timescale_databases()
    with psycopg.connect(url) as conn:
        users = seed_showcase(conn)
    settings = Settings(
        database_url=url,
        redis_url=None,
        data_dir=tmp_path_factory.mktemp("dashboard") / "data",
        utility_tz="America/Chicago",
        dashboard_refresh_ms=500,
    )
    driver = harness.chromium()
    try:
        with (
            harness.running_api(settings) as api,
            harness.running_dashboard(settings, api) as dashboard,
        ):
            yield Stack(url, dashboard, settings, users, driver)
    finally:
        driver.quit()


@pytest.fixture
def browser(stack: Stack) -> Iterator[Stack]:
    """The module's stack; the test fails if the browser console logged an error."""
    harness.console_errors(stack.driver)  # forget what earlier tests left
    yield stack
    assert harness.console_errors(stack.driver) == [], "the browser console has errors"


PAGES = [
    ("operator", "/", "#live-usage .trace"),
    ("operator", "/exceptions", "#exc-queue tbody tr"),
    ("operator", "/account?account_id=A1", "#acct-usage .trace"),
    ("operator", "/billing", "#bill-verdict"),
    ("operator", "/queues", "#queues-unmatched-table"),
    ("billing", "/billing", "#bill-verdict"),
    ("admin", "/exceptions", "#exc-queue"),
    ("customer", "/portal", "#portal-usage .trace"),
]


def test_every_page_loads_without_console_errors(browser: Stack) -> None:
    browser.driver.get(browser.dashboard + "/logout")
    browser.signed_in_as = None
    browser.driver.get(browser.dashboard + "/exceptions")  # not signed in: to the login form
    browser.wait_for("#login-form")
    assert browser.driver.current_url.endswith("/login?next=/exceptions")
    for role, path, ready in PAGES:
        browser.sign_in(role)
        browser.open(path, ready)
        assert harness.console_errors(browser.driver) == [], f"console errors on {path}"
    assert browser.text("#portal-bill-so-far").startswith("$")


def _reads_file(path: Path, start: datetime, minutes: int) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["meter_id", "ts", "value"])
        for minute in range(1, minutes + 1):
            ts = (start + timedelta(minutes=minute)).isoformat()
            writer.writerow(["M1", ts, "0.5"])
            writer.writerow(["M2", ts, "2"])
    return path


def _stored(stack: Stack) -> int:
    return int(stack.text("#live-stored").replace(",", ""))


def test_live_numbers_move_while_reads_flow(browser: Stack, tmp_path: Path) -> None:
    browser.sign_in("operator")
    browser.open("/", "#live-usage .trace")
    browser.until(lambda _: browser.text("#live-stored").replace(",", "").isdigit())
    before = _stored(browser)
    with psycopg.connect(browser.database_url) as conn:
        newest = conn.execute("SELECT max(ts) FROM reads").fetchone()
    assert newest is not None and newest[0] is not None
    settings = browser.settings
    for batch in range(2):  # the dataflow commits two files of reads while the page is open
        start = newest[0] + timedelta(minutes=60 * batch)
        path = _reads_file(tmp_path / f"reads-{batch}.csv", start, 60)
        execute(file_flow(path, settings), settings)
        expected = before + 120 * (batch + 1)
        browser.until(lambda _, n=expected: _stored(browser) == n)
    browser.until(lambda _: browser.text("#live-reads-per-s") not in ("0.0 reads/s", "measuring…"))
    assert browser.text("#live-reads-per-s").endswith(" reads/s")
    assert "Newest alerts" in browser.driver.page_source
    browser.wait_for_text("#live-alerts", "water has been running")


def test_a_flag_reviewed_in_the_browser_changes_in_the_database(browser: Stack) -> None:
    with psycopg.connect(browser.database_url) as conn:
        row = conn.execute("SELECT flag_id FROM flags WHERE kind = 'spike'").fetchone()
    assert row is not None
    flag_id = row[0]
    browser.sign_in("operator")
    browser.open("/exceptions", f"#exc-row-{flag_id}")
    browser.driver.find_element(By.CSS_SELECTOR, f"#exc-row-{flag_id} button").click()
    browser.wait_for("#exc-evidence-chart .trace")
    browser.wait_for_text("#exc-facts", "usual peak")
    browser.driver.find_element(By.CSS_SELECTOR, "#exc-action input[value='dismissed']").click()
    reason = "bakery filled its new proofing tank"
    browser.driver.find_element(By.ID, "exc-reason").send_keys(reason)
    browser.driver.find_element(By.ID, "exc-submit").click()
    browser.wait_for_text("#exc-message", f"Flag {flag_id} is now dismissed.")
    with psycopg.connect(browser.database_url) as conn:
        flag = conn.execute(
            "SELECT status, status_by, status_reason FROM flags WHERE flag_id = %s", (flag_id,)
        ).fetchone()
        audit = conn.execute(
            """SELECT actor, reason, details->>'from', details->>'to' FROM audit_log
                WHERE action = 'review_flag' AND entity = 'flag' AND entity_id = %s""",
            (str(flag_id),),
        ).fetchall()
    assert flag == ("dismissed", "olga.operator", reason)
    assert audit == [("olga.operator", reason, "open", "dismissed")]
    # the queue shows open flags: the dismissed one has left it
    browser.until(ec.invisibility_of_element_located((By.ID, f"exc-row-{flag_id}")))


def test_staff_add_a_contact_and_the_billing_clerk_closes_a_cycle(browser: Stack) -> None:
    browser.sign_in("operator")
    browser.open("/account?account_id=A1", "#acct-usage .trace")
    browser.driver.find_element(By.ID, "acct-contact-summary").send_keys("Left a voicemail.")
    browser.driver.find_element(By.ID, "acct-contact-add").click()
    browser.wait_for_text("#acct-contact-table", "Left a voicemail.")
    browser.open("/billing", "#bill-verdict")  # an operator may look, not close
    assert browser.driver.find_element(By.ID, "bill-close").get_attribute("disabled") is not None

    today = datetime.now(browser.settings.tz).date()
    last_month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    browser.sign_in("billing")
    browser.open(f"/billing?cycle=1|{last_month.isoformat()}", "#bill-verdict")
    browser.driver.find_element(By.CSS_SELECTOR, "#bill-override input").click()
    browser.driver.find_element(By.ID, "bill-reason").send_keys("reviewed with the supervisor")
    browser.driver.find_element(By.ID, "bill-close").click()
    browser.wait_for_text("#bill-message", f"Cycle day 1 of {last_month} is closed")
    browser.wait_for_text("#bill-verdict", "Closed by bill.billing")
    with psycopg.connect(browser.database_url) as conn:
        closed = conn.execute(
            "SELECT closed_by, reason FROM billing_cycle_closes WHERE cycle_day = 1"
        ).fetchall()
        contact = conn.execute(
            "SELECT actor, channel FROM contact_log WHERE summary = 'Left a voicemail.'"
        ).fetchall()
    assert closed == [("bill.billing", "reviewed with the supervisor")]
    assert contact == [("olga.operator", "phone")]


def _download(stack: Stack, path: str) -> tuple[int, bytes]:
    cookie = stack.driver.get_cookie("meterwatch_session")
    assert cookie is not None
    request = urllib.request.Request(
        stack.dashboard + path, headers={"Cookie": f"meterwatch_session={cookie['value']}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def test_a_customer_sees_their_own_usage_and_nothing_else(browser: Stack) -> None:
    browser.sign_in("customer")
    browser.open("/portal", "#portal-usage .trace")
    assert browser.text("#portal-title") == "Your water use, account A1"
    bars = browser.driver.execute_script(
        "const d = document.querySelector('#portal-usage .js-plotly-plot').data;"
        "return d.filter(t => t.type === 'bar').map(t => t.y.filter(v => v !== null).length)"
    )
    assert bars and bars[0] >= 700, "two years of daily use"
    assert "Possible leak on meter M1" in browser.text("#portal-leaks")
    browser.driver.find_element(By.CSS_SELECTOR, "#portal-resolution input[value='hour']").click()
    browser.wait_for_text("#portal-usage .gtitle", "Use per hour (gal)")
    hours = browser.driver.execute_script(
        "return document.querySelector('#portal-usage .js-plotly-plot').data[0].x.length"
    )
    assert 7 * 24 - 1 <= hours <= 7 * 24 + 1, "the last 7 days by hour (a DST change: ±1)"
    nav = [a.text for a in browser.driver.find_elements(By.CSS_SELECTOR, ".mw-nav a")]
    assert nav == ["My usage"]

    daily = browser.driver.find_element(By.ID, "portal-daily")
    daily.send_keys(Keys.CONTROL, "a")  # clear() bypasses React: the app would not see it
    daily.send_keys("175")
    browser.driver.find_element(By.ID, "portal-save").click()
    browser.wait_for_text("#portal-save-message", "Saved.")
    with psycopg.connect(browser.database_url) as conn:
        saved = conn.execute(
            "SELECT daily_threshold FROM alert_settings WHERE account_id = 'A1'"
        ).fetchone()
    assert saved == (175.0,)

    status, body = _download(browser, "/download/A1/usage.csv?resolution=month")
    assert status == 200 and body.decode().startswith("unit,start,usage")
    assert len(body.decode().splitlines()) == 1 + 24, "24 months of use"
    assert _download(browser, "/download/A2/usage.csv")[0] == 404

    browser.open("/portal?account=A2", "#portal-banner")
    assert browser.text("#portal-banner") == "Account A2 was not found among your accounts."
    for path in ("/account?account_id=A2", "/", "/exceptions", "/billing", "/queues"):
        browser.open(path, "#auth-refused")
        assert "This page is for utility staff" in browser.text("#auth-refused")


def _choose(stack: Stack, dropdown: str, option: str) -> None:
    """Pick `option` in a dcc.Dropdown the way a person does: open it, click the option."""
    stack.driver.find_element(By.CSS_SELECTOR, dropdown).click()
    stack.until(
        lambda d: any(
            o.text == option for o in d.find_elements(By.CSS_SELECTOR, ".dash-dropdown-option")
        )
    )
    for element in stack.driver.find_elements(By.CSS_SELECTOR, ".dash-dropdown-option"):
        if element.text == option:
            element.click()
            return


def test_an_operator_works_the_queues(browser: Stack) -> None:
    browser.sign_in("operator")
    browser.open("/queues", "#queues-unmatched-table")
    with psycopg.connect(browser.database_url) as conn:
        row = conn.execute("SELECT min(rejected_id) FROM rejected_reads").fetchone()
    assert row is not None
    rejected_id = row[0]
    _choose(browser, "#queues-rejected-id", str(rejected_id))
    browser.driver.find_element(By.ID, "queues-rejected-reason").send_keys("resent by the vendor")
    browser.driver.find_element(By.ID, "queues-rejected-resolve").click()
    browser.wait_for_text("#queues-rejected-message", f"Rejected read {rejected_id} is dealt with.")

    _choose(browser, "#queues-meter", "X7")
    browser.until(  # the first queued read's time is suggested
        lambda d: d.find_element(By.ID, "queues-valid-from").get_attribute("value")
    )
    for field, text in (
        ("queues-service-point", "S9"),
        ("queues-account", "A3"),
        ("queues-reason", "new meter, CIS not updated yet"),
    ):
        browser.driver.find_element(By.ID, field).send_keys(text)  # fmt: skip
    browser.driver.find_element(By.ID, "queues-assign").click()
    browser.wait_for_text("#queues-unmatched-message", "X7 is assigned")
    # no Redis in this stack: the reads stay queued, and the page says why
    browser.wait_for_text("#queues-unmatched-message", "no Redis configured")
    with psycopg.connect(browser.database_url) as conn:
        resolved = conn.execute(
            "SELECT resolved_by, resolution FROM rejected_reads WHERE rejected_id = %s",
            (rejected_id,),
        ).fetchone()
        assigned = conn.execute(
            "SELECT service_point_id, account_id FROM meter_assignments WHERE meter_id = 'X7'"
        ).fetchall()
        audit = conn.execute(
            "SELECT actor FROM audit_log WHERE action IN ('resolve_rejected', 'assign_meter')"
        ).fetchall()
    assert resolved == ("olga.operator", "resent by the vendor")
    assert assigned == [("S9", "A3")]
    assert audit == [("olga.operator",), ("olga.operator",)]
