//! Loading orders and running commands on them: load (latest snapshot + later events),
//! let the domain decide, append with the version that was loaded. A concurrent append
//! makes the append conflict; the command is then decided again on the fresh state (every
//! command here is a pure decision on the state, so re-running it is safe) and, after
//! [`MAX_ATTEMPTS`], reported as a conflict (gRPC ABORTED, HTTP 409).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Acquire as _, PgConnection};

use crate::{
    domain::{IllegalTransition, Order, OrderEvent, Status},
    event_store::{self, AppendError, Conflict, NewEvent},
};

/// Attempts of one command before a conflict is reported.
pub const MAX_ATTEMPTS: u32 = 4;

/// Who and what caused an event, stored with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The saga's id (the order id unless a caller says otherwise).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub correlation_id: String,
    /// The message or request that caused it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub causation_id: String,
    /// The acting user, when a person acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// W3C trace context (`traceparent`, `tracestate`) of the acting span.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trace: BTreeMap<String, String>,
}

impl Metadata {
    /// Metadata for work done now, in the current span.
    pub fn new(correlation_id: &str, causation_id: &str, user_id: Option<String>) -> Self {
        Self {
            correlation_id: correlation_id.to_string(),
            causation_id: causation_id.to_string(),
            user_id,
            trace: platform::amqp::current_trace_headers(),
        }
    }
}

/// Why a command did not apply.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such order.
    #[error("no order {0}")]
    NotFound(String),
    /// The order's state does not allow it.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// Others kept changing the order; nothing was applied.
    #[error(transparent)]
    Conflict(Conflict),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for CommandError {
    fn from(e: sqlx::Error) -> Self {
        Self::Other(e.into())
    }
}

impl From<AppendError> for CommandError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Conflict(c) => Self::Conflict(c),
            AppendError::Other(e) => Self::Other(e),
        }
    }
}

/// Loads an order: its latest snapshot, then the events after it.
pub async fn load(conn: &mut PgConnection, id: &str) -> anyhow::Result<Option<Order>> {
    let (snapshot, events) = event_store::load_stream(&mut *conn, id).await?;
    let mut order = match snapshot {
        Some((_, state)) => Some(serde_json::from_value::<Order>(state)?),
        None => None,
    };
    for recorded in events {
        let event = crate::versions::decode(recorded.data)?;
        match order.as_mut() {
            Some(order) => order.apply(&event),
            None => {
                order = Order::from_events(id, [&event]);
                anyhow::ensure!(
                    order.is_some(),
                    "stream {id} does not start with OrderPlaced"
                );
            }
        }
        if let Some(order) = order.as_mut() {
            order.updated_at = recorded.created_at;
        }
    }
    Ok(order)
}

/// Appends `events` to a loaded order (or, with `order` = `None`, starts a stream whose
/// first event is `OrderPlaced`), keeps the payment deadline index and the snapshot in
/// step, and returns the new state. Runs inside the caller's transaction.
pub async fn append(
    conn: &mut PgConnection,
    snapshot_interval: i64,
    id: &str,
    order: Option<Order>,
    events: &[OrderEvent],
    metadata: &Metadata,
) -> Result<Order, CommandError> {
    let before = order.as_ref().map_or(0, |o| o.version);
    let metadata_json = serde_json::to_value(metadata).map_err(anyhow::Error::from)?;
    let new_events = events
        .iter()
        .map(|e| {
            Ok(NewEvent {
                event_type: e.type_name().to_string(),
                data: crate::versions::encode(e)?,
                metadata: metadata_json.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    event_store::append(conn, id, before, &new_events).await?;
    // now() is the transaction's start: the events' created_at.
    let recorded_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *conn)
        .await?;
    let mut events = events.iter();
    let mut order = match order {
        Some(order) => order,
        None => events
            .next()
            .and_then(|first| Order::from_events(id, [first]))
            .ok_or_else(|| anyhow::anyhow!("a new order starts with OrderPlaced"))?,
    };
    for event in events {
        order.apply(event);
    }
    order.updated_at = recorded_at;
    if order.status == Status::PendingPayment {
        sqlx::query(
            "INSERT INTO payment_deadlines (order_id, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(order.expires_at)
        .execute(&mut *conn)
        .await?;
    } else {
        sqlx::query("DELETE FROM payment_deadlines WHERE order_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    if snapshot_interval > 0 && before / snapshot_interval != order.version / snapshot_interval {
        let state = serde_json::to_value(&order).map_err(anyhow::Error::from)?;
        event_store::save_snapshot(conn, id, order.version, &state).await?;
    }
    Ok(order)
}

/// Runs a command on order `id`: load, `decide`, append; on a conflict, decides again on
/// the fresh state (inside a savepoint when `conn` is already in a transaction). Returns
/// the order as it is after the command (unchanged when `decide` produced no events).
pub async fn execute<F>(
    conn: &mut PgConnection,
    snapshot_interval: i64,
    id: &str,
    metadata: &Metadata,
    decide: F,
) -> Result<Order, CommandError>
where
    F: Fn(&Order) -> Result<Vec<OrderEvent>, IllegalTransition>,
{
    let mut attempt = 1;
    loop {
        let mut tx = conn.begin().await?;
        let outcome = async {
            let order = load(&mut tx, id)
                .await?
                .ok_or_else(|| CommandError::NotFound(id.to_string()))?;
            let events = decide(&order)?;
            if events.is_empty() {
                return Ok(order);
            }
            append(
                &mut tx,
                snapshot_interval,
                id,
                Some(order),
                &events,
                metadata,
            )
            .await
        }
        .await;
        match outcome {
            Ok(order) => {
                tx.commit().await?;
                return Ok(order);
            }
            Err(CommandError::Conflict(conflict)) if attempt < MAX_ATTEMPTS => {
                tx.rollback().await?;
                metrics::counter!("order_command_conflicts_total").increment(1);
                tracing::debug!(%conflict, attempt, "concurrent change: deciding again");
                attempt += 1;
            }
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        }
    }
}
