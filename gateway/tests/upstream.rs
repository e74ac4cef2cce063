//! The gateway against misbehaving upstreams: a hung one costs the client the route's
//! deadline (504), a refusing one is retried for reads only. The gateway runs for real
//! (listener, layers, Redis for its limits); the upstreams are plain TCP endpoints that
//! accept and then hang or hang up, which is what a stuck or crashing service looks like
//! on the wire.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use gateway::{Gateway, GatewaySettings};
use platform::{CancellationToken, config::Reader};

/// Accepts connections and never answers; counts them.
async fn hung_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (url, count)
}

/// Accepts connections and closes them at once; counts them.
async fn refusing_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (url, count)
}

/// Takes the call (reads the request's first bytes) and then dies without answering, as
/// a process killed mid-call does; counts the calls.
async fn crashing_upstream() -> (String, Arc<AtomicUsize>) {
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut read = 0;
                // The client preface (24 bytes), its SETTINGS and the call's HEADERS.
                while read < 60 {
                    match socket.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => read += n,
                    }
                }
                drop(socket);
            });
        }
    });
    (url, count)
}

struct Running {
    base: String,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn gateway(settings: &[(&str, &str)]) -> Running {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("GATEWAY_ADDR".into(), "127.0.0.1:0".into()),
        ("REDIS_URL".into(), platform::testing::redis_url()),
        (
            "REDIS_KEY_PREFIX".into(),
            platform::testing::unique_redis_prefix(),
        ),
        (
            platform::identity::KEY_SETTING.into(),
            platform::testing::test_internal_key()
                .pem()
                .expose()
                .to_string(),
        ),
    ]);
    for (k, v) in settings {
        vars.insert(k.to_string(), v.to_string());
    }
    let settings = GatewaySettings::from_source(&Reader::new(&vars)).expect("valid settings");
    let gateway = Gateway::build(settings).await.expect("the gateway builds");
    let base = format!("http://{}", gateway.local_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(gateway.run_until_stopped(shutdown.clone()));
    Running { base, shutdown }
}

/// A write: `POST /v1/auth/register` (IAM).
async fn register(http: &reqwest::Client, base: &str) -> reqwest::Response {
    http.post(format!("{base}/v1/auth/register"))
        .json(&serde_json::json!({"email": "a@example.cl", "password": "correct horse battery"}))
        .send()
        .await
        .expect("the gateway answers")
}

/// A read: `GET /v1/products/TE-1` (catalog).
async fn read_product(http: &reqwest::Client, base: &str) -> reqwest::Response {
    http.get(format!("{base}/v1/products/TE-1"))
        .send()
        .await
        .expect("the gateway answers")
}

async fn problem(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "status {status}"
    );
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn a_hung_upstream_costs_the_route_deadline_then_504() {
    let (catalog, _) = hung_upstream().await;
    let (iam, _) = hung_upstream().await;
    let g = gateway(&[
        ("GATEWAY_CATALOG_URL", &catalog),
        ("GATEWAY_IAM_URL", &iam),
        ("GATEWAY_READ_TIMEOUT", "300ms"),
        // Writes wait 60 s by default here, but this one route has its own deadline.
        ("GATEWAY_UPSTREAM_TIMEOUT", "60s"),
        ("GATEWAY_ROUTE_TIMEOUTS", "POST /v1/auth/register=300ms"),
    ])
    .await;
    let http = reqwest::Client::new();

    let read = read_product(&http, &g.base).await;
    let (status, body) = problem(read).await;
    assert_eq!(status, 504);
    assert!(
        body["detail"].as_str().unwrap().contains("catalog"),
        "{body}"
    );

    let started = Instant::now();
    let write = register(&http, &g.base).await;
    assert_eq!(problem(write).await.0, 504);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the per-route deadline applies, not the 60 s default"
    );
}

#[tokio::test]
async fn reads_refused_by_the_upstream_are_retried_writes_never() {
    let (catalog, catalog_connections) = refusing_upstream().await;
    let (iam, _) = refusing_upstream().await;
    let g = gateway(&[
        ("GATEWAY_CATALOG_URL", &catalog),
        ("GATEWAY_IAM_URL", &iam),
        ("GATEWAY_READ_RETRIES", "2"),
    ])
    .await;
    let http = reqwest::Client::new();

    let read = read_product(&http, &g.base).await;
    assert_eq!(problem(read).await.0, 503);
    assert_eq!(
        catalog_connections.load(Ordering::SeqCst),
        3,
        "one attempt and two retries"
    );

    // A write refused the same way is answered at once, never retried. (IAM's connections
    // cannot be counted here: the JWKS loader keeps calling it; the retry counter can.)
    let write = register(&http, &g.base).await;
    assert_eq!(problem(write).await.0, 503);
    let metrics = http
        .get(format!("{}/metrics", g.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gateway_upstream_retries_total{service=\"catalog\"} 2"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("gateway_upstream_retries_total{service=\"iam\"}"),
        "{metrics}"
    );

    // An upstream that takes the call and dies without answering (a process killed
    // mid-call) is unreachable too, not an internal error: retried, then 503, not 500.
    // (Here, not in a test of its own: the retry counter is process-wide.)
    let (crashing, calls) = crashing_upstream().await;
    let g = gateway(&[
        ("GATEWAY_CATALOG_URL", &crashing),
        ("GATEWAY_IAM_URL", &iam),
        ("GATEWAY_READ_RETRIES", "2"),
    ])
    .await;
    let read = read_product(&http, &g.base).await;
    assert_eq!(problem(read).await.0, 503);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "one attempt and two retries"
    );
}

#[tokio::test]
async fn a_gateway_without_the_internal_key_refuses_to_start_naming_it() {
    let vars: HashMap<&str, &str> = HashMap::from([("GATEWAY_ADDR", "127.0.0.1:0")]);
    let settings = GatewaySettings::from_source(&Reader::new(&vars)).unwrap();
    let error = Gateway::build(settings).await.err().expect("refused");
    assert!(error.to_string().contains("INTERNAL_TOKEN_KEY"), "{error}");
}

#[tokio::test]
async fn a_route_timeout_for_an_unknown_route_stops_the_start() {
    let vars: HashMap<&str, &str> = HashMap::from([
        ("GATEWAY_ADDR", "127.0.0.1:0"),
        ("GATEWAY_ROUTE_TIMEOUTS", "GET /v1/nothing=1s"),
    ]);
    let settings = GatewaySettings::from_source(&Reader::new(&vars)).unwrap();
    let error = Gateway::build(settings).await.err().expect("refused");
    assert!(
        error.to_string().contains("GATEWAY_ROUTE_TIMEOUTS"),
        "{error}"
    );
}
