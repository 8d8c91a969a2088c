-- Several captures of one authorisation (Moment's; issue 20). An attempt's
-- `captured_amount` is now the sum of its captures, and `settlement` NULL
-- after a capture means the rest is still open; `captured` / `voided` mean
-- the authorisation is closed. The sandbox keeps, per capture, whether it
-- left the rest open, so a replay under the same key answers the same.
ALTER TABLE sandbox_ledger ADD COLUMN leaves_open BOOLEAN NOT NULL DEFAULT false;
