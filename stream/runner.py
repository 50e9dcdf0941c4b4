"""Running the dataflow: over a file (exits when every read is committed), over the Redis
Stream (until stopped, with recovery snapshots), or over the simulator (the demo)."""

from __future__ import annotations

import gc
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main
from bytewax.testing import run_main

from alerts.decide import alert_hooks
from meterwatch.settings import Settings
from stream import health
from stream.flow import build_flow, database_sinks
from stream.sources import FileSource, RedisStreamSource, stop_requested

log = logging.getLogger(__name__)


def file_flow(path: Path, settings: Settings) -> Dataflow:
    return build_flow(
        FileSource(path, settings.source_batch_size),
        settings.require_database_url(),
        dedup_window_days=settings.dedup_window_days,
        assignments_refresh_s=settings.assignments_refresh_s,
        flow_id="meterwatch_file",
        tz=settings.tz,
        after_store=alert_hooks(settings.require_database_url(), settings),
    )


def stream_flow(settings: Settings) -> Dataflow:
    """The flow over the Redis Stream; this process reports its health there (stream.health)."""
    health.configure(settings.require_redis_url(), settings.reads_stream)
    return build_flow(
        RedisStreamSource(
            settings.require_redis_url(),
            settings.stream_keys,
            settings.source_batch_size,
            settings.stream_retention_hours,
        ),
        settings.require_database_url(),
        dedup_window_days=settings.dedup_window_days,
        assignments_refresh_s=settings.assignments_refresh_s,
        tz=settings.tz,
        after_store=alert_hooks(settings.require_database_url(), settings),
    )


def recovery_config(settings: Settings, directory: Path | None = None) -> RecoveryConfig:
    """The recovery store for the stream flow, created on first use. Its partition count is
    fixed at creation; one partition is enough for a single machine."""
    directory = directory or settings.data_dir / "recovery"
    if not any(directory.glob("part-*.sqlite3")):
        directory.mkdir(parents=True, exist_ok=True)
        init_db_dir(directory, 1)
        log.info("created dataflow recovery store in %s", directory)
    return RecoveryConfig(str(directory))


def execute(
    flow: Dataflow,
    settings: Settings,
    *,
    workers: int = 1,
    process_id: int | None = None,
    addresses: list[str] | None = None,
    recovery: RecoveryConfig | None = None,
) -> None:
    """Run `flow` to completion in this process (with `workers` threads), or as process
    `process_id` of a cluster whose processes listen on `addresses`."""
    epoch = timedelta(seconds=settings.snapshot_interval_s)
    for sink in database_sinks(flow):
        sink.prepare(process_id or 0, workers)
    _stop_on_signals()
    try:
        with frozen_heap():
            if workers == 1 and process_id is None:
                run_main(flow, epoch_interval=epoch, recovery_config=recovery)
            else:
                cli_main(
                    flow,
                    workers_per_process=workers,
                    process_id=process_id,
                    addresses=addresses,
                    epoch_interval=epoch,
                    recovery_config=recovery,
                )
    except Exception:
        if recovery is not None:
            # The one failure a restart cannot cure: state snapshotted by another version.
            log.error(
                "the dataflow stopped on an error. If it stopped while resuming right after an "
                "upgrade, its recovery store (%s) holds state of the previous version: see "
                "docs/recovery.md, Upgrades",
                recovery.db_dir,
            )
        raise


# How often the heap is frozen, and how often it is thawed for one full collection.
FREEZE_EVERY_S = 1.0
THAW_EVERY_S = 900.0


@contextmanager
def frozen_heap(
    every_s: float = FREEZE_EVERY_S, thaw_every_s: float = THAW_EVERY_S
) -> Iterator[None]:
    """Keep Python's cyclic garbage collector off the dataflow's long-lived objects while the
    flow runs.

    A dataflow process holds every meter's state (about 5 KB and a few dozen objects a meter)
    for as long as it runs. Each full collection walks all of it, and full collections come
    whenever the heap has grown by a quarter, so while meters are being created (the first
    hours of a run, every first read of a meter) the collector took about a third of the Python
    time here (py-spy; `docs/scale.md`). The state holds no reference cycles: what outlives a
    young collection is moved to the permanent generation (`gc.freeze()`) every `every_s`, and
    full collections then walk only what is younger. Cyclic garbage that was frozen while
    still alive (a broken connection's objects, say) is reclaimed by one full collection of the
    thawed heap every `thaw_every_s`; the heap is thawed when the flow ends."""
    stop = threading.Event()

    def freeze() -> None:
        thawed_at = time.monotonic()
        while not stop.wait(every_s):
            if time.monotonic() - thawed_at >= thaw_every_s:
                gc.unfreeze()
                gc.collect()
                thawed_at = time.monotonic()
            else:
                gc.collect(1)  # young cyclic garbage goes now, not into the permanent heap
            gc.freeze()

    thread = threading.Thread(target=freeze, name="meterwatch-gc-freeze", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        gc.unfreeze()


def _stop_on_signals() -> None:
    """SIGINT and SIGTERM end the sources' input instead of killing the process mid-write."""
    if threading.current_thread() is not threading.main_thread():
        return

    def request_stop(signum: int, frame: object) -> None:
        log.info("stopping: finishing the current batch and snapshot")
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)


def free_loopback_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 now (all held open together while chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_local_file_cluster(
    reads: Path, processes: int, env: Mapping[str, str], log_dir: Path
) -> list[subprocess.Popen[bytes]]:
    """Start `meterwatch run --from-file READS` as a Bytewax cluster of `processes` processes
    on loopback ports, process I logging to `log_dir/process-I.log` (what the workers test and
    `bench throughput` run; a cluster across hosts starts each process by hand with its own
    `--process-id` and the same `--addresses`). The caller waits for them."""
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_loopback_ports(processes))
    running = []
    for index in range(processes):
        with (log_dir / f"process-{index}.log").open("wb") as log:
            running.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "meterwatch.cli", "run"),
                        *("--from-file", str(reads)),
                        *("--process-id", str(index), "--addresses", addresses),
                    ],
                    env=dict(env),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return running
