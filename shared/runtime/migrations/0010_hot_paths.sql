-- Issue 10's defects: a relay query that stays fast whatever the table holds,
-- and a mandate's usage kept as counters instead of counted per charge.

-- The relay reads pending rows in id order: an index of exactly those, so
-- published and failed rows (however many, and whatever ANALYZE says) are
-- never read. Vacuumed often, so the index does not bloat between runs.
DROP INDEX outbox_due;
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL AND failed_at IS NULL;
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
                        autovacuum_analyze_scale_factor = 0.02);

-- A mandate's usage: the charges under it that count (pending, paid, reserved
-- next_in_series sessions), kept by the database as they change, in the same
-- transaction as the change. A charge reads three columns of the row it locks
-- anyway, instead of every earlier charge.
ALTER TABLE mandates
    ADD COLUMN used_occurrences INT         NOT NULL DEFAULT 0,
    ADD COLUMN used_amount      BIGINT      NOT NULL DEFAULT 0,
    ADD COLUMN last_charge_at   TIMESTAMPTZ;

UPDATE mandates m SET used_occurrences = u.n, used_amount = u.total, last_charge_at = u.last
FROM (SELECT mandate_id, count(*) AS n, sum(amount) AS total, max(created_at) AS last
      FROM payment_sessions
      WHERE type = 'next_in_series' AND mandate_id IS NOT NULL AND payment_outcome IN ('pending', 'paid', 'reserved')
      GROUP BY mandate_id) u
WHERE u.mandate_id = m.id;

CREATE INDEX payment_sessions_mandate_charges ON payment_sessions (mandate_id, created_at DESC)
    WHERE type = 'next_in_series' AND payment_outcome IN ('pending', 'paid', 'reserved');

-- SECURITY DEFINER: the services that write sessions need no write grant on mandates for this.
CREATE FUNCTION mandate_usage_follow() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    counted_before BOOLEAN := TG_OP = 'UPDATE' AND OLD.type = 'next_in_series' AND OLD.mandate_id IS NOT NULL
                              AND OLD.payment_outcome IN ('pending', 'paid', 'reserved');
    counted_now    BOOLEAN := NEW.type = 'next_in_series' AND NEW.mandate_id IS NOT NULL
                              AND NEW.payment_outcome IN ('pending', 'paid', 'reserved');
BEGIN
    IF counted_now AND NOT counted_before THEN
        UPDATE mandates SET used_occurrences = used_occurrences + 1, used_amount = used_amount + NEW.amount,
                            last_charge_at = greatest(last_charge_at, NEW.created_at)
        WHERE id = NEW.mandate_id;
    ELSIF counted_before AND NOT counted_now THEN
        UPDATE mandates SET used_occurrences = used_occurrences - 1, used_amount = used_amount - OLD.amount,
                            last_charge_at = (SELECT max(created_at) FROM payment_sessions
                                              WHERE mandate_id = OLD.mandate_id AND type = 'next_in_series'
                                                AND payment_outcome IN ('pending', 'paid', 'reserved') AND id <> OLD.id)
        WHERE id = OLD.mandate_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER payment_sessions_mandate_usage
    AFTER INSERT OR UPDATE OF payment_outcome ON payment_sessions
    FOR EACH ROW EXECUTE FUNCTION mandate_usage_follow();
