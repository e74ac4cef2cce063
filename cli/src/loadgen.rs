//! `orderflow loadgen`: simulated shoppers against a gateway, through the public REST API
//! only, as a frontend would call it. Each virtual user registers and signs in once, then
//! runs a weighted mix of operations, signed in (the gateway budgets each user; anonymous
//! traffic from one address would only measure the per-address limit): browse (list,
//! search, product detail), checkout
//! (place an order and pay it; completion is followed with the order's long poll until
//! `invoiced`)
//! and read-back (the user's orders, one order, its payments).
//!
//! Closed loop (default): `--users` shoppers each run one operation after another, with
//! `--think` between. Open loop (`--rate N`): operations start at a fixed rate whatever the
//! latency, and latency is measured from the intended start, so queueing inside the suite
//! shows up instead of being hidden by a slowed-down client (coordinated omission).
//!
//! Errors are counted by operation and status and never stop the run; the run ends after
//! `--duration` or `--requests`, prints a table (and `--json`, `--report DIR`), and exits
//! non-zero when the error ratio exceeds `--max-error-ratio`.

use std::{
    collections::BTreeMap,
    io::IsTerminal as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Options of `orderflow loadgen`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Virtual users (each registers once; in closed loop, the concurrency).
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// Open loop: operations started per second (unset: closed loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to run, e.g. 30s, 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many operations instead (whichever comes first).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Pause between one user's operations (closed loop).
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub think: Duration,
    /// Operation weights, e.g. `browse=70,checkout=15,read=15`.
    #[arg(long, default_value = "browse=70,checkout=15,read=15", value_parser = parse_mix)]
    pub mix: Mix,
    /// An admin's email and password: the run creates its own product with ample stock to
    /// order (otherwise it orders the catalog's products, whose stock runs out).
    #[arg(long, env = "LOADGEN_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// The admin's password.
    #[arg(long, env = "LOADGEN_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// A checkout not invoiced this long after it was placed is late; one still not
    /// invoiced twice as long after is counted as never invoiced (a failure).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub invoice_window: Duration,
    /// Exit non-zero when more than this share of operations fail.
    #[arg(long, default_value_t = 0.01)]
    pub max_error_ratio: f64,
    /// Print the summary as JSON on standard output (the table goes to standard error).
    #[arg(long)]
    pub json: bool,
    /// Write an HTML report with latency and throughput over time into this directory.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// Start the suite (`orderflow all`, with this environment and the gateway on --url's
    /// address) for the run, and report what it used: start → ready, RSS idle and peak,
    /// CPU time. Without --admin-email, a bootstrap admin is made for the run.
    #[arg(long)]
    pub spawn: bool,
}

/// A duration setting as the CLI takes it (`30s`, `2m`, `500ms`).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    platform::config::parse_duration(raw)
        .ok_or_else(|| format!("{raw:?}: expected e.g. 30s, 2m, 500ms"))
}

/// Operation weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// Browsing (list, search, detail in turn).
    pub browse: u32,
    /// Place an order and pay it.
    pub checkout: u32,
    /// Read back orders and payments.
    pub read: u32,
}

/// Operation weights as the CLI takes them (`browse=70,checkout=15,read=15`).
pub fn parse_mix(raw: &str) -> Result<Mix, String> {
    let mut mix = Mix {
        browse: 0,
        checkout: 0,
        read: 0,
    };
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected name=weight"))?;
        let weight: u32 = weight
            .parse()
            .map_err(|_| format!("{part:?}: the weight must be a whole number"))?;
        match name.trim() {
            "browse" => mix.browse = weight,
            "checkout" => mix.checkout = weight,
            "read" => mix.read = weight,
            other => {
                return Err(format!(
                    "unknown operation {other:?} (browse, checkout, read)"
                ));
            }
        }
    }
    if mix.browse + mix.checkout + mix.read == 0 {
        return Err("at least one weight must be positive".into());
    }
    Ok(mix)
}

const OPERATIONS: [&str; 8] = [
    "list",
    "search",
    "detail",
    "place",
    "pay",
    "orders",
    "order",
    "documents",
];

