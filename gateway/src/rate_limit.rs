//! Rate limiting with GCRA (the generic cell rate algorithm): each key keeps one number,
//! its theoretical arrival time, so a check is one atomic Redis script and every gateway
//! replica shares the same budget. Keys: the signed-in user, else the client address;
//! route classes have their own quotas (`auth` endpoints are stricter than the rest).
//!
//! A replica takes a key's requests from Redis a few at a time (its local share, a tenth of
//! the burst: one for strict quotas) and spends them without asking again, so a busy
//! caller costs one Redis round trip per share instead of per request. The share is taken
//! out of the shared budget before it is spent, so a caller never gets more than the quota
//! across replicas. A share is kept for a second at most: what is left of it then is given
//! back to the budget with the next take (a caller who went to another replica meanwhile
//! may have been refused up to `replicas × (share - 1)` requests early, never late).
//!
//! When Redis cannot be reached the gateway keeps serving with an in-process limiter of
//! the same algorithm and quotas (per replica, so a little more permissive), logs the
//! switch, counts it, and tries Redis again after a second. Responses carry
//! `RateLimit-Policy` and `RateLimit` (IETF httpapi draft); a refusal is 429 with
//! `Retry-After`.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use platform::{grpc::Caller, redis::RedisHandle};

use crate::{access_log::RouteLabel, problem::Problem};

/// A quota: `burst` requests at once, refilled at one per `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Time for one request's budget to come back.
    pub interval: Duration,
    /// Requests allowed back to back.
    pub burst: u32,
}

impl Quota {
    /// Parses `N/s`, `N/m` or `N/h` (requests per period).
    pub fn parse_rate(raw: &str, burst: u32) -> Result<Self, String> {
        let (n, unit) = raw
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{raw:?}: expected a rate like 20/s, 60/m or 100/h"))?;
        let n: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{raw:?}: the count must be a positive number"))?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => return Err(format!("{raw:?}: unknown unit {other:?} (use s, m or h)")),
        };
        if burst == 0 {
            return Err("the burst must be at least 1".into());
        }
        Ok(Self {
            interval: period / n,
            burst,
        })
    }

    /// The interval in microseconds (so rates up to a million a second stay exact).
    fn interval_us(&self) -> i64 {
        (self.interval.as_micros() as i64).max(1)
    }

    /// The window the policy header announces: how long a full burst takes to refill.
    fn window_secs(&self) -> u64 {
        (self.interval * self.burst).as_secs().max(1)
    }
}

/// One check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// When refused: how long until it would be allowed.
    pub retry_after: Duration,
    /// Requests still allowed right now.
    pub remaining: u32,
    /// Until the budget is full again.
    pub reset: Duration,
}

/// GCRA on a theoretical arrival time `tat` (µs), at `now` (µs): the new `tat` (when
/// allowed) and the decision. Redis runs the same arithmetic in [`GCRA_SCRIPT`].
fn gcra(tat: Option<i64>, now: i64, quota: Quota) -> (Option<i64>, Decision) {
    let t = quota.interval_us();
    let tau = t * (i64::from(quota.burst) - 1);
    let tat = tat.unwrap_or(now).max(now);
    let allow_at = tat - tau;
    if now < allow_at {
        let decision = Decision {
            allowed: false,
            retry_after: Duration::from_micros((allow_at - now) as u64),
            remaining: 0,
            reset: Duration::from_micros((tat - now) as u64),
        };
        return (None, decision);
    }
    let new_tat = tat + t;
    let remaining = ((tau + t - (new_tat - now)) / t).max(0) as u32;
    let decision = Decision {
        allowed: true,
        retry_after: Duration::ZERO,
        remaining,
        reset: Duration::from_micros((new_tat - now) as u64),
    };
    (Some(new_tat), decision)
}

