"""Fixtures for the alert tests: a real SMTP server on loopback (aiosmtpd), a local HTTP server
that speaks Twilio's Messages API (so the real Twilio client sends to it), accounts with alert
settings, reads run through the real dataflow, and notifiers in process or as subprocesses.

Import what a test module needs explicitly: `from alerts_fixtures import smtp_server, ...`.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import email
import email.policy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from datetime import time as clock_time
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import psycopg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from alerts.channels import EmailChannel, SmsChannel
from alerts.decide import FLAG_RULES, AlertDecider
from alerts.notify import Notifier, NotifierConfig
from meterwatch.settings import Settings
from stream.runner import execute, file_flow
from stream.sink import StoredFlag

TWILIO_SID = "AC" + "0" * 30 + "42"
TWILIO_TOKEN = "test-auth-token"
TWILIO_FROM = "+15550009999"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.02)


# --- SMTP -------------------------------------------------------------------------------------


@dataclass
class ReceivedEmail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    at: float  # time.time() when the server had the whole message

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def alert_id(self) -> int:
        return int(self.message["X-Meterwatch-Alert"])


class SmtpServer:
    """aiosmtpd on 127.0.0.1, recording every message it accepts. It can be stopped and started
    again on the same port, refuse recipients, and hold a conversation at RCPT or DATA until
    released (to kill a client mid-send)."""

    def __init__(self, **smtp_options: Any) -> None:
        self.port = free_port()
        self.smtp_options = smtp_options
        self.received: list[ReceivedEmail] = []
        self.refuse: dict[str, str] = {}  # address → SMTP reply
        self.hold_at: str | None = None  # "RCPT" or "DATA"
        self.holding = threading.Event()
        self.release = threading.Event()
        self._controller: Controller | None = None

    # aiosmtpd handler hooks
    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:  # fmt: skip
        if self.hold_at == "RCPT":
            await self._hold()
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(
            ReceivedEmail(str(envelope.mail_from), list(envelope.rcpt_tos), parsed, time.time())
        )
        if self.hold_at == "DATA":
            await self._hold()
        return f"250 OK queued as Q{len(self.received)}"

    async def _hold(self) -> None:
        self.holding.set()
        while not self.release.is_set():
            await asyncio.sleep(0.01)

    def start(self) -> None:
        self._controller = Controller(
            self, hostname="127.0.0.1", port=self.port, ready_timeout=10, **self.smtp_options
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self.release.set()
            self._controller.stop()
            self._controller = None

    def to(self, address: str) -> list[ReceivedEmail]:
        return [m for m in self.received if address in m.recipients]


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


SMTP_USER = "alerts"
SMTP_PASSWORD = "s3cret-password"


def _authenticator(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = (
        isinstance(data, LoginPassword)
        and data.login == SMTP_USER.encode()
        and data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok)


@pytest.fixture
def tls_smtp_server(tmp_path: Path) -> Iterator[tuple[SmtpServer, Path]]:
    """An SMTP server that requires STARTTLS and a login, with a certificate from a throwaway
    CA; yields the server and the CA file a client must trust."""
    import ssl

    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = tmp_path / "smtp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = SmtpServer(
        tls_context=context,
        require_starttls=True,
        authenticator=_authenticator,
        auth_required=True,
    )
    server.start()
    yield server, ca_file
    server.stop()


# --- Twilio -----------------------------------------------------------------------------------


@dataclass
class ReceivedSms:
    account_sid: str
    form: dict[str, str]
    authorization: str
    sid: str

    @property
    def to(self) -> str:
        return self.form["To"]

    @property
    def body(self) -> str:
        return self.form["Body"]


@dataclass
class TwilioServer:
    """A local HTTP server answering `POST /2010-04-01/Accounts/<sid>/Messages.json` as Twilio
    does (201 with the message resource as JSON); `fail_with` makes it answer an error."""

    port: int = 0
    received: list[ReceivedSms] = field(default_factory=list)
    fail_with: tuple[int, dict[str, Any]] | None = None
    requests: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


_MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Messages\.json$")


def _twilio_handler(state: TwilioServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            state.requests += 1
            match = _MESSAGES_PATH.match(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            if match is None:
                self._answer(404, {"code": 20404, "message": "not found", "status": 404})
                return
            if state.fail_with is not None:
                status, payload = state.fail_with
                self._answer(status, payload)
                return
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            sid = "SM" + uuid.uuid4().hex
            state.received.append(
                ReceivedSms(match.group(1), form, self.headers.get("Authorization", ""), sid)
            )
            self._answer(
                201,
                {
                    "sid": sid,
                    "account_sid": match.group(1),
                    "to": form.get("To"),
                    "from": form.get("From"),
                    "messaging_service_sid": form.get("MessagingServiceSid"),
                    "body": form.get("Body"),
                    "status": "queued",
                    "num_segments": "1",
                    "direction": "outbound-api",
                    "api_version": "2010-04-01",
                    "date_created": "Sat, 28 Nov 2026 05:00:00 +0000",
                    "uri": f"/2010-04-01/Accounts/{match.group(1)}/Messages/{sid}.json",
                },
            )

    return Handler


@pytest.fixture
def twilio_server() -> Iterator[TwilioServer]:
    state = TwilioServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _twilio_handler(state))
    state.port = int(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def basic_auth() -> str:
    return "Basic " + base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()


# --- accounts and reads -----------------------------------------------------------------------


def add_account(
    conn: psycopg.Connection,
    account_id: str,
    *,
    meters: Sequence[str] = (),
    cycle_day: int = 1,
    daily: float | None = None,
    period: float | None = None,
    bill: float | None = None,
    email: str | None = "",
    phone: str | None = "",
    email_opt_in: bool = True,
    sms_opt_in: bool = False,
    leak_alerts: bool = True,
    quiet: tuple[clock_time, clock_time] | None = None,
    rate_plan: str | None = None,
    valid_from: str = "2020-01-01",
) -> None:
    """A customer, an account with its alert settings, and meters assigned to it."""
    email = f"{account_id.lower()}@example.com" if email == "" else email
    phone = "+1555000" + f"{abs(hash(account_id)) % 10_000:04d}" if phone == "" else phone
    conn.execute(
        "INSERT INTO customers (customer_id, name, email, phone) VALUES (%s, %s, %s, %s)",
        (f"C-{account_id}", f"Customer {account_id}", email, phone),
    )
    conn.execute(
        """INSERT INTO accounts (account_id, customer_id, status, customer_class, rate_plan,
                                 cycle_day)
           VALUES (%s, %s, 'active', 'residential', %s, %s)""",
        (account_id, f"C-{account_id}", rate_plan, cycle_day),
    )
    conn.execute(
        """INSERT INTO alert_settings (account_id, daily_threshold, period_threshold,
                                       projected_bill_threshold, leak_alerts, sms_opt_in,
                                       email_opt_in, quiet_start, quiet_end)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (
            account_id, daily, period, bill, leak_alerts, sms_opt_in, email_opt_in,
            quiet[0] if quiet else None, quiet[1] if quiet else None,
        ),
    )  # fmt: skip
    for meter in meters:
        conn.execute("INSERT INTO meters (meter_id) VALUES (%s) ON CONFLICT DO NOTHING", (meter,))
        conn.execute(
            "INSERT INTO service_points (service_point_id) VALUES (%s) ON CONFLICT DO NOTHING",
            (f"SP-{meter}",),
        )
        conn.execute(
            """INSERT INTO meter_assignments (meter_id, service_point_id, account_id, valid_from)
               VALUES (%s, %s, %s, %s)""",
            (meter, f"SP-{meter}", account_id, valid_from),
        )


