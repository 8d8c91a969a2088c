-- How a merchant's checkout looks (DESIGN §13; issue 21): its settings, and a
-- session's own branding over them. Both are checked before they are stored
-- (`ps_contract::branding`): colours, https URLs and closed lists only.
CREATE TABLE checkout_settings (
    merchant_id   TEXT        PRIMARY KEY,
    branding      JSONB       NOT NULL DEFAULT '{}',
    embed_origins TEXT[]      NOT NULL DEFAULT '{}',
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE payment_sessions ADD COLUMN branding JSONB;
