-- The customer's "cancel and return" at the checkout (issue 21): the checkout
-- marks the session (so its page says "cancelling" and takes no card) and asks
-- lifecycle, which cancels it as any cancel is, and announces it.
ALTER TABLE payment_sessions ADD COLUMN cancel_requested_at TIMESTAMPTZ;
