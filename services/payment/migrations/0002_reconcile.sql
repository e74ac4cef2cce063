-- A payment left `pending` (the role died while the processor was asked) is reconciled
-- with the processor later; its idempotency key names it from the start, so the key can
-- be settled (or freed) with it.
ALTER TABLE idempotency_keys ADD COLUMN pending_payment uuid;
CREATE INDEX payments_pending_by_age ON payments (created_at) WHERE status = 'pending';

-- The sandbox processor's own records, kept as a real processor keeps them on its side
-- (it is a stand-in for one): what it decided for each payment id it was asked to charge,
-- so a repeated charge gets the first answer and a status query answers after a crash.
CREATE TABLE sandbox_charges (
    payment_id text PRIMARY KEY,
    approved   boolean NOT NULL,
    reference  text NOT NULL DEFAULT '',
    code       text NOT NULL DEFAULT '',
    message    text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
