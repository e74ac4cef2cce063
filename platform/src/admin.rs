//! The admin HTTP endpoint every role exposes: `/health/live`, `/health/ready` with named
//! checks, and `/metrics` in the Prometheus text format.

use std::{
    convert::Infallible, future::Future, pin::Pin, sync::Arc, sync::OnceLock, time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The outcome of one readiness check: `Err` carries a short reason for operators.
pub type CheckResult = Result<(), String>;

type CheckFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = CheckResult> + Send>> + Send + Sync>;

/// Named readiness checks; the role is ready when every one passes.
#[derive(Clone, Default)]
pub struct Readiness {
    /// (name, gates readiness, check)
    checks: Vec<(String, bool, CheckFn)>,
}

impl Readiness {
    /// No checks yet (ready).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check, e.g. `("postgres", || async { pool ping })`.
    pub fn with_check<F, Fut>(mut self, name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        self.checks
            .push((name.to_string(), true, Arc::new(move || Box::pin(check()))));
        self
    }

    /// Adds a check that `pool`'s Postgres answers (`SELECT 1`).
    pub fn with_postgres(self, name: &str, pool: sqlx::PgPool) -> Self {
        self.with_check(name, move || {
            let pool = pool.clone();
            async move {
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
    }

    /// Adds a check that is reported but does not gate readiness: for dependencies the
    /// role can serve without (Redis), where going unready would turn a degradation into
    /// an outage. A failure shows as `degraded: …`.
    pub fn with_optional_check<F, Fut>(mut self, name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        self.checks
            .push((name.to_string(), false, Arc::new(move || Box::pin(check()))));
        self
    }

    /// Adds every check of `other` (the `all` role merges its parts' checks).
    pub fn merge(mut self, other: Readiness) -> Self {
        self.checks.extend(other.checks);
        self
    }

    /// Runs every check (each bounded by a timeout) and reports them by name.
    pub async fn report(&self) -> (bool, serde_json::Value) {
        // Concurrently, so one slow dependency does not delay the others' answers.
        let results = futures::future::join_all(self.checks.iter().map(|(name, gating, check)| {
            let fut = check();
            let name = name.clone();
            let gating = *gating;
            async move {
                let outcome = match tokio::time::timeout(Duration::from_secs(3), fut).await {
                    Ok(r) => r,
                    Err(_) => Err("timed out after 3s".to_string()),
                };
                (name, gating, outcome)
            }
        }))
        .await;
        let ready = results.iter().all(|(_, gating, r)| r.is_ok() || !gating);
        let checks: serde_json::Map<String, serde_json::Value> = results
            .into_iter()
            .map(|(name, gating, r)| {
                let text = match r {
                    Ok(()) => "ok".to_string(),
                    Err(e) if gating => e,
                    Err(e) => format!("degraded: {e}"),
                };
                (name, serde_json::Value::String(text))
            })
            .collect();
        (
            ready,
            serde_json::json!({ "status": if ready { "ready" } else { "not_ready" }, "checks": checks }),
        )
    }
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // In tests another recorder may already be global; the handle still renders ours.
        let _ = metrics::set_global_recorder(recorder);
        let upkeep = handle.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    upkeep.run_upkeep();
                }
            });
        }
        handle
    })
}

/// Answers the admin paths; `None` for any other path so callers (the gateway) can route on.
pub async fn respond(
    method: &Method,
    path: &str,
    readiness: &Readiness,
) -> Option<Response<Full<Bytes>>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let (status, content_type, body) = match path {
        "/health/live" => (
            StatusCode::OK,
            "application/json",
            r#"{"status":"live"}"#.to_string(),
        ),
        "/health/ready" => {
            let (ready, report) = readiness.report().await;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, "application/json", report.to_string())
        }
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            prometheus().render(),
        ),
        _ => return None,
    };
    Some(
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CACHE_CONTROL, "no-store")
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid"),
    )
}

/// Serves the admin endpoint on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    prometheus();
    let readiness = Arc::new(readiness);
    serve_http(
        listener,
        "admin",
        shutdown,
        move |req: Request<Incoming>| {
            let readiness = readiness.clone();
            async move {
                let resp = match respond(req.method(), req.uri().path(), &readiness).await {
                    Some(r) => r,
                    None => Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::from_static(b"not found")))
                        .expect("static response parts are valid"),
                };
                Ok::<_, Infallible>(resp)
            }
        },
    )
    .await
}

/// Serves HTTP/1.1 and HTTP/2 on `listener`, each request answered by `handle`, until
/// `shutdown` fires (the admin endpoint and the local simulators). A handler's `Err` closes
/// that connection without an answer; `name` labels the log of connections that end badly.
pub async fn serve_http<F, Fut, E>(
    listener: TcpListener,
    name: &'static str,
    shutdown: CancellationToken,
    handle: F,
) -> anyhow::Result<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(handle);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "{name} connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn checks_run_concurrently() {
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(())
        };
        let readiness = Readiness::new().with_check("a", slow).with_check("b", slow);
        let started = tokio::time::Instant::now();
        assert!(readiness.report().await.0);
        // Virtual time: sequential checks would take two seconds.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn optional_checks_are_reported_but_do_not_gate_readiness() {
        let readiness = Readiness::new()
            .with_check("db", || async { Ok(()) })
            .with_optional_check("cache", || async { Err("connection refused".to_string()) });
        let (ready, report) = readiness.report().await;
        assert!(ready);
        assert_eq!(report["checks"]["cache"], "degraded: connection refused");

        let failing = readiness.with_check("broker", || async { Err("down".to_string()) });
        let (ready, report) = failing.report().await;
        assert!(!ready);
        assert_eq!(report["status"], "not_ready");
        assert_eq!(report["checks"]["broker"], "down");
    }
}
