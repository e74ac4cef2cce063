-- Payments and refunds. Card numbers are never stored: brand and last four only.
CREATE TABLE payments (
    id               uuid PRIMARY KEY,
    order_id         text NOT NULL,
    customer_id      text NOT NULL,
    -- pending (the provider is being asked), captured, failed.
    status           text NOT NULL CHECK (status IN ('pending', 'captured', 'failed')),
    amount           bigint NOT NULL CHECK (amount > 0),
    currency         text NOT NULL DEFAULT 'CLP',
    card_brand       text NOT NULL,
    card_last4       text NOT NULL,
    failure_code     text NOT NULL DEFAULT '',
    failure_message  text NOT NULL DEFAULT '',
    provider_reference text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- At most one payment in flight or captured per order: a second concurrent attempt is
-- refused before the provider is ever asked, so nothing is charged twice.
CREATE UNIQUE INDEX payments_one_live_per_order ON payments (order_id) WHERE status IN ('pending', 'captured');
CREATE INDEX payments_by_order ON payments (order_id, created_at);

CREATE TABLE refunds (
    id                 uuid PRIMARY KEY,
    payment_id         uuid NOT NULL REFERENCES payments (id),
    order_id           text NOT NULL,
    amount             bigint NOT NULL CHECK (amount > 0),
    reason             text NOT NULL DEFAULT '',
    provider_reference text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_by_payment ON refunds (payment_id);

-- Idempotency keys per customer: the first request's fingerprint and, once settled, its
-- payment (replayed for a repeat).
CREATE TABLE idempotency_keys (
    customer_id  text NOT NULL,
    key          text NOT NULL,
    fingerprint  text NOT NULL,
    payment_id   uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, key)
);

-- Orders the order service has cancelled (from order.cancelled): a capture that lands
-- after the cancellation is refunded at once.
CREATE TABLE cancelled_orders (
    order_id     text PRIMARY KEY,
    reason       text NOT NULL,
    cancelled_at timestamptz NOT NULL DEFAULT now()
);
