//! `Idempotency-Key` on POST (IETF httpapi draft "The Idempotency-Key HTTP Header
//! Field"): the first response for a key, per caller, is kept in Redis for 24 h with a
//! fingerprint of the request; a repeat gets that response again, byte for byte, with
//! `Idempotent-Replayed: true`. The same key with a different request → 422; while the
//! first request is still being served → 409.
//!
//! Only what is final is kept (success, and the refusals that come from the resource's
//! state: 402, 409, 410); validation errors, 429 and 5xx release the key so the client can
//! correct or retry the request. A claim that was never completed (the gateway died mid-request) expires
//! after [`IN_FLIGHT_TTL`]. When Redis is unreachable requests pass through unguarded
//! (logged and counted): every service keeps its own idempotency, this layer is the first
//! line, not the only one.
//!
//! The layer buffers the body of the requests it guards (it needs the bytes for the
//! fingerprint), so it also enforces the body size limit for them (413).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, combinators::UnsyncBoxBody};
use platform::{grpc::Caller, redis::RedisHandle};
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{access_log::RouteLabel, problem::Problem};

/// Boxed errors of request bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request body could not be read (a concrete type, so bodies compose with
/// `Limited` without higher-ranked lifetime trouble).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(BoxError);

/// The request body every service inside this layer sees.
pub type GatewayBody = UnsyncBoxBody<Bytes, BodyError>;

/// How long a completed response is replayed.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long an unfinished claim blocks its key (longer than any upstream deadline).
pub const IN_FLIGHT_TTL: Duration = Duration::from_secs(120);
/// Longest key accepted.
const MAX_KEY_LEN: usize = 255;

const HEADER: &str = "idempotency-key";
/// Credential endpoints are never guarded: their requests carry passwords and refresh
/// tokens (a fingerprint of them must not sit in Redis) and their answers carry tokens.
/// They are safe to repeat anyway (a new token pair, or 409 for an existing account).
const NEVER_STORED: &str = "/v1/auth/";
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// What Redis holds per key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Record {
    InFlight {
        fingerprint: String,
    },
    Done {
        fingerprint: String,
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
}

impl Record {
    fn fingerprint(&self) -> &str {
        match self {
            Record::InFlight { fingerprint } | Record::Done { fingerprint, .. } => fingerprint,
        }
    }
}

/// Guards POST requests that carry an `Idempotency-Key`.
#[derive(Clone)]
pub struct IdempotencyLayer {
    redis: RedisHandle,
    max_body_bytes: usize,
}

impl IdempotencyLayer {
    /// A layer keeping keys in `redis`, buffering bodies up to `max_body_bytes`.
    pub fn new(redis: RedisHandle, max_body_bytes: usize) -> Self {
        Self {
            redis,
            max_body_bytes,
        }
    }
}

impl<S> tower::Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Idempotency {
            inner,
            redis: self.redis.clone(),
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// The service made by [`IdempotencyLayer`].
#[derive(Clone)]
pub struct Idempotency<S> {
    inner: S,
    redis: RedisHandle,
    max_body_bytes: usize,
}

impl<S, B> tower::Service<Request<B>> for Idempotency<S>
where
    S: tower::Service<Request<GatewayBody>, Response = Response<Full<Bytes>>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let guarded = req.method() == Method::POST
            && req.headers().contains_key(HEADER)
            && !req.uri().path().starts_with(NEVER_STORED);
        if !guarded {
            let req = req.map(|b| UnsyncBoxBody::new(b.map_err(|e| BodyError(e.into()))));
            return Box::pin(self.inner.call(req));
        }
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let redis = self.redis.clone();
        let max_body_bytes = self.max_body_bytes;
        Box::pin(async move {
            let path = req.uri().path().to_string();
            match guard(inner, redis, max_body_bytes, req).await {
                Ok(response) => Ok(response),
                Err(Refusal::Problem(problem, label)) => {
                    let mut response = problem.into_response(&path);
                    response.extensions_mut().insert(RouteLabel(label.into()));
                    Ok(response)
                }
                Err(Refusal::Inner(e)) => Err(e),
            }
        })
    }
}

