//! What the REST gateway costs: the same product read (catalog `GetProduct`, a Redis cache
//! hit) measured in one run, on one machine, two ways — REST/JSON through the gateway and
//! direct gRPC to the catalog — at the same fixed concurrency (closed loop), reporting
//! throughput and p50/p99 latency of each and their ratio.
//!
//! `cargo bench -p cli --bench gateway_overhead` (needs Postgres, Redis and RabbitMQ as the
//! tests do). `BENCH_CONCURRENCY` (default 32) and `BENCH_SECONDS` (default 10) tune it.
//! The whole suite runs in this process, so client, gateway and catalog share the cores:
//! on a small machine that is most of what the numbers measure, for both paths alike.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use platform::CancellationToken;
use proto::catalog::v1::{GetProductRequest, catalog_service_client::CatalogServiceClient};
use tokio::net::TcpStream;

const SKU: &str = "CAFE-GRANO-250";

struct Outcome {
    name: &'static str,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Outcome {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn micros(&self, q: f64) -> u64 {
        self.latency.value_at_quantile(q)
    }
}

/// Microseconds, from 1 µs to a minute, 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One keep-alive HTTP/1.1 connection per worker, like wrk.
async fn rest_worker(gateway: SocketAddr, until: Instant) -> (Histogram<u64>, u64, u64) {
    let stream = TcpStream::connect(gateway).await.expect("the gateway");
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("an HTTP/1.1 connection");
    tokio::spawn(conn);
    let mut histogram = latency_histogram();
    let (mut ok, mut errors) = (0, 0);
    let uri = format!("/v1/products/{SKU}");
    while Instant::now() < until {
        let req = http::Request::get(&uri)
            .header("host", "bench")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let started = Instant::now();
        sender.ready().await.expect("the connection stays open");
        let resp = sender.send_request(req).await.expect("the gateway answers");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("a body").to_bytes();
        histogram.saturating_record(started.elapsed().as_micros() as u64);
        if status.is_success() && !body.is_empty() {
            ok += 1;
        } else {
            errors += 1;
        }
    }
    (histogram, ok, errors)
}

async fn grpc_worker(
    mut client: CatalogServiceClient<tonic::transport::Channel>,
    until: Instant,
) -> (Histogram<u64>, u64, u64) {
    let mut histogram = latency_histogram();
    let (mut ok, mut errors) = (0, 0);
    while Instant::now() < until {
        let started = Instant::now();
        let result = client
            .get_product(GetProductRequest { sku: SKU.into() })
            .await;
        histogram.saturating_record(started.elapsed().as_micros() as u64);
        match result {
            Ok(_) => ok += 1,
            Err(_) => errors += 1,
        }
    }
    (histogram, ok, errors)
}

async fn run<F, Fut>(name: &'static str, concurrency: usize, seconds: u64, worker: F) -> Outcome
where
    F: Fn(usize, Instant) -> Fut,
    Fut: std::future::Future<Output = (Histogram<u64>, u64, u64)> + Send + 'static,
{
    // Warm-up: connections, caches, the allocator.
    let warm_until = Instant::now() + Duration::from_secs(2);
    let warm: Vec<_> = (0..concurrency)
        .map(|i| tokio::spawn(worker(i, warm_until)))
        .collect();
    for w in warm {
        w.await.unwrap();
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..concurrency)
        .map(|i| tokio::spawn(worker(i, until)))
        .collect();
    let mut latency = latency_histogram();
    let (mut requests, mut errors) = (0, 0);
    for w in workers {
        let (h, ok, err) = w.await.unwrap();
        latency.add(h).unwrap();
        requests += ok;
        errors += err;
    }
    Outcome {
        name,
        requests,
        errors,
        elapsed: started.elapsed(),
        latency,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 32);
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    let env = platform::testing::TestEnv::isolated().await?.with(&[
        ("SEED_DEMO_DATA", "true"),
        ("RUST_LOG", "error"),
        // The limits protect production; here they would only measure themselves.
        ("GATEWAY_RATE_LIMIT_API", "1000000/s"),
        ("GATEWAY_RATE_LIMIT_API_BURST", "1000000"),
    ]);
    // BENCH_RATE_LIMIT_SHARE=1: the limiter asks Redis on every request (as it did before
    // replicas took shares), to compare.
    let env = match std::env::var("BENCH_RATE_LIMIT_SHARE") {
        Ok(share) => env.with(&[("GATEWAY_RATE_LIMIT_SHARE", share.as_str())]),
        Err(_) => env,
    };
    let shutdown = CancellationToken::new();
    let suite = cli::suite::Suite::start(&env.vars, shutdown.clone()).await?;
    let gateway = SocketAddr::from(([127, 0, 0, 1], suite.gateway_addr.port()));
    let catalog = format!("http://127.0.0.1:{}", suite.catalog_addr.port());
    tokio::spawn(suite.wait());

    // The suite is ready, the product exists and is cached before anything is measured.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, ok, _) = rest_worker(gateway, Instant::now() + Duration::from_millis(100)).await;
        if ok > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway does not serve {SKU}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // gRPC clients multiplex over HTTP/2 as the gateway itself does: a few channels.
    let channels: Vec<_> = (0..4)
        .map(|_| {
            tonic::transport::Endpoint::from_shared(catalog.clone())
                .unwrap()
                .tcp_nodelay(true)
                .connect_lazy()
        })
        .collect();

    println!(
        "gateway overhead: GET /v1/products/{SKU} vs catalog.GetProduct, {concurrency} concurrent, {seconds} s each, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let grpc = run("direct gRPC", concurrency, seconds, |i, until| {
        grpc_worker(
            CatalogServiceClient::new(channels[i % channels.len()].clone()),
            until,
        )
    })
    .await;
    let rest = run("REST via gateway", concurrency, seconds, |_, until| {
        rest_worker(gateway, until)
    })
    .await;

    println!(
        "{:<18} {:>10} {:>7} {:>10} {:>9} {:>9}",
        "path", "requests", "errors", "req/s", "p50 µs", "p99 µs"
    );
    for o in [&grpc, &rest] {
        println!(
            "{:<18} {:>10} {:>7} {:>10.0} {:>9} {:>9}",
            o.name,
            o.requests,
            o.errors,
            o.throughput(),
            o.micros(0.5),
            o.micros(0.99)
        );
    }
    println!(
        "ratio (gateway / direct throughput): {:.2}; added p50: {} µs; added p99: {} µs",
        rest.throughput() / grpc.throughput(),
        rest.micros(0.5) as i64 - grpc.micros(0.5) as i64,
        rest.micros(0.99) as i64 - grpc.micros(0.99) as i64,
    );
    shutdown.cancel();
    Ok(())
}