/// The Redis side of [`gcra`], taking up to `ARGV[3]` requests at once (as many as fit now,
/// at least one or none) after giving back `ARGV[4]` taken before and not spent: atomic, on
/// Redis's clock in microseconds, the key expiring once idle. Returns (requests taken,
/// retry after µs, remaining, reset µs).
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = interval * (tonumber(ARGV[2]) - 1)
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
tat = tat - tonumber(ARGV[4]) * interval
if tat < now then tat = now end
local allow_at = tat - tau
if now < allow_at then
  return {0, allow_at - now, 0, tat - now}
end
local fit = math.floor((now + tau - tat) / interval) + 1
local taken = math.min(want, fit)
local new_tat = tat + taken * interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.floor((new_tat - now) / 1000) + 1000)
local remaining = math.floor((tau + interval - (new_tat - now)) / interval)
if remaining < 0 then remaining = 0 end
return {taken, 0, remaining, new_tat - now}
"#;

/// How many requests of a key a replica takes from Redis at once: a tenth of the burst, at
/// least one (so a strict quota, such as the auth routes', stays exact per request).
pub fn local_share(quota: Quota) -> u32 {
    (quota.burst / 10).max(1)
}

/// How long a replica keeps an unspent share before it gives the rest back and asks Redis
/// again (so the headers stay current, and a caller who moves to another replica finds
/// their budget there).
const SHARE_LIFETIME: Duration = Duration::from_secs(1);

/// Requests of one key taken from Redis and not spent yet.
#[derive(Debug, Clone, Copy)]
struct Share {
    left: u32,
    /// What Redis said remained once the share was taken out.
    remaining: u32,
    reset: Duration,
    taken_at: Instant,
}

impl Share {
    /// Spends one request, if the share is fresh and has one.
    fn spend(&mut self) -> Option<Decision> {
        if self.left == 0 || self.taken_at.elapsed() >= SHARE_LIFETIME {
            return None;
        }
        self.left -= 1;
        Some(Decision {
            allowed: true,
            retry_after: Duration::ZERO,
            remaining: self.remaining + self.left,
            reset: self.reset.saturating_sub(self.taken_at.elapsed()),
        })
    }
}

/// One key's share, behind a lock of its own: while one request of a caller asks Redis for
/// a new share, the caller's other requests wait for it instead of each taking one.
type Slot = Arc<tokio::sync::Mutex<Option<Share>>>;

/// The limiter: Redis first, the local fallback while Redis is away.
pub struct Limiter {
    redis: RedisHandle,
    script: redis::Script,
    /// Each key's unspent share (requests already taken out of its Redis budget).
    shares: Mutex<HashMap<String, Slot>>,
    local: Mutex<HashMap<String, i64>>,
    started: Instant,
    redis_retry_at: Mutex<Option<Instant>>,
    /// Quota of `/v1/auth/*`.
    pub auth: Quota,
    /// Quota of every other route.
    pub api: Quota,
    /// Requests taken from Redis at once, when set (else [`local_share`] of the quota).
    share: Option<u32>,
}

/// Keys the local fallback (and the shares) keep before idle ones are forgotten.
const LOCAL_KEYS: usize = 100_000;

impl Limiter {
    /// A limiter on `redis` with the two quotas.
    pub fn new(redis: RedisHandle, auth: Quota, api: Quota) -> Self {
        Self {
            redis,
            script: redis::Script::new(GCRA_SCRIPT),
            shares: Mutex::default(),
            local: Mutex::default(),
            started: Instant::now(),
            redis_retry_at: Mutex::default(),
            auth,
            api,
            share: None,
        }
    }

    /// Takes `share` requests from Redis at once instead of a tenth of the burst (`None`:
    /// the default).
    pub fn with_share(mut self, share: Option<u32>) -> Self {
        self.share = share.map(|n| n.max(1));
        self
    }