/// Latency and outcome records, per operation and per second of the run.
struct Stats {
    started: Instant,
    per_op: BTreeMap<&'static str, OpStats>,
    timeline: Vec<Second>,
    checkouts_paid: u64,
    /// Paid and then invoiced (the tax document issued): a complete checkout.
    checkouts_invoiced: u64,
    /// Never seen paid.
    checkouts_unfinished: u64,
    /// Paid but never seen invoiced (within twice the invoice window).
    checkouts_not_invoiced: u64,
    /// Invoiced, but after the invoice window.
    checkouts_late: u64,
    /// Placed → paid.
    paid_latency: Histogram<u64>,
    /// Placed → invoiced.
    checkout_latency: Histogram<u64>,
    /// When the last checkout was seen invoiced.
    last_invoiced: Option<Instant>,
}

struct OpStats {
    latency: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

#[derive(Default, Clone)]
struct Second {
    ok: u64,
    errors: u64,
    latency: Option<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

impl Stats {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            per_op: OPERATIONS
                .iter()
                .map(|op| {
                    (
                        *op,
                        OpStats {
                            latency: histogram(),
                            ok: 0,
                            errors: BTreeMap::new(),
                        },
                    )
                })
                .collect(),
            timeline: Vec::new(),
            checkouts_paid: 0,
            checkouts_invoiced: 0,
            checkouts_unfinished: 0,
            checkouts_not_invoiced: 0,
            checkouts_late: 0,
            paid_latency: histogram(),
            checkout_latency: histogram(),
            last_invoiced: None,
        }
    }

    fn record(&mut self, op: &'static str, latency: Duration, outcome: &Result<u16, String>) {
        let micros = latency.as_micros().max(1) as u64;
        let stats = self.per_op.get_mut(op).expect("known operation");
        stats.latency.saturating_record(micros);
        let second = self.started.elapsed().as_secs() as usize;
        if self.timeline.len() <= second {
            self.timeline.resize(second + 1, Second::default());
        }
        let slot = &mut self.timeline[second];
        slot.latency
            .get_or_insert_with(histogram)
            .saturating_record(micros);
        match outcome {
            Ok(status) if (200..300).contains(status) => {
                stats.ok += 1;
                slot.ok += 1;
            }
            Ok(status) => {
                *stats.errors.entry(status.to_string()).or_default() += 1;
                slot.errors += 1;
            }
            Err(kind) => {
                *stats.errors.entry(kind.clone()).or_default() += 1;
                slot.errors += 1;
            }
        }
    }

    fn totals(&self) -> (u64, u64) {
        self.per_op.values().fold((0, 0), |(ok, err), s| {
            (ok + s.ok, err + s.errors.values().sum::<u64>())
        })
    }
}

/// A shopper: signed in, with the orders it placed.
struct User {
    token: String,
    orders: Vec<String>,
    step: u64,
}

struct Shared {
    http: reqwest::Client,
    base: String,
    skus: Vec<String>,
    stats: Mutex<Stats>,
    mix: Mix,
    operations: AtomicU64,
    limit: Option<u64>,
    stop: AtomicBool,
    /// Checkouts paid for but not yet seen `paid`.
    watchers: Mutex<tokio::task::JoinSet<()>>,
    /// `--invoice-window`.
    invoice_window: Duration,
}

impl Shared {
    /// One HTTP call, recorded under `op`. Returns the JSON body of a 2xx answer.
    async fn call(
        &self,
        op: &'static str,
        intended: Instant,
        req: reqwest::RequestBuilder,
    ) -> Option<Value> {
        let outcome = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.json::<Value>().await.unwrap_or(Value::Null);
                Ok((status, body))
            }
            Err(e) if e.is_timeout() => Err("timeout".to_string()),
            Err(e) if e.is_connect() => Err("connect".to_string()),
            Err(_) => Err("transport".to_string()),
        };
        let latency = intended.elapsed();
        let summary = outcome.as_ref().map(|(s, _)| *s).map_err(Clone::clone);
        self.stats
            .lock()
            .expect("stats lock")
            .record(op, latency, &summary);
        match outcome {
            Ok((status, body)) if (200..300).contains(&status) => Some(body),
            _ => None,
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let req = self.http.get(format!("{}{path}", self.base));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }
}

