"""The notifier: delivers the alerts outbox, several workers side by side.

A notifier LISTENs on `meterwatch_alerts` (the dataflow NOTIFYs it in the transaction that
decided an alert, so delivery starts within milliseconds of the commit) and also looks every
`poll_s` seconds, so a lost notification costs at most that. It claims one due alert at a time
with `FOR UPDATE SKIP LOCKED` (status `sending`, `claimed_by` itself, a lease until
`next_attempt_at`), and for each channel the customer is opted in to and not yet delivered on:

1. records the attempt as `sending` in `alert_deliveries` and commits, before talking to the
   provider;
2. sends (SMTP or Twilio), then records `sent` with the provider's id and reply, or `failed`
   with the error;
3. finishes the alert: `sent` when every channel is delivered; otherwise `pending` again after
   an exponential backoff, and `failed` after `max_attempts` (or a permanent refusal), which
   staff see and can retry (`retry_failed`).

Quiet hours (`alert_settings.quiet_start/quiet_end`, in the utility's time zone) defer an alert
to their end (`deferred`, never dropped), except a critical one (a burst, a critical leak).
Opt-outs are read when sending: a channel the customer left since the alert was decided is not
used, and an alert with no channel left is `suppressed`.

The guarantee (at-least-once at the provider, duplicates only in one window): an alert is
never lost, since it stays in the outbox until a provider accepted it on every channel or staff
gave up on it. A notifier that dies at any point leaves the alert `sending` with its lease; once
the lease has expired another notifier takes it, marks the dead attempt `failed` ("outcome
unknown") and sends again on the channels without a `sent` record. So a message is sent twice
only when the notifier died after the provider accepted it and before `sent` was committed (a
few milliseconds per message) — the same window SMTP itself has when a connection drops after
the final "250 OK" — and every email attempt of one alert carries the same Message-ID, so a
duplicate email is recognisable. The lease (NOTIFY_LEASE_S) must exceed the time one alert can
take (the channels' timeouts), so a live notifier is never overtaken.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import time as clock_time
from typing import Any

import psycopg
from psycopg.rows import class_row

from alerts.channels import Channel, DeliveryError, Outgoing, channels_from_settings
from alerts.decide import FLAG_RULES, NOTIFY_CHANNEL
from meterwatch.db import connect, record_audit
from meterwatch.settings import Settings

log = logging.getLogger(__name__)

_CLAIM_DUE = """
UPDATE alerts a SET status = 'sending', claimed_by = %(me)s,
       next_attempt_at = now() + make_interval(secs => %(lease)s)
  FROM (SELECT alert_id, status FROM alerts
         WHERE status IN ('pending', 'deferred') AND next_attempt_at <= now()
         ORDER BY next_attempt_at LIMIT 1
         FOR UPDATE SKIP LOCKED) due
 WHERE a.alert_id = due.alert_id
RETURNING a.alert_id, a.account_id, a.rule, a.message, a.details, a.attempts,
          due.status AS was
"""

# An alert whose sender's lease expired: the sender died (or hung) mid-attempt.
_CLAIM_ABANDONED = """
UPDATE alerts a SET claimed_by = %(me)s,
       next_attempt_at = now() + make_interval(secs => %(lease)s)
  FROM (SELECT alert_id, status FROM alerts
         WHERE status = 'sending' AND next_attempt_at <= now()
         ORDER BY next_attempt_at LIMIT 1
         FOR UPDATE SKIP LOCKED) due
 WHERE a.alert_id = due.alert_id
RETURNING a.alert_id, a.account_id, a.rule, a.message, a.details, a.attempts,
          due.status AS was
"""

_CONTACT = """
SELECT c.name, c.email, c.phone,
       coalesce(s.email_opt_in, false) AS email_opt_in,
       coalesce(s.sms_opt_in, false) AS sms_opt_in,
       coalesce(s.leak_alerts, true) AS leak_alerts,
       s.quiet_start, s.quiet_end
  FROM accounts a JOIN customers c USING (customer_id)
  LEFT JOIN alert_settings s USING (account_id)
 WHERE a.account_id = %s
"""

_NEXT_DUE = """
SELECT extract(epoch FROM least(
         (SELECT min(next_attempt_at) FROM alerts WHERE status IN ('pending', 'deferred')),
         (SELECT min(next_attempt_at) FROM alerts WHERE status = 'sending')) - now())
