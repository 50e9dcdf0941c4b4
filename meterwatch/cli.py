"""The `meterwatch` command line: one entry point for every routine task.

Each command is a thin shell over a function in its module; errors a person can fix are
printed as one line naming the thing and the fix, with exit status 2.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from alerts.commands import notify
from api.commands import import_rates_command, users_app
from bench.cli import bench_app
from meterwatch.settings import MissingSetting, Settings, get_settings

app = typer.Typer(
    help="meterwatch: streaming leak and meter-error detection for water and electric utilities.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()


class UserError(Exception):
    """An error the person running the command can fix; its message says how."""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail.")] = False,
) -> None:
    _setup_logging(verbose)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the failures a person can fix into one clear line and exit status 2."""
    try:
        yield
    except (UserError, MissingSetting, ValueError, FileNotFoundError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        console.print(
            f"[bold red]error:[/] cannot reach the database ({first}); check DATABASE_URL "
            "and that PostgreSQL is running"
        )
        raise typer.Exit(2) from None


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _settings() -> Settings:
    return get_settings()


# --- database ---------------------------------------------------------------------------------


@app.command()
def migrate() -> None:
    """Apply the numbered migrations in sql/ to DATABASE_URL (idempotent)."""
    from meterwatch.db import migrate as apply

    with _errors():
        applied = apply(_settings().require_database_url(), retries=10)
    out.print(
        f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else "")
    )


@app.command("import-accounts")
def import_accounts(
    accounts_csv: Annotated[Path, typer.Argument(help="accounts.csv from the CIS export.")],
    meters_csv: Annotated[Path, typer.Argument(help="meters.csv from the CIS export.")],
) -> None:
    """Load or update the CIS export (idempotent). Nothing is written unless every row is valid."""
    from meterwatch.cis import import_cis

    with _errors():
        url = _settings().require_database_url()
        with _progress() as progress:
            task = progress.add_task("importing", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            report = import_cis(url, accounts_csv, meters_csv, actor="cli", progress=advance)
    report.render(out)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def audit(
    accounts_csv: Annotated[
        Path | None,
        typer.Option("--accounts", help="Audit this accounts.csv instead of the database."),
    ] = None,
    meters_csv: Annotated[
        Path | None, typer.Option("--meters", help="Audit this meters.csv instead of the database.")
    ] = None,
    silent_days: Annotated[
        int, typer.Option(help="A meter with no read for this many days is silent.")
    ] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """The pre-go-live audit of meter and service-point records.

    Exits with status 1 when something would block billing.
    """
    from meterwatch.audit import audit_files, run_audit
    from meterwatch.db import connect

    with _errors():
        if (accounts_csv is None) != (meters_csv is None):
            raise UserError("give both --accounts and --meters to audit files, or neither")
        if accounts_csv is not None and meters_csv is not None:
            report = audit_files(accounts_csv, meters_csv)
        else:
            with connect(_settings().require_database_url()) as conn:
                report = run_audit(conn, silent_days=silent_days)
    if as_json:
        out.print_json(json.dumps(report.to_dict(), default=str))
    else:
        report.render(out)
    if report.blocking:
        raise typer.Exit(1)


# --- the dataflow -----------------------------------------------------------------------------


@app.command()
def run(
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            help="Run over this reads file (CSV or JSON lines); exit once all is committed.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker threads in this process.")] = 1,
    process_id: Annotated[
        int | None, typer.Option(help="This process's index in a multi-process cluster.")
    ] = None,
    addresses: Annotated[
        str | None, typer.Option(help='Every cluster process as "host:port;host:port".')
    ] = None,
    recovery_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the stream flow keeps its recovery snapshots (default: DATA_DIR/recovery)."
        ),
    ] = None,
) -> None:
    """Run the dataflow: consume the Redis Stream (until stopped), or a file with --from-file."""
    from stream.runner import execute, file_flow, recovery_config, stream_flow

    with _errors():
        settings = _settings()
        address_list = addresses.split(";") if addresses else None
        if (process_id is None) != (address_list is None):
            raise UserError("--process-id and --addresses go together")
        if from_file is not None:
            flow = file_flow(from_file, settings)
            execute(flow, settings, workers=workers, process_id=process_id, addresses=address_list)
            _print_stats(settings)
            return
        flow = stream_flow(settings)
        console.print(
            f"consuming {', '.join(settings.stream_keys)} at {settings.redis_url}; Ctrl-C stops"
        )
        try:
            execute(
                flow,
                settings,
                workers=workers,
                process_id=process_id,
                addresses=address_list,
                recovery=recovery_config(settings, recovery_dir),
            )
        except KeyboardInterrupt:
            console.print("stopped; the next run resumes from the last snapshot")


def _print_stats(settings: Settings) -> None:
    from meterwatch.db import connect
    from meterwatch.reports import stats as read_stats

    with connect(settings.require_database_url()) as conn:
        counts = read_stats(conn)
    out.print_json(json.dumps(counts, default=str))


@app.command()
def replay(
    reads_file: Annotated[Path, typer.Argument(help="A reads file (CSV or JSON lines).")],
) -> None:
    """Publish a reads file onto the Redis Stream, as a head-end adapter does."""
    import redis

    from stream.publish import publish_file

    with _errors():
        settings = _settings()
        client = redis.Redis.from_url(settings.require_redis_url(), decode_responses=True)
        total = _count_rows(reads_file)
        with _progress() as progress:
            task = progress.add_task(f"publishing {reads_file.name}", total=total)
            published = publish_file(
                client,
                settings.stream_keys,
                reads_file,
                progress=lambda n: progress.advance(task, n),
            )
    out.print(f"published {published} read(s) onto {', '.join(settings.stream_keys)}")


