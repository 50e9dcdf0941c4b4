"""`meterwatch bench …`: one sub-command per benchmark module.

A benchmark module defines its command with `@bench_app.command("name")` and is listed in
`BENCHMARKS`, so that `bench all` can run every one in turn with its defaults.
"""

from __future__ import annotations

import importlib

import typer

bench_app = typer.Typer(
    help="Benchmarks: figures printed next to a baseline measured in the same run.",
    no_args_is_help=True,
)

# Modules under bench/ that register a command on bench_app, in the order `all` runs them.
BENCHMARKS: list[str] = ["detect", "alerts", "api", "throughput", "recovery", "dashboard"]


def _load() -> None:
    for name in BENCHMARKS:
        importlib.import_module(f"bench.{name}")


@bench_app.command("all")
def run_all() -> None:
    """Every benchmark, with its default size."""
    for command in bench_app.registered_commands:
        if command.name == "all" or command.callback is None:
            continue
        typer.echo(f"\n=== bench {command.name} ===")
        command.callback()


_load()
