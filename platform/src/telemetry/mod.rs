//! Tracing for every role: text or JSON logs, OTLP export when configured, and W3C trace
//! context carried across HTTP and gRPC headers so one trace spans gateway → service.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use opentelemetry::{
    propagation::{Extractor, Injector},
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{LevelFilter, filter_fn},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use crate::config::{CommonSettings, LogFormat};

mod database;
mod roles;

pub use database::operation_and_table;
pub use roles::{ROLE, current_role, role_of_grpc_service};

/// The roles `orderflow all` runs in its one process, each traced as its own service (in
/// the order the fault harness starts them as processes, the gateway last).
pub const ALL_ROLES: &[&str] = &[
    "iam",
    "catalog",
    "order",
    "order-projector",
    "payment",
    "dte",
    "gateway",
];

/// Flushes exported spans when dropped: keep it alive until the process ends.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

/// Installs the global subscriber for the role `service` (traced as `orderflow-<service>`;
/// for `all`, each span as its own role's service). Must run inside the tokio runtime (the
/// OTLP exporter spawns onto it). A second call (tests) keeps the first subscriber.
/// `version` is the binary's (`service.version`: the crate version, `+<commit>` where known).
pub fn init(
    service: &str,
    version: &str,
    settings: &CommonSettings,
) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_new(&settings.log_filter)
        .map_err(|e| anyhow::anyhow!("setting RUST_LOG is malformed: {e}"))?;
    let fmt_layer = match settings.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => json_logs().boxed(),
    };
    // Spans always carry an OpenTelemetry context, exported or not, so `traceparent`
    // crosses every hop (gateway → service → RabbitMQ → consumer) even when nothing is
    // collected; with an endpoint they are also exported.
    // Each role is a service of its own in the traces (`orderflow-gateway`,
    // `orderflow-order`, …), as the OpenTelemetry resource conventions name them.
    let mut builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(format!("orderflow-{service}"))
            .with_attributes([
                opentelemetry::KeyValue::new("service.version", version.to_string()),
                opentelemetry::KeyValue::new(
                    "deployment.environment.name",
                    settings.deployment_environment.clone(),
                ),
            ])
            .build(),
    );
    let exporting = settings.otlp_endpoint.is_some();
    if let Some(endpoint) = &settings.otlp_endpoint {
        let make = || {
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| {
                    anyhow::anyhow!(
                        "setting OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the exporter: {e}"
                    )
                })
        };
        builder = if service == "all" {
            builder.with_batch_exporter(roles::ByRole::new(ALL_ROLES, make)?)
        } else {
            builder.with_batch_exporter(make()?)
        };
    }
    let provider = builder.build();
    let tracer = provider.tracer("orderflow");
    // Logs follow RUST_LOG; spans for traces are kept at info whatever the log level.
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer.clone())
        .with_filter(LevelFilter::INFO);
    // Database spans come from sqlx's per-statement events (debug), asked for only when
    // spans are exported: otherwise sqlx does not even format them.
    // (Not an `Option` of a layer: a `None` layer enables everything.)
    let database_layer = database::DatabaseSpans { tracer }.with_filter(filter_fn(move |meta| {
        exporting && meta.is_event() && meta.target() == database::SQLX_QUERY
    }));
    let provider = Some(provider);
    // The helper layers see only what they need, so that they enable nothing by
    // themselves: a layer without a filter would make every debug event of every library
    // be built and offered to the others.
    let installed = tracing_subscriber::registry()
        .with(KeepDispatch.with_filter(filter_fn(|_| false)))
        .with(roles::RoleLayer.with_filter(filter_fn(|meta| {
            meta.is_span() && *meta.level() <= tracing::Level::INFO
        })))
        .with(fmt_layer.with_filter(filter))
        .with(otel_layer)
        .with(database_layer)
        .try_init();
    if installed.is_err() {
        tracing::debug!("a tracing subscriber was already installed; keeping it");
    }
    Ok(TelemetryGuard { provider })
}

/// The installed subscriber, kept (weakly) for the JSON log lines: a line asks
/// tracing-opentelemetry for its span's ids, which takes the subscriber, and while an
/// event is being dispatched `tracing::dispatcher::get_default` answers the no-op one.
static DISPATCH: std::sync::OnceLock<tracing::dispatcher::WeakDispatch> =
    std::sync::OnceLock::new();

struct KeepDispatch;

