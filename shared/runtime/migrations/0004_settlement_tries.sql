-- Each capture or void request of an attempt gets its own processor key
-- (capture:{attempt}:{n}), so one the processor refused can be asked again.
ALTER TABLE payment_attempts ADD COLUMN settlement_requests INT NOT NULL DEFAULT 0;
