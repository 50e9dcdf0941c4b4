"""Running the API and the dashboard in this process, and driving them with the system's
Chromium: what the screenshots script, the dashboard benchmark and the browser tests share.

    with running_api(settings) as api_url, running_dashboard(settings, api_url) as url:
        driver = chromium()
        sign_in(driver, url, "olga.operator", password)

Chromium is Debian's (/usr/bin/chromium with /usr/bin/chromedriver), started headless, without
a sandbox (CI runs as root), GPU or any call home.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait
from werkzeug.serving import make_server

from api.main import create_app
from meterwatch.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def free_socket() -> socket.socket:
    """A socket bound to a free port on 127.0.0.1."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def running_api(settings: Settings) -> Iterator[str]:
    """The real API under uvicorn in a thread, on a free port; yields its URL."""
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def running_dashboard(settings: Settings, api_url: str) -> Iterator[str]:
    """The dashboard (talking to the API at `api_url`) under werkzeug in a thread, on a free
    port; yields its URL."""
    from dashboard.app import create_dash_app

    app = create_dash_app(settings.model_copy(update={"api_url": api_url}))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server = make_server("127.0.0.1", 0, app.server, threaded=True)  # 0: any free port
    port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def chromium(width: int = 1280, height: int = 900, *, mobile: bool = False) -> webdriver.Chrome:
    """A headless Chromium whose console log can be read (`driver.get_log('browser')`)."""
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, "--headless=new", f"--window-size={width},{height}"):
        options.add_argument(flag)
    if mobile:
        options.add_experimental_option(
            "mobileEmulation",
            {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2}},
        )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def wait_until(driver: webdriver.Chrome, condition: Any, timeout_s: float = 60) -> Any:
    """WebDriverWait(...).until(condition), also riding out "aborted by navigation": a page
    that redirects (to /login, after signing in) replaces the document under the check."""
    return WebDriverWait(driver, timeout_s, ignored_exceptions=(WebDriverException,)).until(
        condition
    )


def sign_in(driver: webdriver.Chrome, base_url: str, username: str, password: str) -> None:
    """Sign in through the login form and wait until the first page has loaded."""
    driver.get(f"{base_url}/logout")
    wait_until(driver, expected_conditions.presence_of_element_located((By.ID, "login-submit")))
    driver.find_element(By.ID, "login-username").send_keys(username)
    driver.find_element(By.ID, "login-password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()
    wait_until(driver, expected_conditions.presence_of_element_located((By.ID, "nav-user")))


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """The browser console's SEVERE entries since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
