-- Least-privilege roles, one per service. Run as a superuser after
-- `psctl migrate` (as the schema owner). Passwords are set out of band:
-- ALTER ROLE ps_intake PASSWORD '…';
-- tests/tests/fleet/deploy.rs runs the fleet under these roles, so a missing
-- grant fails CI.

-- Each role, the service it runs (its outbox producer and fleet_members row)
-- and the queues it consumes (its dedupe records and dead letters). The shared
-- plumbing tables have row-level security (migration 0014): a role reads and
-- writes only its own rows there, so stolen checkout credentials cannot
-- publish as the gateway or claim another consumer's messages (DESIGN §10).
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('ps_intake',    'session-intake',    ARRAY['payment_sessions.intake']),
        ('ps_checkout',  'checkout',          ARRAY[]::text[]),
        ('ps_gateway',   'payment-gateway',   ARRAY['payment_sessions.gateway']),
        ('ps_lifecycle', 'session-lifecycle', ARRAY['payment_sessions.lifecycle']),
        ('ps_webhooks',  'webhook-dispatch',  ARRAY['payment_sessions.webhooks.events', 'payment_sessions.webhooks.commands']),
        ('ps_scheduler', 'charge-scheduler',  ARRAY['payment_sessions.scheduler', 'payment_sessions.scheduler.replies']),
        ('ps_api',       'payments-api',      ARRAY[]::text[])
    ) AS t (role, service, queues) LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r.role) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', r.role);
        END IF;
        EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', r.role);
        EXECUTE format('GRANT SELECT ON schema_migrations TO %I', r.role);
        -- Its outbox rows: written in its transactions, published by its relay, swept.
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON outbox TO %I', r.role);
        EXECUTE format('GRANT USAGE ON SEQUENCE outbox_id_seq TO %I', r.role);
        EXECUTE format('DROP POLICY IF EXISTS %I ON outbox', r.role || '_own');
        EXECUTE format('CREATE POLICY %I ON outbox TO %I USING (producer = %L) WITH CHECK (producer = %L)',
                       r.role || '_own', r.role, r.service, r.service);
        -- Who it publishes as: every row readable, only its own writable.
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON fleet_members TO %I', r.role);
        EXECUTE format('DROP POLICY IF EXISTS %I ON fleet_members', r.role || '_read');
        EXECUTE format('CREATE POLICY %I ON fleet_members FOR SELECT TO %I USING (true)', r.role || '_read', r.role);
        EXECUTE format('DROP POLICY IF EXISTS %I ON fleet_members', r.role || '_insert');
        EXECUTE format('CREATE POLICY %I ON fleet_members FOR INSERT TO %I WITH CHECK (service = %L)', r.role || '_insert', r.role, r.service);
        EXECUTE format('DROP POLICY IF EXISTS %I ON fleet_members', r.role || '_update');
        EXECUTE format('CREATE POLICY %I ON fleet_members FOR UPDATE TO %I USING (service = %L) WITH CHECK (service = %L)',
                       r.role || '_update', r.role, r.service, r.service);
        IF cardinality(r.queues) > 0 THEN
            -- Its consumers' dedupe records and dead letters, and the retention
            -- sweep over those and the idempotency keys.
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON processed_messages TO %I', r.role);
            EXECUTE format('DROP POLICY IF EXISTS %I ON processed_messages', r.role || '_own');
            EXECUTE format('CREATE POLICY %I ON processed_messages TO %I USING (consumer = ANY (%L)) WITH CHECK (consumer = ANY (%L))',
                           r.role || '_own', r.role, r.queues, r.queues);
            EXECUTE format('GRANT INSERT ON dead_letters TO %I', r.role);
            EXECUTE format('DROP POLICY IF EXISTS %I ON dead_letters', r.role || '_own');
            EXECUTE format('CREATE POLICY %I ON dead_letters FOR INSERT TO %I WITH CHECK (queue = ANY (%L))',
                           r.role || '_own', r.role, r.queues);
            EXECUTE format('GRANT SELECT, DELETE ON idempotency_keys TO %I', r.role);
        END IF;
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