    /// Gives back `unspent` requests of an expired share and takes up to `want` of `key`'s
    /// requests from Redis: the decision for this request, and how many more were taken.
    async fn take_from_redis(
        &self,
        key: &str,
        quota: Quota,
        want: u32,
        unspent: u32,
    ) -> redis::RedisResult<(Decision, u32)> {
        let mut conn = self.redis.conn().await?;
        let (taken, retry_us, remaining, reset_us): (i64, i64, i64, i64) = self
            .script
            .key(self.redis.key(key))
            .arg(quota.interval_us())
            .arg(quota.burst)
            .arg(want)
            .arg(unspent)
            .invoke_async(&mut conn)
            .await?;
        let left = (taken - 1).max(0) as u32;
        Ok((
            Decision {
                allowed: taken >= 1,
                retry_after: Duration::from_micros(retry_us.max(0) as u64),
                remaining: remaining.max(0) as u32 + left,
                reset: Duration::from_micros(reset_us.max(0) as u64),
            },
            left,
        ))
    }

    fn check_local(&self, key: &str, quota: Quota) -> Decision {
        let now = self.started.elapsed().as_micros() as i64;
        let mut local = self.local.lock().expect("limiter lock poisoned");
        if local.len() >= LOCAL_KEYS {
            local.retain(|_, tat| *tat > now);
        }
        let (new_tat, decision) = gcra(local.get(key).copied(), now, quota);
        if let Some(tat) = new_tat {
            local.insert(key.to_string(), tat);
        }
        decision
    }

    /// Redis, or while it is away the in-process limiter (one request at a time): the
    /// decision and how many more requests were taken.
    async fn take(&self, key: &str, quota: Quota, want: u32, unspent: u32) -> (Decision, u32) {
        let skip_redis = self
            .redis_retry_at
            .lock()
            .expect("limiter lock poisoned")
            .is_some_and(|at| Instant::now() < at);
        if !skip_redis {
            match self.take_from_redis(key, quota, want, unspent).await {
                Ok(taken) => {
                    if self
                        .redis_retry_at
                        .lock()
                        .expect("limiter lock poisoned")
                        .take()
                        .is_some()
                    {
                        tracing::info!("rate limiting: Redis is back");
                    }
                    return taken;
                }
                Err(e) => {
                    let mut retry = self.redis_retry_at.lock().expect("limiter lock poisoned");
                    if retry.is_none() {
                        tracing::warn!(error = %e, "rate limiting: Redis unreachable, limiting in process until it is back");
                    }
                    *retry = Some(Instant::now() + Duration::from_secs(1));
                }
            }
        }
        metrics::counter!("gateway_rate_limit_local_checks_total").increment(1);
        (self.check_local(key, quota), 0)
    }

    /// The share slot of `key`.
    fn slot(&self, key: &str) -> Slot {
        let mut shares = self.shares.lock().expect("limiter lock poisoned");
        if let Some(slot) = shares.get(key) {
            return slot.clone();
        }
        if shares.len() >= LOCAL_KEYS {
            // Forget the slots nobody waits on whose share is spent or stale.
            shares.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot.try_lock().map_or(true, |share| {
                        share.is_some_and(|s| s.left > 0 && s.taken_at.elapsed() < SHARE_LIFETIME)
                    })
            });
        }
        shares.entry(key.to_string()).or_default().clone()
    }

    /// Checks (and, when allowed, spends) one request of `key`'s budget.
    pub async fn check(&self, key: &str, quota: Quota) -> Decision {
        let want = self.share.unwrap_or_else(|| local_share(quota));
        if want <= 1 {
            return self.take(key, quota, 1, 0).await.0;
        }
        let slot = self.slot(key);
        let mut held = slot.lock().await;
        if let Some(decision) = held.as_mut().and_then(Share::spend) {
            return decision;
        }
        let unspent = held.take().map_or(0, |s| s.left);
        let (decision, left) = self.take(key, quota, want, unspent).await;
        if left > 0 {
            *held = Some(Share {
                left,
                remaining: decision.remaining - left,
                reset: decision.reset,
                taken_at: Instant::now(),
            });
        }
        decision
    }
}