def write_reads(path: Path, rows: Sequence[tuple[str, datetime | str, float]]) -> Path:
    """A reads CSV (meter_id, ts, value) in the given order."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["meter_id", "ts", "value"])
        for meter, ts, value in rows:
            writer.writerow([meter, ts.isoformat() if isinstance(ts, datetime) else ts, value])
    return path


def run_reads(settings: Settings, path: Path, workers: int = 1) -> None:
    """The real dataflow (alerts hook included) over a reads file, in this process."""
    execute(file_flow(path, settings), settings, workers=workers)


def alerts_of(database_url: str, **where: Any) -> list[dict[str, Any]]:
    clauses = " AND ".join(f"{k} = %s" for k in where) or "true"
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT * FROM alerts WHERE {clauses} ORDER BY account_id, rule, period_start",
            tuple(where.values()),
        )
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def deliveries_of(database_url: str, alert_id: int) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT * FROM alert_deliveries WHERE alert_id = %s ORDER BY delivery_id", (alert_id,)
        )
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# --- notifiers --------------------------------------------------------------------------------


def email_channel(server: SmtpServer, **options: Any) -> EmailChannel:
    return EmailChannel("127.0.0.1", server.port, security="none", timeout_s=5, **options)


def sms_channel(server: TwilioServer) -> SmsChannel:
    return SmsChannel(TWILIO_SID, TWILIO_TOKEN, TWILIO_FROM, api_url=server.url, timeout_s=5)


def new_notifier(
    database_url: str,
    smtp: SmtpServer | None = None,
    twilio: TwilioServer | None = None,
    *,
    tz: str = "UTC",
    **config: Any,
) -> Notifier:
    """A notifier in this process, with short retries; close it (or use `make_notifier`)."""
    from zoneinfo import ZoneInfo

    options: dict[str, Any] = {"retry_s": 0.05, "max_retry_s": 0.2, "lease_s": 30.0, **config}
    return Notifier(
        database_url,
        {
            "email": email_channel(smtp) if smtp else None,
            "sms": sms_channel(twilio) if twilio else None,
        },
        NotifierConfig(tz=ZoneInfo(tz), **options),
    )


@pytest.fixture
def make_notifier() -> Iterator[Callable[..., Notifier]]:
    """Builds notifiers (see `new_notifier`) and closes their connections afterwards."""
    made: list[Notifier] = []

    def build(*args: Any, **kwargs: Any) -> Notifier:
        made.append(new_notifier(*args, **kwargs))
        return made[-1]

    yield build
    for notifier in made:
        notifier.close()


class NotifierProcess:
    """`meterwatch notify` as its own process (to be killed for real)."""

    def __init__(self, database_url: str, smtp: SmtpServer, log: Path, **settings: Any) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp.port),
            "SMTP_SECURITY": "none",
            "SMTP_TIMEOUT_S": "30",
            **{name.upper(): str(value) for name, value in settings.items()},
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "meterwatch.cli", "notify"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


# --- alerts decided directly through the hook -------------------------------------------------


def leak_flag(
    conn: psycopg.Connection,
    meter: str,
    account: str,
    *,
    kind: str = "leak",
    severity: str = "high",
    detected: datetime | None = None,
) -> StoredFlag:
    """A leak (or burst) flag as the sink stores it: the row in `flags` and the write."""
    from datetime import UTC, timedelta

    from detectors.lifecycle import FlagChange
    from stream.meter import FlagWrite

    detected = detected or datetime.now(UTC).replace(microsecond=0)
    started = int((detected - timedelta(hours=30)).timestamp())
    change = FlagChange(
        "open", kind, started, None, int(detected.timestamp()), severity, 0.8,
        "flow never dropped below 2.4 gal/h for 30 hours", 1,
        {"leak_rate": 2.4, "hours": 30.0, "quiet_hours": 6.0, "volume_lost": 60.0},
    )  # fmt: skip
    row = conn.execute(
        """INSERT INTO flags (meter_id, account_id, kind, started_at, detected_at, severity,
                              score, evidence) VALUES (%s, %s, %s, to_timestamp(%s), %s, %s,
                              0.8, 'test') RETURNING flag_id""",
        (meter, account, kind, started, detected, severity),
    ).fetchone()
    assert row is not None
    return StoredFlag(FlagWrite(meter, account, change), row[0], True)


def decide_leak(
    database_url: str, settings: Settings, account: str, meter: str, **flag: Any
) -> dict[str, Any]:
    """Store a leak flag and run the alerts hook on it in one transaction (as the sink does);
    returns the alert."""
    decider = AlertDecider.from_settings(database_url, settings)
    with psycopg.connect(database_url) as conn:
        decider(conn, [], [leak_flag(conn, meter, account, **flag)])
    [alert] = [a for a in alerts_of(database_url, account_id=account) if a["rule"] in FLAG_RULES]
    return alert
