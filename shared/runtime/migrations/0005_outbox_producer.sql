-- Each service's relay publishes only what that service wrote: with
-- least-privilege broker users, another service may not be allowed to.
-- Rows from before this column ('') may be published by any relay.
ALTER TABLE outbox ADD COLUMN producer TEXT NOT NULL DEFAULT '';
DROP INDEX outbox_due;
CREATE INDEX outbox_due ON outbox (producer, next_attempt_at, id) WHERE published_at IS NULL AND failed_at IS NULL;