/// Runs one operation of the mix for `user`, measured from `intended`.
async fn operation(shared: &Arc<Shared>, user: &Mutex<User>, intended: Instant) {
    let (token, step, last_order) = {
        let mut u = user.lock().expect("user lock");
        u.step += 1;
        (u.token.clone(), u.step, u.orders.last().cloned())
    };
    let mix = shared.mix;
    let pick =
        (step.wrapping_mul(2_654_435_761) % u64::from(mix.browse + mix.checkout + mix.read)) as u32;
    let sku = &shared.skus[(step as usize) % shared.skus.len()];
    if pick < mix.browse {
        match step % 3 {
            0 => {
                shared
                    .call(
                        "list",
                        intended,
                        shared.get("/v1/products?pageSize=20", Some(&token)),
                    )
                    .await;
            }
            1 => {
                shared
                    .call(
                        "search",
                        intended,
                        shared.get("/v1/products?q=cafe&pageSize=10", Some(&token)),
                    )
                    .await;
            }
            _ => {
                shared
                    .call(
                        "detail",
                        intended,
                        shared.get(&format!("/v1/products/{sku}"), Some(&token)),
                    )
                    .await;
            }
        }
    } else if pick < mix.browse + mix.checkout {
        let placed = shared
            .call(
                "place",
                intended,
                shared
                    .http
                    .post(format!("{}/v1/orders", shared.base))
                    .bearer_auth(&token)
                    .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                    .json(&json!({"lines": [{"sku": sku, "quantity": 1}]})),
            )
            .await;
        let Some(id) = placed.and_then(|o| o["id"].as_str().map(str::to_string)) else {
            return;
        };
        user.lock().expect("user lock").orders.push(id.clone());
        let paid = shared
            .call(
                "pay",
                Instant::now(),
                shared
                    .http
                    .post(format!("{}/v1/orders/{id}/payments", shared.base))
                    .bearer_auth(&token)
                    .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                    .json(&json!({"card": {"number": "4242424242424242", "expMonth": 12, "expYear": 2030, "cvc": "123", "holder": "Carga"}})),
            )
            .await;
        if paid.is_some() {
            // Completion (the order becomes `paid` once the saga has run through RabbitMQ,
            // then `invoiced` once its tax document is issued) is watched on the side: the
            // shopper goes on, so a closed loop saturates the suite instead of waiting out
            // the saga's latency.
            let watcher = watch_checkout(shared.clone(), token, id, intended);
            shared
                .watchers
                .lock()
                .expect("watchers lock")
                .spawn(watcher);
        }
    } else {
        match last_order {
            Some(id) if step % 4 == 2 => {
                shared
                    .call(
                        "documents",
                        intended,
                        shared.get(&format!("/v1/orders/{id}/documents"), Some(&token)),
                    )
                    .await;
            }
            Some(id) if step % 2 == 0 => {
                shared
                    .call(
                        "order",
                        intended,
                        shared.get(&format!("/v1/orders/{id}"), Some(&token)),
                    )
                    .await;
            }
            _ => {
                shared
                    .call(
                        "orders",
                        intended,
                        shared.get("/v1/orders?pageSize=10", Some(&token)),
                    )
                    .await;
            }
        }
    }
}

/// Follows the order until it is `invoiced`, recording when it was first seen paid and
/// when invoiced: late past the invoice window, given up (never invoiced) at twice it.
/// Like the storefront, it follows with the long poll (`waitFor` = the version it has),
/// so the API answers when the order changes instead of being asked over and over; a 429
/// (the user holds as many waits as allowed) or a failure falls back to a pause.
async fn watch_checkout(shared: Arc<Shared>, token: String, id: String, intended: Instant) {
    let deadline = intended + shared.invoice_window * 2;
    let mut paid = false;
    let mut version: Option<i64> = None;
    while Instant::now() < deadline {
        let path = match version {
            Some(v) => format!("/v1/orders/{id}?waitFor={v}"),
            None => format!("/v1/orders/{id}"),
        };
        // A wait never outlasts the checkout's own deadline.
        let left = deadline.saturating_duration_since(Instant::now());
        let asked = tokio::time::timeout(left, async {
            match shared.get(&path, Some(&token)).send().await {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                _ => None,
            }
        });
        let order = match asked.await {
            Ok(order) => order,
            Err(_) => break,
        };
        let Some(order) = order else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        version = order["version"].as_i64();
        let status = order["status"].as_str().map(str::to_string);
        let invoiced = status.as_deref() == Some("invoiced");
        if !paid && (invoiced || status.as_deref() == Some("paid")) {
            paid = true;
            let mut stats = shared.stats.lock().expect("stats lock");
            stats.checkouts_paid += 1;
            let micros = intended.elapsed().as_micros().max(1) as u64;
            stats.paid_latency.saturating_record(micros);
        }
        if invoiced {
            let mut stats = shared.stats.lock().expect("stats lock");
            stats.checkouts_invoiced += 1;
            let micros = intended.elapsed().as_micros().max(1) as u64;
            stats.checkout_latency.saturating_record(micros);
            stats.last_invoiced = Some(Instant::now());
            if intended.elapsed() > shared.invoice_window {
                stats.checkouts_late += 1;
            }
            return;
        }
    }
    let mut stats = shared.stats.lock().expect("stats lock");
    if paid {
        stats.checkouts_not_invoiced += 1;
    } else {
        stats.checkouts_unfinished += 1;
    }
}