def _count_rows(path: Path) -> int | None:
    if not path.is_file():
        raise FileNotFoundError(f"reads file {path} does not exist")
    with path.open("rb") as handle:
        lines = sum(1 for _ in handle)
    return max(lines - (0 if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else 1), 0)


# --- reporting --------------------------------------------------------------------------------


@app.command()
def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Counts: reads stored, rejected, unmatched, duplicates ignored; flags; alerts."""
    from meterwatch.db import connect
    from meterwatch.reports import render_stats
    from meterwatch.reports import stats as read_stats

    with _errors(), connect(_settings().require_database_url()) as conn:
        counts = read_stats(conn)
    if as_json:
        print(json.dumps(counts, default=str, indent=2))
    else:
        render_stats(counts, out)


class ExportWhat(StrEnum):
    flags = "flags"
    alerts = "alerts"
    rejected = "rejected"


@app.command()
def export(
    what: Annotated[ExportWhat, typer.Argument(help="flags, alerts or rejected.")],
    out_file: Annotated[Path, typer.Option("--out", help="The CSV file to write.")],
) -> None:
    """Write flags, alerts or rejected reads to a CSV for the billing team's spreadsheet."""
    from meterwatch import reports
    from meterwatch.db import connect

    writers: dict[ExportWhat, Callable[..., int]] = {
        ExportWhat.flags: reports.export_flags,
        ExportWhat.alerts: reports.export_alerts,
        ExportWhat.rejected: reports.export_rejected,
    }
    with (
        _errors(),
        connect(_settings().require_database_url()) as conn,
        out_file.open("w", newline="", encoding="utf-8") as handle,
    ):
        rows = writers[what](conn, handle, tz=_settings().tz)
    out.print(f"wrote {rows} {what.value} row(s) to {out_file}")


@app.command()
def score(
    in_csv: Annotated[
        Path, typer.Argument(help="CSV with ts (or timestamp), value and optional meter_id.")
    ],
    out_csv: Annotated[Path, typer.Argument(help="Where to write the rows with their scores.")],
    customer_class: Annotated[
        str, typer.Option(help="Customer class whose thresholds apply (detectors/config.py).")
    ] = "residential",
) -> None:
    """Score a reads file offline with the per-meter models: every row gets anomaly_score in
    [0, 1] (known when the row was read) and flag_kind (the flag covering it, if any).

    Without a meter_id column the file is one series; a timestamp without an offset is UTC.
    """
    from stream.offline import score_file

    with _errors():
        rows = score_file(in_csv, out_csv, customer_class=customer_class)
    out.print(f"scored {rows} row(s) into {out_csv}")


# --- simulation and the demo ------------------------------------------------------------------


@app.command()
def simulate(
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", help="Directory for accounts.csv, meters.csv, reads.csv and answer_key.json."
        ),
    ],
    meters: Annotated[int, typer.Option(min=1, help="How many meters.")] = 200,
    days: Annotated[float, typer.Option(min=1, help="How many days of reads.")] = 30,
    interval_minutes: Annotated[int, typer.Option(help="Read interval: 15 or 60 minutes.")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same files.")] = 7,
) -> None:
    """Realistic reads for N meters over D days, with labelled anomalies and an answer key."""
    from simulator import SimulationConfig, write_scenario

    with _errors():
        if interval_minutes not in (15, 60):
            raise UserError("--interval-minutes must be 15 or 60")
        config = SimulationConfig(
            meters=meters, days=days, interval_minutes=interval_minutes, seed=seed
        )
        with _progress() as progress:
            task = progress.add_task("simulating", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            paths = write_scenario(out_dir, config, progress=advance)
    for name, path in paths.items():
        out.print(f"{name}: {path}")


@app.command()
def demo() -> None:
    """The whole product on an embedded default, nothing to install.

    Database, simulated head-end, dataflow, API and dashboard; Ctrl-C stops everything.
    """
    from meterwatch.demo import run_demo

    with _errors():
        run_demo(_settings(), console)


@app.command(hidden=True)
def flow_demo(
    start: Annotated[float, typer.Option(help="Simulated start, epoch seconds.")],
) -> None:
    """The demo's dataflow, fed in process by the simulator (started by `meterwatch demo`)."""
    from meterwatch.demo import run_demo_flow

    with _errors():
        run_demo_flow(_settings(), start)


# --- benchmarks -----------------------------------------------------------------------------

app.add_typer(bench_app, name="bench")

# --- access and billing (api/commands.py) ----------------------------------------------------

app.add_typer(users_app, name="users")
app.command("import-rates")(import_rates_command)


# --- servers ----------------------------------------------------------------------------------


@app.command()
def api() -> None:
    """Serve the HTTP API (API_HOST:API_PORT)."""
    from api.main import serve

    with _errors():
        serve(_settings())


app.command()(notify)


@app.command()
def dashboard() -> None:
    """Serve the live dashboard (DASHBOARD_HOST:DASHBOARD_PORT)."""
    from dashboard.app import serve

    with _errors():
        serve(_settings())


if __name__ == "__main__":
    app()