impl<S: tracing::Subscriber> Layer<S> for KeepDispatch {
    fn on_register_dispatch(&self, dispatch: &tracing::Dispatch) {
        let _ = DISPATCH.set(dispatch.downgrade());
    }
}

/// JSON log lines as tracing-subscriber's `json().flatten_event(true)` writes them
/// (timestamp, level, target, the event's fields, `span` and `spans`), plus `trace_id`
/// and `span_id` of the span the event belongs to, so a line leads to its trace. Built
/// with json-subscriber, whose layer takes fields computed per line.
fn json_logs<S>() -> json_subscriber::JsonLayer<S, fn() -> std::io::Stdout>
where
    S: tracing::Subscriber + for<'lookup> tracing_subscriber::registry::LookupSpan<'lookup>,
{
    let mut layer = json_subscriber::JsonLayer::stdout();
    layer
        .with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
        .with_level("level")
        .with_target("target")
        .with_flattened_event()
        .with_current_span("span")
        .with_span_list("spans");
    layer.add_multiple_dynamic_fields(|event, _context, writer| {
        let Some((_, _, cx)) = event_span(event) else {
            return;
        };
        let span_context = cx.span().span_context().clone();
        if span_context.is_valid() {
            let _ = writer.write_field("trace_id", span_context.trace_id().to_string());
            let _ = writer.write_field("span_id", span_context.span_id().to_string());
        }
    });
    layer
}

/// The span an event belongs to as the subscriber knows it (a layer's own context hides
/// the spans its filter leaves out, which are still traced: the request's), with the
/// subscriber and that span's OpenTelemetry context.
fn event_span(
    event: &tracing::Event<'_>,
) -> Option<(tracing::Dispatch, tracing::span::Id, opentelemetry::Context)> {
    let dispatch = DISPATCH
        .get()
        .and_then(tracing::dispatcher::WeakDispatch::upgrade)?;
    let span = match event.parent() {
        Some(parent) => parent.clone(),
        None if event.is_contextual() => dispatch.current_span().id()?.clone(),
        None => return None,
    };
    let cx = tracing_opentelemetry::get_otel_context(&span, &dispatch)?;
    Some((dispatch, span, cx))
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the current span's context (`traceparent`, `tracestate`) into outgoing headers.
pub fn inject_context(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers))
    });
}

/// Names `span` once what it is became known (the route a request took). The name field
/// (`otel.name`) is only read until the span has started, which a child's context starts,
/// so the started span is renamed.
pub fn rename_span(span: &tracing::Span, name: String) {
    span.context().span().update_name(name);
}

/// Makes `span` a child of the trace context found in incoming headers, if any.
pub fn adopt_remote_parent(span: &tracing::Span, headers: &HeaderMap) {
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    // Fails only when the span is disabled, which is nothing to report.
    let _ = span.set_parent(parent);
}

/// Makes `span` a child of a trace context kept as a string map (`traceparent`,
/// `tracestate`; see `amqp::current_trace_headers`), e.g. with an outbox row or a document
/// that another task finishes later.
pub fn adopt_stored_parent(
    span: &tracing::Span,
    stored: &std::collections::BTreeMap<String, String>,
) {
    adopt_remote_parent(span, &stored_headers(stored));
}

/// Links `span` to a trace context kept as a string map (see [`adopt_stored_parent`]): work
/// done once for many requests (an envelope of many documents) has one parent, and names
/// every other request it served by a link.
pub fn link_stored(span: &tracing::Span, stored: &std::collections::BTreeMap<String, String>) {
    let headers = stored_headers(stored);
    let linked =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(&headers)));
    let linked = linked.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

fn stored_headers(stored: &std::collections::BTreeMap<String, String>) -> HeaderMap {
    stored
        .iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.parse().ok()?)))
        .collect()
}

/// A tower layer for gRPC servers: one span per call, parented on the caller's
/// `traceparent`, so traces cross the gateway → service hop.
#[derive(Clone, Copy, Default)]
pub struct GrpcTraceLayer;

impl<S> tower::Layer<S> for GrpcTraceLayer {
    type Service = GrpcTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcTrace { inner }
    }
}