/// POSTs `body` to `path`, waiting out 429s (auth endpoints are strictly rate limited).
async fn setup_post(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    token: Option<&str>,
) -> anyhow::Result<Value> {
    for _ in 0..120 {
        let mut req = http.post(url).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        if status.as_u16() == 429 {
            let wait: u64 = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait.clamp(1, 60))).await;
            continue;
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "POST {url}: {status} {body}");
        return Ok(body);
    }
    anyhow::bail!("POST {url}: still rate limited after two minutes")
}

async fn sign_in(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let login = setup_post(
        http,
        &format!("{base}/v1/auth/login"),
        &json!({"email": email, "password": password}),
        None,
    )
    .await?;
    login["accessToken"]
        .as_str()
        .map(str::to_string)
        .context("the login answer has no accessToken")
}

/// The SKUs orders will use: the run's own product when an admin is given, else the
/// catalog's first page.
async fn products(
    opts: &Options,
    http: &reqwest::Client,
    run: &str,
) -> anyhow::Result<Vec<String>> {
    if let (Some(email), Some(password)) = (&opts.admin_email, &opts.admin_password) {
        let admin = sign_in(http, &opts.url, email, password).await?;
        let sku = format!("LOADGEN-{run}").to_uppercase();
        setup_post(
            http,
            &format!("{}/v1/products", opts.url),
            &json!({"sku": sku, "name": "Producto de carga", "description": "loadgen", "category": "loadgen", "netPrice": 1000, "onHand": 10_000_000}),
            Some(&admin),
        )
        .await?;
        return Ok(vec![sku]);
    }
    let list: Value = http
        .get(format!("{}/v1/products?pageSize=20", opts.url))
        .send()
        .await
        .context("the gateway does not answer")?
        .json()
        .await?;
    let skus: Vec<String> = list["products"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["sku"].as_str().map(str::to_string))
        .collect();
    anyhow::ensure!(
        !skus.is_empty(),
        "the catalog has no products to order (seed it, or pass --admin-email)"
    );
    Ok(skus)
}

/// The outcome of a run.
pub struct Summary {
    /// The summary as JSON (what `--json` prints).
    pub json: Value,
    /// Whether the error ratio stayed within `--max-error-ratio`.
    pub passed: bool,
}

