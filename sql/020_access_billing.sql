-- Access, billing review and self-service: API users and their tokens, rate plans, the contact
-- log, customers' declared expected use, billing-cycle closes, and the indexes the account view
-- and usage history need.
--
-- Forward-only; 001 is never edited (it is applied everywhere already).

-- People and machines that use the API. A customer sees only the accounts of `customer_id`;
-- staff roles see everything their role allows (api/deps.py has the matrix). Passwords are
-- argon2 hashes; a machine client (role `headend`) usually has no password, only API tokens.
CREATE TABLE api_users (
  user_id       bigserial PRIMARY KEY,
  username      text NOT NULL UNIQUE CHECK (username = lower(username) AND length(username) BETWEEN 1 AND 254),
  role          text NOT NULL CHECK (role IN ('customer', 'operator', 'billing', 'admin', 'headend')),
  customer_id   text REFERENCES customers,
  password_hash text,
  active        boolean NOT NULL DEFAULT true,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  -- a customer login belongs to exactly one customer; staff logins to none
  CHECK ((role = 'customer') = (customer_id IS NOT NULL))
);
CREATE INDEX api_users_customer_idx ON api_users (customer_id);

-- Long-lived bearer tokens for machine clients (the dashboard, a head-end adapter). Only a
-- SHA-256 of the token is kept: the token itself is shown once, when it is created.
CREATE TABLE api_tokens (
  token_id     bigserial PRIMARY KEY,
  user_id      bigint NOT NULL REFERENCES api_users ON DELETE CASCADE,
  name         text NOT NULL,
  token_sha256 text NOT NULL UNIQUE,
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz,
  revoked_at   timestamptz,
  UNIQUE (user_id, name)
);

-- Rate plans: a fixed charge per billing period and tiered block rates on the period's usage.
-- `accounts.rate_plan` names a plan here (a name the CIS uses; no foreign key, because the CIS
-- export may arrive before the rates do: a bill preview says so instead).
CREATE TABLE rate_plans (
  rate_plan    text PRIMARY KEY,
  description  text NOT NULL DEFAULT '',
  currency     text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  fixed_charge numeric(12, 2) NOT NULL CHECK (fixed_charge >= 0),
  unit         text NOT NULL CHECK (unit IN ('gal', 'kWh')),
  updated_at   timestamptz NOT NULL DEFAULT now()
);

-- One block of a plan: usage in (tier_from, tier_to] of the period is priced at price_per_unit.
-- tier_to NULL is the open-ended last block.
CREATE TABLE rate_tiers (
  rate_plan      text NOT NULL REFERENCES rate_plans ON DELETE CASCADE,
  tier_from      numeric(14, 3) NOT NULL CHECK (tier_from >= 0),
  tier_to        numeric(14, 3) CHECK (tier_to IS NULL OR tier_to > tier_from),
  price_per_unit numeric(12, 6) NOT NULL CHECK (price_per_unit >= 0),
  PRIMARY KEY (rate_plan, tier_from)
);

-- Every conversation with the customer about an account, as staff record it.
CREATE TABLE contact_log (
  contact_id bigserial PRIMARY KEY,
  account_id text NOT NULL REFERENCES accounts,
  at         timestamptz NOT NULL DEFAULT now(),
  actor      text NOT NULL,
  channel    text NOT NULL CHECK (channel IN ('phone', 'email', 'sms', 'letter', 'visit', 'other')),
  summary    text NOT NULL
);
CREATE INDEX contact_log_account_idx ON contact_log (account_id, at DESC);