"""


@dataclass(slots=True)
class Claimed:
    """An alert this notifier holds; `was` its status before (`sending`: abandoned)."""

    alert_id: int
    account_id: str
    rule: str
    message: str
    details: dict[str, Any]
    attempts: int
    was: str


@dataclass(slots=True)
class Contact:
    name: str
    email: str | None
    phone: str | None
    email_opt_in: bool
    sms_opt_in: bool
    leak_alerts: bool
    quiet_start: clock_time | None
    quiet_end: clock_time | None

    def channels(self) -> list[str]:
        found = []
        if self.email_opt_in and self.email:
            found.append("email")
        if self.sms_opt_in and self.phone:
            found.append("sms")
        return found

    def destination(self, channel: str) -> str:
        destination = self.email if channel == "email" else self.phone
        assert destination is not None
        return destination


def quiet_until(
    now: datetime, start: clock_time | None, end: clock_time | None, tz: tzinfo
) -> datetime | None:
    """When the quiet hours that `now` falls in end (UTC), or None outside quiet hours.
    A window whose start is after its end spans midnight (22:00-07:00).

    >>> from zoneinfo import ZoneInfo
    >>> tz = ZoneInfo("America/Chicago")
    >>> quiet_until(datetime(2026, 3, 4, 5, 0, tzinfo=UTC), clock_time(22), clock_time(7), tz)
    datetime.datetime(2026, 3, 4, 13, 0, tzinfo=datetime.timezone.utc)
    >>> quiet_until(datetime(2026, 3, 4, 15, 0, tzinfo=UTC), clock_time(22), clock_time(7), tz)
    """
    if start is None or end is None or start == end:
        return None
    local = now.astimezone(tz)
    at = local.time().replace(tzinfo=None)
    inside = start <= at < end if start < end else (at >= start or at < end)
    if not inside:
        return None
    day = local.date() if at < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tz).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    tz: tzinfo
    max_attempts: int = 8
    retry_s: float = 30.0
    max_retry_s: float = 3600.0
    lease_s: float = 120.0
    poll_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifierConfig:
        return cls(
            tz=settings.tz,
            max_attempts=settings.notify_max_attempts,
            retry_s=settings.notify_retry_s,
            max_retry_s=settings.notify_max_retry_s,
            lease_s=settings.notify_lease_s,
            poll_s=settings.notify_poll_s,
        )

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt `attempts` + 1."""
        return float(min(self.retry_s * 2 ** max(attempts - 1, 0), self.max_retry_s))


_NOT_CONFIGURED = {
    "email": "email is not configured: set SMTP_HOST (and SMTP_PORT, SMTP_SECURITY, SMTP_FROM)",
    "sms": "SMS is not configured: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM",
}


