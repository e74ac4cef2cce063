//! Redis: one reconnecting connection per role, every key under a prefix.

use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A Redis connection that reconnects by itself, plus the key prefix that keeps roles
/// (and parallel tests) apart.
#[derive(Clone)]
pub struct RedisHandle {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisHandle {
    /// Connects to `url`. Fails when Redis cannot be reached at start; callers that must
    /// survive a Redis outage treat later command errors as degraded mode.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("REDIS_URL is malformed")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .with_context(|| format!("cannot connect to Redis at {url}"))?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
        })
    }

    /// The full key for `key`.
    pub fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// A connection to run commands on (cheap clone of the shared manager).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
