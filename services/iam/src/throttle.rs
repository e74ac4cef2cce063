//! Login throttling in Redis: failures are counted per email and per client address in
//! fixed windows; past the limit, logins are refused with a retry delay. When Redis is
//! unreachable logins are not throttled (logged and counted): availability wins over
//! this protection, and argon2 already makes each guess expensive.

use std::time::Duration;

use platform::redis::RedisHandle;

/// Limits for [`LoginThrottle`].
#[derive(Debug, Clone)]
pub struct ThrottleLimits {
    /// Failures allowed per email within a window.
    pub per_email: u32,
    /// Failures allowed per client address within a window.
    pub per_address: u32,
    /// Window length.
    pub window: Duration,
}

/// Counts login failures.
#[derive(Clone)]
pub struct LoginThrottle {
    redis: RedisHandle,
    limits: ThrottleLimits,
}

impl LoginThrottle {
    /// A throttle over `redis`.
    pub fn new(redis: RedisHandle, limits: ThrottleLimits) -> Self {
        Self { redis, limits }
    }

    fn keys(&self, email: &str, address: Option<&str>) -> Vec<(String, u32)> {
        let mut keys = vec![(
            self.redis.key(&format!("iam:login-fail:email:{email}")),
            self.limits.per_email,
        )];
        if let Some(addr) = address {
            keys.push((
                self.redis.key(&format!("iam:login-fail:addr:{addr}")),
                self.limits.per_address,
            ));
        }
        keys
    }

    /// `Some(wait)` when either counter is at its limit.
    pub async fn blocked_for(&self, email: &str, address: Option<&str>) -> Option<Duration> {
        let mut conn = match self.redis.conn().await {
            Ok(conn) => conn,
            Err(e) => {
                degraded(&e);
                return None;
            }
        };
        let mut longest: Option<Duration> = None;
        for (key, limit) in self.keys(email, address) {
            let result: redis::RedisResult<(Option<u32>, i64)> = redis::pipe()
                .get(&key)
                .ttl(&key)
                .query_async(&mut conn)
                .await;
            match result {
                Ok((Some(count), ttl)) if count >= limit => {
                    let wait = Duration::from_secs(ttl.max(1) as u64);
                    longest = Some(longest.map_or(wait, |w| w.max(wait)));
                }
                Ok(_) => {}
                Err(e) => {
                    degraded(&e);
                    return None;
                }
            }
        }
        longest
    }

    /// Counts one failure against the email and the address.
    pub async fn record_failure(&self, email: &str, address: Option<&str>) {
        let mut conn = match self.redis.conn().await {
            Ok(conn) => conn,
            Err(e) => return degraded(&e),
        };
        let window = self.limits.window.as_secs().max(1) as i64;
        let mut pipe = redis::pipe();
        for (key, _) in self.keys(email, address) {
            // The window starts at the first failure: EXPIRE NX never extends it.
            pipe.incr(&key, 1)
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(window)
                .arg("NX")
                .ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            degraded(&e);
        }
    }

    /// Clears the email's failures after a successful login (the address keeps its count:
    /// one success must not unlock guessing at other accounts).
    pub async fn record_success(&self, email: &str) {
        let mut conn = match self.redis.conn().await {
            Ok(conn) => conn,
            Err(e) => return degraded(&e),
        };
        let key = self.redis.key(&format!("iam:login-fail:email:{email}"));
        if let Err(e) = redis::cmd("DEL")
            .arg(key)
            .query_async::<()>(&mut conn)
            .await
        {
            degraded(&e);
        }
    }
}

fn degraded(e: &redis::RedisError) {
    metrics::counter!("iam_login_throttle_unavailable_total").increment(1);
    tracing::warn!(error = %e, "Redis unavailable: login throttling skipped");
}
