//! The read model (order summaries and lines), projected from the event store.
//!
//! - One projector at a time: a session-level Postgres advisory lock elects the leader;
//!   other replicas wait on it. The lock lives on the connection the leader projects
//!   through, so a leader that dies (process, host or network) frees it at once and a
//!   standby takes over on its next try.
//! - Each batch of events and the checkpoint commit in one transaction: the read model
//!   never has an event applied twice or skipped.
//! - Events are folded with the aggregate's own rules ([`Order::apply`]): the summary
//!   keeps the folded state, so the read model says exactly what the write model says.
//! - [`rebuild`] projects every event into fresh tables and swaps them in.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use platform::CancellationToken;
use sqlx::{Acquire as _, PgConnection, PgPool};

use crate::{
    domain::{Order, OrderEvent},
    event_store::{self, Checkpoint, RecordedEvent},
};

/// The projector's checkpoint name.
pub const CHECKPOINT: &str = "projector";

/// The read-model tables a projection writes to.
#[derive(Debug, Clone, Copy)]
pub struct Tables {
    /// One row per order.
    pub summaries: &'static str,
    /// One row per order line.
    pub lines: &'static str,
}

/// The tables the API reads.
pub const LIVE: Tables = Tables {
    summaries: "order_summaries",
    lines: "order_lines",
};

/// Where a rebuild writes before the swap.
const REBUILD: Tables = Tables {
    summaries: "order_summaries_rebuild",
    lines: "order_lines_rebuild",
};

