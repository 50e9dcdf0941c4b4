"""Billing arithmetic: billing periods from an account's cycle day, tiered block rates, and the
bill preview staff see before a cycle closes.

- `billing.periods`: pure functions for billing periods (dates in the utility's time zone).
- `billing.tiers`: pure functions pricing a usage on a rate plan, line by line.
- `billing.rates`: rate plans in the database, `price_usage` for other modules (projected-bill
  alerts), and the `meterwatch import-rates` CSV import.
- `billing.preview`: an account's usage over a billing period and its priced preview.
"""