/// Paths never limited (probes and scrapes).
const EXEMPT: &[&str] = &["/health/live", "/health/ready", "/metrics"];

/// Limits every request by its caller's budget.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
}

impl RateLimitLayer {
    /// A layer sharing `limiter`.
    pub fn new(limiter: Arc<Limiter>) -> Self {
        Self { limiter }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

fn set(headers: &mut http::HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
}

impl<S, B> tower::Service<Request<B>> for RateLimit<S>
where
    S: tower::Service<Request<B>, Response = Response<Full<Bytes>>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        if EXEMPT.contains(&path.as_str()) {
            return Box::pin(self.inner.call(req));
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        let (class, quota) = if path.starts_with("/v1/auth/") {
            ("auth", limiter.auth)
        } else {
            ("api", limiter.api)
        };
        let caller = req.extensions().get::<Caller>();
        let who = match caller.and_then(|c| c.user_id) {
            Some(user) => format!("user:{user}"),
            None => format!(
                "ip:{}",
                caller
                    .and_then(|c| c.client_ip.clone())
                    .unwrap_or_else(|| "unknown".into())
            ),
        };
        let key = format!("ratelimit:{class}:{who}");
        Box::pin(async move {
            let decision = limiter.check(&key, quota).await;
            let mut response = if decision.allowed {
                inner.call(req).await?
            } else {
                metrics::counter!("gateway_rate_limited_total", "class" => class).increment(1);
                let retry = decision.retry_after.as_secs_f64().ceil().max(1.0) as u64;
                let mut response = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many requests; try again in {retry} s"),
                )
                .header(header::RETRY_AFTER, &retry.to_string())
                .into_response(&path);
                response
                    .extensions_mut()
                    .insert(RouteLabel("rate_limited".into()));
                response
            };
            let headers = response.headers_mut();
            set(
                headers,
                "ratelimit-policy",
                format!("\"{class}\";q={};w={}", quota.burst, quota.window_secs()),
            );
            set(
                headers,
                "ratelimit",
                format!(
                    "\"{class}\";r={};t={}",
                    decision.remaining,
                    decision.reset.as_secs_f64().ceil() as u64
                ),
            );
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_the_burst_then_one_per_interval() {
        let quota = Quota::parse_rate("2/s", 3).unwrap();
        assert_eq!(quota.interval, Duration::from_millis(500));
        let mut tat = None;
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let (next, d) = gcra(tat, 1_000_000, quota);
            assert!(d.allowed);
            remaining.push(d.remaining);
            tat = next;
        }
        assert_eq!(remaining, [2, 1, 0]);
        let (_, refused) = gcra(tat, 1_000_000, quota);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        // Half a second later exactly one more fits.
        let (next, d) = gcra(tat, 1_500_000, quota);
        assert!(d.allowed);
        assert!(!gcra(next, 1_500_000, quota).1.allowed);
        // Idle long enough, the whole burst is back.
        assert_eq!(gcra(next, 60_000_000, quota).1.remaining, 2);
        // A rate above a thousand a second keeps its interval (it once rounded up to 1 ms).
        let fast = Quota::parse_rate("4000/s", 1).unwrap();
        let (next, _) = gcra(None, 0, fast);
        assert!(!gcra(next, 249, fast).1.allowed);
        assert!(gcra(next, 250, fast).1.allowed);
    }

    #[test]
    fn rates_parse_with_units_and_bad_ones_are_explained() {
        assert_eq!(
            Quota::parse_rate("10/m", 5).unwrap().interval,
            Duration::from_secs(6)
        );
        assert!(Quota::parse_rate("10", 5).unwrap_err().contains("20/s"));
        assert!(Quota::parse_rate("0/s", 5).is_err());
        assert!(Quota::parse_rate("5/d", 5).is_err());
        assert!(Quota::parse_rate("5/s", 0).is_err());
    }
}
