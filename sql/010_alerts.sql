-- Customer alerts: the usage the alert rules watch, which accounts they watch, and what the
-- notifier needs to deliver the outbox (`alerts`, 001) exactly as documented in alerts/__init__.py.
--
-- Forward-only; 001 is never edited. The customer API reads and updates alert_settings and
-- reads alerts/alert_deliveries: this file only ADDS columns to those tables.

-- --- which accounts have a usage rule --------------------------------------------------------
-- An account is tracked while it has a daily, period or projected-bill threshold. The dataflow
-- accumulates usage only for tracked accounts; this table is the one copy of that set, changed
-- only under the exclusive "alert tracking" advisory lock (see alerts/decide.py), so that a
-- batch never counts a read for an account whose usage rows another batch is rebuilding.
-- Rows are never deleted: an untracked account keeps a row with active = false (a tombstone),
-- so that a dataflow can reload only what changed since the version it knows.
CREATE TABLE alert_tracked_accounts (
  account_id               text PRIMARY KEY,
  active                   boolean NOT NULL,
  cycle_day                smallint NOT NULL CHECK (cycle_day BETWEEN 1 AND 31),
  rate_plan                text,
  daily_threshold          double precision,
  period_threshold         double precision,
  projected_bill_threshold numeric(12, 2),
  changed_version          bigint NOT NULL,   -- data_versions('alert_tracking') of the change
  changed_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_tracked_accounts_changed_idx ON alert_tracked_accounts (changed_version);

INSERT INTO data_versions (name) VALUES ('alert_tracking');

-- Accounts whose thresholds, cycle day or rate plan changed since the dataflow last looked:
-- filled by the triggers below (so that the API and the CIS import need not know about it),
-- emptied by the dataflow when it applies the changes to alert_tracked_accounts.
CREATE TABLE alert_tracking_queue (
  account_id text NOT NULL,
  queued_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION alert_queue_settings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- One statement per statement (transition tables): a CIS import of a million accounts costs
  -- one INSERT here, not a million.
  IF TG_OP = 'UPDATE' THEN
    INSERT INTO alert_tracking_queue (account_id)
    SELECT n.account_id FROM alert_new_rows n JOIN alert_old_rows o USING (account_id)
     WHERE (n.daily_threshold, n.period_threshold, n.projected_bill_threshold)
           IS DISTINCT FROM (o.daily_threshold, o.period_threshold, o.projected_bill_threshold);
  ELSIF TG_OP = 'INSERT' THEN
    INSERT INTO alert_tracking_queue (account_id) SELECT account_id FROM alert_new_rows;
  ELSE
    INSERT INTO alert_tracking_queue (account_id) SELECT account_id FROM alert_old_rows;
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER alert_settings_inserted AFTER INSERT ON alert_settings
  REFERENCING NEW TABLE AS alert_new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION alert_queue_settings();
CREATE TRIGGER alert_settings_updated AFTER UPDATE ON alert_settings
  REFERENCING OLD TABLE AS alert_old_rows NEW TABLE AS alert_new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION alert_queue_settings();
CREATE TRIGGER alert_settings_deleted AFTER DELETE ON alert_settings
  REFERENCING OLD TABLE AS alert_old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION alert_queue_settings();

CREATE FUNCTION alert_queue_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO alert_tracking_queue (account_id)
  SELECT n.account_id FROM alert_new_rows n JOIN alert_old_rows o USING (account_id)
   WHERE (n.cycle_day, n.rate_plan) IS DISTINCT FROM (o.cycle_day, o.rate_plan);
  RETURN NULL;
END
$$;

CREATE TRIGGER alert_accounts_updated AFTER UPDATE ON accounts
  REFERENCING OLD TABLE AS alert_old_rows NEW TABLE AS alert_new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION alert_queue_accounts();

-- Settings that existed before this migration are looked at once, like any change.
INSERT INTO alert_tracking_queue (account_id) SELECT account_id FROM alert_settings;

-- --- usage of tracked accounts ---------------------------------------------------------------
-- Exact running totals per account, commodity ('gal' water, 'kWh' electricity: never added
-- together) and local day or billing period, upserted by the dataflow from the reads each batch
-- stored (never a read stored before, so a replay never counts twice). A row is set from a
-- recount of `reads` in the transaction that creates it (which covers whatever was stored
-- before the account was tracked) and only incremented afterwards. These are the alert
-- engine's state, not a usage history: only tracked accounts with a daily rule have daily rows,
-- with a period or projected-bill rule period rows. fillfactor leaves room on each page for
-- HOT updates (the rows are updated all day long).
CREATE TABLE account_daily_usage (
  account_id text NOT NULL,
  unit       text NOT NULL CHECK (unit IN ('gal', 'kWh')),
  day        date NOT NULL,                 -- local date in the utility's time zone
  usage      double precision NOT NULL,
  PRIMARY KEY (account_id, unit, day)
) WITH (fillfactor = 70);

CREATE TABLE account_period_usage (
  account_id   text NOT NULL,
  unit         text NOT NULL CHECK (unit IN ('gal', 'kWh')),
  period_start date NOT NULL,               -- first local day of the billing period
  period_end   date NOT NULL,               -- last local day of the billing period
  usage        double precision NOT NULL,
  PRIMARY KEY (account_id, unit, period_start)
) WITH (fillfactor = 70);

-- --- delivery ----------------------------------------------------------------------------------
-- The notifier holding an alert while it is 'sending' (its claim expires at next_attempt_at);
-- a notifier only finishes an alert it still holds.
ALTER TABLE alerts ADD COLUMN claimed_by text;
-- When the last channel was delivered, and the last delivery error (for staff).
ALTER TABLE alerts ADD COLUMN sent_at timestamptz;
ALTER TABLE alerts ADD COLUMN last_error text;
-- Alerts whose sender stopped (claim expired) are found through this index.
CREATE INDEX alerts_sending_idx ON alerts (next_attempt_at) WHERE status = 'sending';
CREATE INDEX alerts_failed_idx ON alerts (created_at DESC) WHERE status = 'failed';

-- The provider's own answer (SMTP reply, Twilio message status) and when the attempt ended.
ALTER TABLE alert_deliveries ADD COLUMN response text;
ALTER TABLE alert_deliveries ADD COLUMN finished_at timestamptz;
