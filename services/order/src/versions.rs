//! Event versions. Every order event is stored with its schema version (`"v"` beside its
//! `"type"` in `events.data`; an event without one was stored before versions existed and
//! is version 1). Stored events are never rewritten: a reader brings an old version up to
//! today's shape here, in one place, before it becomes an [`OrderEvent`].
//!
//! Changing an event: raise its version in [`current`], add the step from the previous
//! version in [`upcast`] (what an old event means in the new shape), keep a JSON fixture of
//! the old shape under `tests/fixtures/` and test that it loads (`tests/event_versions.rs`).

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::domain::OrderEvent;

/// The version each event type is written with today.
pub fn current(event_type: &str) -> u64 {
    match event_type {
        // v2: `currency` (ISO 4217).
        "OrderPlaced" => 2,
        _ => 1,
    }
}

/// An event as stored: its fields, its `type` and its version.
pub fn encode(event: &OrderEvent) -> serde_json::Result<Value> {
    let mut data = serde_json::to_value(event)?;
    data["v"] = json!(current(event.type_name()));
    Ok(data)
}

/// A stored event, whatever its version, as today's [`OrderEvent`].
pub fn decode(data: Value) -> anyhow::Result<OrderEvent> {
    let data = upcast(data)?;
    serde_json::from_value(data).context("a stored order event does not fit its type")
}

/// `data` in its type's current shape.
pub fn upcast(mut data: Value) -> anyhow::Result<Value> {
    let event_type = data["type"]
        .as_str()
        .context("a stored order event has no type")?
        .to_string();
    let target = current(&event_type);
    let mut version = data.get("v").and_then(Value::as_u64).unwrap_or(1);
    anyhow::ensure!(
        version <= target,
        "{event_type} v{version} was written by a newer version of the order service (this one knows v{target}): deploy it"
    );
    while version < target {
        match (event_type.as_str(), version) {
            // Every order placed before v2 was priced in Chilean pesos.
            ("OrderPlaced", 1) => data["currency"] = json!("CLP"),
            _ => anyhow::bail!("no upcaster from {event_type} v{version}"),
        }
        version += 1;
    }
    data["v"] = json!(version);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_order_placed_gains_its_currency_and_a_newer_version_is_refused() {
        let v1 = json!({"type": "OrderPlaced", "customer_id": "c"});
        let up = upcast(v1).unwrap();
        assert_eq!(
            (up["currency"].as_str(), up["v"].as_u64()),
            (Some("CLP"), Some(2))
        );
        // Today's shape passes unchanged.
        assert_eq!(upcast(up.clone()).unwrap(), up);
        // Unversioned events of other types are v1, today's version.
        let paid = json!({"type": "OrderPaid", "payment_id": "p", "amount": 1});
        assert_eq!(upcast(paid).unwrap()["v"], 1);
        let future = json!({"type": "OrderPaid", "v": 2});
        assert!(
            upcast(future)
                .unwrap_err()
                .to_string()
                .contains("newer version")
        );
    }
}
