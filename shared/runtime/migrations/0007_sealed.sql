-- Secrets at rest (DESIGN §10). Sealed values are `ps1:<key id>:<data>`
-- (shared/runtime/src/sealing.rs); run `psctl secrets rewrap` once after this
-- migration to seal what earlier versions stored in clear.

-- An outbox row whose body holds a secret (a reply with a webhook signing
-- secret) is sealed; its service's relay opens it to publish.
ALTER TABLE outbox ADD COLUMN sealed BOOLEAN NOT NULL DEFAULT false;

-- The vault keeps the card number sealed, and only while it may be charged again:
-- a card that was not saved loses it when its attempt ends.
ALTER TABLE vault_cards RENAME COLUMN pan TO pan_sealed;
ALTER TABLE vault_cards ALTER COLUMN pan_sealed DROP NOT NULL;
ALTER TABLE vault_cards ADD COLUMN forgotten_at TIMESTAMPTZ;
