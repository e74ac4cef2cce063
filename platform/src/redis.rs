//! Redis: one reconnecting connection per role, every key under a prefix.
//!
//! Redis is a cache and a rate limiter here, never the source of truth, so a role starts
//! and keeps serving without it: [`RedisHandle::conn`] reports an error that callers turn
//! into degraded behaviour, and the connection is retried (at most once a second) until
//! Redis is back.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::{sync::Mutex, time::Instant};

/// How often a missing connection is retried.
const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

/// A lazily connected, self-healing Redis connection plus the key prefix that keeps
/// roles (and parallel tests) apart.
#[derive(Clone)]
pub struct RedisHandle {
    client: redis::Client,
    state: Arc<Mutex<State>>,
    prefix: String,
}

#[derive(Default)]
struct State {
    conn: Option<ConnectionManager>,
    last_attempt: Option<Instant>,
}

impl RedisHandle {
    /// A handle for `url`; nothing connects until first use.
    pub fn new(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("setting REDIS_URL is malformed")?;
        Ok(Self {
            client,
            state: Arc::default(),
            prefix: prefix.to_string(),
        })
    }

    /// The full key for `key`.
    pub fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// A connection to run commands on. Errors when Redis is unreachable; a failed
    /// connect is not retried for a second, so an outage costs callers no waiting.
    pub async fn conn(&self) -> redis::RedisResult<ConnectionManager> {
        let mut state = self.state.lock().await;
        if let Some(conn) = &state.conn {
            return Ok(conn.clone());
        }
        if state
            .last_attempt
            .is_some_and(|t| t.elapsed() < RECONNECT_INTERVAL)
        {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "Redis unavailable (reconnecting)",
            )));
        }
        state.last_attempt = Some(Instant::now());
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        tracing::info!("connected to Redis");
        state.conn = Some(conn.clone());
        Ok(conn)
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn().await.map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
