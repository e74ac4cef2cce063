//! The event store is the order service's outbox: this relay publishes its events to the
//! events exchange in store order, with publisher confirms, and moves its checkpoint
//! (in Postgres) only after RabbitMQ confirmed the batch. A crash or an outage between
//! the two re-sends the batch with the same envelope ids (consumers de-duplicate);
//! nothing is skipped and nothing overtakes. One relay publishes at a time: a transaction
//! advisory lock lets the others idle.

use std::{collections::HashMap, time::Duration};

use platform::{
    CancellationToken,
    amqp::{Broker, Outgoing, publish_confirmed},
};
use prost::Message as _;
use proto::events::v1 as pb;
use sqlx::{PgConnection, PgPool};

use crate::{
    commands::Metadata,
    domain::{Buyer, Line, Order, OrderEvent, Totals},
    event_store::{self, Checkpoint, RecordedEvent},
};

/// The relay's checkpoint name.
pub const CHECKPOINT: &str = "relay";

/// Publishes the event store.
pub struct Relay {
    pool: PgPool,
    broker: Broker,
    /// Events per batch.
    pub batch_size: i64,
    /// Pause when caught up.
    pub idle_interval: Duration,
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

fn pb_lines(lines: &[Line]) -> Vec<pb::Line> {
    lines
        .iter()
        .map(|l| pb::Line {
            sku: l.sku.clone(),
            name: l.name.clone(),
            quantity: l.quantity,
            unit_net_price: l.unit_net_price,
            exempt: l.exempt,
            line_net: l.line_net(),
        })
        .collect()
}

fn pb_buyer(buyer: &Option<Buyer>) -> Option<pb::Buyer> {
    buyer.as_ref().map(|b| pb::Buyer {
        rut: b.rut.clone().unwrap_or_default(),
        razon_social: b.razon_social.clone(),
        giro: b.giro.clone(),
        address: b.address.clone(),
        comuna: b.comuna.clone(),
        email: b.email.clone(),
    })
}

fn pb_totals(t: &Totals) -> Option<pb::Totals> {
    Some(pb::Totals {
        net: t.net,
        exempt_total: t.exempt_total,
        iva: t.iva,
        total: t.total,
    })
}

/// The integration event for a stored event: its routing key and payload. `order` is the
/// order folded up to and including the event (order.paid carries the whole order, so
/// the DTE service needs nothing else).
pub fn integration_event(
    event: &OrderEvent,
    order: &Order,
) -> anyhow::Result<(&'static str, prost_types::Any)> {
    let order_id = order.id.clone();
    Ok(match event {
        OrderEvent::OrderPlaced { .. } => (
            "order.placed",
            prost_types::Any::from_msg(&pb::OrderPlaced {
                order_id,
                customer_id: order.customer_id.clone(),
                lines: pb_lines(&order.lines),
                buyer: pb_buyer(&order.buyer),
                document_type: order.document_type.as_str().into(),
                totals: pb_totals(&order.totals),
                expires_at: timestamp(order.expires_at),
            })?,
        ),
        OrderEvent::OrderPaid { payment_id, .. } => (
            "order.paid",
            prost_types::Any::from_msg(&pb::OrderPaid {
                order_id,
                customer_id: order.customer_id.clone(),
                payment_id: payment_id.clone(),
                lines: pb_lines(&order.lines),
                buyer: pb_buyer(&order.buyer),
                document_type: order.document_type.as_str().into(),
                totals: pb_totals(&order.totals),
            })?,
        ),
        OrderEvent::OrderCancelled { reason } => (
            "order.cancelled",
            prost_types::Any::from_msg(&pb::OrderCancelled {
                order_id,
                reason: reason.as_str().into(),
            })?,
        ),
        OrderEvent::OrderInvoiced {
            document_id,
            tipo_dte,
            folio,
        } => (
            "order.invoiced",
            prost_types::Any::from_msg(&pb::OrderInvoiced {
                order_id,
                document_id: document_id.clone(),
                tipo_dte: *tipo_dte,
                folio: *folio,
            })?,
        ),
        OrderEvent::DocumentSettled {
            document_id,
            sii_status,
        } => (
            "order.document_settled",
            prost_types::Any::from_msg(&pb::OrderDocumentSettled {
                order_id,
                document_id: document_id.clone(),
                sii_status: sii_status.clone(),
            })?,
        ),
        OrderEvent::OrderRefunded {
            refund_id,
            amount,
            total_refunded,
        } => (
            "order.refunded",
            prost_types::Any::from_msg(&pb::OrderRefunded {
                order_id,
                refund_id: refund_id.clone(),
                amount: *amount,
                total_refunded: *total_refunded,
                full: *total_refunded >= order.totals.total,
            })?,
        ),
    })
}

struct Prepared {
    id: String,
    event_type: &'static str,
    envelope: Vec<u8>,
    headers: std::collections::BTreeMap<String, String>,
}

/// Envelopes for a batch, folding each stream as far as the batch needs it.
async fn prepare(
    conn: &mut PgConnection,
    events: &[RecordedEvent],
) -> anyhow::Result<Vec<Prepared>> {
    // Every stream of the batch in one read.
    let mut ids: Vec<String> = events.iter().map(|e| e.stream_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let mut streams: HashMap<String, Vec<OrderEvent>> = HashMap::new();
    for e in event_store::read_streams(&mut *conn, &ids).await? {
        streams
            .entry(e.stream_id)
            .or_default()
            .push(crate::versions::decode(e.data)?);
    }
    let mut prepared = Vec::with_capacity(events.len());
    for recorded in events {
        let history = streams
            .get(&recorded.stream_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let upto = usize::try_from(recorded.stream_position)?;
        anyhow::ensure!(
            upto <= history.len(),
            "event {} is beyond its stream",
            recorded.global_position
        );
        let order = Order::from_events(&recorded.stream_id, &history[..upto])
            .ok_or_else(|| anyhow::anyhow!("stream {} has no OrderPlaced", recorded.stream_id))?;
        let (event_type, payload) = integration_event(&history[upto - 1], &order)?;
        let metadata: Metadata = serde_json::from_value(recorded.metadata.clone())?;
        let envelope = pb::EventEnvelope {
            id: recorded.event_id.to_string(),
            r#type: event_type.into(),
            occurred_at: timestamp(recorded.created_at),
            aggregate_id: recorded.stream_id.clone(),
            correlation_id: if metadata.correlation_id.is_empty() {
                recorded.stream_id.clone()
            } else {
                metadata.correlation_id
            },
            causation_id: metadata.causation_id,
            payload: Some(payload),
        };
        prepared.push(Prepared {
            id: envelope.id.clone(),
            event_type,
            envelope: envelope.encode_to_vec(),
            headers: metadata.trace,
        });
    }
    Ok(prepared)
}

impl Relay {
    /// A relay for the `orders` schema behind `pool`.
    pub fn new(pool: PgPool, broker: Broker) -> Self {
        Self {
            pool,
            broker,
            batch_size: 200,
            // The safety poll: appends wake the relay at once (LISTEN/NOTIFY). Short enough
            // that an event held back by an older transaction still in flight (readers stay
            // below it) goes out soon after, even when that transaction appended nothing.
            idle_interval: Duration::from_secs(2),
        }
    }

    /// Publishes until `shutdown`; failures (RabbitMQ or Postgres away) are retried with
    /// back-off from the last confirmed checkpoint.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut wakeup = platform::db::Wakeup::for_table(&self.pool, "events").await;
        let mut channel = None;
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let pause = match self.publish_batch(&mut channel).await {
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
                    tracing::warn!(error = format!("{e:#}"), retry_in = ?backoff, "event relay: publishing failed");
                    let pause = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    pause
                }
            };
            tokio::select! { _ = tokio::time::sleep(pause) => {}, _ = shutdown.cancelled() => {} }
        }
        Ok(())
    }

