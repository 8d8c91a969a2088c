-- Faults (issue 9): unknown outcomes are resolved by asking the processor,
-- and settlements are asked again until the processor answers.

-- What a capture or void was asked for, so the same request can be sent again.
ALTER TABLE payment_attempts ADD COLUMN settlement_amount BIGINT;

-- The sweeps: attempts waiting for an answer, and settlements waiting for one.
CREATE INDEX payment_attempts_unanswered ON payment_attempts (updated_at) WHERE status IN ('pending', 'abandoned');
CREATE INDEX payment_attempts_settling ON payment_attempts (updated_at) WHERE settlement IN ('capture_requested', 'void_requested');

-- Webhook due work is chosen per endpoint (its oldest few each), so one
-- endpoint's backlog cannot fill every batch and starve the others.
CREATE INDEX webhook_deliveries_endpoint_due ON webhook_deliveries (endpoint_id, next_attempt_at, id) WHERE status = 'pending';

-- A resolution that found nothing under the attempt's key is a call's result too.
ALTER TABLE processor_calls DROP CONSTRAINT processor_calls_result_check;
ALTER TABLE processor_calls ADD CONSTRAINT processor_calls_result_check
    CHECK (result IN ('succeeded', 'failed', 'timeout', 'resolved_by_lookup', 'resolved_no_record', 'error'));
