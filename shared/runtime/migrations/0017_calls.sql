-- The gateway calls the processor outside any transaction (DESIGN §5): before
-- it calls, it records until when the call may still be in flight, and
-- lifecycle gives up on an attempt only once that has passed. This replaces an
-- advisory lock held in a transaction (and a pooled connection) for the call.
ALTER TABLE payment_attempts ADD COLUMN call_until TIMESTAMPTZ;
