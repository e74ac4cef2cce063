//! The run's outputs: the table printed at the end and the HTML report with its SVG charts.

use serde_json::Value;

use super::stats::Stats;

pub(super) fn table(summary: &Value) -> String {
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
pub(super) fn svg_chart(title: &str, unit: &str, series: &[(&str, &str, Vec<f64>)]) -> String {
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

pub(super) fn report(stats: &Stats, summary: &Value) -> String {
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
