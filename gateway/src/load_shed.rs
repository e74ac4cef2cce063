//! Overload protection: at most N requests in flight across every connection; beyond that
//! a request is answered at once with 503 + `Retry-After` instead of queueing without
//! bound (a queue only turns overload into timeouts for everyone). Probes and metrics are
//! never shed: an overloaded gateway is neither restarted (liveness) nor taken out of its
//! Service (readiness) for being busy. Shedding every replica's readiness at once would
//! turn a slow minute into an outage; overload shows in 503s to clients and in metrics.
//!
//! A long poll (a GET with `waitFor`, which idles until the resource changes) does not
//! take one of the N work permits: it counts against its own, larger limit, so shoppers
//! following their orders never crowd out the requests that do work.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::sync::Semaphore;

use crate::{access_log::RouteLabel, problem::Problem};

/// Paths that bypass the limit.
const NEVER_SHED: &[&str] = &["/health/live", "/health/ready", "/metrics"];

/// Sheds load beyond `max_in_flight` concurrent requests.
#[derive(Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    waits: Arc<Semaphore>,
}

impl LoadShedLayer {
    /// Limits shared by every service this layer wraps (one per gateway, not per
    /// connection): `max_in_flight` requests at work, `max_waits` long polls waiting.
    pub fn new(max_in_flight: usize, max_waits: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            waits: Arc::new(Semaphore::new(max_waits)),
        }
    }
}

/// Whether a request is a long poll (`GET …?waitFor=…`).
pub(crate) fn is_long_poll<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::GET
        && req.uri().query().is_some_and(|q| {
            q.split('&')
                .any(|p| p.starts_with("waitFor=") || p.starts_with("wait_for="))
        })
}

impl<S> tower::Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            permits: self.permits.clone(),
            waits: self.waits.clone(),
        }
    }
}

/// The service made by [`LoadShedLayer`].
#[derive(Clone)]
pub struct LoadShed<S> {
    inner: S,
    permits: Arc<Semaphore>,
    waits: Arc<Semaphore>,
}

impl<S, B> tower::Service<Request<B>> for LoadShed<S>
where
    S: tower::Service<Request<B>, Response = Response<Full<Bytes>>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        if NEVER_SHED.contains(&path.as_str()) {
            return Box::pin(self.inner.call(req));
        }
        let limit = if is_long_poll(&req) {
            &self.waits
        } else {
            &self.permits
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics::counter!("http_requests_shed_total").increment(1);
            let mut response = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway is at capacity; try again shortly",
            )
            .header(header::RETRY_AFTER, "1")
            .into_response(&path);
            response.extensions_mut().insert(RouteLabel("shed".into()));
            return Box::pin(async move { Ok(response) });
        };
        metrics::gauge!("http_requests_in_flight").increment(1.0);
        let future = self.inner.call(req);
        Box::pin(async move {
            let result = future.await;
            drop(permit);
            metrics::gauge!("http_requests_in_flight").decrement(1.0);
            result
        })
    }
}
