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
    /// The catalog schema (to find the SKUs to invalidate after commit).
    pub pool: sqlx::PgPool,
    /// Invalidated for the SKUs whose stock moved.
    pub cache: ProductCache,
}

fn settlement_of(event: &EventEnvelope) -> anyhow::Result<Option<(String, Settlement)>> {
    let payload = event
        .payload
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("event {} has no payload", event.id))?;
    Ok(match event.r#type.as_str() {
        "order.paid" => Some((payload.to_msg::<OrderPaid>()?.order_id, Settlement::Commit)),
        "order.cancelled" => Some((
            payload.to_msg::<OrderCancelled>()?.order_id,
            Settlement::Release,
        )),
        _ => None,
    })
}

impl EventHandler for ReservationSettler {
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a EventEnvelope,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let Some((order_id, how)) = settlement_of(event)? else {
                tracing::debug!(event = %event.r#type, "not for the catalog");
                return Ok(());
            };
            let skus = store::settle(tx, &order_id, how).await?;
            tracing::info!(%order_id, ?how, lines = skus.len(), "reservation settled");
            Ok(())
        })
    }

    fn after_commit<'a>(
        &'a self,
        event: &'a EventEnvelope,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            // After commit, so no read can cache the stock as it was before the change.
            let Ok(Some((order_id, _))) = settlement_of(event) else {
                return;
            };
            match store::reserved_skus(&self.pool, &order_id).await {
                Ok(skus) => self.cache.invalidate(&skus).await,
                Err(e) => {
                    tracing::warn!(error = %e, %order_id, "cannot list the order's SKUs to invalidate; entries expire with CATALOG_CACHE_TTL")
                }
            }
        })
    }
}
