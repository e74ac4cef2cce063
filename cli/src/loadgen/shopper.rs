//! The simulated shopper: signed in once, then a weighted mix of browse, checkout (followed
//! with the order's long poll until invoiced) and read-back, each call recorded.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{Mix, Options, stats::Stats};

/// A shopper: signed in, with the orders it placed.
pub(super) struct User {
    pub(super) token: String,
    pub(super) orders: Vec<String>,
    pub(super) step: u64,
}

pub(super) struct Shared {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) skus: Vec<String>,
    pub(super) stats: Mutex<Stats>,
    pub(super) mix: Mix,
    pub(super) operations: AtomicU64,
    pub(super) limit: Option<u64>,
    pub(super) stop: AtomicBool,
    /// Checkouts paid for but not yet seen `paid`.
    pub(super) watchers: Mutex<tokio::task::JoinSet<()>>,
    /// `--invoice-window`.
    pub(super) invoice_window: Duration,
}

impl Shared {
    /// One HTTP call, recorded under `op`. Returns the JSON body of a 2xx answer.
    pub(super) async fn call(
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

    pub(super) fn get(&self, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let req = self.http.get(format!("{}{path}", self.base));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }
}

/// Runs one operation of the mix for `user`, measured from `intended`.
pub(super) async fn operation(shared: &Arc<Shared>, user: &Mutex<User>, intended: Instant) {
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
pub(super) async fn watch_checkout(
    shared: Arc<Shared>,
    token: String,
    id: String,
    intended: Instant,
) {
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
pub(super) async fn setup_post(
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

pub(super) async fn sign_in(
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
pub(super) async fn products(
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
