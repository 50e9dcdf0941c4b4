-- meterwatch core schema: customers and accounts, service points, meters and their
-- effective-dated assignments, reads (a TimescaleDB hypertable where the extension exists),
-- the rejected-read table and the exception queue, flags, the alerts outbox, the audit log.
--
-- Migrations are forward-only and applied in order by `meterwatch migrate`, each in its own
-- transaction. Identifiers coming from the utility's systems (meter serials, account numbers,
-- service points) are text: they are labels, not numbers ("00012" is not "12").

CREATE EXTENSION IF NOT EXISTS btree_gist;   -- lets one exclusion constraint mix = and &&

-- TimescaleDB only where the server preloads it: the same schema runs on plain PostgreSQL
-- (the embedded demo database), where reads is an ordinary table.
DO $$
BEGIN
  IF current_setting('shared_preload_libraries', true) ~ '(^|[ ,])timescaledb($|[ ,])'
     AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
    CREATE EXTENSION IF NOT EXISTS timescaledb;
  END IF;
END
$$;

-- Bumped whenever imported reference data changes, so that running dataflows reload it.
CREATE TABLE data_versions (
  name        text PRIMARY KEY,
  version     bigint NOT NULL DEFAULT 0,
  changed_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO data_versions (name) VALUES ('assignments');

CREATE TABLE customers (
  customer_id text PRIMARY KEY,
  name        text NOT NULL,
  email       text,
  phone       text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
  account_id     text PRIMARY KEY,
  customer_id    text NOT NULL REFERENCES customers,
  status         text NOT NULL CHECK (status IN ('active', 'inactive')),
  customer_class text NOT NULL,
  rate_plan      text,
  cycle_day      smallint NOT NULL CHECK (cycle_day BETWEEN 1 AND 31),
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_customer_idx ON accounts (customer_id);

-- A customer's alert thresholds and channels. Bulk defaults come from accounts.csv; customers
-- change them through the API. Thresholds are in the account's unit (gal or kWh).
CREATE TABLE alert_settings (
  account_id               text PRIMARY KEY REFERENCES accounts ON DELETE CASCADE,
  daily_threshold          double precision CHECK (daily_threshold > 0),
  period_threshold         double precision CHECK (period_threshold > 0),
  projected_bill_threshold numeric(12, 2) CHECK (projected_bill_threshold > 0),
  leak_alerts              boolean NOT NULL DEFAULT true,
  sms_opt_in               boolean NOT NULL DEFAULT false,
  email_opt_in             boolean NOT NULL DEFAULT false,
  quiet_start              time,
  quiet_end                time,
  updated_at               timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE service_points (
  service_point_id text PRIMARY KEY,
  created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE meters (
  meter_id   text PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per assignment of a meter to a service point and account, valid over
-- [valid_from, valid_to); valid_to NULL means current. A meter exchange is a new row.
CREATE TABLE meter_assignments (
  assignment_id    bigserial PRIMARY KEY,
  meter_id         text NOT NULL REFERENCES meters,
  service_point_id text NOT NULL REFERENCES service_points,
  account_id       text NOT NULL REFERENCES accounts,
  valid_from       timestamptz NOT NULL,
  valid_to         timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  CHECK (valid_to IS NULL OR valid_to > valid_from),
  UNIQUE (meter_id, service_point_id, account_id, valid_from),
  -- A meter is physically at one service point at a time. (Two accounts on the same service
  -- point at once is a CIS error the audit reports; reads in that overlap go to the exception
  -- queue as ambiguous rather than to either bill.)
  CONSTRAINT meter_on_one_service_point_at_a_time EXCLUDE USING gist (
    meter_id WITH =,
    service_point_id WITH <>,
    tstzrange(valid_from, valid_to, '[)') WITH &&
  )
);
CREATE INDEX meter_assignments_account_idx ON meter_assignments (account_id);
CREATE INDEX meter_assignments_service_point_idx ON meter_assignments (service_point_id);

-- Interval reads that matched an account. `value` is the interval's consumption in the
-- commodity's base unit (gal for water, kWh for electricity), converted from `reported_unit`;
-- negative is reverse flow. For register meters `register` keeps the cumulative reading and
-- `value` is derived from consecutive registers (NULL where it cannot be: the first register
-- of a meter, or a register that arrived after a later one).
CREATE TABLE reads (
  meter_id         text NOT NULL,
  ts               timestamptz NOT NULL,
  value            double precision,
  reported_unit    text NOT NULL CHECK (reported_unit IN ('gal', 'ft3', 'm3', 'kWh')),
  register         double precision,
  quality          text,
  account_id       text NOT NULL,
  service_point_id text NOT NULL,
  received_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (meter_id, ts)
);
CREATE INDEX reads_account_ts_idx ON reads (account_id, ts DESC);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    -- 7-day chunks: a million meters at 15 minutes is ~670 M rows a week, which keeps the
    -- newest chunk's indexes in memory on a modest server (see docs/operations.md).
    PERFORM create_hypertable('reads', 'ts', chunk_time_interval => INTERVAL '7 days');
  END IF;
END
$$;

-- A read that could not be parsed or is implausible: kept with its raw payload and the reason.
-- `delivery` names the delivery (stream entry or file line), so a replay never doubles a row.
CREATE TABLE rejected_reads (
  rejected_id bigserial PRIMARY KEY,
  delivery    text NOT NULL UNIQUE,
  received_at timestamptz NOT NULL DEFAULT now(),
  reason      text NOT NULL,
  raw         text NOT NULL,
  meter_id    text,
  resolved_at timestamptz,
  resolved_by text,
  resolution  text
);
CREATE INDEX rejected_reads_received_idx ON rejected_reads (received_at DESC);

-- The exception queue: well-formed reads that no bill may take as they are.
CREATE TABLE unmatched_reads (
  meter_id      text NOT NULL,
  ts            timestamptz NOT NULL,
  value         double precision,
  reported_unit text NOT NULL,
  register      double precision,
  quality       text,
  reason        text NOT NULL CHECK (reason IN
                  ('unknown_meter', 'retired_meter', 'not_yet_installed', 'ambiguous_assignment')),
  detail        text NOT NULL,
  delivery      text NOT NULL,
  received_at   timestamptz NOT NULL DEFAULT now(),
  resolved_at   timestamptz,
  resolved_by   text,
  resolution    text,
  PRIMARY KEY (meter_id, ts)
);
CREATE INDEX unmatched_reads_open_idx ON unmatched_reads (reason, meter_id) WHERE resolved_at IS NULL;

-- Each further delivery of a (meter_id, ts) already stored: ignored, but counted and kept,
-- since a duplicate with a different value is a head-end problem worth seeing.
CREATE TABLE duplicate_reads (
  delivery    text PRIMARY KEY,
  meter_id    text NOT NULL,
  ts          timestamptz NOT NULL,
  value       double precision,
  received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX duplicate_reads_meter_idx ON duplicate_reads (meter_id, ts);

-- One finding about one meter over a time span. A flag is identified by (meter, kind, start):
-- the dataflow opens it once, extends it while the condition holds and closes it when it clears.
CREATE TABLE flags (
  flag_id       bigserial PRIMARY KEY,
  meter_id      text NOT NULL,
  account_id    text NOT NULL,
  kind          text NOT NULL,
  started_at    timestamptz NOT NULL,
  ended_at      timestamptz,
  detected_at   timestamptz NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  severity      text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
  score         double precision NOT NULL CHECK (score BETWEEN 0 AND 1),
  evidence      text NOT NULL,
  details       jsonb NOT NULL DEFAULT '{}',
  -- how many detector updates this row reflects; a replayed older update never overwrites a newer
  revision      integer NOT NULL DEFAULT 1,
  status        text NOT NULL DEFAULT 'open'
                  CHECK (status IN ('open', 'confirmed', 'dismissed', 'resolved')),
  status_by     text,
  status_reason text,
  status_at     timestamptz,
  UNIQUE (meter_id, kind, started_at),
  CHECK (ended_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX flags_account_idx ON flags (account_id, started_at DESC);
CREATE INDEX flags_review_idx ON flags (status, kind, severity);
CREATE INDEX flags_detected_idx ON flags (detected_at DESC);

-- The alerts outbox: a message to a customer, decided in the same transaction as the data that
-- triggered it; at most one per account, rule and period.
CREATE TABLE alerts (
  alert_id     bigserial PRIMARY KEY,
  account_id   text NOT NULL REFERENCES accounts,
  rule         text NOT NULL CHECK (rule IN ('daily', 'period', 'projected_bill', 'leak', 'burst')),
  period_start date NOT NULL,
  period_end   date NOT NULL,
  detected_at  timestamptz NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  late         boolean NOT NULL DEFAULT false,
  status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'deferred', 'sending', 'sent', 'failed', 'suppressed')),
  channels     text[] NOT NULL DEFAULT '{}',
  message      text NOT NULL,
  flag_id      bigint REFERENCES flags,
  details      jsonb NOT NULL DEFAULT '{}',
  attempts     integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (account_id, rule, period_start)
);
CREATE INDEX alerts_due_idx ON alerts (next_attempt_at) WHERE status IN ('pending', 'deferred');

-- Every delivery attempt of an alert, successful or not.
CREATE TABLE alert_deliveries (
  delivery_id  bigserial PRIMARY KEY,
  alert_id     bigint NOT NULL REFERENCES alerts ON DELETE CASCADE,
  channel      text NOT NULL CHECK (channel IN ('email', 'sms')),
  destination  text NOT NULL,
  provider_id  text,
  status       text NOT NULL CHECK (status IN ('sending', 'sent', 'failed')),
  error        text,
  attempted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_deliveries_alert_idx ON alert_deliveries (alert_id);

-- Every state change made by a person or a command: who, what, why.
CREATE TABLE audit_log (
  audit_id  bigserial PRIMARY KEY,
  at        timestamptz NOT NULL DEFAULT now(),
  actor     text NOT NULL,
  action    text NOT NULL,
  entity    text NOT NULL,
  entity_id text,
  reason    text,
  details   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_entity_idx ON audit_log (entity, entity_id, at DESC);

-- What each dataflow worker has committed, written in the same transaction as its data: the
-- live page's throughput, lag and backlog come from here.
CREATE TABLE pipeline_status (
  source         text PRIMARY KEY,      -- a stream key, a file, or the simulator
  worker         text NOT NULL,
  position       text,                  -- last stream entry id (or file line) committed
  deliveries     bigint NOT NULL DEFAULT 0,  -- deliveries committed since the source began
  latest_read_ts timestamptz,           -- newest read timestamp committed (data time)
  updated_at     timestamptz NOT NULL DEFAULT now()
);
