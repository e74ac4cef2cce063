-- PlaceOrder is idempotent in the order service itself, not only in the gateway's Redis:
-- the first order placed with a customer's Idempotency-Key is recorded here in the same
-- transaction as its OrderPlaced, so a retry with the key gets that order back (and the
-- key with a different request is refused) even while Redis is away.
CREATE TABLE place_requests (
    customer_id     text NOT NULL,
    idempotency_key text NOT NULL,
    order_id        text NOT NULL,
    -- The request as placed (lines merged by SKU, document type, buyer), to tell a retry
    -- from a different request reusing the key.
    request         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, idempotency_key)
);
