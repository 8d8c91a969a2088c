-- The trace a session was created in (W3C traceparent), so the checkout's
-- requests hours later, and all they cause, join the same trace.
ALTER TABLE payment_sessions ADD COLUMN traceparent TEXT;

-- The webhook service's gauge of deliveries given up in the last day reads these alone.
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (finished_at) WHERE status = 'failed';
