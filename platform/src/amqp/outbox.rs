//! The transactional outbox and its relay.

use std::{collections::BTreeMap, time::Duration};

use prost::Message as _;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Broker;
use proto::events::v1::EventEnvelope;

/// The tables the outbox and the inbox need, in the service's own schema. Idempotent:
/// services run it after their migrations.
const TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS outbox (
    seq          bigserial PRIMARY KEY,
    id           uuid NOT NULL UNIQUE,
    event_type   text NOT NULL,
    aggregate_id text NOT NULL,
    envelope     bytea NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
-- The relay sleeps until a transaction that wrote to the outbox commits (NOTIFY is
-- delivered at commit, and once per transaction), with a slow poll for a lost notice.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orderflow_outbox_' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
CREATE TABLE IF NOT EXISTS inbox (
    message_id  text NOT NULL,
    consumer    text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
"#;

/// Creates the `outbox` and `inbox` tables in the pool's schema when missing.
pub async fn install(pool: &PgPool) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    // Serialise with other replicas creating the same tables at start.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.outbox'))")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(TABLES).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// An event to publish.
pub struct NewEvent<'a, M: prost::Name> {
    /// Routing key, e.g. `payment.captured`.
    pub event_type: &'a str,
    /// The aggregate it is about.
    pub aggregate_id: &'a str,
    /// The payload message.
    pub payload: &'a M,
    /// Correlation id (e.g. the order id for the saga), if any.
    pub correlation_id: Option<&'a str>,
    /// The message that caused this one, if any.
    pub causation_id: Option<&'a str>,
}

/// Writes `event` to the outbox inside the caller's transaction: it is published if and
/// only if that transaction commits. Returns the message id.
pub async fn enqueue<M: prost::Name>(
    tx: &mut PgConnection,
    event: NewEvent<'_, M>,
) -> anyhow::Result<Uuid> {
    let id = Uuid::now_v7();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let envelope = EventEnvelope {
        id: id.to_string(),
        r#type: event.event_type.to_string(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        }),
        aggregate_id: event.aggregate_id.to_string(),
        correlation_id: event.correlation_id.unwrap_or_default().to_string(),
        causation_id: event.causation_id.unwrap_or_default().to_string(),
        payload: Some(prost_types::Any::from_msg(event.payload)?),
    };
    let headers = serde_json::to_value(super::current_trace_headers())?;
    sqlx::query("INSERT INTO outbox (id, event_type, aggregate_id, envelope, headers) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(event.event_type)
        .bind(event.aggregate_id)
        .bind(envelope.encode_to_vec())
        .bind(headers)
        .execute(tx)
        .await?;
    Ok(id)
}

/// Publishes the outbox in order. Any number of replicas may run one: an advisory lock
/// lets one publish at a time, which keeps the order and avoids double work.
pub struct OutboxRelay {
    pool: PgPool,
    broker: Broker,
    /// Rows per transaction.
    pub batch_size: i64,
    /// The safety poll: how long an idle relay sleeps when no notification comes (a
    /// committed outbox row wakes it at once through LISTEN/NOTIFY).
    pub idle_interval: Duration,
    /// The role publishing (see `telemetry::ROLE`).
    pub role: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Pending {
    seq: i64,
    id: Uuid,
    event_type: String,
    envelope: Vec<u8>,
    headers: sqlx::types::Json<BTreeMap<String, String>>,
}

impl OutboxRelay {
    /// A relay for the pool's outbox.
    pub fn new(pool: PgPool, broker: Broker) -> Self {
        Self {
            pool,
            broker,
            batch_size: 100,
            idle_interval: Duration::from_secs(5),
            role: None,
        }
    }

    /// The relay of role `role`, whose PRODUCER spans are traced under it.
    pub fn for_role(role: &str, pool: PgPool, broker: Broker) -> Self {
        Self {
            role: Some(role.to_string()),
            ..Self::new(pool, broker)
        }
    }

    /// Publishes until `shutdown` fires. Failures (RabbitMQ down, Postgres down) are
    /// logged and retried with back-off; unpublished rows simply wait. Idle, it sleeps until
    /// a committed outbox row notifies it (or the safety poll comes round).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut wakeup = crate::db::Wakeup::for_table(&self.pool, "outbox").await;
        let mut channel = None;
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let outcome = self.publish_batch(&mut channel).await;
            let pause = match outcome {
                Ok(n) if n as i64 == self.batch_size => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(_) => {
                    // Caught up: sleep until a write commits (or the safety poll).
                    backoff = Duration::from_millis(100);
                    wakeup.wait(self.idle_interval, &shutdown).await;
                    continue;
                }
                Err(e) => {
                    channel = None;
                    tracing::warn!(error = format!("{e:#}"), retry_in = ?backoff, "outbox relay: publishing failed");
                    let pause = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    pause
                }
            };
            tokio::select! { _ = tokio::time::sleep(pause) => {}, _ = shutdown.cancelled() => {} }
        }
        Ok(())
    }

    /// One batch: lock, publish with confirms, mark sent, commit. Returns how many rows
    /// were published (0 when empty or another relay holds the lock).
    pub async fn publish_batch(
        &self,
        channel: &mut Option<lapin::Channel>,
    ) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let leader: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '.outbox-relay'))",
        )
        .fetch_one(&mut *tx)
        .await?;
        if !leader {
            return Ok(0);
        }
        let rows: Vec<Pending> = sqlx::query_as(
            "SELECT seq, id, event_type, envelope, headers FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(self.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        // One gauge per schema: in `orderflow all` several services' relays report.
        let (schema, backlog): (String, i64) = sqlx::query_as(
            "SELECT current_schema()::text, count(*) FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(&mut *tx)
        .await?;
        let gauge = metrics::gauge!("outbox_backlog", "schema" => schema);
        gauge.set(backlog as f64);
        if rows.is_empty() {
            return Ok(0);
        }
        let ch = match channel {
            Some(ch) if ch.status().connected() => ch,
            _ => channel.insert(self.broker.confirm_channel().await?),
        };
        let ids: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
        let outgoing: Vec<super::Outgoing<'_>> = rows
            .iter()
            .zip(&ids)
            .map(|(row, id)| super::Outgoing {
                id,
                event_type: &row.event_type,
                envelope: &row.envelope,
                headers: &row.headers,
            })
            .collect();
        super::publish_confirmed(ch, self.broker.exchange(), self.role.as_deref(), outgoing)
            .await?;
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        sqlx::query("UPDATE outbox SET published_at = now() WHERE seq = ANY($1)")
            .bind(&seqs)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        // What is left now, not what was there before this batch went out (a relay that
        // caught up sleeps, and the gauge would keep the old figure until it wakes).
        gauge.set((backlog - rows.len() as i64).max(0) as f64);
        metrics::counter!("outbox_published_total").increment(rows.len() as u64);
        Ok(rows.len())
    }
}
