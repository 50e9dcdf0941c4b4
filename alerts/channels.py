"""The two ways an alert reaches a customer: email over SMTP and SMS through Twilio.

A channel sends one message and returns the provider's receipt, or raises `DeliveryError`
(`permanent` when sending again cannot help: an address the server refuses for good). Neither
channel retries by itself; the notifier decides when to try again.

Email: the standard library's `smtplib` and `email` (one connection per message: alerts are
few and a pooled connection the server dropped would fail the next alert). STARTTLS (port 587)
or implicit TLS (465), with login when a user name is set. Every attempt of one alert carries
the same `Message-ID`, so mail systems and clients that deduplicate by it show a message that
was sent twice (see the guarantee in alerts/__init__.py) only once.

SMS: Twilio's own Python library (`twilio` on PyPI), `client.messages.create`; its API address
can be pointed at a proxy or a test server (`TWILIO_API_URL`).
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from meterwatch.settings import Settings

if TYPE_CHECKING:
    from twilio.rest import Client


class DeliveryError(Exception):
    """A failed attempt. `permanent`: sending the same message again cannot succeed."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message of one alert on one channel. `body` is the email text or the SMS."""

    alert_id: int
    to: str
    subject: str
    body: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the provider said: its id for the message and its reply."""

    provider_id: str | None
    response: str


class Channel(Protocol):
    name: str

    def send(self, message: Outgoing) -> Receipt: ...


def message_id(alert_id: int, sender: str) -> str:
    """The Message-ID of every email attempt of one alert: stable, so duplicates are visible."""
    domain = sender.rpartition("@")[2] or "meterwatch.invalid"
    return f"<meterwatch-alert-{alert_id}@{domain}>"


class EmailChannel:
    """Email over SMTP (see the module docstring)."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        security: str = "starttls",
        username: str | None = None,
        password: str | None = None,
        sender: str = "alerts@example.com",
        timeout_s: float = 15.0,
        ca_file: Path | None = None,
    ) -> None:
        if security not in ("starttls", "tls", "none"):
            raise ValueError(f"SMTP security {security!r}: use starttls, tls or none")
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self.password = password
        self.sender = sender
        self.timeout_s = timeout_s
        self.ca_file = ca_file

    @classmethod
    def from_settings(cls, settings: Settings) -> EmailChannel | None:
        if not settings.smtp_host:
            return None
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=(
                settings.smtp_password.get_secret_value() if settings.smtp_password else None
            ),
            sender=settings.smtp_from,
            timeout_s=settings.smtp_timeout_s,
            ca_file=settings.smtp_ca_file,
        )

    def build(self, message: Outgoing) -> EmailMessage:
        # RFC 5322's hard limit: the stdlib's 78-column folding can push a whole subject onto a
        # continuation line, which some clients then show with a leading space.
        email = EmailMessage(policy=SMTP_POLICY.clone(max_line_length=998))
        email["From"] = self.sender
        email["To"] = message.to
        email["Subject"] = message.subject
        email["Date"] = formatdate(localtime=False, usegmt=True)
        email["Message-ID"] = message_id(message.alert_id, self.sender)
        # RFC 3834: an automatic message (no vacation auto-replies back to us).
        email["Auto-Submitted"] = "auto-generated"
        email["X-Meterwatch-Alert"] = str(message.alert_id)
        email.set_content(message.body)
        return email

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def send(self, message: Outgoing) -> Receipt:
        email = self.build(message)
        try:
            smtp: smtplib.SMTP
            if self.security == "tls":
                smtp = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout_s, context=self._context()
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
            with smtp:
                if self.security == "starttls":
                    smtp.starttls(context=self._context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.ehlo_or_helo_if_needed()
                code, reply = smtp.mail(self.sender)
                if code != 250:
                    raise smtplib.SMTPSenderRefused(code, reply, self.sender)
                code, reply = smtp.rcpt(message.to)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({message.to: (code, reply)})
                code, reply = smtp.data(email.as_bytes())
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            raise DeliveryError(
                f"the SMTP server refused {message.to}: {code} {_text(reply)}",
                permanent=500 <= code < 600,
            ) from exc
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            raise DeliveryError(
                f"the SMTP server refused the message: {exc.smtp_code} {_text(exc.smtp_error)}",
                permanent=500 <= exc.smtp_code < 600
                and not isinstance(exc, smtplib.SMTPSenderRefused),
            ) from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"SMTP login as {self.username!r} failed ({exc.smtp_code}): check "
                "SMTP_USERNAME and SMTP_PASSWORD"
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(
                f"the SMTP server {self.host}:{self.port} does not support {exc}: check "
                "SMTP_SECURITY (starttls, tls or none)"
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:  # refused, timed out, TLS, dropped
            raise DeliveryError(
                f"SMTP server {self.host}:{self.port} unavailable: {type(exc).__name__}: {exc}"
            ) from exc
        return Receipt(str(email["Message-ID"]), f"{code} {_text(reply)}")


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


class SmsChannel:
    """SMS through Twilio's Messages API, with Twilio's Python library."""

    name = "sms"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        sender: str,
        *,
        api_url: str | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        self.sender = sender
        self.client: Client = Client(
            account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout_s)
        )
        if api_url:
            self.client.api.base_url = api_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> SmsChannel | None:
        if not (
            settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
        ):
            return None
        return cls(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            settings.twilio_from,
            api_url=settings.twilio_api_url,
            timeout_s=settings.twilio_timeout_s,
        )

    def send(self, message: Outgoing) -> Receipt:
        from requests import RequestException
        from twilio.base.exceptions import TwilioException, TwilioRestException

        sender = (
            {"messaging_service_sid": self.sender}
            if self.sender.startswith("MG")
            else {"from_": self.sender}
        )
        try:
            sent = self.client.messages.create(to=message.to, body=message.body, **sender)
        except TwilioRestException as exc:
            # 4xx: Twilio will never take this request (a bad number, an opted-out recipient);
            # 429 and 5xx: try again later.
            permanent = 400 <= exc.status < 500 and exc.status != 429
            raise DeliveryError(
                f"Twilio refused the SMS to {message.to}: HTTP {exc.status}, code {exc.code}: "
                f"{exc.msg}",
                permanent=permanent,
            ) from exc
        except (TwilioException, RequestException, OSError) as exc:
            raise DeliveryError(f"Twilio unavailable: {type(exc).__name__}: {exc}") from exc
        return Receipt(sent.sid, f"{sent.status}")


def channels_from_settings(settings: Settings) -> dict[str, Channel | None]:
    """The configured channels by name (None: not configured)."""
    return {
        "email": EmailChannel.from_settings(settings),
        "sms": SmsChannel.from_settings(settings),
    }