-- A flag dismissed because the use was expected (the customer's evaporative cooler): the
-- detectors learn from these (they read them; this migration only records them).
ALTER TABLE flags ADD COLUMN expected_use boolean NOT NULL DEFAULT false;

-- Use a customer (or staff on their behalf) declared up front: "a pool fill on Saturdays",
-- "an evaporative cooler, about 10 gal/h in summer afternoons". `meter_id` NULL means any
-- meter of the account; `rate_gph` is the expected flow (gal per hour, or kWh per hour).
CREATE TABLE declared_usage (
  declaration_id bigserial PRIMARY KEY,
  account_id     text NOT NULL REFERENCES accounts,
  meter_id       text,
  kind           text NOT NULL CHECK (kind IN ('irrigation', 'pool', 'cooling', 'livestock',
                                               'business', 'construction', 'other')),
  description    text NOT NULL,
  rate_gph       double precision CHECK (rate_gph > 0),
  schedule       text,
  flag_id        bigint REFERENCES flags,
  declared_by    text NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX declared_usage_account_idx ON declared_usage (account_id, created_at DESC);

-- A billing cycle is the accounts sharing a cycle_day over one period [period_start,
-- period_end) in the utility's time zone. Closing it is recorded once.
CREATE TABLE billing_cycle_closes (
  cycle_day      smallint NOT NULL CHECK (cycle_day BETWEEN 1 AND 31),
  period_start   date NOT NULL,
  period_end     date NOT NULL CHECK (period_end > period_start),
  closed_at      timestamptz NOT NULL DEFAULT now(),
  closed_by      text NOT NULL,
  overridden     boolean NOT NULL DEFAULT false,
  reason         text,
  blocking_flags integer NOT NULL DEFAULT 0,
  PRIMARY KEY (cycle_day, period_start)
);

-- The account view reads an account's trail by entity id (account, flag, contact, ...).
CREATE INDEX audit_log_entity_id_idx ON audit_log (entity_id, at DESC);
-- Flag review filters by account and the queues by meter.
CREATE INDEX flags_open_idx ON flags (account_id, started_at) WHERE status IN ('open', 'confirmed');
CREATE INDEX alerts_account_idx ON alerts (account_id, created_at DESC);

-- Usage history and bill previews sum an account's reads over months: a covering index lets
-- PostgreSQL answer from the index alone (no heap visit per read). It replaces 001's
-- (account_id, ts DESC) index, which it contains, so the dataflow maintains no more indexes
-- than before.
CREATE INDEX reads_account_ts_cover_idx ON reads (account_id, ts DESC) INCLUDE (value, quality, reported_unit);
DROP INDEX reads_account_ts_idx;

-- A daily rollup of reads per account and unit, so that a customer's 24 months of daily (or
-- monthly) usage is ~730 rows instead of ~17,000 reads spread over a hundred chunks. Days are
-- the utility's local days: the trigger function below carries the time zone as a literal,
-- which the API rewrites (and rebuilds the rollup with) when UTILITY_TZ differs from
-- `usage_rollup.tz` (api/usage.py, `ensure_rollup`). A read counts in the day its interval
-- starts in (ts is the end of the interval). Maintained by row triggers on reads: an insert
-- adds, an update moves, a delete removes (the dataflow only inserts; a conflicting insert
-- that does nothing fires nothing).
CREATE TABLE usage_daily (
  account_id text NOT NULL,
  unit       text NOT NULL CHECK (unit IN ('gal', 'kWh')),
  day        date NOT NULL,
  usage      double precision NOT NULL DEFAULT 0,  -- reads without a value add 0
  reads      integer NOT NULL DEFAULT 0,
  estimated  integer NOT NULL DEFAULT 0,
  PRIMARY KEY (account_id, unit, day)
);

CREATE TABLE usage_rollup (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  tz       text NOT NULL,
  built_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO usage_rollup (tz) VALUES ('UTC');

CREATE FUNCTION usage_daily_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    UPDATE usage_daily
       SET usage = usage - coalesce(OLD.value, 0), reads = reads - 1,
           estimated = estimated
             - (upper(coalesce(OLD.quality, '')) IN ('E', 'EST', 'ESTIMATED'))::int
     WHERE account_id = OLD.account_id
       AND unit = CASE WHEN OLD.reported_unit = 'kWh' THEN 'kWh' ELSE 'gal' END
       AND day = ((OLD.ts - interval '1 microsecond') AT TIME ZONE 'UTC')::date;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO usage_daily AS u (account_id, unit, day, usage, reads, estimated)
    VALUES (NEW.account_id, CASE WHEN NEW.reported_unit = 'kWh' THEN 'kWh' ELSE 'gal' END,
            ((NEW.ts - interval '1 microsecond') AT TIME ZONE 'UTC')::date,
            coalesce(NEW.value, 0), 1,
            (upper(coalesce(NEW.quality, '')) IN ('E', 'EST', 'ESTIMATED'))::int)
    ON CONFLICT (account_id, unit, day) DO UPDATE
       SET usage = u.usage + EXCLUDED.usage, reads = u.reads + 1,
           estimated = u.estimated + EXCLUDED.estimated;
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER reads_usage_daily AFTER INSERT OR UPDATE OR DELETE ON reads
  FOR EACH ROW EXECUTE FUNCTION usage_daily_apply();

-- reads stored before this migration
INSERT INTO usage_daily (account_id, unit, day, usage, reads, estimated)
SELECT account_id, CASE WHEN reported_unit = 'kWh' THEN 'kWh' ELSE 'gal' END,
       ((ts - interval '1 microsecond') AT TIME ZONE 'UTC')::date,
       coalesce(sum(value), 0), count(*),
       count(*) FILTER (WHERE upper(coalesce(quality, '')) IN ('E', 'EST', 'ESTIMATED'))
  FROM reads GROUP BY 1, 2, 3;
