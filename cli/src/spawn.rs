//! `orderflow loadgen --spawn`: the load generator starts the suite itself (`orderflow all`,
//! this same binary, with the caller's environment), so it can report what the suite cost:
//! start → ready, resident memory idle and at peak, and CPU time under the load. Linux only
//! (it reads `/proc`).

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{Value, json};

/// A suite started for a run.
pub struct SpawnedSuite {
    child: Child,
    start_to_ready: Duration,
    rss_idle_kib: u64,
    cpu_at_start: Duration,
    load_started: Instant,
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU time of a process (`/proc/<pid>/stat`, in clock ticks of 1/100 s,
/// the Linux default).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

impl SpawnedSuite {
    /// Starts `orderflow all` with the gateway on `url`'s address and `admin` as its
    /// bootstrap admin, and waits (60 s at most) until it is ready.
    pub async fn start(url: &str, admin: (&str, &str)) -> anyhow::Result<Self> {
        let address = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let exe = std::env::current_exe().context("finding this binary to spawn the suite")?;
        let started = Instant::now();
        let child = Command::new(exe)
            .arg("all")
            .env("GATEWAY_ADDR", &address)
            .env("IAM_BOOTSTRAP_ADMIN_EMAIL", admin.0)
            .env("IAM_BOOTSTRAP_ADMIN_PASSWORD", admin.1)
            // The load generator's shoppers pay with the sandbox's test cards.
            .env("PAYMENT_PROVIDER", "sandbox")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("spawning orderflow all")?;
        let mut suite = Self {
            child,
            start_to_ready: Duration::ZERO,
            rss_idle_kib: 0,
            cpu_at_start: Duration::ZERO,
            load_started: Instant::now(),
        };
        let http = reqwest::Client::new();
        let ready = format!("http://{address}/health/ready");
        loop {
            if let Some(status) = suite.child.try_wait()? {
                anyhow::bail!("orderflow all exited before it was ready ({status})");
            }
            if http
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = suite.child.kill();
                anyhow::bail!("orderflow all was not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        suite.start_to_ready = started.elapsed();
        // Idle: once started, before any request of the run.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pid = suite.child.id();
        suite.rss_idle_kib = status_kib(pid, "VmRSS:").unwrap_or(0);
        suite.cpu_at_start = cpu_time(pid).unwrap_or_default();
        suite.load_started = Instant::now();
        eprintln!(
            "loadgen: orderflow all ready in {} ms on {address}",
            suite.start_to_ready.as_millis()
        );
        Ok(suite)
    }

    /// What the suite used since it was ready, then stops it (SIGTERM, drained; killed
    /// after 30 s).
    pub async fn stop(mut self) -> Value {
        let pid = self.child.id();
        let wall = self.load_started.elapsed();
        let cpu = cpu_time(pid)
            .unwrap_or_default()
            .saturating_sub(self.cpu_at_start);
        let peak_kib = status_kib(pid, "VmHWM:").unwrap_or(0);
        let resources = json!({
            "start_to_ready_ms": self.start_to_ready.as_millis() as u64,
            "rss_idle_mib": self.rss_idle_kib as f64 / 1024.0,
            "rss_peak_mib": peak_kib as f64 / 1024.0,
            "cpu_seconds": cpu.as_secs_f64(),
            "cpu_cores_busy": cpu.as_secs_f64() / wall.as_secs_f64().max(0.001),
        });
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return resources;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        resources
    }
}

/// One line for the table.
pub fn describe(resources: &Value) -> String {
    format!(
        "suite (orderflow all, spawned): ready in {} ms; RSS idle {:.1} MiB, peak {:.1} MiB; CPU {:.1} s ({:.2} cores busy on average)\n",
        resources["start_to_ready_ms"],
        resources["rss_idle_mib"].as_f64().unwrap_or_default(),
        resources["rss_peak_mib"].as_f64().unwrap_or_default(),
        resources["cpu_seconds"].as_f64().unwrap_or_default(),
        resources["cpu_cores_busy"].as_f64().unwrap_or_default(),
    )
}