enum Refusal<E> {
    Problem(Problem, &'static str),
    Inner(E),
}

fn problem<E>(status: StatusCode, detail: &str, label: &'static str) -> Refusal<E> {
    Refusal::Problem(
        Problem::new(status, detail).field("Idempotency-Key", detail),
        label,
    )
}

/// The key as sent: a structured-field string (`"abc"`), or bare for lenient clients.
fn parse_key(raw: &HeaderValue) -> Option<String> {
    let raw = raw.to_str().ok()?.trim();
    let key = raw
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(raw);
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
    valid.then(|| key.to_string())
}

fn fingerprint(parts: &http::request::Parts, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(parts.method.as_str());
    hash.update(b"\n");
    hash.update(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
    );
    hash.update(b"\n");
    hash.update(
        parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default(),
    );
    hash.update(b"\n");
    hash.update(body);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.finalize())
}

/// The caller's namespace: the signed-in user, else the client address.
fn owner(parts: &http::request::Parts) -> String {
    let caller = parts.extensions.get::<Caller>();
    match caller.and_then(|c| c.user_id) {
        Some(user) => format!("user:{user}"),
        None => format!(
            "ip:{}",
            caller
                .and_then(|c| c.client_ip.clone())
                .unwrap_or_else(|| "unknown".into())
        ),
    }
}

/// Whether an answer is final (kept and replayed) or says the request did not take effect
/// and may be corrected and sent again with the same key: validation and access refusals
/// (4xx other than 402/409/410), throttling and server trouble (5xx).
fn is_final(status: StatusCode) -> bool {
    status.is_success() || status.is_redirection() || matches!(status.as_u16(), 402 | 409 | 410)
}

async fn guard<S, B>(
    mut inner: S,
    redis: RedisHandle,
    max_body_bytes: usize,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Refusal<S::Error>>
where
    S: tower::Service<Request<GatewayBody>, Response = Response<Full<Bytes>>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let key = parse_key(&req.headers()[HEADER]).ok_or_else(|| {
        problem(
            StatusCode::BAD_REQUEST,
            &format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            "idempotency_invalid",
        )
    })?;
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Refusal::Problem(
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body exceeds {max_body_bytes} bytes"),
                ),
                "too_large",
            ));
        }
        Err(_) => {
            return Err(Refusal::Problem(
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                ),
                "bad_body",
            ));
        }
    };
    let fingerprint = fingerprint(&parts, &body);
    let digest = Sha256::digest(key.as_bytes());
    let redis_key = redis.key(&format!(
        "idempotency:{}:{}",
        owner(&parts),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    ));
    let forward = Request::from_parts(
        parts,
        UnsyncBoxBody::new(Full::new(body).map_err(|never| match never {})),
    );

    let mut conn = match claim(&redis, &redis_key, &fingerprint).await {
        Ok((conn, Claim::Ours)) => conn,
        Ok((_, Claim::Taken(record))) => return replay_or_refuse(record, &fingerprint),
        Err(e) => {
            metrics::counter!("gateway_idempotency_unavailable_total").increment(1);
            tracing::warn!(error = %e, "idempotency: Redis unreachable, passing the request through unguarded");
            return inner.call(forward).await.map_err(Refusal::Inner);
        }
    };

    let response = match inner.call(forward).await {
        Ok(response) => response,
        Err(e) => {
            let _: Result<(), _> = conn.del(&redis_key).await;
            return Err(Refusal::Inner(e));
        }
    };
    let (head, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_else(|never| match never {});
    let stored = if is_final(head.status) {
        let record = Record::Done {
            fingerprint,
            status: head.status.as_u16(),
            headers: head
                .headers
                .iter()
                .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body: base64::engine::general_purpose::STANDARD.encode(&body),
        };
        let json = serde_json::to_string(&record).expect("records serialise");
        conn.set_options::<_, _, ()>(
            &redis_key,
            json,
            redis::SetOptions::default()
                .with_expiration(redis::SetExpiry::PX(RETENTION.as_millis() as u64)),
        )
        .await
    } else {
        conn.del::<_, ()>(&redis_key).await
    };
    if let Err(e) = stored {
        metrics::counter!("gateway_idempotency_unavailable_total").increment(1);
        tracing::warn!(error = %e, "idempotency: the response could not be recorded");
    }
    Ok(Response::from_parts(head, Full::new(body)))
}

