//! A CLIENT span for each database query, as the OpenTelemetry database conventions name
//! them (`SELECT orders.events`, `db.system.name = postgresql`, the operation and the
//! table; never the statement's parameters or text).
//!
//! sqlx has no spans of its own: after each statement it logs an event (target
//! `sqlx::query`) with the statement's text and how long it took. This layer turns that
//! event into a span that began `elapsed` ago, under the span the query ran in. Queries
//! run outside any traced span (the background loops' polling) are not traced.

use std::time::{Duration, SystemTime};

use opentelemetry::{
    KeyValue,
    trace::{Span as _, SpanKind, Tracer as _},
};
use opentelemetry_sdk::trace::SdkTracer;
use tracing::{Subscriber, field::Visit};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

/// The event target sqlx logs each statement under.
pub(super) const SQLX_QUERY: &str = "sqlx::query";

pub(super) struct DatabaseSpans {
    pub(super) tracer: SdkTracer,
}

#[derive(Default)]
struct Statement {
    summary: String,
    text: String,
    elapsed: f64,
    rows: Option<u64>,
}

impl Visit for Statement {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_string(),
            "db.statement" => self.text = value.to_string(),
            _ => {}
        }
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed = value;
        }
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "rows_returned" {
            self.rows = Some(value);
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

/// The operation (`SELECT`, `INSERT`, …) and the table it reads or writes first, from a
/// statement's text: what the conventions put in `db.operation.name` and
/// `db.collection.name`. Only keywords and identifiers are kept, never literals.
pub fn operation_and_table(sql: &str) -> (String, Option<String>) {
    let words: Vec<&str> = sql.split_whitespace().collect();
    let operation = words
        .first()
        .map(|w| w.trim_end_matches(';').to_ascii_uppercase())
        .unwrap_or_default();
    let after = |keyword: &str| {
        words
            .iter()
            .position(|w| w.eq_ignore_ascii_case(keyword))
            .and_then(|i| words.get(i + 1))
    };
    let table = match operation.as_str() {
        "INSERT" => after("INTO"),
        "UPDATE" => words.get(1),
        "DELETE" | "SELECT" => after("FROM"),
        _ => None,
    }
    .filter(|t| !t.starts_with('(') && !t.starts_with('$'))
    .map(|t| t.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')))
    .filter(|t| !t.is_empty())
    .map(str::to_string);
    (operation, table)
}

impl<S> Layer<S> for DatabaseSpans
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != SQLX_QUERY {
            return;
        }
        // The span the query ran in (this layer's own context sees only sqlx's events).
        let Some((dispatch, parent, parent_cx)) = super::event_span(event) else {
            return;
        };
        let mut statement = Statement::default();
        event.record(&mut statement);
        // sqlx logs the whole text only when it is longer than its four-word summary.
        let text = if statement.text.trim().is_empty() {
            statement.summary.as_str()
        } else {
            statement.text.trim()
        };
        let (operation, table) = operation_and_table(text);
        let end = SystemTime::now();
        let start = end
            .checked_sub(Duration::from_secs_f64(statement.elapsed.max(0.0)))
            .unwrap_or(end);
        let name = match &table {
            Some(table) => format!("{operation} {table}"),
            None => operation.clone(),
        };
        let mut attributes = vec![
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.query.summary", name.clone()),
            KeyValue::new("db.operation.name", operation),
        ];
        if let Some(table) = table {
            attributes.push(KeyValue::new("db.collection.name", table));
        }
        if let Some(rows) = statement.rows {
            attributes.push(KeyValue::new(
                "db.response.returned_rows",
                i64::try_from(rows).unwrap_or(i64::MAX),
            ));
        }
        if let Some(role) = super::roles::role_of(&dispatch, &parent) {
            attributes.push(KeyValue::new(super::roles::ROLE, role));
        }
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent_cx);
        span.end_with_timestamp(end);
    }
}

#[cfg(test)]
mod tests {
    use super::operation_and_table;

    #[test]
    fn the_operation_and_first_table_are_read_and_literals_are_not() {
        for (sql, operation, table) in [
            (
                "SELECT id, status FROM orders.events WHERE id = $1",
                "SELECT",
                Some("orders.events"),
            ),
            (
                "insert into outbox (id) values ($1)",
                "INSERT",
                Some("outbox"),
            ),
            (
                "UPDATE documents SET status = 'issued' WHERE id = $1",
                "UPDATE",
                Some("documents"),
            ),
            ("DELETE FROM inbox WHERE at < $1", "DELETE", Some("inbox")),
            ("SELECT 1", "SELECT", None),
            ("SELECT * FROM $1", "SELECT", None),
            ("COMMIT", "COMMIT", None),
            ("WITH x AS (SELECT 1) SELECT * FROM x", "WITH", None),
            ("SELECT n FROM (SELECT 1 AS n) t", "SELECT", None),
        ] {
            let (op, t) = operation_and_table(sql);
            assert_eq!(op, operation, "{sql}");
            assert_eq!(t.as_deref(), table, "{sql}");
        }
    }
}