/// The service made by [`GrpcTraceLayer`].
#[derive(Clone)]
pub struct GrpcTrace<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<Request<B>> for GrpcTrace<S>
where
    S: tower::Service<Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let span = grpc_span(req.uri().path(), "server");
        adopt_remote_parent(&span, req.headers());
        let path = req.uri().path().to_string();
        let started = std::time::Instant::now();
        let fut = self.inner.call(req);
        let recorded = span.clone();
        Box::pin(
            async move {
                let result = fut.await;
                if let Ok(response) = &result {
                    // A failed unary call is answered trailers-only: its grpc-status is in
                    // the headers. A success carries 0 in the trailers.
                    let code = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .unwrap_or(0);
                    record_rpc_duration("server", &path, code, started.elapsed());
                    record_grpc_status(&recorded, "server", tonic::Code::from_i32(code));
                }
                result
            }
            .instrument(span),
        )
    }
}

/// A span for one gRPC call as the OpenTelemetry conventions name it: `package.Service/Method`
/// with `rpc.system`, `rpc.service` and `rpc.method`; `kind` is `server` or `client`. The
/// status code is recorded when the call ends ([`record_grpc_status`]).
pub fn grpc_span(path: &str, kind: &'static str) -> tracing::Span {
    let name = path.trim_start_matches('/');
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    // A call served belongs to the service's role; a call made, to the caller's.
    let role = if kind == "server" {
        role_of_grpc_service(service).map(str::to_string)
    } else {
        current_role()
    };
    tracing::info_span!(
        "grpc",
        otel.name = %name,
        otel.kind = kind,
        orderflow.role = role.as_deref(),
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// The conventions' `rpc.server.call.duration` / `rpc.client.call.duration` (seconds) of
/// one call, labelled with the span's `rpc.*` attributes.
fn record_rpc_duration(kind: &'static str, path: &str, code: i32, took: std::time::Duration) {
    let name = path.trim_start_matches('/');
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let labels = [
        ("rpc_system", "grpc".to_string()),
        ("rpc_service", service.to_string()),
        ("rpc_method", method.to_string()),
        ("rpc_grpc_status_code", code.to_string()),
    ];
    let seconds = took.as_secs_f64();
    if kind == "server" {
        metrics::histogram!("rpc_server_call_duration_seconds", &labels).record(seconds);
    } else {
        metrics::histogram!("rpc_client_call_duration_seconds", &labels).record(seconds);
    }
}

/// Records how a gRPC call ended on its span ([`grpc_span`] of the same `kind`). As the
/// conventions say, a server span is an error for the codes that mean the server failed,
/// a client span for any code but OK.
pub fn record_grpc_status(span: &tracing::Span, kind: &str, code: tonic::Code) {
    span.record("rpc.grpc.status_code", code as i64);
    let error = if kind == "server" {
        matches!(
            code,
            tonic::Code::Unknown
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Unimplemented
                | tonic::Code::Internal
                | tonic::Code::Unavailable
                | tonic::Code::DataLoss
        )
    } else {
        code != tonic::Code::Ok
    };
    if error {
        span.record("otel.status_code", "ERROR");
    }
}

/// Runs one outgoing gRPC call inside its CLIENT span ([`grpc_span`]): `call` gets the
/// metadata to send, holding that span's trace context, so the server's span is its child.
pub async fn grpc_client_call<T, F, Fut>(path: &str, call: F) -> Result<T, tonic::Status>
where
    F: FnOnce(tonic::metadata::MetadataMap) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let span = grpc_span(path, "client");
    let mut headers = HeaderMap::new();
    span.in_scope(|| inject_context(&mut headers));
    let started = std::time::Instant::now();
    let result = call(tonic::metadata::MetadataMap::from_headers(headers))
        .instrument(span.clone())
        .await;
    let code = result.as_ref().err().map_or(tonic::Code::Ok, |s| s.code());
    record_rpc_duration("client", path, code as i32, started.elapsed());
    record_grpc_status(&span, "client", code);
    result
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::{CommonSettings, Reader};

    /// What the helper layers see must not switch on, for every library, the events the
    /// log level leaves out: each would be built (sqlx's formats its statement) for nothing.
    #[tokio::test]
    async fn without_an_endpoint_nothing_below_the_log_level_is_built() {
        let src: HashMap<&str, &str> = [("RUST_LOG", "info")].into();
        let settings = CommonSettings::from_source(&Reader::new(&src)).unwrap();
        let _guard = super::init("test", "0.0.0", &settings).unwrap();
        assert!(!tracing::enabled!(target: "sqlx::query", tracing::Level::DEBUG));
        assert!(!tracing::enabled!(target: "h2::codec", tracing::Level::DEBUG));
        assert!(tracing::enabled!(target: "order", tracing::Level::INFO));
    }
}
