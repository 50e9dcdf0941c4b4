"""`meterwatch bench throughput`: end-to-end reads per second from a reads file into the
TimescaleDB hypertable, next to a raw COPY of the same rows into the same hypertable.

For each size (`--meters 10000,100000,…`) it generates a CIS export (one account, service point
and meter per customer, every account enrolled in daily and billing-period alerts, as utilities
enrol customers in bulk) and a reads file (hourly reads, time-major as a head-end delivers
them: every meter's read for one hour, then the next hour), and then, in throwaway databases on
the server of DATABASE_URL (created, migrated and dropped):

1. *raw COPY* (the baseline): the same rows, with their account and service point filled in
   beforehand, streamed from a CSV file into `reads` of a fresh database of the same schema with
   one `COPY … FROM STDIN (FORMAT csv)` — what a loader that trusts its input and runs no model
   can do; measured before and after the dataflow runs, and the mean taken, because the
   machine's load may change meanwhile;
2. *dataflow*: `meterwatch import-accounts` of the CIS export into another fresh database, then
   the real `meterwatch run --from-file` flow (`stream.runner.file_flow` + `execute`): parse,
   match, every detector and the flag lifecycle, the sink's COPY into `reads` and the alerts
   hook in the same transaction; with one worker in this process, and as a two-process Bytewax
   cluster on loopback (`--processes 2`, each process `meterwatch run --process-id I
   --addresses …`).

Both write through the rollup trigger of sql/020_access_billing.sql (every stored read also
updates `usage_daily`): it is part of the schema, so the baseline pays it too; it makes each
insert about 2.5 times slower.

Memory: the dataflow's RSS growth over the run (sampled, peak minus start, of every process)
divided by the meters, and the pickled per-meter state (`MeterState.snapshot`) after the run's
reads, median over a sample of meters.
"""

from __future__ import annotations

import os
import pickle
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from bench.cli import bench_app
from meterwatch.db import migrate
from meterwatch.settings import Settings, get_settings

TARGET_RATIO = 0.8
START = datetime(2026, 6, 1, tzinfo=UTC)  # a fixed start: the same files on every run
CLASSES = ("residential",) * 8 + ("multifamily", "commercial")


@dataclass(frozen=True)
class Dataset:
    """A generated CIS export and reads file."""

    directory: Path
    meters: int
    hours: int

    @property
    def accounts(self) -> Path:
        return self.directory / "accounts.csv"

    @property
    def meters_csv(self) -> Path:
        return self.directory / "meters.csv"

    @property
    def reads(self) -> Path:
        return self.directory / "reads.csv"

    @property
    def rows(self) -> int:
        return self.meters * self.hours


def _ids(i: int) -> tuple[str, str, str]:
    return f"A{i:07d}", f"SP{i:07d}", f"M{i:07d}"


