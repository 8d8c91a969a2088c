-- A card's funding (credit, debit, prepaid), as its processor reports it:
-- Moment's payment_method_details.card.type (issue 20). NULL where the
-- processor did not say.
ALTER TABLE vault_cards ADD COLUMN funding TEXT CHECK (funding IN ('credit', 'debit', 'prepaid', 'unknown'));