    /// One batch: publish what follows the checkpoint, wait for the confirms, move the
    /// checkpoint. Returns how many events went out (0 when caught up, or when another
    /// relay is publishing).
    pub async fn publish_batch(
        &self,
        channel: &mut Option<lapin::Channel>,
    ) -> anyhow::Result<usize> {
        // The channel first: connecting may take a while, and no transaction should be
        // open meanwhile.
        let ch = match channel {
            Some(ch) if ch.status().connected() => ch,
            _ => channel.insert(self.broker.confirm_channel().await?),
        };
        let mut tx = self.pool.begin().await?;
        let leader: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '.event-relay'))",
        )
        .fetch_one(&mut *tx)
        .await?;
        if !leader {
            return Ok(0);
        }
        // The advisory lock already keeps other relays out. No row lock: it would give this
        // transaction an id, and while it waits on RabbitMQ every global reader's horizon
        // would wait with it.
        let checkpoint = event_store::load_checkpoint(&mut tx, CHECKPOINT, false).await?;
        let events = event_store::read_all(&mut tx, checkpoint, self.batch_size).await?;
        let Some(last) = events.last() else {
            return Ok(0);
        };
        let prepared = prepare(&mut tx, &events).await?;
        let outgoing: Vec<Outgoing<'_>> = prepared
            .iter()
            .map(|p| Outgoing {
                id: &p.id,
                event_type: p.event_type,
                envelope: &p.envelope,
                headers: &p.headers,
            })
            .collect();
        publish_confirmed(ch, self.broker.exchange(), Some("order"), outgoing).await?;
        event_store::save_checkpoint(&mut tx, CHECKPOINT, Checkpoint::after(last)).await?;
        tx.commit().await?;
        metrics::counter!("order_relayed_events_total").increment(events.len() as u64);
        Ok(events.len())
    }
}
