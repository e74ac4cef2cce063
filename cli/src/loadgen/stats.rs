//! What a run records: latency and outcome per operation and per second, the checkouts'
//! progress, and the summary made of them.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::Options;

pub(super) const OPERATIONS: [&str; 8] = [
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
pub(super) struct Stats {
    pub(super) started: Instant,
    pub(super) per_op: BTreeMap<&'static str, OpStats>,
    pub(super) timeline: Vec<Second>,
    pub(super) checkouts_paid: u64,
    /// Paid and then invoiced (the tax document issued): a complete checkout.
    pub(super) checkouts_invoiced: u64,
    /// Never seen paid.
    pub(super) checkouts_unfinished: u64,
    /// Paid but never seen invoiced (within twice the invoice window).
    pub(super) checkouts_not_invoiced: u64,
    /// Invoiced, but after the invoice window.
    pub(super) checkouts_late: u64,
    /// Placed → paid.
    pub(super) paid_latency: Histogram<u64>,
    /// Placed → invoiced.
    pub(super) checkout_latency: Histogram<u64>,
    /// When the last checkout was seen invoiced.
    pub(super) last_invoiced: Option<Instant>,
}

pub(super) struct OpStats {
    pub(super) latency: Histogram<u64>,
    pub(super) ok: u64,
    pub(super) errors: BTreeMap<String, u64>,
}

#[derive(Default, Clone)]
pub(super) struct Second {
    pub(super) ok: u64,
    pub(super) errors: u64,
    pub(super) latency: Option<Histogram<u64>>,
}

pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

impl Stats {
    pub(super) fn new() -> Self {
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

    pub(super) fn record(
        &mut self,
        op: &'static str,
        latency: Duration,
        outcome: &Result<u16, String>,
    ) {
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

    pub(super) fn totals(&self) -> (u64, u64) {
        self.per_op.values().fold((0, 0), |(ok, err), s| {
            (ok + s.ok, err + s.errors.values().sum::<u64>())
        })
    }
}

pub(super) fn ms(micros: u64) -> f64 {
    (micros as f64 / 10.0).round() / 100.0
}

pub(super) fn summarise(stats: &Stats, opts: &Options, elapsed: Duration) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

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
