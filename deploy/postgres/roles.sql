-- Least-privilege roles, one per service. Run as a superuser after
-- `psctl migrate` (as the schema owner). Passwords are set out of band:
-- ALTER ROLE ps_intake PASSWORD '…';
-- tests/tests/fleet/deploy.rs runs the fleet under these roles, so a missing
-- grant fails CI.

DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['ps_intake', 'ps_checkout', 'ps_gateway', 'ps_lifecycle', 'ps_webhooks', 'ps_scheduler'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', r);
        END IF;
        -- Plumbing every service runs: the dedupe record, the outbox and its
        -- relay, and the retention sweep over both and the idempotency keys.
        EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', r);
        EXECUTE format('GRANT SELECT ON schema_migrations TO %I', r);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON processed_messages, outbox TO %I', r);
        EXECUTE format('GRANT USAGE ON SEQUENCE outbox_id_seq TO %I', r);
        EXECUTE format('GRANT SELECT, DELETE ON idempotency_keys TO %I', r);
    END LOOP;
END
$$;

-- Who may act for which merchant (DESIGN §10): read by every service that takes commands.
GRANT SELECT ON merchant_grants TO ps_intake, ps_lifecycle, ps_webhooks, ps_scheduler;

-- intake: creates sessions, customers, idempotency records, a next_in_series' attempt.
GRANT INSERT, UPDATE ON idempotency_keys TO ps_intake;
GRANT SELECT, INSERT ON payment_sessions, customers, payment_attempts TO ps_intake;
GRANT SELECT ON payment_methods, mandates TO ps_intake;
-- Locking a mandate (SELECT … FOR UPDATE) needs an UPDATE grant on some column.
GRANT UPDATE (updated_at) ON mandates TO ps_intake;
-- A mandate's usage so far, which a charge is checked against (written by the sessions' trigger).
GRANT SELECT ON mandate_usage TO ps_intake, ps_scheduler;

-- checkout: reads a session, starts an attempt on it. No access to the vault.
GRANT SELECT, UPDATE ON payment_sessions TO ps_checkout;
GRANT INSERT ON payment_attempts TO ps_checkout;

-- gateway: its vault, its processor's ledger, its call log; the token of a saved method.
GRANT SELECT, INSERT ON vault_cards, sandbox_ledger TO ps_gateway;
-- A card that was not saved loses its number once its attempt is answered.
GRANT UPDATE (pan_sealed, forgotten_at) ON vault_cards TO ps_gateway;
GRANT INSERT ON processor_calls TO ps_gateway;
GRANT USAGE ON SEQUENCE processor_calls_id_seq TO ps_gateway;
GRANT SELECT (id, merchant_id, vault_token) ON payment_methods TO ps_gateway;
-- Each request is checked against the attempt it names before money moves (DESIGN §10);
-- the card token, so a resolved attempt's card is saved or forgotten like any other.
GRANT SELECT (id, session_id, merchant_id, amount, currency, status, processor_idempotency_key, settlement, settlement_requests, card_token)
    ON payment_attempts TO ps_gateway;
-- Likewise each refund request against the refund lifecycle recorded.
GRANT SELECT (id, session_id, merchant_id, attempt_id, amount, currency, status, processor_idempotency_key) ON refunds TO ps_gateway;

-- lifecycle: session state, attempts, saved methods, mandates; idempotency for its commands.
GRANT INSERT, UPDATE ON idempotency_keys TO ps_lifecycle;
GRANT SELECT, UPDATE ON payment_sessions, payment_attempts TO ps_lifecycle;
GRANT SELECT, INSERT ON payment_methods TO ps_lifecycle;
GRANT SELECT, INSERT, UPDATE ON mandates TO ps_lifecycle;
GRANT SELECT, INSERT, UPDATE ON refunds TO ps_lifecycle;

-- webhooks: endpoints (with their signing secrets), events, deliveries, attempts; idempotency for its commands.
GRANT INSERT, UPDATE ON idempotency_keys TO ps_webhooks;
GRANT SELECT, INSERT, UPDATE ON webhook_endpoints, webhook_deliveries TO ps_webhooks;
GRANT SELECT, INSERT ON webhook_events, webhook_attempts TO ps_webhooks;
GRANT SELECT ON webhook_dead_letters TO ps_webhooks;
GRANT USAGE ON SEQUENCE webhook_deliveries_id_seq, webhook_attempts_id_seq TO ps_webhooks;

-- scheduler: its schedules, runs and triggers; it reads what a charge is checked against
-- (mandates, saved methods, a mandate's sessions) and how the sessions it asked for ended.
GRANT INSERT, UPDATE ON idempotency_keys TO ps_scheduler;
GRANT SELECT, INSERT, UPDATE ON schedules, schedule_runs, schedule_triggers, schedule_trigger_items TO ps_scheduler;
GRANT SELECT ON mandates, payment_methods, payment_sessions TO ps_scheduler;
-- Checking a charge locks its mandate (SELECT … FOR UPDATE), which needs an UPDATE grant on some column.
GRANT UPDATE (updated_at) ON mandates TO ps_scheduler;
