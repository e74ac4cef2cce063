//! Event-store append throughput: 8 concurrent writers on distinct streams, each append
//! its own transaction (as a command is), next to `pgbench -N` (simple-update TPC-B, the
//! commit-rate ceiling) on the same Postgres, reported as a ratio.
//!
//! `cargo bench -p order --bench append` (BENCH_SECONDS sets the duration, default 10).
//! Needs `pgbench` on PATH for the comparison; without it only appends are measured.

use std::{process::Command, time::Duration};

use order::event_store::{self, NewEvent};
use serde_json::json;

const WRITERS: usize = 8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let url = platform::testing::fresh_database().await?;
    let pool = order::open_database(&url).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut version = 0;
                while tokio::time::Instant::now() < deadline {
                    let event = NewEvent {
                        event_type: "OrderPaid".into(),
                        data: json!({ "payment_id": format!("p-{w}-{version}"), "amount": 11_900 }),
                        metadata: json!({ "correlation_id": format!("o-{w}") }),
                    };
                    version = event_store::append_committed(
                        &pool,
                        &format!("order-{w}"),
                        version,
                        &[event],
                    )
                    .await?;
                }
                anyhow::Ok(version)
            })
        })
        .collect();
    let mut appended = 0;
    for w in writers {
        appended += w.await??;
    }
    let appends_per_second = appended as f64 / seconds as f64;
    println!(
        "event store: {appended} appends in {seconds}s with {WRITERS} writers = {appends_per_second:.0} events/s"
    );

    if Command::new("pgbench").arg("--version").output().is_err() {
        println!("pgbench not found: no comparison");
        return Ok(());
    }
    // The URL ends with the database name: pgbench gets a sibling database.
    let pg_url = format!("{url}_pgbench");
    platform::db::create_database_if_missing(&pg_url).await?;
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", &pg_url])
        .output()?;
    anyhow::ensure!(
        init.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let run = Command::new("pgbench")
        .args([
            "-N",
            "-c",
            &WRITERS.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            &pg_url,
        ])
        .output()?;
    anyhow::ensure!(
        run.status.success(),
        "pgbench -N failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = String::from_utf8_lossy(&run.stdout);
    let tps: f64 = report
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench output:\n{report}"))?;
    println!("pgbench -N: {tps:.0} tps with {WRITERS} clients");
    println!(
        "ratio: {:.2} appends per pgbench transaction",
        appends_per_second / tps
    );
    Ok(())
}
