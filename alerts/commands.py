"""`meterwatch notify`: the alert delivery worker, as a command (registered in meterwatch.cli)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import psycopg
import typer

from meterwatch.settings import MissingSetting, get_settings

log = logging.getLogger(__name__)


def notify(
    once: Annotated[
        bool, typer.Option("--once", help="Deliver the alerts due now, then exit.")
    ] = False,
) -> None:
    """Deliver customer alerts: email over SMTP, SMS through Twilio. Run one or several.

    Starts within milliseconds of a new alert (LISTEN/NOTIFY), retries with backoff, honours
    opt-outs and quiet hours. SIGTERM or Ctrl-C stops it after the alert in hand.
    """
    from alerts.notify import Notifier

    settings = get_settings()
    try:
        url = settings.require_database_url()
    except MissingSetting as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    notifier = Notifier.from_settings(url, settings)
    missing = [name for name, channel in notifier.channels.items() if channel is None]
    if missing:
        log.warning(
            "not configured: %s; alerts for those channels fail and are retried until it is",
            ", ".join(missing),
        )
    if once:
        try:
            handled = notifier.deliver_due()
        except psycopg.OperationalError as exc:
            typer.echo(f"error: cannot reach the database ({exc}); check DATABASE_URL", err=True)
            raise typer.Exit(2) from None
        finally:
            notifier.close()
        typer.echo(f"handled {handled} alert(s)")
        return
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        log.info("stopping after the alert in hand")
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    log.info("notifier %s delivering alerts", notifier.name)
    notifier.run(stop)
