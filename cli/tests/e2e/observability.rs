//! The chart's Grafana dashboard and PrometheusRules read only metrics the suite exports:
//! every metric name in their expressions is checked against a real `/metrics` scrape
//! after a checkout, so a renamed metric cannot leave a dead panel or a silent alert.

use std::collections::BTreeSet;

use reqwest::StatusCode;

use crate::{
    checkout::{APPROVE, a_placed_order, card, order_reaches, pay},
    helpers::spawn_suite,
};

/// Metrics that come from elsewhere in the cluster, not from the suite.
const EXTERNAL: &[&str] = &[
    // kube-state-metrics: the backup CronJob's schedule and last success.
    "kube_cronjob_status_last_schedule_time",
    "kube_cronjob_status_last_successful_time",
];

/// PromQL's words that are not metric names.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    // Aggregation operators, which may take their grouping before their parentheses.
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

/// Clauses whose parenthesised list names labels, not metrics.
const GROUPINGS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// `text` without what lies between `open` and `close` (not nested), each cut a space.
fn cut(text: &str, open: &str, close: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(open) {
        out.push_str(&rest[..at]);
        out.push(' ');
        rest = rest[at + open.len()..]
            .split_once(close)
            .map_or("", |(_, after)| after);
    }
    out.push_str(rest);
    out
}

/// The expression without Helm's `{{ … }}`, then strings, `{…}` matchers and `[…]`
/// ranges (a template may sit in a string in a matcher: the order matters).
fn without_literals(expr: &str) -> String {
    let text = cut(expr, "{{", "}}");
    let text = cut(&text, "\"", "\"");
    let text = cut(&text, "{", "}");
    cut(&text, "[", "]")
}

/// The metric names an expression reads: its identifiers, once literals, grouping
/// clauses, function names and keywords are left out. (No PromQL parser for Rust is kept
/// up; this covers the expressions a dashboard and alerts are written with.)
fn metric_names(expr: &str) -> BTreeSet<String> {
    let text = without_literals(expr);
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(is_word) {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !is_word(c)).unwrap_or(tail.len());
        let word = &tail[..end];
        let after = tail[end..].trim_start();
        rest = &tail[end..];
        if word.starts_with(|c: char| c.is_ascii_digit()) || KEYWORDS.contains(&word) {
            continue;
        }
        if after.starts_with('(') {
            if GROUPINGS.contains(&word) {
                // Skip the label list.
                rest = after.split_once(')').map_or("", |(_, r)| r);
            }
            continue; // a function, or a grouping clause
        }
        names.insert(word.to_string());
    }
    names
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = metric_names(
        "histogram_quantile(0.95, sum by (le, route) (rate(http_server_request_duration_seconds_bucket{status=~\"5..\"}[5m]))) > {{ $r.p95 }}",
    );
    assert_eq!(
        names,
        BTreeSet::from(["http_server_request_duration_seconds_bucket".to_string()])
    );
    let names = metric_names(
        "sum(rate(a_total[5m])) / clamp_min(sum without (x) (rate(b_total[5m])), 1) and on (queue) c",
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "a_total".to_string(),
            "b_total".to_string(),
            "c".to_string()
        ])
    );
}

/// Every `expr` of the dashboard (JSON) and of the rules (a Helm template of YAML).
fn expressions() -> Vec<(&'static str, String)> {
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/orderflow");
    let mut found = Vec::new();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(chart.join("files/dashboard.json")).unwrap())
            .unwrap();
    fn walk(v: &serde_json::Value, into: &mut Vec<(&'static str, String)>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => {
                            into.push(("dashboard", e.clone()))
                        }
                        _ => walk(v, into),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, into)),
            _ => {}
        }
    }
    walk(&dashboard, &mut found);
    let rules = std::fs::read_to_string(chart.join("templates/prometheusrule.yaml")).unwrap();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, rest)) = line.split_once("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest == "|" {
            // A block: the lines indented deeper than `expr:`.
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                if next.len() - next.trim_start().len() <= indent.len() {
                    break;
                }
                block.push_str(next.trim());
                block.push(' ');
                lines.next();
            }
            found.push(("rules", block));
        } else {
            found.push(("rules", rest.to_string()));
        }
    }
    found
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_read_only_metrics_the_suite_exports() {
    let s = spawn_suite().await;
    let (_, ana, id) = a_placed_order(&s, "METRICA-1").await;
    let paid = pay(&s, &ana, &id, "metric-1", card(APPROVE)).await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    order_reaches(&s, &ana, &id, "invoiced").await;

    let scrape = s.metrics().await;
    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let expressions = expressions();
    assert!(expressions.len() >= 15, "{expressions:?}");
    let mut dead = Vec::new();
    for (source, expr) in &expressions {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{source}: no metric in {expr}");
        for name in names {
            if !exported.contains(name.as_str()) && !EXTERNAL.contains(&name.as_str()) {
                dead.push(format!("{source}: {name} in `{expr}`"));
            }
        }
    }
    assert!(
        dead.is_empty(),
        "metrics the suite does not export:\n{}\n\nexported: {exported:?}",
        dead.join("\n")
    );
}
