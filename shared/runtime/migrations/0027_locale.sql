-- The language a session's checkout speaks (DESIGN §13; issue 21): the BCP 47
-- tag the create gave, canonicalised by intake; none, the customer's browser decides.
ALTER TABLE payment_sessions ADD COLUMN locale TEXT CHECK (locale IS NULL OR length(locale) BETWEEN 2 AND 35);
