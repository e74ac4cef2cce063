//! Isolation for tests that talk to the real Postgres and Redis: every test gets a fresh
//! database and its own Redis key prefix, so tests run in parallel and never see each
//! other's data. `./dev test` drops databases left by interrupted runs.

use uuid::Uuid;

/// Prefix of every test database's name.
pub const TEST_DATABASE_PREFIX: &str = "orderflow_test_";

/// The server tests use: `TEST_DATABASE_URL`, else the local development default.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

/// Creates a fresh, empty database and returns its URL.
pub async fn fresh_database() -> anyhow::Result<String> {
    let server = server_url();
    let name = format!("{TEST_DATABASE_PREFIX}{}", Uuid::new_v4().simple());
    let (base, _) = server
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("TEST_DATABASE_URL has no database part"))?;
    let url = format!("{base}/{name}");
    crate::db::create_database_if_missing(&url).await?;
    Ok(url)
}

/// A Redis key prefix no other test uses.
pub fn unique_redis_prefix() -> String {
    format!("test:{}:", Uuid::new_v4().simple())
}

/// The Redis server tests use: `TEST_REDIS_URL`, else localhost.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}