/// Applies one event to the read model in `tables`.
pub async fn project(
    conn: &mut PgConnection,
    tables: Tables,
    recorded: &RecordedEvent,
) -> anyhow::Result<()> {
    let event = crate::versions::decode(recorded.data.clone())?;
    let id = recorded.stream_id.as_str();
    let mut order = if let OrderEvent::OrderPlaced { lines, .. } = &event {
        for (line_no, line) in lines.iter().enumerate() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {} (order_id, line_no, sku, name, quantity, unit_net_price, exempt) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                tables.lines
            )))
            .bind(id)
            .bind(line_no as i32 + 1)
            .bind(&line.sku)
            .bind(&line.name)
            .bind(line.quantity)
            .bind(line.unit_net_price)
            .bind(line.exempt)
            .execute(&mut *conn)
            .await?;
        }
        Order::from_events(id, [&event]).expect("OrderPlaced starts an order")
    } else {
        let state: Option<serde_json::Value> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT state FROM {} WHERE order_id = $1",
            tables.summaries
        )))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(state) = state else {
            anyhow::bail!(
                "event {} of order {id} precedes its OrderPlaced",
                recorded.global_position
            );
        };
        let mut order: Order = serde_json::from_value(state)?;
        order.apply(&event);
        order
    };
    order.updated_at = recorded.created_at;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {} (order_id, customer_id, status, document_type, buyer, net, exempt_total, iva, total, \
           refunded_amount, cancel_reason, created_at, updated_at, expires_at, version, state) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, refunded_amount = EXCLUDED.refunded_amount, \
           cancel_reason = EXCLUDED.cancel_reason, updated_at = EXCLUDED.updated_at, version = EXCLUDED.version, \
           state = EXCLUDED.state",
        tables.summaries
    )))
    .bind(id)
    .bind(&order.customer_id)
    .bind(order.status.as_str())
    .bind(order.document_type.as_str())
    .bind(order.buyer.as_ref().map(serde_json::to_value).transpose()?)
    .bind(order.totals.net)
    .bind(order.totals.exempt_total)
    .bind(order.totals.iva)
    .bind(order.totals.total)
    .bind(order.refunded)
    .bind(order.cancel_reason.map(|r| r.as_str()))
    .bind(order.placed_at)
    .bind(order.updated_at)
    .bind(order.expires_at)
    .bind(order.version)
    .bind(serde_json::to_value(&order)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Projects up to `limit` events after the live checkpoint, and moves the checkpoint, in
/// one transaction. Returns how many events it projected.
pub async fn project_batch(conn: &mut PgConnection, limit: i64) -> anyhow::Result<usize> {
    let mut tx = conn.begin().await?;
    let checkpoint = event_store::load_checkpoint(&mut tx, CHECKPOINT, true).await?;
    let events = event_store::read_all(&mut tx, checkpoint, limit).await?;
    for event in &events {
        project(&mut tx, LIVE, event).await?;
    }
    if let Some(last) = events.last() {
        event_store::save_checkpoint(&mut tx, CHECKPOINT, Checkpoint::after(last)).await?;
    }
    tx.commit().await?;
    if !events.is_empty() {
        metrics::counter!("order_projected_events_total").increment(events.len() as u64);
    }
    Ok(events.len())
}

/// The singleton projector worker.
pub struct Projector {
    pool: PgPool,
    leader: Arc<AtomicBool>,
    /// Events per transaction.
    pub batch_size: i64,
    /// Pause when caught up.
    pub idle_interval: Duration,
    /// How often a standby tries to become the leader.
    pub standby_interval: Duration,
}

const LEADER_LOCK: &str = "SELECT pg_try_advisory_lock(hashtext(current_schema() || '.projector'))";

impl Projector {
    /// A projector for the `orders` schema behind `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            leader: Arc::default(),
            batch_size: 500,
            // The safety poll: appends wake the projector at once (LISTEN/NOTIFY).
            idle_interval: Duration::from_secs(2),
            standby_interval: Duration::from_secs(1),
        }
    }

    /// A flag that is true while this instance is the active projector.
    pub fn leader_flag(&self) -> Arc<AtomicBool> {
        self.leader.clone()
    }

    /// Projects (or stands by) until `shutdown`. Failures drop the connection, and with it
    /// the leadership, and are retried with back-off.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let outcome = self.lead(&shutdown).await;
            self.set_leader(false);
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), retry_in = ?backoff, "projector failed");
                    tokio::select! { _ = tokio::time::sleep(backoff) => {}, _ = shutdown.cancelled() => {} }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        Ok(())
    }

    fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
        metrics::gauge!("order_projector_leader").set(if leader { 1.0 } else { 0.0 });
    }

    async fn lead(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        // A connection of its own (not returned to the pool): it holds the lock for as long
        // as it lives, and only as long.
        let mut conn = self.pool.acquire().await?.detach();
        loop {
            let won: bool = sqlx::query_scalar(LEADER_LOCK).fetch_one(&mut conn).await?;
            if won {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.standby_interval) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
        self.set_leader(true);
        tracing::info!("projector: this instance leads");
        let mut wakeup = platform::db::Wakeup::for_table(&self.pool, "events").await;
        loop {
            let projected = project_batch(&mut conn, self.batch_size).await?;
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if (projected as i64) < self.batch_size {
                wakeup.wait(self.idle_interval, shutdown).await;
            } else if shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Events projected.
    pub events: u64,
    /// Orders in the new read model.
    pub orders: i64,
}

async fn project_into_rebuild(
    conn: &mut PgConnection,
    checkpoint: &mut Checkpoint,
) -> anyhow::Result<u64> {
    let mut projected = 0;
    loop {
        let mut tx = conn.begin().await?;
        let events = event_store::read_all(&mut tx, *checkpoint, 1000).await?;
        for event in &events {
            project(&mut tx, REBUILD, event).await?;
        }
        tx.commit().await?;
        projected += events.len() as u64;
        match events.last() {
            Some(last) => *checkpoint = Checkpoint::after(last),
            None => return Ok(projected),
        }
    }
}

/// Rebuilds the read model from every event into fresh tables, then swaps them in. The
/// API keeps reading the old tables until the swap; the live projector pauses only for the
/// swap itself (it waits on the checkpoint row) and continues from where the rebuild ended.
pub async fn rebuild(pool: &PgPool) -> anyhow::Result<Rebuilt> {
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {s}, {l}; \
         CREATE TABLE {s} (LIKE {live_s} INCLUDING ALL); \
         CREATE TABLE {l} (LIKE {live_l} INCLUDING ALL);",
        s = REBUILD.summaries,
        l = REBUILD.lines,
        live_s = LIVE.summaries,
        live_l = LIVE.lines,
    )))
    .execute(&mut *conn)
    .await?;
    let mut checkpoint = Checkpoint::default();
    // The bulk, outside any long transaction (each batch commits on its own).
    let mut events = project_into_rebuild(&mut conn, &mut checkpoint).await?;
    // The tail and the swap, with the live projector held at its checkpoint row.
    let mut tx = conn.begin().await?;
    event_store::load_checkpoint(&mut tx, CHECKPOINT, true).await?;
    events += project_into_rebuild(&mut tx, &mut checkpoint).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE {live_s} RENAME TO {live_s}_old; ALTER TABLE {s} RENAME TO {live_s}; DROP TABLE {live_s}_old; \
         ALTER TABLE {live_l} RENAME TO {live_l}_old; ALTER TABLE {l} RENAME TO {live_l}; DROP TABLE {live_l}_old;",
        s = REBUILD.summaries,
        l = REBUILD.lines,
        live_s = LIVE.summaries,
        live_l = LIVE.lines,
    )))
    .execute(&mut *tx)
    .await?;
    event_store::save_checkpoint(&mut tx, CHECKPOINT, checkpoint).await?;
    let orders: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        LIVE.summaries
    )))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Rebuilt { events, orders })
}
