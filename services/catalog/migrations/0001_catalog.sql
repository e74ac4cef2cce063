-- Products, stock and reservations.

-- unaccent lives in its own schema so every service schema can reach it by name.
CREATE SCHEMA IF NOT EXISTS extensions;
CREATE EXTENSION IF NOT EXISTS unaccent SCHEMA extensions;

-- Spanish search that ignores accents: "cafe" matches "Café", "cafés" matches "café".
CREATE TEXT SEARCH CONFIGURATION es_unaccent (COPY = pg_catalog.spanish);
ALTER TEXT SEARCH CONFIGURATION es_unaccent
    ALTER MAPPING FOR hword, hword_part, word WITH extensions.unaccent, spanish_stem;

CREATE TABLE products (
    sku         text PRIMARY KEY CHECK (sku ~ '^[A-Z0-9]+(-[A-Z0-9]+)*$' AND length(sku) <= 64),
    name        text NOT NULL CHECK (length(btrim(name)) > 0),
    description text NOT NULL DEFAULT '',
    category    text NOT NULL DEFAULT '',
    net_price   bigint NOT NULL CHECK (net_price > 0),
    exempt      boolean NOT NULL DEFAULT false,
    active      boolean NOT NULL DEFAULT true,
    on_hand     bigint NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    reserved    bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- What a shopper pays per unit: net + IVA 19% rounded half away from zero (exempt: net).
    gross_price bigint GENERATED ALWAYS AS (
        CASE WHEN exempt THEN net_price ELSE net_price + round(net_price * 19 / 100.0)::bigint END
    ) STORED,
    search      tsvector GENERATED ALWAYS AS (
        to_tsvector('es_unaccent'::regconfig, name || ' ' || description)
    ) STORED,
    -- Stock is never oversold: reservations can never exceed what is on hand.
    CONSTRAINT reserved_within_on_hand CHECK (reserved <= on_hand)
);
CREATE INDEX products_search ON products USING gin (search);
CREATE INDEX products_by_name ON products (lower(name), sku);
CREATE INDEX products_by_price ON products (gross_price, sku);
CREATE INDEX products_by_category ON products (category);

-- One row per order that reserved stock; its status makes commit and release idempotent.
CREATE TABLE reservations (
    order_id   text PRIMARY KEY,
    status     text NOT NULL CHECK (status IN ('reserved', 'committed', 'released')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The lines as reserved, with the name and price the order snapshots.
CREATE TABLE reservation_lines (
    order_id       text NOT NULL REFERENCES reservations (order_id) ON DELETE CASCADE,
    sku            text NOT NULL REFERENCES products (sku),
    quantity       bigint NOT NULL CHECK (quantity > 0),
    name           text NOT NULL,
    unit_net_price bigint NOT NULL,
    exempt         boolean NOT NULL,
    PRIMARY KEY (order_id, sku)
);
