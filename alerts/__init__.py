"""Customer alerts: a leak notice or a crossed usage threshold, heard within a second, once.

How an alert comes about and reaches the customer:

- `alerts.decide`: the dataflow's sink calls `AlertDecider` in the transaction that stores each
  batch of reads (`stream.sink.AfterStore`). It keeps exact usage totals per account (all its
  meters; each (meter_id, ts) once) per local day and billing period, compares them with the
  customer's daily, period and projected-bill thresholds, turns new `leak`/`burst` flags into
  leak notices, and writes each alert into the outbox (`alerts`) in that same transaction. The
  outbox's UNIQUE (account_id, rule, period_start) makes every rule fire at most once per
  period (a day for `daily`, `leak` and `burst`; the billing period for `period` and
  `projected_bill`), whatever replays, duplicates and restarts happen. A read that arrives after
  its period is over still fires, marked `late`.
- `alerts.notify`: `meterwatch notify` workers (any number) deliver the outbox: LISTEN/NOTIFY
  wakes them, `FOR UPDATE SKIP LOCKED` shares the work, every attempt is recorded in
  `alert_deliveries`, failures are retried with exponential backoff and end `failed` (staff
  retry them with `retry_failed`), opt-outs and quiet hours are honoured.
- `alerts.channels`: email over SMTP (stdlib) and SMS through Twilio.
- `alerts.messages`: the words: numbers, what to check, the usage page; one SMS segment.
- `alerts.periods`, `alerts.pricing`: local days, billing periods, and what usage costs (the
  projected bill; the billing package's rate plans plug in where they are known).

Delivery guarantee: at least once at the SMTP/Twilio boundary. An alert is never lost; a
message is sent twice only if a notifier dies between the provider's acceptance and the commit
of its `sent` record (see `alerts.notify`), and duplicate emails share one Message-ID.
"""
