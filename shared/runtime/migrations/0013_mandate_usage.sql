-- A mandate's usage counters in a narrow row of their own.
--
-- Kept on the mandate's row (0010), every charge wrote a new version of that
-- wide row (terms and all). A consumer batch holds the mandate's lock through
-- up to CONSUMER_BATCH charges, and the next batch's snapshot was taken before
-- it committed, so versions piled up faster than page pruning could reclaim
-- them: a page held ~25, then updates spilled to new pages (not HOT), the table
-- grew to ~100 pages for one mandate over 21,000 charges and every lookup of
-- the mandate walked the debris. Charges under one mandate fell to half their
-- rate (make bench, mandate series). A ~60-byte counters row on pages kept
-- nearly empty (fillfactor 10) absorbs hundreds of versions per page, so its
-- updates stay HOT and prunable; the mandate's own row is only locked, never
-- rewritten, per charge.
CREATE TABLE mandate_usage (
    mandate_id       TEXT        PRIMARY KEY REFERENCES mandates (id),
    used_occurrences INT         NOT NULL DEFAULT 0,
    used_amount      BIGINT      NOT NULL DEFAULT 0,
    last_charge_at   TIMESTAMPTZ
) WITH (fillfactor = 10, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

INSERT INTO mandate_usage (mandate_id, used_occurrences, used_amount, last_charge_at)
SELECT id, used_occurrences, used_amount, last_charge_at FROM mandates
WHERE used_occurrences <> 0 OR used_amount <> 0 OR last_charge_at IS NOT NULL;

ALTER TABLE mandates DROP COLUMN used_occurrences, DROP COLUMN used_amount, DROP COLUMN last_charge_at;

-- As 0010's, writing the counters row (made on a mandate's first charge).
CREATE OR REPLACE FUNCTION mandate_usage_follow() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    counted_before BOOLEAN := TG_OP = 'UPDATE' AND OLD.type = 'next_in_series' AND OLD.mandate_id IS NOT NULL
                              AND OLD.payment_outcome IN ('pending', 'paid', 'reserved');
    counted_now    BOOLEAN := NEW.type = 'next_in_series' AND NEW.mandate_id IS NOT NULL
                              AND NEW.payment_outcome IN ('pending', 'paid', 'reserved');
BEGIN
    IF counted_now AND NOT counted_before THEN
        INSERT INTO mandate_usage AS u (mandate_id, used_occurrences, used_amount, last_charge_at)
        VALUES (NEW.mandate_id, 1, NEW.amount, NEW.created_at)
        ON CONFLICT (mandate_id) DO UPDATE SET used_occurrences = u.used_occurrences + 1, used_amount = u.used_amount + NEW.amount,
                                               last_charge_at = greatest(u.last_charge_at, NEW.created_at);
    ELSIF counted_before AND NOT counted_now THEN
        UPDATE mandate_usage SET used_occurrences = used_occurrences - 1, used_amount = used_amount - OLD.amount,
                                 last_charge_at = (SELECT max(created_at) FROM payment_sessions
                                                   WHERE mandate_id = OLD.mandate_id AND type = 'next_in_series'
                                                     AND payment_outcome IN ('pending', 'paid', 'reserved') AND id <> OLD.id)
        WHERE mandate_id = OLD.mandate_id;
    END IF;
    RETURN NULL;
END $$;
