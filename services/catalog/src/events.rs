//! Events the catalog reacts to: a paid order commits its reservation, a cancelled one
//! releases it. Both are idempotent twice over: the inbox drops redeliveries, and a
//! reservation settles only once.

use std::{future::Future, pin::Pin};

use platform::amqp::consumer::EventHandler;
use proto::events::v1::{EventEnvelope, OrderCancelled, OrderPaid};
use sqlx::PgConnection;

use crate::{
    cache::ProductCache,
    store::{self, Settlement},
};

/// Routing keys the catalog's queue binds.
pub const SUBSCRIBED: &[&str] = &["order.paid", "order.cancelled"];

/// Settles reservations from order events.
pub struct ReservationSettler {
    /// Invalidated for the SKUs whose stock moved.
    pub cache: ProductCache,
}

impl EventHandler for ReservationSettler {
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
            let (order_id, how) = match event.r#type.as_str() {
                "order.paid" => (payload.to_msg::<OrderPaid>()?.order_id, Settlement::Commit),
                "order.cancelled" => (
                    payload.to_msg::<OrderCancelled>()?.order_id,
                    Settlement::Release,
                ),
                other => {
                    tracing::debug!(event = other, "not for the catalog");
                    return Ok(());
                }
            };
            let skus = store::settle(tx, &order_id, how).await?;
            tracing::info!(%order_id, ?how, lines = skus.len(), "reservation settled");
            // Before commit, so a failure here retries the whole event; the short TTL
            // bounds what a read racing this commit could cache.
            self.cache.invalidate(&skus).await;
            Ok(())
        })
    }
}
