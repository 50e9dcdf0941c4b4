"""Delivering alerts (alerts.notify, alerts.channels) to a real SMTP server on loopback and a
local server speaking Twilio's Messages API through the real Twilio client: every attempt
recorded, retries with backoff, `failed` and staff retry, permanent refusals, quiet hours,
critical leaks, opt-outs, STARTTLS with login, LISTEN/NOTIFY wake-up, and two notifiers
sharing the work."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from alerts_fixtures import (
    SMTP_PASSWORD,
    SMTP_USER,
    TWILIO_FROM,
    TWILIO_SID,
    SmtpServer,
    TwilioServer,
    add_account,
    alerts_of,
    basic_auth,
    decide_leak,
    deliveries_of,
    make_notifier,
    smtp_server,
    tls_smtp_server,
    twilio_server,
    wait_until,
)

from alerts.channels import EmailChannel, Outgoing
from alerts.messages import sms_segments
from alerts.notify import Notifier, retry_failed
from meterwatch.settings import Settings

__all__ = ["make_notifier", "smtp_server", "tls_smtp_server", "twilio_server"]  # fixtures


@pytest.fixture
def settings(database_url: str, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        database_url=database_url,
        utility_name="City Water",
        portal_url="https://city.example/usage",
    )


def test_email_and_sms_reach_the_providers_and_every_attempt_is_recorded(
    settings: Settings,
    database_url: str,
    smtp_server: SmtpServer,
    twilio_server: TwilioServer,
    make_notifier: Callable[..., Notifier],
) -> None:
    with psycopg.connect(database_url) as conn:
        add_account(conn, "D1", meters=["MD1"], sms_opt_in=True, phone="+15551230001")
    alert = decide_leak(database_url, settings, "D1", "MD1")
    notifier = make_notifier(database_url, smtp_server, twilio_server)
    assert notifier.deliver_due() == 1

    [mail] = smtp_server.to("d1@example.com")
    assert mail.sender == "alerts@example.com"
    assert mail.message["Subject"].startswith("City Water: Possible leak")
    assert mail.message["Message-ID"] == f"<meterwatch-alert-{alert['alert_id']}@example.com>"
    body = mail.message.get_content()
    assert "2.4 gal per hour" in body and "https://city.example/usage" in body
    assert "Toilets" in body  # what to check

    [sms] = twilio_server.received
    # The real Twilio client posted to our server: the account in the path, Basic auth.
    assert sms.account_sid == TWILIO_SID and sms.authorization == basic_auth()
    assert sms.to == "+15551230001" and sms.form["From"] == TWILIO_FROM
    assert sms.body == alert["message"] and sms_segments(sms.body) == 1

    [done] = alerts_of(database_url, account_id="D1")
    assert done["status"] == "sent" and done["sent_at"] is not None and done["attempts"] == 1
    records = {d["channel"]: d for d in deliveries_of(database_url, alert["alert_id"])}
    assert records["email"]["status"] == "sent"
    assert records["email"]["destination"] == "d1@example.com"
    assert records["email"]["provider_id"] == mail.message_id
    assert records["email"]["response"].startswith("250 OK queued as")
    assert records["sms"]["status"] == "sent" and records["sms"]["provider_id"] == sms.sid
    assert records["sms"]["response"] == "queued"
    assert notifier.deliver_due() == 0  # nothing is sent twice


def test_smtp_down_then_back_delivers_once(
    settings: Settings,
    database_url: str,
    smtp_server: SmtpServer,
    make_notifier: Callable[..., Notifier],
) -> None:
    with psycopg.connect(database_url) as conn:
        add_account(conn, "D2", meters=["MD2"])
    alert = decide_leak(database_url, settings, "D2", "MD2")
    notifier = make_notifier(database_url, smtp_server, retry_s=0.3, max_retry_s=0.3)
    smtp_server.stop()
    notifier.deliver_due()
    [waiting] = alerts_of(database_url, account_id="D2")
    assert waiting["status"] == "pending" and waiting["attempts"] == 1
    assert "unavailable" in waiting["last_error"]
    assert waiting["next_attempt_at"] > datetime.now(UTC)  # backoff, not a hot loop
    assert notifier.deliver_due() == 0  # not due yet

    smtp_server.start()
    wait_until(lambda: notifier.deliver_due(), timeout=5, what="the retry")
    assert len(smtp_server.to("d2@example.com")) == 1
    [sent] = alerts_of(database_url, account_id="D2")
    assert (sent["status"], sent["attempts"], sent["last_error"]) == ("sent", 2, None)
    assert [d["status"] for d in deliveries_of(database_url, alert["alert_id"])] == [
        "failed",
        "sent",
    ]


def test_exhausted_attempts_fail_and_staff_can_retry(
    settings: Settings,
    database_url: str,
    smtp_server: SmtpServer,
    make_notifier: Callable[..., Notifier],
) -> None:
    with psycopg.connect(database_url) as conn:
        add_account(conn, "D3", meters=["MD3"])
    alert = decide_leak(database_url, settings, "D3", "MD3")
    notifier = make_notifier(database_url, smtp_server, max_attempts=3, retry_s=0.01)
    smtp_server.stop()
    wait_until(
        lambda: (
            notifier.deliver_due() is not None
            and alerts_of(database_url, account_id="D3")[0]["status"] == "failed"
        ),
        timeout=10,
        what="the alert to fail",
    )
    [failed] = alerts_of(database_url, account_id="D3")
    assert failed["attempts"] == 3 and "unavailable" in failed["last_error"]

    with psycopg.connect(database_url) as conn, pytest.raises(LookupError):
        retry_failed(conn, alert["alert_id"] + 1000, "clerk", "typo")
    with psycopg.connect(database_url) as conn:
        retry_failed(conn, alert["alert_id"], "clerk@utility", "customer called; mail is back")
    smtp_server.start()
    assert notifier.deliver_due() == 1
    assert len(smtp_server.to("d3@example.com")) == 1
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT actor, action, entity, entity_id, reason, details FROM audit_log "
            "WHERE action = 'retry_alert'"
        ).fetchone()
        with pytest.raises(ValueError, match="is sent, not failed"):
            retry_failed(conn, alert["alert_id"], "clerk", "again")
    assert row is not None
    assert row[:5] == (
        "clerk@utility", "retry_alert", "alert", str(alert["alert_id"]),
        "customer called; mail is back",
    )  # fmt: skip
    assert row[5]["attempts"] == 3


def test_permanent_refusals_fail_without_retrying(
    settings: Settings,
    database_url: str,
    smtp_server: SmtpServer,
    twilio_server: TwilioServer,
    make_notifier: Callable[..., Notifier],
) -> None:
    with psycopg.connect(database_url) as conn:
        add_account(conn, "D4", meters=["MD4"], email="nobody@example.com")
        add_account(conn, "D5", meters=["MD5"], email_opt_in=False, sms_opt_in=True)
    decide_leak(database_url, settings, "D4", "MD4")
    decide_leak(database_url, settings, "D5", "MD5")
    smtp_server.refuse["nobody@example.com"] = "550 5.1.1 no such mailbox"
    twilio_server.fail_with = (
        400,
        {"code": 21211, "message": "The 'To' number is not a valid phone number.",
         "status": 400, "more_info": "https://www.twilio.com/docs/errors/21211"},
    )  # fmt: skip
    make_notifier(database_url, smtp_server, twilio_server).deliver_due()
    found = {a["account_id"]: a for a in alerts_of(database_url)}
    assert found["D4"]["status"] == "failed" and found["D4"]["attempts"] == 1
    assert "550" in found["D4"]["last_error"]
    assert found["D5"]["status"] == "failed" and "21211" in found["D5"]["last_error"]


def test_quiet_hours_defer_and_a_critical_leak_goes_at_once(
    settings: Settings,
    database_url: str,
    smtp_server: SmtpServer,
    make_notifier: Callable[..., Notifier],
) -> None:
    now = datetime.now(UTC)
    quiet = ((now - timedelta(hours=1)).time(), (now + timedelta(hours=2)).time())
    with psycopg.connect(database_url) as conn:
        add_account(conn, "Q1", meters=["MQ1"], quiet=quiet)
        add_account(conn, "Q2", meters=["MQ2"], quiet=quiet)
        add_account(conn, "Q3", meters=["MQ3"], quiet=quiet)
    decide_leak(database_url, settings, "Q1", "MQ1", severity="high")
    decide_leak(database_url, settings, "Q2", "MQ2", severity="critical")
    decide_leak(database_url, settings, "Q3", "MQ3", kind="burst", severity="high")
    notifier = make_notifier(database_url, smtp_server)
    notifier.deliver_due()
    found = {a["account_id"]: a for a in alerts_of(database_url)}
    deferred = found["Q1"]
    assert deferred["status"] == "deferred" and deferred["attempts"] == 0
    expected_end = (now + timedelta(hours=2)).replace(microsecond=0)
    assert abs((deferred["next_attempt_at"] - expected_end).total_seconds()) < 2
    assert smtp_server.to("q1@example.com") == []
    assert found["Q2"]["status"] == "sent" and len(smtp_server.to("q2@example.com")) == 1
    assert found["Q3"]["status"] == "sent" and len(smtp_server.to("q3@example.com")) == 1

    # The quiet hours end (here: the customer clears them): the deferred alert goes out.
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE alerts SET next_attempt_at = now() WHERE account_id = 'Q1'")
    assert notifier.deliver_due() == 1
    assert len(smtp_server.to("q1@example.com")) == 0  # still quiet: deferred again
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE alert_settings SET quiet_start = NULL WHERE account_id = 'Q1'")
        conn.execute("UPDATE alerts SET next_attempt_at = now() WHERE account_id = 'Q1'")
    assert notifier.deliver_due() == 1
    assert len(smtp_server.to("q1@example.com")) == 1


def test_opt_outs_are_honoured_when_sending(
    settings: Settings,
    database_url: str,
    smtp_server: SmtpServer,
    twilio_server: TwilioServer,
    make_notifier: Callable[..., Notifier],
) -> None:
    with psycopg.connect(database_url) as conn:
        add_account(conn, "O1", meters=["MO1"], sms_opt_in=True, phone="+15551230011")
        add_account(conn, "O2", meters=["MO2"], sms_opt_in=True)
    first = decide_leak(database_url, settings, "O1", "MO1")
    decide_leak(database_url, settings, "O2", "MO2")
    assert first["channels"] == ["email", "sms"]
    with psycopg.connect(database_url) as conn:  # after the alert, before it is sent
        conn.execute("UPDATE alert_settings SET email_opt_in = false WHERE account_id = 'O1'")
        conn.execute(
            "UPDATE alert_settings SET email_opt_in = false, sms_opt_in = false "
            "WHERE account_id = 'O2'"
        )
    make_notifier(database_url, smtp_server, twilio_server).deliver_due()
    found = {a["account_id"]: a for a in alerts_of(database_url)}
    assert found["O1"]["status"] == "sent" and found["O2"]["status"] == "suppressed"
    assert smtp_server.received == []
    assert [s.to for s in twilio_server.received] == ["+15551230011"]
    assert [d["channel"] for d in deliveries_of(database_url, first["alert_id"])] == ["sms"]


def test_starttls_with_login(
    settings: Settings, database_url: str, tls_smtp_server: tuple[SmtpServer, Path]
) -> None:
    server, ca_file = tls_smtp_server
    channel = EmailChannel(
        "127.0.0.1", server.port, security="starttls", username=SMTP_USER,
        password=SMTP_PASSWORD, ca_file=ca_file, timeout_s=5,
    )  # fmt: skip
    receipt = channel.send(Outgoing(7, "ada@example.com", "Subject", "Body"))
    assert receipt.provider_id == "<meterwatch-alert-7@example.com>"
    assert [m.recipients for m in server.received] == [["ada@example.com"]]

    untrusted = EmailChannel(
        "127.0.0.1", server.port, security="starttls", username=SMTP_USER,
        password=SMTP_PASSWORD, timeout_s=5,
    )  # fmt: skip
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.send(Outgoing(9, "ada@example.com", "Subject", "Body"))
    assert len(server.received) == 1


def test_a_notify_wakes_the_notifier_within_milliseconds(
    settings: Settings,
    database_url: str,
    smtp_server: SmtpServer,
    make_notifier: Callable[..., Notifier],
) -> None:
    with psycopg.connect(database_url) as conn:
        add_account(conn, "N1", meters=["MN1"])
    notifier = make_notifier(database_url, smtp_server, poll_s=30.0)  # polling won't help
    stop = threading.Event()
    thread = threading.Thread(target=notifier.run, args=(stop,))
    thread.start()
    try:
        time.sleep(0.5)  # listening, idle
        committed = time.time()
        decide_leak(database_url, settings, "N1", "MN1")  # commits, with its NOTIFY
        wait_until(lambda: smtp_server.to("n1@example.com"), timeout=5, what="the email")
        latency = smtp_server.to("n1@example.com")[0].at - committed
        assert latency < 1.0, f"delivered {latency:.3f}s after the commit"
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_two_notifiers_share_the_work_and_send_each_alert_once(
    settings: Settings,
    database_url: str,
    smtp_server: SmtpServer,
    make_notifier: Callable[..., Notifier],
) -> None:
    accounts = [f"S{i:02d}" for i in range(24)]
    with psycopg.connect(database_url) as conn:
        for account in accounts:
            add_account(conn, account, meters=[f"M{account}"])
    for account in accounts:
        decide_leak(database_url, settings, account, f"M{account}")
    notifiers = [make_notifier(database_url, smtp_server) for _ in range(2)]
    handled: list[int] = []
    threads = [
        threading.Thread(target=lambda n=n: handled.append(n.deliver_due())) for n in notifiers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(handled) == len(accounts)
    assert sorted(m.recipients[0] for m in smtp_server.received) == sorted(
        f"{a.lower()}@example.com" for a in accounts
    )
    assert {a["status"] for a in alerts_of(database_url)} == {"sent"}
