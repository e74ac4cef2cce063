//! The load generator's options: `orderflow loadgen`'s flags, durations and the operation mix.

use std::time::Duration;

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
}
