-- Least-privilege roles. Run as a superuser after `psctl migrate` (as ps_migrator).
-- Passwords are set out of band: ALTER ROLE ps_intake PASSWORD '…';

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ps_intake') THEN
        CREATE ROLE ps_intake LOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO ps_intake;
-- Plumbing every consumer writes.
GRANT SELECT, INSERT, UPDATE ON processed_messages TO ps_intake;
GRANT SELECT, INSERT, UPDATE ON outbox TO ps_intake;
GRANT DELETE ON outbox, processed_messages TO ps_intake;
GRANT USAGE ON SEQUENCE outbox_id_seq TO ps_intake;
-- What intake owns (DESIGN §3): sessions, customers, idempotency records, the first attempt of a next_in_series.
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO ps_intake;
GRANT SELECT, INSERT ON payment_sessions, customers, payment_attempts TO ps_intake;
-- Read-only on what lifecycle owns; the column grant is what SELECT … FOR UPDATE needs to lock a mandate.
GRANT SELECT ON payment_methods, mandates, schema_migrations TO ps_intake;
GRANT UPDATE (updated_at) ON mandates TO ps_intake;
