//! Traces as an OpenTelemetry backend receives them (issue 22): every role as its own
//! process exporting OTLP to a collector the test serves (the collector's TraceService
//! from `opentelemetry-proto`), one checkout, then the spans' shape: a service per role,
//! names by route and RPC (never by id), the conventions' attributes and kinds, one trace
//! from the gateway through the services and RabbitMQ to the consumers, and a JSON log
//! line of the request carrying the same trace id.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value as Any},
    trace::v1::span::SpanKind,
};
use serde_json::{Value, json};

/// A span as received, with its service.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
    /// The trace ids it links to.
    links: Vec<String>,
    attributes: HashMap<String, String>,
    resource: HashMap<String, String>,
}

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let resource_attributes = resource
                .resource
                .as_ref()
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource_attributes
                .get("service.name")
                .cloned()
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        service: service.clone(),
                        name: span.name.clone(),
                        kind: span.kind,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        links: span.links.iter().map(|l| hex(&l.trace_id)).collect(),
                        attributes: attributes(&span.attributes),
                        resource: resource_attributes.clone(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Collector {
    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until a span matching `wanted` has arrived.
    async fn until(&self, what: &str, wanted: impl Fn(&Received) -> bool) -> Received {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = self.spans().into_iter().find(&wanted) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no span {what} among:\n{}",
                self.spans()
                    .iter()
                    .map(|s| format!("{} {} {:?}", s.service, s.name, s.kind))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Places an order for one TRAZA-1 and pays it by card: its id, and the placement's
/// response headers.
async fn buy(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> (String, reqwest::header::HeaderMap) {
    let (order, placed) = post(
        http,
        &format!("{base}/v1/orders"),
        Some(token),
        json!({"lines": [{"sku": "TRAZA-1", "quantity": 1}]}),
    )
    .await;
    let id = order["id"].as_str().unwrap().to_string();
    post(
        http,
        &format!("{base}/v1/orders/{id}/payments"),
        Some(token),
        json!({"card": {"number": "4242424242424242", "expMonth": 12, "expYear": 2030, "cvc": "123", "holder": "Ana Pérez"}}),
    )
    .await;
    (id, placed)
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: Value,
) -> (Value, reqwest::header::HeaderMap) {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request
            .bearer_auth(token)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string());
    }
    let response = request.send().await.unwrap();
    let headers = response.headers().clone();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    assert!(status.is_success(), "{url}: {status} {body}");
    (body, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_checkout_is_one_trace_across_the_roles_with_the_conventions_names_and_logs_point_at_it()
 {
    one_checkout_is_one_trace(cli::chaos::ROLES).await;
}

/// `orderflow all` runs every role in one process, and still reports each as its own
/// service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_one_process_each_role_is_still_its_own_service() {
    one_checkout_is_one_trace(&["all"]).await;
}

async fn one_checkout_is_one_trace(roles: &[&'static str]) {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let mut env = platform::testing::TestEnv::isolated().await.unwrap().vars;
    env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint);
    // Export every 200 ms rather than every 5 s.
    env.insert("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into());
    env.insert("LOG_FORMAT".into(), "json".into());
    env.insert("RUST_LOG".into(), "warn,access=info".into());
    env.insert("DEPLOYMENT_ENVIRONMENT".into(), "test".into());
    // Boletas paid within 5 s of each other share an envelope (checked at the end).
    env.insert("DTE_SII_BATCH_WINDOW".into(), "5s".into());
    let logs = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("telemetry-{}", uuid::Uuid::new_v4().simple()));
    let cluster = cli::chaos::Cluster::start_roles(
        std::path::Path::new(env!("CARGO_BIN_EXE_orderflow")),
        env,
        &logs,
        roles,
    )
    .await
    .expect("every role starts");
    let base = cluster.base.clone();
    let exchange = cluster.env["AMQP_EXCHANGE"].clone();
    let http = reqwest::Client::new();

    // An admin's product, a shopper, an order placed and paid.
    let (admin, _) = post(
        &http,
        &format!("{base}/v1/auth/login"),
        None,
        json!({"email": cluster.admin.0, "password": cluster.admin.1}),
    )
    .await;
    let admin = admin["accessToken"].as_str().unwrap().to_string();
    post(
        &http,
        &format!("{base}/v1/products"),
        Some(&admin),
        json!({"sku": "TRAZA-1", "name": "Traza", "netPrice": 1000, "onHand": 5}),
    )
    .await;
    post(
        &http,
        &format!("{base}/v1/auth/register"),
        None,
        json!({"email": "ana@example.cl", "password": "correct horse battery staple"}),
    )
    .await;
    let (login, _) = post(
        &http,
        &format!("{base}/v1/auth/login"),
        None,
        json!({"email": "ana@example.cl", "password": "correct horse battery staple"}),
    )
    .await;
    let ana = login["accessToken"].as_str().unwrap().to_string();
    let (id, placed) = buy(&http, &base, &ana).await;
    let request_id = placed["x-request-id"].to_str().unwrap().to_string();

    let server = SpanKind::Server as i32;
    let client = SpanKind::Client as i32;
    let consumer = SpanKind::Consumer as i32;

    // Placing: gateway SERVER, named by its route → gateway CLIENT → order SERVER → order
    // CLIENT → catalog SERVER, one trace, each the parent of the next.
    let http_span = collector
        .until("POST /v1/orders", |s| {
            s.name == "POST /v1/orders" && s.kind == server
        })
        .await;
    assert_eq!(http_span.service, "orderflow-gateway");
    assert_eq!(http_span.resource["deployment.environment.name"], "test");
    // The crate's version, and the commit where the build knew it.
    assert_eq!(http_span.resource["service.version"], cli::version());
    assert!(
        cli::version().starts_with(env!("CARGO_PKG_VERSION")),
        "{}",
        cli::version()
    );
    if let Ok(out) = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        && out.status.success()
    {
        let version = cli::version();
        let (_, commit) = version.split_once('+').expect("a commit");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(commit));
    }
    assert_eq!(http_span.attributes["http.route"], "/v1/orders");
    assert_eq!(http_span.attributes["http.request.method"], "POST");
    assert_eq!(http_span.attributes["http.response.status_code"], "200");
    assert_eq!(http_span.attributes["url.path"], "/v1/orders");
    let trace = http_span.trace_id.clone();
    let hop = |service: &'static str, name: &'static str, kind: i32, parent: String| {
        let collector = collector.clone();
        let trace = trace.clone();
        async move {
            let span = collector
                .until(&format!("{service} {name}"), |s| {
                    s.trace_id == trace && s.name == name && s.kind == kind && s.service == service
                })
                .await;
            assert_eq!(span.parent, parent, "{span:?}");
            assert_eq!(span.attributes["rpc.system"], "grpc", "{span:?}");
            let (service_name, method) = name.split_once('/').unwrap();
            assert_eq!(span.attributes["rpc.service"], service_name);
            assert_eq!(span.attributes["rpc.method"], method);
            assert_eq!(span.attributes["rpc.grpc.status_code"], "0", "{span:?}");
            span
        }
    };
    let place = "orderflow.order.v1.OrderService/PlaceOrder";
    let reserve = "orderflow.catalog.v1.CatalogService/ReserveStock";
    let out = hop(
        "orderflow-gateway",
        place,
        client,
        http_span.span_id.clone(),
    )
    .await;
    let order_server = hop("orderflow-order", place, server, out.span_id.clone()).await;
    let to_catalog = hop(
        "orderflow-order",
        reserve,
        client,
        order_server.span_id.clone(),
    )
    .await;
    let catalog_server = hop(
        "orderflow-catalog",
        reserve,
        server,
        to_catalog.span_id.clone(),
    )
    .await;

    // Each service's queries are CLIENT spans under its call: named by operation and
    // table, with the conventions' attributes, never the statement or its values.
    for (service, call) in [
        ("orderflow-order", &order_server),
        ("orderflow-catalog", &catalog_server),
    ] {
        let query = collector
            .until(&format!("a query of {service}"), |s| {
                s.parent == call.span_id
                    && s.attributes.get("db.system.name").map(String::as_str) == Some("postgresql")
            })
            .await;
        assert_eq!(query.service, service, "{query:?}");
        assert_eq!(query.kind, client, "{query:?}");
        let operation = &query.attributes["db.operation.name"];
        let expected = match query.attributes.get("db.collection.name") {
            Some(table) => format!("{operation} {table}"),
            None => operation.clone(),
        };
        assert_eq!(query.name, expected, "{query:?}");
        assert!(!query.attributes.contains_key("db.query.text"), "{query:?}");
    }

    // Paying: named by the route's template, not the order's id; the payment's event
    // reaches the order and DTE consumers in the same trace, through RabbitMQ.
    let pay = collector
        .until("POST /v1/orders/{order_id}/payments", |s| {
            s.name == "POST /v1/orders/{order_id}/payments" && s.kind == server
        })
        .await;
    assert_eq!(
        pay.attributes["url.path"],
        format!("/v1/orders/{id}/payments")
    );
    for (service, event) in [
        ("orderflow-order", "payment.captured"),
        ("orderflow-dte", "order.paid"),
    ] {
        let consumed = collector
            .until(&format!("{service} consuming the payment"), |s| {
                s.trace_id == pay.trace_id
                    && s.kind == consumer
                    && s.service == service
                    && s.attributes
                        .get("messaging.rabbitmq.destination.routing_key")
                        == Some(&event.to_string())
            })
            .await;
        // The relay's PRODUCER span, in the same trace, is the consumer's parent.
        let producer = collector
            .until(&format!("the PRODUCER span of {event}"), |s| {
                s.trace_id == pay.trace_id
                    && s.kind == SpanKind::Producer as i32
                    && s.attributes
                        .get("messaging.rabbitmq.destination.routing_key")
                        == Some(&event.to_string())
            })
            .await;
        assert_eq!(producer.name, format!("send {exchange}"), "{producer:?}");
        assert_eq!(consumed.parent, producer.span_id, "{consumed:?}");
        let queue = &consumed.attributes["messaging.destination.name"];
        assert_eq!(consumed.name, format!("process {queue}"));
        assert_eq!(consumed.attributes["messaging.system"], "rabbitmq");
        assert!(!consumed.attributes["messaging.message.id"].is_empty());
    }

    // The boleta is issued in the payment's trace, and its `dte.issued` event goes on.
    let issue = collector
        .until("issue DTE 39", |s| {
            s.trace_id == pay.trace_id && s.name == "issue DTE 39" && s.service == "orderflow-dte"
        })
        .await;
    collector
        .until("the dte.issued event published from the issue", |s| {
            s.parent == issue.span_id && s.kind == SpanKind::Producer as i32
        })
        .await;

    // The trace goes on to the SII: the boleta's submission is in it, from dte.
    let submit = collector
        .until("submit DTE 39", |s| {
            s.trace_id == pay.trace_id && s.name == "submit DTE 39"
        })
        .await;
    assert_eq!(submit.service, "orderflow-dte", "{submit:?}");
    assert_eq!(submit.kind, client, "{submit:?}");

    // No span is named after an id, every span is of one of the roles (`orderflow all`
    // too), and no attribute holds what the shopper typed.
    let services: Vec<String> = cli::chaos::ROLES
        .iter()
        .map(|role| format!("orderflow-{role}"))
        .collect();
    for span in collector.spans() {
        assert!(!span.name.contains(&id), "{span:?}");
        assert!(services.contains(&span.service), "{span:?}");
        for value in span.attributes.values() {
            for secret in [
                "correct horse battery staple",
                "4242424242424242",
                "ana@example.cl",
            ] {
                assert!(!value.contains(secret), "{span:?}");
            }
        }
    }

    // The placement's access log line carries its trace id and span.
    let gateway_log = if roles.contains(&"gateway") {
        "gateway"
    } else {
        "all"
    };
    let log = std::fs::read_to_string(cluster.log_path(gateway_log)).unwrap();
    let line: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["request_id"] == request_id.as_str())
        .unwrap_or_else(|| panic!("no access log line for {request_id} in:\n{log}"));
    assert_eq!(line["trace_id"], trace.as_str(), "{line}");
    assert_eq!(line["span_id"], http_span.span_id.as_str(), "{line}");

    // Two more boletas, paid one after the other, go to the SII in one envelope: its
    // submission is in one payment's trace and links to the other's.
    let mut paid = Vec::new();
    for _ in 0..2 {
        let (id, _) = buy(&http, &base, &ana).await;
        let path = format!("/v1/orders/{id}/payments");
        paid.push(
            collector
                .until("the payment", |s| {
                    s.kind == server && s.attributes.get("url.path") == Some(&path)
                })
                .await
                .trace_id,
        );
    }
    let shared = collector
        .until("one submission for both boletas", |s| {
            s.name == "submit DTE 39"
                && paid.contains(&s.trace_id)
                && s.links.iter().any(|l| paid.contains(l) && *l != s.trace_id)
        })
        .await;
    assert_eq!(shared.attributes["sii.documents"], "2", "{shared:?}");
    cluster.stop().await;
}
