//! What the DTE service reacts to: `order.paid` (the sale's boleta or factura) and
//! `payment.refunded` (a nota de crédito). Each records the document to issue in the
//! consumer's transaction (the inbox makes a redelivery a no-op, the document table a second
//! event for the same order or refund) and wakes the issuer.

use std::{future::Future, pin::Pin, sync::Arc};

use platform::amqp::consumer::EventHandler;
use proto::events::v1::{EventEnvelope, OrderPaid, PaymentRefunded};
use sqlx::PgConnection;

use crate::issuing::{Issuing, Outcome};

/// Routing keys the DTE service's queue binds.
pub const SUBSCRIBED: &[&str] = &["order.paid", "payment.refunded"];

/// Issues documents for sales and refunds.
pub struct DocumentHandler {
    pub issuing: Arc<Issuing>,
}

impl EventHandler for DocumentHandler {
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a EventEnvelope,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let payload = event
                .payload
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("event {} has no payload", event.id))?;
            let outcome = match event.r#type.as_str() {
                "order.paid" => {
                    let paid: OrderPaid = payload.to_msg()?;
                    self.issuing.order_paid(tx, &paid, &event.id).await?
                }
                "payment.refunded" => {
                    let refunded: PaymentRefunded = payload.to_msg()?;
                    self.issuing
                        .payment_refunded(tx, &refunded, &event.id)
                        .await?
                }
                _ => return Ok(()),
            };
            if outcome == Outcome::AlreadyDone {
                tracing::debug!(id = %event.id, "the document already exists");
            }
            Ok(())
        })
    }

    fn after_commit<'a>(
        &'a self,
        _event: &'a EventEnvelope,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        // The document is recorded: the issuer numbers, signs and stores it.
        Box::pin(async move { self.issuing.wake() })
    }
}