def generate(directory: Path, meters: int, hours: int, seed: int = 1) -> Dataset:
    """Write accounts.csv, meters.csv and reads.csv for `meters` meters with `hours` hourly
    reads each: a daily pattern per meter (night quiet, morning and evening peaks) with noise,
    and a few meters with a continuous leak, so the detectors meet what they are for."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with (
        (directory / "accounts.csv").open("w", encoding="utf-8") as accounts,
        (directory / "meters.csv").open("w", encoding="utf-8") as meter_rows,
    ):
        accounts.write(
            "account_id,customer_name,email,phone,status,customer_class,rate_plan,cycle_day,"
            "daily_alert,period_alert,sms_opt_in,email_opt_in\n"
        )
        meter_rows.write("meter_id,service_point_id,account_id,valid_from,valid_to\n")
        for i in range(meters):
            account, point, meter = _ids(i)
            klass = CLASSES[i % len(CLASSES)]
            accounts.write(
                f"{account},Customer {i},c{i}@example.invalid,,active,{klass},R1,"
                f"{1 + i % 28},2000,40000,false,true\n"
            )
            meter_rows.write(f"{meter},{point},{account},2020-01-01T00:00:00Z,\n")
    scale = [rng.uniform(0.5, 3.0) for _ in range(meters)]
    leak = [rng.random() < 0.02 for _ in range(meters)]
    # Gallons per hour by hour of the day, for a household of scale 1.
    shape = [0.1, 0.0, 0.0, 0.0, 0.1, 0.6, 3.0, 5.0, 4.0, 2.0, 1.5, 1.2]
    shape += [1.5, 1.2, 1.0, 1.0, 1.5, 2.5, 4.0, 4.5, 3.5, 2.5, 1.2, 0.4]
    with (directory / "reads.csv").open("w", encoding="utf-8") as reads:
        reads.write("meter_id,ts,value,unit\n")
        for hour in range(hours):
            ts = (START + timedelta(hours=hour + 1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            base = shape[hour % 24]
            lines = []
            for i in range(meters):
                value = base * scale[i] * (0.4 + 1.2 * rng.random())
                if leak[i] and hour >= hours // 2:
                    value += 2.0
                lines.append(f"M{i:07d},{ts},{value:.2f},gal\n")
            reads.writelines(lines)
    return Dataset(directory, meters, hours)


def write_copy_file(dataset: Dataset) -> Path:
    """The rows the dataflow stores, as a CSV in the column order of the baseline's COPY
    (`COPY_COLUMNS`): what a loader that trusts its input hands the database."""
    out = dataset.directory / "copy.csv"
    with dataset.reads.open(encoding="utf-8") as reads, out.open("w", encoding="utf-8") as copy:
        next(reads)
        for line in reads:
            meter, ts, value, unit = line.rstrip("\n").split(",")
            n = meter[1:]
            copy.write(f"{meter},{ts},{value},{unit},A{n},SP{n}\n")
    return out


COPY_COLUMNS = "meter_id, ts, value, reported_unit, account_id, service_point_id"
COPY_BLOCK = 1 << 20  # bytes per write to the COPY stream


def admin_url(given: str | None) -> str:
    settings = get_settings()
    if given:
        return given
    if settings.database_url:
        return psycopg.conninfo.make_conninfo(settings.database_url, dbname="postgres")
    return "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def throwaway_database(admin: str, label: str) -> Iterator[str]:
    """A fresh database with meterwatch's schema (every migration), dropped afterwards."""
    name = f"mwbench_tp_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(admin, dbname=name)
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def raw_copy(url: str, copy_file: Path) -> float:
    """Seconds for one COPY of `copy_file` into `reads` (committed)."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        with (
            copy_file.open("rb") as handle,
            cur.copy(f"COPY reads ({COPY_COLUMNS}) FROM STDIN (FORMAT csv)") as copy,
        ):
            while block := handle.read(COPY_BLOCK):
                copy.write(block)
        conn.commit()
        return time.perf_counter() - started


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """Samples the resident memory of some processes every `every_s` while running."""

    def __init__(self, pids: list[int], every_s: float = 0.2) -> None:
        self.pids = pids
        self.every_s = every_s
        self.start = {pid: _rss_bytes(pid) for pid in pids}
        self.peak = dict(self.start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            for pid in self.pids:
                try:
                    self.peak[pid] = max(self.peak[pid], _rss_bytes(pid))
                except (FileNotFoundError, ProcessLookupError):
                    continue

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def import_accounts(url: str, dataset: Dataset) -> float:
    """`meterwatch import-accounts`, then the alert tracking it queued (what a running dataflow
    applies in its first batch after an import: a one-time cost, minutes at a million accounts,
    that is not the throughput of reads)."""
    from alerts.decide import apply_tracking_changes
    from meterwatch.cis import import_cis

    started = time.perf_counter()
    report = import_cis(url, dataset.accounts, dataset.meters_csv, actor="bench")
    if not report.ok:
        raise RuntimeError(f"the generated CIS export did not import: {report.errors[:3]}")
    with psycopg.connect(url) as conn:
        apply_tracking_changes(conn)
    return time.perf_counter() - started


@dataclass
class FlowRun:
    seconds: float
    rss_growth: int  # bytes, peak minus start, summed over the processes
    counts: dict[str, int]
    table_bytes: int = 0  # on-disk size of the reads hypertable afterwards


def database_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM reads), (SELECT count(*) FROM flags),
                      (SELECT count(*) FROM alerts), (SELECT count(*) FROM usage_daily)"""
        ).fetchone()
    assert row is not None
    return dict(zip(("reads", "flags", "alerts", "usage_daily"), row, strict=True))


