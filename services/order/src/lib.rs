//! Orders, event-sourced.
//!
//! Owns the `orders` schema. So far: the [`event_store`] (optimistic-concurrency
//! appends, snapshots, and a global reader that never skips a late-committing event) and
//! the aggregate's rules in [`domain`] (events, states, legal transitions, totals, factura
//! buyer validation). The gRPC API, the projector and the relay build on them next.
#![forbid(unsafe_code)]

pub mod domain;
pub mod event_store;

/// The embedded migrations of the `orders` schema.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema the order service owns.
pub const SCHEMA: &str = "orders";

/// Opens the `orders` schema, migrated.
pub async fn open_database(database_url: &str) -> anyhow::Result<sqlx::PgPool> {
    platform::db::open(database_url, SCHEMA, &MIGRATOR).await
}
