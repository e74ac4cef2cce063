//! What the order reacts to: payment outcomes, issued documents and refunds. Each event
//! becomes a command on the order, appended in the same transaction that records the
//! message in the inbox. An event the order's state does not allow (a capture for a
//! cancelled order, say) is rejected, logged and counted, never applied.

use std::{future::Future, pin::Pin};

use platform::{amqp::consumer::EventHandler, clock::Clock};
use proto::events::v1::{
    DteIssued, DteSiiStatus, EventEnvelope, PaymentCaptured, PaymentFailed, PaymentRefunded,
};
use sqlx::PgConnection;

use crate::{
    commands::{self, CommandError, Metadata},
    domain::{CancelReason, IllegalTransition, Order, OrderEvent},
};

/// Routing keys the order service's queue binds.
pub const SUBSCRIBED: &[&str] = &[
    "payment.captured",
    "payment.failed",
    "dte.issued",
    "dte.accepted",
    "dte.rejected",
    "payment.refunded",
];

/// Applies payment and DTE events to orders.
pub struct OrderReactor {
    /// Snapshot every this many events.
    pub snapshot_interval: i64,
    /// For the cancellation time of a failed payment.
    pub clock: Clock,
}

type Decision = Box<dyn Fn(&Order) -> Result<Vec<OrderEvent>, IllegalTransition> + Send + Sync>;

/// The order an event is about and the command it asks for (`None`: not for the order).
fn command_of(event: &EventEnvelope, clock: &Clock) -> anyhow::Result<Option<(String, Decision)>> {
    let payload = event
        .payload
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("event {} has no payload", event.id))?;
    Ok(match event.r#type.as_str() {
        "payment.captured" => {
            let m: PaymentCaptured = payload.to_msg()?;
            Some((
                m.order_id,
                Box::new(move |o: &Order| o.pay(&m.payment_id, m.amount)),
            ))
        }
        "payment.failed" => {
            let m: PaymentFailed = payload.to_msg()?;
            let now = clock.now();
            Some((
                m.order_id,
                Box::new(move |o: &Order| o.cancel(CancelReason::PaymentFailed, now)),
            ))
        }
        "dte.issued" => {
            let m: DteIssued = payload.to_msg()?;
            if !m.refund_id.is_empty() {
                // A nota de crédito: the order records its refund, not a second invoice.
                return Ok(None);
            }
            Some((
                m.order_id,
                Box::new(move |o: &Order| o.invoice(&m.document_id, m.tipo_dte, m.folio)),
            ))
        }
        "dte.accepted" | "dte.rejected" => {
            let m: DteSiiStatus = payload.to_msg()?;
            // A nota de crédito's verdict is not the order's document's.
            if m.tipo_dte == 61 || m.tipo_dte == 56 {
                return Ok(None);
            }
            Some((
                m.order_id,
                Box::new(move |o: &Order| o.settle_document(&m.document_id, &m.status)),
            ))
        }
        "payment.refunded" => {
            let m: PaymentRefunded = payload.to_msg()?;
            Some((
                m.order_id,
                Box::new(move |o: &Order| o.refund(&m.refund_id, m.amount)),
            ))
        }
        _ => None,
    })
}

impl EventHandler for OrderReactor {
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a EventEnvelope,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let Some((order_id, decide)) = command_of(event, &self.clock)? else {
                tracing::debug!(event = %event.r#type, "not for the order service");
                return Ok(());
            };
            let correlation = if event.correlation_id.is_empty() {
                order_id.as_str()
            } else {
                event.correlation_id.as_str()
            };
            let metadata = Metadata::new(correlation, &event.id, None);
            let outcome =
                commands::execute(tx, self.snapshot_interval, &order_id, &metadata, decide).await;
            match outcome {
                Ok(order) => {
                    tracing::info!(%order_id, event = %event.r#type, status = order.status.as_str(), "order updated");
                    Ok(())
                }
                Err(CommandError::Illegal(illegal)) => {
                    metrics::counter!("order_events_rejected_total", "event" => event.r#type.clone()).increment(1);
                    tracing::warn!(%order_id, event = %event.r#type, id = %event.id, %illegal, "event rejected: the order's state does not allow it");
                    Ok(())
                }
                Err(CommandError::NotFound(_)) => {
                    metrics::counter!("order_events_rejected_total", "event" => event.r#type.clone()).increment(1);
                    tracing::error!(%order_id, event = %event.r#type, id = %event.id, "event for an unknown order: dropped");
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        })
    }
}
