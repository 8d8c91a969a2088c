-- How the customer reaches a session's checkout (DESIGN §13; issue 21): by
-- redirect, or framed in the merchant's page by one of its embed_origins.
ALTER TABLE payment_sessions ADD COLUMN presentation_mode TEXT NOT NULL DEFAULT 'redirect'
    CHECK (presentation_mode IN ('redirect', 'embedded_modal', 'embedded_inline'));
