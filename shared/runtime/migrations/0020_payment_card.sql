-- Moment's payment_method_details.card: the card a payment was made with, as
-- it may be shown (scheme, BIN, last4: PCI DSS allows the first six and last
-- four digits in the clear). The vault keeps the BIN beside the last4; the
-- session keeps the summary of the card its payment used.
ALTER TABLE vault_cards ADD COLUMN bin TEXT;
ALTER TABLE payment_sessions ADD COLUMN payment_card JSONB;