enum Claim {
    Ours,
    Taken(Record),
}

/// Claims the key for this request, or reads what holds it.
async fn claim(
    redis: &RedisHandle,
    key: &str,
    fingerprint: &str,
) -> redis::RedisResult<(redis::aio::ConnectionManager, Claim)> {
    let mut conn = redis.conn().await?;
    let in_flight = serde_json::to_string(&Record::InFlight {
        fingerprint: fingerprint.to_string(),
    })
    .expect("records serialise");
    // Two rounds: the holder may expire or be released between our SET and our GET.
    for _ in 0..2 {
        let claimed: Option<String> = conn
            .set_options(
                key,
                &in_flight,
                redis::SetOptions::default()
                    .conditional_set(redis::ExistenceCheck::NX)
                    .with_expiration(redis::SetExpiry::PX(IN_FLIGHT_TTL.as_millis() as u64)),
            )
            .await?;
        if claimed.is_some() {
            return Ok((conn, Claim::Ours));
        }
        let held: Option<String> = conn.get(key).await?;
        if let Some(record) = held.and_then(|json| serde_json::from_str(&json).ok()) {
            return Ok((conn, Claim::Taken(record)));
        }
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Io,
        "idempotency key kept changing hands",
    )))
}

fn replay_or_refuse<E>(
    record: Record,
    fingerprint: &str,
) -> Result<Response<Full<Bytes>>, Refusal<E>> {
    if record.fingerprint() != fingerprint {
        metrics::counter!("gateway_idempotency_refused_total", "reason" => "mismatch").increment(1);
        return Err(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was already used for a different request",
            "idempotency_mismatch",
        ));
    }
    let Record::Done {
        status,
        headers,
        body,
        ..
    } = record
    else {
        metrics::counter!("gateway_idempotency_refused_total", "reason" => "in_flight")
            .increment(1);
        return Err(Refusal::Problem(
            Problem::new(
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key is still being processed; retry later",
            )
            .field("Idempotency-Key", "in use by a request in flight")
            .header(http::header::RETRY_AFTER, "1"),
            "idempotency_in_flight",
        ));
    };
    metrics::counter!("gateway_idempotency_replays_total").increment(1);
    let body = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_structured_strings_or_bare_tokens() {
        let key = |s: &str| parse_key(&HeaderValue::from_str(s).unwrap());
        assert_eq!(key("\"8e03978e-40d5\"").as_deref(), Some("8e03978e-40d5"));
        assert_eq!(key("abc123").as_deref(), Some("abc123"));
        assert_eq!(key("\"\""), None);
        assert_eq!(key("has space"), None);
        assert_eq!(key(&"k".repeat(256)), None);
    }

    #[test]
    fn the_fingerprint_covers_method_target_type_and_body() {
        let parts = |uri: &str, ct: &str| {
            Request::post(uri)
                .header("content-type", ct)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let base = fingerprint(&parts("/v1/orders", "application/json"), b"{}");
        assert_eq!(
            base,
            fingerprint(&parts("/v1/orders", "application/json"), b"{}")
        );
        assert_ne!(
            base,
            fingerprint(&parts("/v1/orders", "application/json"), b"{ }")
        );
        assert_ne!(
            base,
            fingerprint(&parts("/v1/orders?x=1", "application/json"), b"{}")
        );
        assert_ne!(base, fingerprint(&parts("/v1/orders", "text/plain"), b"{}"));
    }

    #[test]
    fn only_final_answers_are_kept() {
        assert!(is_final(StatusCode::CREATED));
        assert!(is_final(StatusCode::CONFLICT));
        assert!(is_final(StatusCode::PAYMENT_REQUIRED));
        assert!(!is_final(StatusCode::BAD_REQUEST));
        assert!(!is_final(StatusCode::UNPROCESSABLE_ENTITY));
        assert!(!is_final(StatusCode::TOO_MANY_REQUESTS));
        assert!(!is_final(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!is_final(StatusCode::GATEWAY_TIMEOUT));
    }
}
