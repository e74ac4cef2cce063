//! Access log, per-route metrics and the request's trace span: one line, one sample and
//! one span per request. The span continues the client's `traceparent` when it sends one,
//! and is what the upstream call propagates.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use tracing::Instrument as _;

/// The route template that served a response, set by the router as a response extension
/// so metrics are labelled by template (bounded) rather than by raw path (unbounded).
#[derive(Clone, Debug)]
pub struct RouteLabel(pub String);

/// Logs and measures every request.
#[derive(Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner }
    }
}

/// The service made by [`AccessLogLayer`].
#[derive(Clone)]
pub struct AccessLog<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<Request<B>> for AccessLog<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        // Named by the route's template once the router has chosen it (the conventions'
        // `METHOD /v1/orders/{id}`: one name per route, never one per order); until then,
        // and for paths no route serves, by the method alone.
        let span = tracing::info_span!(
            "http request",
            otel.name = %method,
            otel.kind = "server",
            orderflow.role = "gateway",
            http.request.method = %method,
            url.path = %path,
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let recorded = span.clone();
        platform::telemetry::adopt_remote_parent(&span, req.headers());
        let future = span.in_scope(|| self.inner.call(req));
        Box::pin(async move {
            let result = future.await;
            if let Ok(response) = &result {
                let elapsed = started.elapsed();
                let status = response.status().as_u16();
                let route = response
                    .extensions()
                    .get::<RouteLabel>()
                    .map(|r| r.0.clone())
                    .unwrap_or_else(|| "unmatched".into());
                // A template (or a fixed path); not the labels of answers no route gave
                // (`shed`, `rate_limited`, `unmatched`, the storefront's pages).
                let templated = route.starts_with('/') && !route.contains(' ');
                if templated {
                    platform::telemetry::rename_span(&recorded, format!("{method} {route}"));
                    recorded.record("http.route", route.as_str());
                }
                recorded.record("http.response.status_code", status);
                if status >= 500 {
                    recorded.record("otel.status_code", "ERROR");
                }
                // The conventions' `http.server.request.duration`, with their attributes as
                // labels (`http_route` only where a route answered); its `_count` counts
                // requests.
                let mut labels = vec![
                    ("http_request_method", method.to_string()),
                    ("http_response_status_code", status.to_string()),
                ];
                if templated {
                    labels.push(("http_route", route.clone()));
                }
                metrics::histogram!("http_server_request_duration_seconds", &labels)
                    .record(elapsed.as_secs_f64());
                tracing::info!(target: "access", %method, %path, %route, status, latency_ms = elapsed.as_secs_f64() * 1e3, request_id, "request");
            }
            result
        }.instrument(span))
    }
}