-- checkout: reads a session, starts an attempt on it, shows the challenge an attempt waits on. No access to the vault.
GRANT SELECT, UPDATE ON payment_sessions TO ps_checkout;
GRANT INSERT ON payment_attempts TO ps_checkout;
GRANT SELECT (id, session_id, status, next_action, processor_idempotency_key) ON payment_attempts TO ps_checkout;
GRANT SELECT, INSERT, UPDATE ON checkout_challenges TO ps_checkout;
-- How the merchant's pages look.
GRANT SELECT ON checkout_settings TO ps_checkout;
-- The logos merchants uploaded, served from the checkout's own host.
GRANT SELECT ON checkout_logos TO ps_checkout;
-- A returning customer's saved cards, offered by brand and last4 (never the vault's token).
GRANT SELECT (id, merchant_id, customer_id, usage, card_brand, card_last4, exp_month, exp_year, created_at) ON payment_methods TO ps_checkout;

-- gateway: its vault, its processor's ledger, its call log; the token of a saved method.
GRANT SELECT, INSERT ON vault_cards, sandbox_ledger TO ps_gateway;
-- A card that was not saved loses its number once its attempt is answered; a
-- saved one gains its processor customer.
GRANT UPDATE (pan_sealed, forgotten_at, processor_customer) ON vault_cards TO ps_gateway;
-- The sandbox's issuer decides a challenge once the customer has answered it.
GRANT UPDATE (outcome, error_code, decline_code) ON sandbox_ledger TO ps_gateway;
-- The processor's objects behind our keys, and its events, applied once.
GRANT SELECT, INSERT ON processor_objects, processor_events TO ps_gateway;
GRANT INSERT ON processor_calls TO ps_gateway;
GRANT USAGE ON SEQUENCE processor_calls_id_seq TO ps_gateway;
GRANT SELECT (id, merchant_id, vault_token) ON payment_methods TO ps_gateway;
-- Each request is checked against the attempt it names before money moves (DESIGN §10);
-- the card token, so a resolved attempt's card is saved or forgotten like any other.
-- What captures have taken so far bounds the next one (several per authorisation).
GRANT SELECT (id, session_id, merchant_id, amount, currency, status, processor_idempotency_key, settlement, settlement_requests, card_token,
              payment_method_id, capture_method, keep_card, source, save_for, captured_amount)
    ON payment_attempts TO ps_gateway;
-- Before calling the processor for an attempt, until when the call may be in
-- flight: lifecycle does not give up on the attempt before then.
GRANT SELECT (call_until), UPDATE (call_until) ON payment_attempts TO ps_gateway;
-- Likewise each refund request against the refund lifecycle recorded.
GRANT SELECT (id, session_id, merchant_id, attempt_id, amount, currency, status, processor_idempotency_key) ON refunds TO ps_gateway;

-- lifecycle: session state, attempts, saved methods, mandates; idempotency for its commands.
GRANT INSERT, UPDATE ON idempotency_keys TO ps_lifecycle;
GRANT SELECT, UPDATE ON payment_sessions, payment_attempts TO ps_lifecycle;
GRANT SELECT, INSERT ON payment_methods TO ps_lifecycle;
GRANT SELECT, INSERT, UPDATE ON mandates TO ps_lifecycle;
GRANT SELECT, INSERT, UPDATE ON refunds TO ps_lifecycle;
-- A merchant's checkout settings (checkout_settings.update / .retrieve).
GRANT SELECT, INSERT, UPDATE ON checkout_settings TO ps_lifecycle;
-- An uploaded logo is kept, never changed (rows are named by their digest).
GRANT INSERT ON checkout_logos TO ps_lifecycle;

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

-- payments-api: who a key is (its id and hash, never the key). Everything else it
-- does is a command, checked by the service that owns it.
GRANT SELECT ON api_keys TO ps_api;