/// Runs the load and reports.
pub async fn run(opts: Options) -> anyhow::Result<Summary> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(opts.users.max(1) * 2)
        .build()?;
    let base = opts.url.trim_end_matches('/').to_string();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let skus = products(
        &Options {
            url: base.clone(),
            ..opts.clone()
        },
        &http,
        &run_id,
    )
    .await?;

    eprintln!("loadgen: signing up {} users on {base}", opts.users);
    let password = format!("loadgen-{run_id}-password");
    let mut users = Vec::with_capacity(opts.users);
    for i in 0..opts.users.max(1) {
        let email = format!("loadgen-{run_id}-{i}@example.cl");
        setup_post(
            &http,
            &format!("{base}/v1/auth/register"),
            &json!({"email": email, "password": password}),
            None,
        )
        .await?;
        let token = sign_in(&http, &base, &email, &password).await?;
        users.push(Arc::new(Mutex::new(User {
            token,
            orders: Vec::new(),
            step: i as u64,
        })));
    }

    let shared = Arc::new(Shared {
        http,
        base: base.clone(),
        skus,
        stats: Mutex::new(Stats::new()),
        mix: opts.mix,
        operations: AtomicU64::new(0),
        limit: opts.requests,
        stop: AtomicBool::new(false),
        watchers: Mutex::new(tokio::task::JoinSet::new()),
        invoice_window: opts.invoice_window,
    });
    let progress = tokio::spawn(progress(shared.clone()));
    let started = Instant::now();
    let until = started + opts.duration;
    let admitted = move |shared: &Shared| {
        let n = shared.operations.fetch_add(1, Ordering::Relaxed);
        shared.limit.is_none_or(|limit| n < limit) && Instant::now() < until
    };
    match opts.rate {
        None => {
            let workers: Vec<_> = users
                .iter()
                .map(|user| {
                    let shared = shared.clone();
                    let user = user.clone();
                    let think = opts.think;
                    tokio::spawn(async move {
                        while admitted(&shared) {
                            operation(&shared, &user, Instant::now()).await;
                            if !think.is_zero() {
                                tokio::time::sleep(think).await;
                            }
                        }
                    })
                })
                .collect();
            for w in workers {
                let _ = w.await;
            }
        }
        Some(rate) => {
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut tasks = tokio::task::JoinSet::new();
            let mut i: u64 = 0;
            loop {
                // Intended start of the i-th operation, whatever happened before.
                let intended = started + interval.mul_f64(i as f64);
                tokio::time::sleep_until(intended.into()).await;
                if !admitted(&shared) {
                    break;
                }
                let shared = shared.clone();
                let user = users[(i as usize) % users.len()].clone();
                tasks.spawn(async move { operation(&shared, &user, intended).await });
                i += 1;
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    // Let the last checkouts finish (each watcher gives up after twice the invoice window).
    let mut watchers = std::mem::take(&mut *shared.watchers.lock().expect("watchers lock"));
    while watchers.join_next().await.is_some() {}
    shared.stop.store(true, Ordering::Relaxed);
    let _ = progress.await;
    // Throughput over the load window, not the tail spent waiting for the last checkouts.
    let elapsed = started.elapsed().min(opts.duration);
    let stats = shared.stats.lock().expect("stats lock");
    let summary = summarise(&stats, &opts, elapsed);
    eprint!("{}", table(&summary));
    if let Some(dir) = &opts.report {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("report.html");
        std::fs::write(&path, report(&stats, &summary))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("loadgen: report written to {}", path.display());
    }
    // A checkout paid for but never seen `paid`, or paid but never invoiced, is a failure of
    // the saga: it counts.
    let (ok, errors) = stats.totals();
    let ratio = (errors + stats.checkouts_unfinished + stats.checkouts_not_invoiced) as f64
        / (ok + errors).max(1) as f64;
    Ok(Summary {
        passed: ratio <= opts.max_error_ratio,
        json: summary,
    })
}

/// A live line on a terminal, plain lines every 5 s otherwise.
async fn progress(shared: Arc<Shared>) {
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let mut last = (0u64, 0u64);
    let mut printed = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if printed.elapsed() < every {
            continue;
        }
        let window = printed.elapsed().as_secs_f64();
        printed = Instant::now();
        let stats = shared.stats.lock().expect("stats lock");
        let (ok, errors) = stats.totals();
        let mut all = histogram();
        for s in stats.per_op.values() {
            let _ = all.add(&s.latency);
        }
        let rate = (ok + errors - last.0 - last.1) as f64 / window;
        let line = format!(
            "{:>5.0}s  {:>8.0} req/s  {:>8} ok  {:>6} errors  p50 {:>7.1} ms  p99 {:>7.1} ms  {:>6} checkouts invoiced",
            stats.started.elapsed().as_secs_f64(),
            rate,
            ok,
            errors,
            all.value_at_quantile(0.5) as f64 / 1000.0,
            all.value_at_quantile(0.99) as f64 / 1000.0,
            stats.checkouts_invoiced
        );
        last = (ok, errors);
        if terminal {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }
    if terminal {
        eprintln!();
    }
}

fn ms(micros: u64) -> f64 {
    (micros as f64 / 10.0).round() / 100.0
}

fn summarise(stats: &Stats, opts: &Options, elapsed: Duration) -> Value {
    let secs = elapsed.as_secs_f64();
    let operations: Vec<Value> = stats
        .per_op
        .iter()
        .filter(|(_, s)| s.ok + s.errors.values().sum::<u64>() > 0)
        .map(|(op, s)| {
            let count = s.ok + s.errors.values().sum::<u64>();
            json!({
                "operation": op,
                "count": count,
                "ok": s.ok,
                "errors": s.errors,
                "throughput": count as f64 / secs,
                "p50_ms": ms(s.latency.value_at_quantile(0.5)),
                "p90_ms": ms(s.latency.value_at_quantile(0.9)),
                "p99_ms": ms(s.latency.value_at_quantile(0.99)),
                "max_ms": ms(s.latency.max()),
            })
        })
        .collect();
    let (ok, errors) = stats.totals();
    json!({
        "mode": if opts.rate.is_some() { "open" } else { "closed" },
        "users": opts.users,
        "rate": opts.rate,
        "duration_s": secs,
        "operations": operations,
        "total": { "ok": ok, "errors": errors, "throughput": (ok + errors) as f64 / secs },
        "error_ratio": errors as f64 / (ok + errors).max(1) as f64,
        "checkouts": {
            "paid": stats.checkouts_paid,
            "invoiced": stats.checkouts_invoiced,
            "unfinished": stats.checkouts_unfinished,
            "not_invoiced": stats.checkouts_not_invoiced,
            "late": stats.checkouts_late,
            "invoice_window_s": opts.invoice_window.as_secs_f64(),
            // Completed (invoiced) per second until the last one completed: checkouts still
            // in the saga when the load stops count, and so does the time they took.
            "per_second": stats.checkouts_invoiced as f64
                / stats
                    .last_invoiced
                    .map_or(secs, |t| t.duration_since(stats.started).as_secs_f64().max(secs)),
            "p50_ms": ms(stats.checkout_latency.value_at_quantile(0.5)),
            "p99_ms": ms(stats.checkout_latency.value_at_quantile(0.99)),
            "paid_p50_ms": ms(stats.paid_latency.value_at_quantile(0.5)),
            "paid_p99_ms": ms(stats.paid_latency.value_at_quantile(0.99)),
        },
    })
}

fn table(summary: &Value) -> String {
    let mut out = format!(
        "\n{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  errors\n",
        "op", "count", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for op in summary["operations"].as_array().into_iter().flatten() {
        let errors: Vec<String> = op["errors"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect();
        out.push_str(&format!(
            "{:<8} {:>9} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}\n",
            op["operation"].as_str().unwrap_or_default(),
            op["count"].as_u64().unwrap_or_default(),
            op["throughput"].as_f64().unwrap_or_default(),
            op["p50_ms"].as_f64().unwrap_or_default(),
            op["p90_ms"].as_f64().unwrap_or_default(),
            op["p99_ms"].as_f64().unwrap_or_default(),
            op["max_ms"].as_f64().unwrap_or_default(),
            if errors.is_empty() {
                "-".into()
            } else {
                errors.join(" ")
            }
        ));
    }
    out.push_str(&format!(
        "total: {} ok, {} errors ({:.2} %), {:.1} req/s\n\
checkouts invoiced: {} ({:.2}/s, placed → invoiced p50 {:.0} ms, p99 {:.0} ms), late (after {} s): {}; paid: {} (placed → paid p50 {:.0} ms, p99 {:.0} ms); never paid: {}; paid, never invoiced: {}\n",
        summary["total"]["ok"],
        summary["total"]["errors"],
        summary["error_ratio"].as_f64().unwrap_or_default() * 100.0,
        summary["total"]["throughput"].as_f64().unwrap_or_default(),
        summary["checkouts"]["invoiced"],
        summary["checkouts"]["per_second"].as_f64().unwrap_or_default(),
        summary["checkouts"]["p50_ms"].as_f64().unwrap_or_default(),
        summary["checkouts"]["p99_ms"].as_f64().unwrap_or_default(),
        summary["checkouts"]["invoice_window_s"],
        summary["checkouts"]["late"],
        summary["checkouts"]["paid"],
        summary["checkouts"]["paid_p50_ms"].as_f64().unwrap_or_default(),
        summary["checkouts"]["paid_p99_ms"].as_f64().unwrap_or_default(),
        summary["checkouts"]["unfinished"],
        summary["checkouts"]["not_invoiced"],
    ));
    out
}

/// A polyline chart of `series` (name, colour, values per second) as inline SVG.
fn svg_chart(title: &str, unit: &str, series: &[(&str, &str, Vec<f64>)]) -> String {
    let (w, h, pad) = (800.0, 240.0, 40.0);
    let len = series.iter().map(|s| s.2.len()).max().unwrap_or(0).max(2);
    let top = series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let mut svg = format!(
        "<figure><figcaption>{title}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\"><rect width=\"{w}\" height=\"{h}\" fill=\"#fff\" stroke=\"#ccd\"/><text x=\"4\" y=\"14\" font-size=\"11\">{top:.1} {unit}</text><text x=\"4\" y=\"{}\" font-size=\"11\">0</text><text x=\"{}\" y=\"{}\" font-size=\"11\">{} s</text>",
        h - 4.0,
        w - 50.0,
        h - 4.0,
        len - 1
    );
    for (name, colour, values) in series {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let x = pad + (w - 2.0 * pad) * i as f64 / (len - 1) as f64;
                let y = h - pad - (h - 2.0 * pad) * v / top;
                format!("{x:.1},{y:.1}")
            })
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"><title>{name}</title></polyline>",
            points.join(" ")
        ));
    }
    let legend: Vec<String> = series
        .iter()
        .map(|(name, colour, _)| format!("<span style=\"color:{colour}\">■ {name}</span>"))
        .collect();
    svg.push_str(&format!("</svg><div>{}</div></figure>", legend.join(" ")));
    svg
}

