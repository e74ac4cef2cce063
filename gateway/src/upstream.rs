//! Calling the upstream gRPC services: one deadline per route (sent as `grpc-timeout`, and
//! enforced here too, so a hung upstream costs the client at most that long → 504), and
//! retries only for idempotent reads (GET routes) refused with UNAVAILABLE, bounded per
//! request and by a retry budget shared by the gateway, so a failing upstream is not
//! hammered with retries on top of its load.

use std::{collections::HashMap, time::Duration};

use http::Method;
use prost_reflect::DynamicMessage;
use tokio::time::Instant;
use tonic::{Code, Status, metadata::MetadataMap, transport::Channel};
use tower::retry::budget::{Budget as _, TpsBudget};

use crate::{routes::Route, transcode::DynamicCodec};

/// Deadlines per route: `GET` routes get the read timeout, others the write timeout,
/// unless the route is named in the overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTimeouts {
    /// Deadline of GET routes.
    pub read: Duration,
    /// Deadline of every other route.
    pub write: Duration,
    /// `(method, template)` → deadline.
    pub overrides: HashMap<(Method, String), Duration>,
}

/// Routes that need more than the default timeout: a payment may wait for the processor
/// (`PAYMENT_PROVIDER_TIMEOUT`, 10 s) up to three times; an order read with `waitFor`
/// waits up to `ORDER_WATCH_MAX_WAIT` (25 s) for a change.
pub const DEFAULT_OVERRIDES: &str =
    "POST /v1/orders/{order_id}/payments=45s,GET /v1/orders/{id}=35s";

impl RouteTimeouts {
    /// Parses `METHOD /template=duration` entries, comma separated.
    pub fn parse_overrides(raw: &str) -> Result<HashMap<(Method, String), Duration>, String> {
        let mut overrides = HashMap::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || format!("{entry:?}: expected e.g. \"GET /v1/products=2s\"");
            let (route, duration) = entry.rsplit_once('=').ok_or_else(bad)?;
            let (method, template) = route.trim().split_once(' ').ok_or_else(bad)?;
            let method: Method = method.parse().map_err(|_| bad())?;
            let duration = platform::config::parse_duration(duration.trim())
                .filter(|d| !d.is_zero())
                .ok_or_else(bad)?;
            overrides.insert((method, template.trim().to_string()), duration);
        }
        Ok(overrides)
    }

    /// The deadline of `route`.
    pub fn of(&self, route: &Route) -> Duration {
        self.overrides
            .get(&(route.method.clone(), route.template.clone()))
            .copied()
            .unwrap_or(if route.method == Method::GET {
                self.read
            } else {
                self.write
            })
    }
}

/// Retries of idempotent reads.
pub struct Retries {
    /// Retries per request at most.
    pub max: u32,
    budget: TpsBudget,
}

impl Retries {
    /// At most `max` retries per request, and over any 10 s no more retries than 20 % of
    /// the reads plus 10 per second.
    pub fn new(max: u32) -> Self {
        Self {
            max,
            budget: TpsBudget::new(Duration::from_secs(10), 10, 0.2),
        }
    }
}

/// Why an upstream call gave no reply.
pub enum CallError {
    /// The service answered with a status.
    Status(Status),
    /// The deadline passed.
    TimedOut(Duration),
}

/// Calls `route`'s RPC with `message`, within the route's deadline, retrying idempotent
/// reads refused with UNAVAILABLE while the budget allows.
pub async fn call(
    channel: Channel,
    route: &Route,
    metadata: MetadataMap,
    message: DynamicMessage,
    timeout: Duration,
    retries: &Retries,
) -> Result<DynamicMessage, CallError> {
    let deadline = Instant::now() + timeout;
    let retryable = route.method == Method::GET;
    if retryable {
        retries.budget.deposit();
    }
    let mut attempt = 0;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let once = once(
            channel.clone(),
            route,
            metadata.clone(),
            message.clone(),
            remaining,
        );
        let status = match tokio::time::timeout(remaining, once).await {
            Err(_) => return Err(CallError::TimedOut(timeout)),
            Ok(Ok(reply)) => return Ok(reply),
            // tonic's own `grpc-timeout` timer may fire first: whatever it reports, once
            // the deadline has passed the answer is that it passed.
            Ok(Err(status))
                if matches!(
                    status.code(),
                    Code::Cancelled | Code::DeadlineExceeded | Code::Unavailable
                ) && Instant::now() + Duration::from_millis(5) >= deadline =>
            {
                return Err(CallError::TimedOut(timeout));
            }
            Ok(Err(status)) => status,
        };
        let retry = retryable
            && status.code() == Code::Unavailable
            && attempt < retries.max
            && retries.budget.withdraw();
        if !retry {
            return Err(CallError::Status(status));
        }
        attempt += 1;
        metrics::counter!("gateway_upstream_retries_total", "service" => route.upstream.clone())
            .increment(1);
        // Back off a little (25 ms, 50 ms, …) unless that would pass the deadline.
        let pause = Duration::from_millis(25 << attempt.min(5));
        if Instant::now() + pause >= deadline {
            return Err(CallError::Status(status));
        }
        tokio::time::sleep(pause).await;
    }
}

