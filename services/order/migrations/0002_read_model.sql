-- Every event gets a stable id: the relay publishes it as the envelope id, so consumers
-- de-duplicate a re-sent event.
ALTER TABLE events ADD COLUMN event_id uuid NOT NULL DEFAULT gen_random_uuid();

-- Where each global reader of the store is. Written in the same transaction as the
-- reader's effect (projector) or right after RabbitMQ confirmed the batch (relay).
CREATE TABLE checkpoints (
    name            text PRIMARY KEY,
    transaction_id  xid8 NOT NULL DEFAULT '0',
    global_position bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO checkpoints (name) VALUES ('projector'), ('relay');

-- Unpaid orders and when they expire: written with OrderPlaced, removed once the order
-- leaves pending_payment (the write side's own index, not a projection, so expiry never
-- waits for the projector).
CREATE TABLE payment_deadlines (
    order_id   text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX payment_deadlines_due ON payment_deadlines (expires_at);

-- The read model (rebuilt by `orderflow order rebuild-projections` into fresh copies of
-- these tables, then swapped in).
CREATE TABLE order_summaries (
    order_id        text PRIMARY KEY,
    customer_id     text NOT NULL,
    status          text NOT NULL,
    document_type   text NOT NULL,
    buyer           jsonb,
    net             bigint NOT NULL,
    exempt_total    bigint NOT NULL,
    iva             bigint NOT NULL,
    total           bigint NOT NULL,
    refunded_amount bigint NOT NULL,
    cancel_reason   text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    version         bigint NOT NULL,
    -- The folded aggregate, so the next event applies with the domain's own rules.
    state           jsonb NOT NULL
);
CREATE INDEX order_summaries_by_customer ON order_summaries (customer_id, created_at DESC, order_id DESC);
CREATE INDEX order_summaries_by_status ON order_summaries (status, created_at DESC, order_id DESC);
CREATE INDEX order_summaries_by_date ON order_summaries (created_at DESC, order_id DESC);

CREATE TABLE order_lines (
    order_id       text NOT NULL,
    line_no        int NOT NULL,
    sku            text NOT NULL,
    name           text NOT NULL,
    quantity       bigint NOT NULL,
    unit_net_price bigint NOT NULL,
    exempt         boolean NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
