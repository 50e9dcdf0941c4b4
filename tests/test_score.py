"""`meterwatch score IN.csv OUT.csv`: one series or many, `ts` or `timestamp`, one output row
per input row with `anomaly_score` in [0, 1] and the flag kind."""

from __future__ import annotations

import csv
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from typer.testing import CliRunner

from meterwatch.cli import app

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


def household_rows(days: int, seed: int, *, leak_from_day: int | None = None) -> list[float]:
    """Hourly use of a household (quiet nights, busy mornings and evenings), optionally with a
    continuous 2 gal/h leak from `leak_from_day`."""
    rng = random.Random(seed)
    values = []
    for h in range(days * 24):
        hour = h % 24
        use = 0.0 if hour < 5 else rng.choice([0.0, 0.0, 2.0, 6.0, 15.0])
        if 6 <= hour <= 8 or 18 <= hour <= 21:
            use += rng.uniform(5, 25)
        if leak_from_day is not None and h >= leak_from_day * 24:
            use += 2.0
        values.append(round(use, 2))
    return values


def ts_text(h: int, offset_hours: int = 0) -> str:
    """The end of hour `h` of the series, written with the given offset (0: 'Z')."""
    moment = START + timedelta(hours=h + 1)
    if offset_hours == 0:
        return moment.isoformat().replace("+00:00", "Z")
    return moment.astimezone(timezone(timedelta(hours=offset_hours))).isoformat()


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def score(tmp_path: Path, header: list[str], rows: list[list[object]]) -> list[dict[str, str]]:
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(src, header, rows)
    result = CliRunner().invoke(app, ["score", str(src), str(dst)])
    assert result.exit_code == 0, result.output
    with dst.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_one_series_without_meter_id_and_a_timestamp_header(tmp_path: Path) -> None:
    values = household_rows(16, seed=3, leak_from_day=10)
    rows = [[ts_text(h, -5), v] for h, v in enumerate(values)]
    scored = score(tmp_path, ["timestamp", "value"], rows)

    assert len(scored) == len(rows)
    assert [r["timestamp"] for r in scored] == [r[0] for r in rows]  # input order, as given
    assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r in scored)
    before, after = scored[: 10 * 24], scored[10 * 24 :]
    assert not any(r["flag_kind"] == "leak" for r in before)
    assert sum(r["flag_kind"] == "leak" for r in after) > len(after) / 2
    # the leak's rows score higher than the quiet history's
    quiet = max(float(r["anomaly_score"]) for r in before[7 * 24 :])
    assert max(float(r["anomaly_score"]) for r in after) > quiet


def test_many_meters_interleaved_keep_their_own_findings(tmp_path: Path) -> None:
    meters = {f"M{n}": household_rows(12, seed=n) for n in range(6)}
    meters["M2"][9 * 24 + 14] = 5_000.0  # one impossible hour: a spike on M2 only
    rows = [
        [meter, ts_text(h), values[h]]
        for h in range(12 * 24)
        for meter, values in sorted(meters.items(), reverse=True)
    ]
    random.Random(1).shuffle(rows)  # out of order across and within meters
    scored = score(tmp_path, ["meter_id", "ts", "value"], rows)

    assert [(r["meter_id"], r["ts"], r["value"]) for r in scored] == [
        (m, t, str(v)) for m, t, v in rows
    ]
    spikes = [(r["meter_id"], r["ts"]) for r in scored if r["flag_kind"] == "spike"]
    assert spikes == [("M2", ts_text(9 * 24 + 14))]
    assert {r["flag_kind"] for r in scored if r["meter_id"] != "M2"} <= {"", "usage_anomaly"}


def test_the_score_uses_no_later_rows(tmp_path: Path) -> None:
    values = household_rows(14, seed=5, leak_from_day=9)
    rows = [[ts_text(h), v] for h, v in enumerate(values)]
    whole = score(tmp_path, ["ts", "value"], rows)
    prefix = score(tmp_path, ["ts", "value"], rows[: 10 * 24])
    assert [r["anomaly_score"] for r in prefix] == [r["anomaly_score"] for r in whole[: 10 * 24]]


def test_bad_input_names_the_row_and_the_fix(tmp_path: Path) -> None:
    runner = CliRunner()
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"

    write_csv(src, ["time", "value"], [["2026-01-01T00:00:00Z", 1]])
    result = runner.invoke(app, ["score", str(src), str(dst)])
    assert result.exit_code == 2
    assert "'ts' (or 'timestamp')" in result.output

    write_csv(src, ["ts", "value"], [["2026-01-01T00:00:00Z", 1], ["yesterday", 2]])
    result = runner.invoke(app, ["score", str(src), str(dst)])
    assert result.exit_code == 2
    assert "row 3" in result.output and "ISO 8601" in result.output

    write_csv(src, ["ts", "value"], [["2026-01-01T00:00:00Z", "lots"]])
    result = runner.invoke(app, ["score", str(src), str(dst)])
    assert result.exit_code == 2
    assert "row 2" in result.output and "not a number" in result.output


def test_a_register_series_is_turned_into_consumption_and_its_wrap_is_a_rollover(
    tmp_path: Path,
) -> None:
    deltas = household_rows(12, seed=7)
    register, rows = 9_000.0, []
    for h, delta in enumerate(deltas):
        register = (register + delta) % 10_000  # a four-digit dial wraps
        rows.append([ts_text(h), round(register, 2), "register"])
    scored = score(tmp_path, ["ts", "value", "kind"], rows)

    kinds = [r["flag_kind"] for r in scored]
    assert "rollover" in kinds
    assert not {"spike", "reverse_flow", "burst"} & set(kinds)
    assert float(scored[0]["anomaly_score"]) == 0.0  # the first register has no interval