fn report(stats: &Stats, summary: &Value) -> String {
    let quantile = |q: f64| -> Vec<f64> {
        stats
            .timeline
            .iter()
            .map(|s| {
                s.latency
                    .as_ref()
                    .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
            })
            .collect()
    };
    let ok: Vec<f64> = stats.timeline.iter().map(|s| s.ok as f64).collect();
    let errors: Vec<f64> = stats.timeline.iter().map(|s| s.errors as f64).collect();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>orderflow loadgen</title><style>body{{font:14px system-ui,sans-serif;max-width:60rem;margin:2rem auto}}pre{{background:#f6f6f8;padding:1rem}}</style></head><body><h1>orderflow loadgen</h1><pre>{}</pre>{}{}<h2>Summary (JSON)</h2><pre>{}</pre></body></html>",
        table(summary).replace('&', "&amp;").replace('<', "&lt;"),
        svg_chart(
            "Latency over time",
            "ms",
            &[
                ("p50", "#06c", quantile(0.5)),
                ("p99", "#c22", quantile(0.99))
            ]
        ),
        svg_chart(
            "Throughput over time",
            "req/s",
            &[("ok", "#0a6", ok), ("errors", "#c22", errors)]
        ),
        serde_json::to_string_pretty(summary)
            .unwrap_or_default()
            .replace('&', "&amp;")
            .replace('<', "&lt;"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_bad_ones_are_explained() {
        assert_eq!(
            parse_mix("browse=1, checkout=2,read=0").unwrap(),
            Mix {
                browse: 1,
                checkout: 2,
                read: 0
            }
        );
        assert!(parse_mix("browse").unwrap_err().contains("name=weight"));
        assert!(parse_mix("dance=3").unwrap_err().contains("unknown"));
        assert!(parse_mix("browse=0").is_err());
    }

    #[test]
    fn outcomes_are_classified_by_operation_status_and_second() {
        let mut stats = Stats::new();
        stats.record("list", Duration::from_millis(2), &Ok(200));
        stats.record("list", Duration::from_millis(4), &Ok(503));
        stats.record("pay", Duration::from_millis(8), &Err("timeout".into()));
        assert_eq!(stats.totals(), (1, 2));
        assert_eq!(stats.per_op["list"].errors["503"], 1);
        assert_eq!(stats.per_op["pay"].errors["timeout"], 1);
        assert_eq!(stats.timeline[0].errors, 2);
    }
}