class Notifier:
    """One delivery worker (see the module docstring). `channels` maps `email` and `sms` to
    a channel, or to None where that channel is not configured."""

    def __init__(
        self,
        database_url: str,
        channels: dict[str, Channel | None],
        config: NotifierConfig,
        name: str | None = None,
    ) -> None:
        self.database_url = database_url
        self.channels = channels
        self.config = config
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._conn: psycopg.Connection | None = None

    @classmethod
    def from_settings(cls, database_url: str, settings: Settings) -> Notifier:
        return cls(
            database_url, channels_from_settings(settings), NotifierConfig.from_settings(settings)
        )

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set: whenever the database NOTIFYs, and every `poll_s`."""
        backoff = 0.5
        listener: psycopg.Connection | None = None
        while not stop.is_set():
            try:
                if listener is None or listener.closed:
                    listener = connect(self.database_url, autocommit=True)
                    listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
                self.deliver_due(stop)
                self._wait(listener, stop)
                backoff = 0.5
            except psycopg.OperationalError as exc:
                log.warning("database unavailable (%s); retrying in %.1fs", exc, backoff)
                self.close()
                if listener is not None:
                    listener.close()
                listener = None
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        if listener is not None:
            listener.close()
        self.close()

    def _wait(self, listener: psycopg.Connection, stop: threading.Event) -> None:
        """Until a NOTIFY, the next alert falls due, `poll_s` passes, or `stop` (checked at
        least every second)."""
        row = self._connection().execute(_NEXT_DUE).fetchone()
        due = row[0] if row and row[0] is not None else None
        wait = self.config.poll_s if due is None else max(0.0, min(float(due), self.config.poll_s))
        deadline = time.monotonic() + wait
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if any(True for _ in listener.notifies(timeout=min(left, 1.0), stop_after=1)):
                # Take the rest that queued meanwhile: one pass of deliver_due serves them all.
                for _ in listener.notifies(timeout=0):
                    pass
                return

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.database_url, autocommit=True)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- delivering -------------------------------------------------------------------------------

    def deliver_due(self, stop: threading.Event | None = None) -> int:
        """Deliver every alert that is due now (abandoned ones included); returns how many
        alerts were handled."""
        handled = 0
        while stop is None or not stop.is_set():
            claimed = self._claim()
            if claimed is None:
                return handled
            self._deliver(claimed)
            handled += 1
        return handled

    def _claim(self) -> Claimed | None:
        conn = self._connection()
        params = {"me": self.name, "lease": self.config.lease_s}
        with conn.cursor(row_factory=class_row(Claimed)) as cur:
            claimed = cur.execute(_CLAIM_DUE, params).fetchone()
            if claimed is None:
                claimed = cur.execute(_CLAIM_ABANDONED, params).fetchone()
        return claimed

    def _deliver(self, alert: Claimed) -> None:
        conn = self._connection()
        if alert.was == "sending":
            # Its notifier stopped mid-attempt: whatever it was sending may or may not have
            # reached the provider. Close those attempts and send those channels again.
            abandoned = conn.execute(
                """UPDATE alert_deliveries SET status = 'failed', finished_at = now(),
                          error = 'the notifier stopped during this attempt; the outcome is '
                                  'unknown, so the message is sent again'
                    WHERE alert_id = %s AND status = 'sending' RETURNING channel""",
                (alert.alert_id,),
            ).fetchall()
            log.warning(
                "alert %d: its notifier stopped while sending (%s); sending again",
                alert.alert_id,
                ", ".join(r[0] for r in abandoned) or "before any channel",
            )
        with conn.cursor(row_factory=class_row(Contact)) as cur:
            contact = cur.execute(_CONTACT, (alert.account_id,)).fetchone()
        delivered = {
            r[0]
            for r in conn.execute(
                "SELECT channel FROM alert_deliveries WHERE alert_id = %s AND status = 'sent'",
                (alert.alert_id,),
            )
        }
        wanted = [] if contact is None else contact.channels()
        if contact is not None and alert.rule in FLAG_RULES and not contact.leak_alerts:
            wanted = []
        to_send = [c for c in wanted if c not in delivered]
        if not to_send:
            if delivered:
                self._finish(alert, "sent", None)
            else:
                self._finish(
                    alert,
                    "suppressed",
                    "not sent: the customer has no alert channel (opted out, or no email "
                    "address or phone number)",
                )
            return
        assert contact is not None
        critical = bool(alert.details.get("critical"))
        until = quiet_until(
            datetime.now(UTC), contact.quiet_start, contact.quiet_end, self.config.tz
        )
        if until is not None and not critical:
            self._defer(alert, until)
            return
        row = conn.execute(
            "UPDATE alerts SET attempts = attempts + 1 WHERE alert_id = %s AND claimed_by = %s "
            "RETURNING attempts",
            (alert.alert_id, self.name),
        ).fetchone()
        if row is None:
            return  # another notifier took it over (our lease ran out)
        attempts = row[0]
        failures: dict[str, DeliveryError] = {}
        for channel in to_send:
            error = self._send(alert, channel, contact)
            if error is not None:
                failures[channel] = error
        if not failures:
            self._finish(alert, "sent", None)
            return
        summary = "; ".join(f"{channel}: {error}" for channel, error in failures.items())
        hopeless = all(error.permanent for error in failures.values())
        if hopeless or attempts >= self.config.max_attempts:
            self._finish(alert, "failed", summary)
        else:
            self._retry_later(alert, self.config.backoff(attempts), summary)

    def _send(self, alert: Claimed, channel_name: str, contact: Contact) -> DeliveryError | None:
        """One attempt on one channel, recorded before and after; returns the error, if any."""
        conn = self._connection()
        destination = contact.destination(channel_name)
        channel = self.channels.get(channel_name)
        if channel is None:
            error = DeliveryError(_NOT_CONFIGURED[channel_name])
            conn.execute(
                """INSERT INTO alert_deliveries
                     (alert_id, channel, destination, status, error, finished_at)
                   VALUES (%s, %s, %s, 'failed', %s, now())""",
                (alert.alert_id, channel_name, destination, str(error)),
            )
            return error
        # Committed before the provider hears of it: a notifier killed from here on leaves a
        # trace that the next one finds (see the module docstring).
        row = conn.execute(
            """INSERT INTO alert_deliveries (alert_id, channel, destination, status)
               VALUES (%s, %s, %s, 'sending') RETURNING delivery_id""",
            (alert.alert_id, channel_name, destination),
        ).fetchone()
        assert row is not None
        delivery_id = row[0]
        if channel_name == "email":
            outgoing = Outgoing(
                alert.alert_id,
                destination,
                str(alert.details.get("email_subject") or alert.message[:78]),
                str(alert.details.get("email_body") or alert.message),
            )
        else:
            outgoing = Outgoing(alert.alert_id, destination, "", alert.message)
        try:
            receipt = channel.send(outgoing)
        except DeliveryError as exc:
            log.warning("alert %d: %s to %s failed: %s", alert.alert_id, channel_name,
                        destination, exc)  # fmt: skip
            conn.execute(
                """UPDATE alert_deliveries SET status = 'failed', error = %s, finished_at = now()
                    WHERE delivery_id = %s""",
                (str(exc), delivery_id),
            )
            return exc
        conn.execute(
            """UPDATE alert_deliveries SET status = 'sent', provider_id = %s, response = %s,
                      finished_at = now()
                WHERE delivery_id = %s""",
            (receipt.provider_id, receipt.response, delivery_id),
        )
        log.info("alert %d: %s to %s accepted (%s)", alert.alert_id, channel_name, destination,
                 receipt.provider_id)  # fmt: skip
        return None

    def _finish(self, alert: Claimed, status: str, error: str | None) -> None:
        self._connection().execute(
            """UPDATE alerts SET status = %s, last_error = %s, claimed_by = NULL,
                      sent_at = CASE WHEN %s = 'sent' THEN now() ELSE sent_at END
                WHERE alert_id = %s AND claimed_by = %s""",
            (status, error, status, alert.alert_id, self.name),
        )
        if status == "failed":
            log.error("alert %d failed for good: %s", alert.alert_id, error)

    def _retry_later(self, alert: Claimed, delay: float, error: str) -> None:
        self._connection().execute(
            """UPDATE alerts SET status = 'pending', last_error = %s, claimed_by = NULL,
                      next_attempt_at = now() + make_interval(secs => %s)
                WHERE alert_id = %s AND claimed_by = %s""",
            (error, delay, alert.alert_id, self.name),
        )

    def _defer(self, alert: Claimed, until: datetime) -> None:
        self._connection().execute(
            """UPDATE alerts SET status = 'deferred', claimed_by = NULL, next_attempt_at = %s
                WHERE alert_id = %s AND claimed_by = %s""",
            (until, alert.alert_id, self.name),
        )
        log.info("alert %d deferred to %s (quiet hours)", alert.alert_id, until.isoformat())


def retry_failed(conn: psycopg.Connection, alert_id: int, actor: str, reason: str) -> None:
    """Send a `failed` alert again from scratch (staff's "retry" button): back to `pending`
    with its attempts reset, recorded in the audit log, in the caller's transaction. Raises
    LookupError for an unknown alert and ValueError for one that has not failed."""
    row = conn.execute(
        "SELECT status, attempts, last_error FROM alerts WHERE alert_id = %s FOR UPDATE",
        (alert_id,),
    ).fetchone()
    if row is None:
        raise LookupError(f"alert {alert_id} does not exist")
    status, attempts, last_error = row
    if status != "failed":
        raise ValueError(
            f"alert {alert_id} is {status}, not failed: only a failed alert can be retried"
        )
    conn.execute(
        """UPDATE alerts SET status = 'pending', attempts = 0, next_attempt_at = now(),
                  claimed_by = NULL, last_error = NULL
            WHERE alert_id = %s""",
        (alert_id,),
    )
    record_audit(
        conn,
        actor=actor,
        action="retry_alert",
        entity="alert",
        entity_id=str(alert_id),
        reason=reason,
        details={"attempts": attempts, "last_error": last_error},
    )
    conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