async fn once(
    channel: Channel,
    route: &Route,
    metadata: MetadataMap,
    message: DynamicMessage,
    timeout: Duration,
) -> Result<DynamicMessage, Status> {
    // One CLIENT span per attempt, whose context the upstream's server span continues.
    platform::telemetry::grpc_client_call(&route.grpc_path, |trace| async move {
        let mut headers = metadata.into_headers();
        for (name, value) in trace.into_headers() {
            if let Some(name) = name {
                headers.insert(name, value);
            }
        }
        let metadata = MetadataMap::from_headers(headers);
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| {
            tracing::warn!(upstream = %route.upstream, error = %e, "upstream not ready");
            Status::unavailable("upstream unavailable")
        })?;
        let mut request =
            tonic::Request::from_parts(metadata, tonic::Extensions::default(), message);
        request.set_timeout(timeout);
        let path = http::uri::PathAndQuery::from_maybe_shared(route.grpc_path.clone())
            .expect("gRPC paths are valid");
        let started = std::time::Instant::now();
        let result = grpc
            .unary(request, path, DynamicCodec::new(route.rpc.output()))
            .await;
        metrics::histogram!("gateway_upstream_duration_seconds", "service" => route.upstream.clone())
            .record(started.elapsed().as_secs_f64());
        result.map(tonic::Response::into_inner).map_err(|status| {
            // A connection that failed under the call is the upstream being unreachable, not
            // an answer: tonic says CANCELLED or UNKNOWN with the transport's error as the
            // source, or INTERNAL with h2's when the connection broke mid-stream (an upstream
            // killed while answering); a status the upstream sent has no source. Reads are
            // then retried like any UNAVAILABLE, and the client gets 503, not 500 (a write
            // is repeated by its client with the same Idempotency-Key).
            let transport = std::error::Error::source(&status).is_some();
            if matches!(status.code(), Code::Cancelled | Code::Unknown | Code::Internal) && transport
            {
                tracing::warn!(upstream = %route.upstream, error = %status, "upstream connection failed");
                Status::unavailable("upstream unavailable")
            } else {
                status
            }
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_and_bad_ones_are_explained() {
        let parsed =
            RouteTimeouts::parse_overrides("GET /v1/products=2s, POST /v1/orders=500ms").unwrap();
        assert_eq!(
            parsed[&(Method::GET, "/v1/products".to_string())],
            Duration::from_secs(2)
        );
        assert_eq!(
            parsed[&(Method::POST, "/v1/orders".to_string())],
            Duration::from_millis(500)
        );
        assert!(RouteTimeouts::parse_overrides("/v1/products=2s").is_err());
        assert!(RouteTimeouts::parse_overrides("GET /v1/products=soon").is_err());
        assert!(RouteTimeouts::parse_overrides("GET /v1/products=0s").is_err());
        assert!(RouteTimeouts::parse_overrides("").unwrap().is_empty());
    }

    #[test]
    fn the_budget_stops_retries_when_most_reads_fail() {
        let retries = Retries::new(2);
        // The budget's floor (10/s over 10 s) is spent first; beyond it only 20 % of reads.
        let mut allowed = 0;
        for _ in 0..1000 {
            retries.budget.deposit();
            if retries.budget.withdraw() {
                allowed += 1;
            }
        }
        assert!(allowed < 400, "{allowed} retries for 1000 reads");
        assert!(allowed >= 100, "the floor allows some: {allowed}");
    }
}
