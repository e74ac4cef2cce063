//! What the payment service reacts to: `order.cancelled`. The cancellation is recorded, and
//! a capture already standing for the order (one that raced the cancellation) is refunded
//! in full, recorded, and announced as `payment.refunded`.

use std::{future::Future, pin::Pin, sync::Arc};

use platform::amqp::consumer::EventHandler;
use proto::events::v1::{EventEnvelope, OrderCancelled};
use sqlx::PgConnection;

use crate::{ledger, provider::PaymentProvider};

/// Routing keys the payment service's queue binds.
pub const SUBSCRIBED: &[&str] = &["order.cancelled"];

/// Handles order cancellations.
pub struct CancellationHandler {
    /// For refunds.
    pub provider: Arc<dyn PaymentProvider>,
}

impl EventHandler for CancellationHandler {
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a EventEnvelope,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            if event.r#type != "order.cancelled" {
                return Ok(());
            }
            let payload = event
                .payload
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("event {} has no payload", event.id))?;
            let cancelled: OrderCancelled = payload.to_msg()?;
            if let Some(refund) = ledger::order_cancelled(
                tx,
                self.provider.as_ref(),
                &cancelled.order_id,
                &cancelled.reason,
            )
            .await?
            {
                tracing::info!(order_id = %cancelled.order_id, amount = refund.amount, "refunded a capture that raced the order's cancellation");
            }
            Ok(())
        })
    }
}
