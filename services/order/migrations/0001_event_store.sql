-- The event store: the order service's source of truth, and its outbox.
CREATE TABLE events (
    global_position bigserial PRIMARY KEY,
    stream_id       text NOT NULL,
    stream_position bigint NOT NULL CHECK (stream_position > 0),
    event_type      text NOT NULL,
    data            jsonb NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- The appending transaction. A bigserial is taken at insert, not at commit, so a
    -- reader by global_position alone could pass over an event whose transaction commits
    -- late. Readers instead stop below the oldest transaction still in flight and order
    -- by (transaction_id, global_position): see event_store::read_all.
    transaction_id  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (stream_id, stream_position)
);
CREATE INDEX events_by_transaction ON events (transaction_id, global_position);

-- The latest snapshot of each stream, taken every SNAPSHOT_INTERVAL events.
CREATE TABLE snapshots (
    stream_id       text PRIMARY KEY,
    stream_position bigint NOT NULL,
    data            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
