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

mod options;
mod report;
mod shopper;
mod stats;

pub use options::{Mix, Options, parse_duration, parse_mix};
use report::{report, table};
use shopper::{Shared, User, operation, products, setup_post, sign_in};
use stats::{Stats, histogram, summarise};

use std::{
    io::IsTerminal as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{Value, json};

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