def reads_bytes(url: str) -> int:
    """On-disk size of the reads hypertable: every chunk, its indexes and TOAST."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT hypertable_size('reads')").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def run_in_process(url: str, dataset: Dataset) -> FlowRun:
    """The file flow with one worker in this process, as `meterwatch run --from-file` runs it."""
    from stream.runner import execute, file_flow

    settings = Settings(database_url=url)
    flow = file_flow(dataset.reads, settings)
    with PeakRss([os.getpid()]) as rss:
        started = time.perf_counter()
        execute(flow, settings)
        seconds = time.perf_counter() - started
    growth = rss.peak[os.getpid()] - rss.start[os.getpid()]
    return FlowRun(seconds, growth, database_counts(url), reads_bytes(url))


def run_cluster(url: str, dataset: Dataset, processes: int, log_dir: Path) -> FlowRun:
    """The file flow as a Bytewax cluster of `processes` processes on loopback, each one
    `meterwatch run --from-file … --process-id I --addresses …`. Timed from the first start
    to the last exit (process start-up included)."""
    from stream.runner import start_local_file_cluster

    started = time.perf_counter()
    running = start_local_file_cluster(
        dataset.reads, processes, {**os.environ, "DATABASE_URL": url}, log_dir
    )
    with PeakRss([p.pid for p in running]) as rss:
        codes = [p.wait() for p in running]
    seconds = time.perf_counter() - started
    if any(codes):
        tail = (log_dir / "process-0.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"a cluster process failed (exit codes {codes}):\n{tail}")
    growth = sum(rss.peak[pid] - rss.start[pid] for pid in rss.pids)
    return FlowRun(seconds, growth, database_counts(url))


def state_bytes(dataset: Dataset, sample: int = 500) -> float:
    """Median pickled size of a meter's state (`MeterState.snapshot`) after the run's reads,
    over the first `sample` meters."""
    from stream.matching import FOREVER, Assignment, MatchedRead
    from stream.meter import MeterState
    from stream.reads import Reading, parse_delivery
    from stream.sources import iter_file_deliveries

    settings = get_settings()
    states: dict[str, MeterState] = {}
    for delivery in iter_file_deliveries(dataset.reads):
        reading = parse_delivery(delivery)
        if not isinstance(reading, Reading) or int(reading.meter_id[1:]) >= sample:
            continue
        n = reading.meter_id[1:]
        assignment = Assignment(0.0, FOREVER, f"A{n}", f"SP{n}", "residential", True)
        state = states.get(reading.meter_id)
        if state is None:
            state = states[reading.meter_id] = MeterState(
                settings.dedup_window_days * 86_400, tz=settings.tz
            )
        state.process(MatchedRead(reading, assignment))
    sizes = [
        len(pickle.dumps(s.snapshot(), protocol=pickle.HIGHEST_PROTOCOL)) for s in states.values()
    ]
    return statistics.median(sizes) if sizes else 0.0


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"--meters {text!r}: give comma-separated counts, e.g. 10000,100000"
        ) from None
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter("--meters: every size must be at least 1 meter")
    return sizes


@bench_app.command("throughput")
def bench_throughput(
    meters: Annotated[
        str, typer.Option(help="Comma-separated meter counts, one run each (e.g. 10000,1000000).")
    ] = "10000",
    reads: Annotated[
        int,
        typer.Option(
            help="Reads per size (hourly, every meter each hour): a size gets "
            "max(--min-hours, READS / meters) hours."
        ),
    ] = 240_000,
    min_hours: Annotated[int, typer.Option(help="Fewest hours of reads per meter.")] = 2,
    processes: Annotated[
        int, typer.Option(help="Also run as a Bytewax cluster of this many processes (0: don't).")
    ] = 2,
    admin: Annotated[
        str | None,
        typer.Option(
            "--admin-url",
            help="PostgreSQL to create the throwaway databases on (default: DATABASE_URL's "
            "server, else postgresql://postgres@127.0.0.1:5432/postgres).",
        ),
    ] = None,
) -> None:
    """End-to-end reads/s (file → parse → match → detectors → TimescaleDB) next to raw COPY."""
    console = Console(width=150)  # the table is wide; logs are not terminals
    server = admin_url(admin)
    results = []
    with tempfile.TemporaryDirectory(prefix="mwbench-throughput-") as tmp:
        for count in _sizes(meters):
            hours = max(min_hours, reads // count)
            directory = Path(tmp) / str(count)
            console.print(f"[bold]{count:,} meters x {hours} hourly reads[/]: generating")
            dataset = generate(directory, count, hours)
            copy_file = write_copy_file(dataset)
            results.append(_measure(console, server, dataset, copy_file, processes))
            for path in directory.iterdir():
                if path.is_file():
                    path.unlink()
    _report(console, results, processes)


@dataclass
class SizeResult:
    dataset: Dataset
    copy_s: list[float]
    import_s: float
    single: FlowRun
    cluster: FlowRun | None
    state_bytes: float

    @property
    def copy_rate(self) -> float:
        return self.dataset.rows / statistics.mean(self.copy_s)


def _measure(
    console: Console, server: str, dataset: Dataset, copy_file: Path, processes: int
) -> SizeResult:
    copy_s = []
    with throwaway_database(server, "copy") as url:
        copy_s.append(raw_copy(url, copy_file))
    console.print(f"  raw COPY: {dataset.rows / copy_s[0]:,.0f} rows/s")
    with throwaway_database(server, "flow") as url:
        import_s = import_accounts(url, dataset)
        console.print(f"  import-accounts and alert tracking: {import_s:,.1f}s")
        single = run_in_process(url, dataset)
    console.print(
        f"  dataflow, 1 worker: {dataset.rows / single.seconds:,.0f} reads/s {single.counts}"
    )
    cluster = None
    if processes > 1:
        with throwaway_database(server, "cluster") as url:
            import_accounts(url, dataset)
            cluster = run_cluster(url, dataset, processes, dataset.directory)
        console.print(
            f"  dataflow, {processes} processes: {dataset.rows / cluster.seconds:,.0f} reads/s "
            f"{cluster.counts}"
        )
        if cluster.counts != single.counts:
            console.print("  [bold red]the cluster's database differs from one worker's[/]")
    # The baseline again, after the dataflow runs: the machine's load may have changed.
    with throwaway_database(server, "copy") as url:
        copy_s.append(raw_copy(url, copy_file))
    for run in (single, cluster):
        if run is not None and run.counts["reads"] != dataset.rows:
            raise RuntimeError(f"the dataflow stored {run.counts['reads']} of {dataset.rows} reads")
    return SizeResult(dataset, copy_s, import_s, single, cluster, state_bytes(dataset))


def _report(console: Console, results: list[SizeResult], processes: int) -> None:
    table = Table(
        title="End-to-end into the TimescaleDB hypertable, with the usage_daily rollup trigger"
    )
    for column in ("meters", "reads", "raw COPY rows/s", "1 worker reads/s", "ratio"):
        table.add_column(column, justify="right")
    if processes > 1:
        table.add_column(f"{processes} processes reads/s", justify="right")
        table.add_column("ratio", justify="right")
    table.add_column("RSS / meter", justify="right")
    table.add_column("state / meter", justify="right")
    table.add_column("disk / read", justify="right")
    for r in results:
        single_rate = r.dataset.rows / r.single.seconds
        row = [
            f"{r.dataset.meters:,}",
            f"{r.dataset.rows:,}",
            f"{r.copy_rate:,.0f}",
            f"{single_rate:,.0f}",
            f"{single_rate / r.copy_rate:.2f}",
        ]
        if processes > 1 and r.cluster is not None:
            cluster_rate = r.dataset.rows / r.cluster.seconds
            row += [f"{cluster_rate:,.0f}", f"{cluster_rate / r.copy_rate:.2f}"]
        row += [
            f"{r.single.rss_growth / r.dataset.meters:,.0f} B",
            f"{r.state_bytes:,.0f} B",
            f"{r.single.table_bytes / r.dataset.rows:,.0f} B",
        ]
        table.add_row(*row)
    console.print(table)
    console.print(
        f"target: ≥ {TARGET_RATIO} of the raw COPY rate. Raw COPY: one COPY (FORMAT csv) of the "
        "same rows, account ids filled in, into a fresh database of the same schema, measured "
        "before and after the dataflow runs (mean shown). RSS / meter: the one-worker run's "
        "peak resident memory growth over the meters; state / meter: pickled "
        "MeterState.snapshot(), median of 500 meters; disk / read: hypertable_size('reads') "
        "over the reads stored (chunks, indexes, TOAST)."
    )
