-- A reservation's session stays completed / reserved once it is captured or
-- voided (Moment's; issue 20): what became of it is on its payment. So a
-- mandate's usage no longer follows the outcome alone: a reservation voided
-- in full, nothing captured, gives its charge back, as a void always did.
CREATE OR REPLACE FUNCTION mandate_usage_follow() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    counted_before BOOLEAN := TG_OP = 'UPDATE' AND OLD.type = 'next_in_series' AND OLD.mandate_id IS NOT NULL
                              AND (OLD.payment_outcome IN ('pending', 'paid')
                                   OR (OLD.payment_outcome = 'reserved' AND NOT (OLD.paid_amount = 0 AND OLD.voided_amount > 0)));
    counted_now    BOOLEAN := NEW.type = 'next_in_series' AND NEW.mandate_id IS NOT NULL
                              AND (NEW.payment_outcome IN ('pending', 'paid')
                                   OR (NEW.payment_outcome = 'reserved' AND NOT (NEW.paid_amount = 0 AND NEW.voided_amount > 0)));
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
                                                     AND (payment_outcome IN ('pending', 'paid')
                                                          OR (payment_outcome = 'reserved' AND NOT (paid_amount = 0 AND voided_amount > 0)))
                                                     AND id <> OLD.id)
        WHERE mandate_id = OLD.mandate_id;
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER payment_sessions_mandate_usage ON payment_sessions;
CREATE TRIGGER payment_sessions_mandate_usage
    AFTER INSERT OR UPDATE OF payment_outcome, paid_amount, voided_amount ON payment_sessions
    FOR EACH ROW EXECUTE FUNCTION mandate_usage_follow();
