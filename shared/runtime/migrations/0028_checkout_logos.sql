-- Logos merchants upload (checkout_settings.update's logo_image; issue 21),
-- kept by their SHA-256 and served by the checkout from its own host. The
-- type was read from the image's own header, never from what the sender said.
CREATE TABLE checkout_logos (
    sha256       TEXT        PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content_type TEXT        NOT NULL CHECK (content_type IN ('image/png', 'image/jpeg', 'image/webp')),
    bytes        BYTEA       NOT NULL CHECK (octet_length(bytes) BETWEEN 1 AND 131072),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
