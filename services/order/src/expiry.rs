//! Unpaid orders expire: once an order's deadline (`ORDER_PAYMENT_TIMEOUT` after it was
//! placed) has passed, it is cancelled with reason `payment_timeout`, which releases its
//! stock. Deadlines are kept by the write side (`payment_deadlines`), so expiry never waits
//! for the projector; replicas share the work (`FOR UPDATE SKIP LOCKED`).

use std::time::Duration;

use platform::{CancellationToken, clock::Clock};
use sqlx::PgPool;

use crate::{
    commands::{self, CommandError, Metadata},
    domain::CancelReason,
};

/// The expiry worker.
pub struct Expirer {
    /// The `orders` schema.
    pub pool: PgPool,
    /// What "now" is.
    pub clock: Clock,
    /// Snapshot every this many events.
    pub snapshot_interval: i64,
    /// How often to look for due orders.
    pub interval: Duration,
}

impl Expirer {
    /// Cancels every order whose deadline has passed. Returns how many it cancelled.
    pub async fn expire_due(&self) -> anyhow::Result<usize> {
        let mut cancelled = 0;
        loop {
            let now = self.clock.now();
            let mut tx = self.pool.begin().await?;
            let due: Vec<String> = sqlx::query_scalar(
                "SELECT order_id FROM payment_deadlines WHERE expires_at <= $1 \
                 ORDER BY expires_at LIMIT 100 FOR UPDATE SKIP LOCKED",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            if due.is_empty() {
                return Ok(cancelled);
            }
            for order_id in &due {
                let metadata = Metadata::new(order_id, "payment-timeout", None);
                let outcome =
                    commands::execute(&mut tx, self.snapshot_interval, order_id, &metadata, |o| {
                        o.cancel(CancelReason::PaymentTimeout, now)
                    })
                    .await;
                match outcome {
                    Ok(_) => {
                        cancelled += 1;
                        metrics::counter!("order_expired_total").increment(1);
                    }
                    // Paid or cancelled meanwhile, or gone: nothing left to expire.
                    Err(CommandError::Illegal(_) | CommandError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                sqlx::query("DELETE FROM payment_deadlines WHERE order_id = $1")
                    .bind(order_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
    }

    /// Expires due orders every `interval` until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        while !shutdown.is_cancelled() {
            match self.expire_due().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(cancelled = n, "expired unpaid orders"),
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "expiring unpaid orders failed; will retry"
                ),
            }
            tokio::select! { _ = tokio::time::sleep(self.interval) => {}, _ = shutdown.cancelled() => {} }
        }
        Ok(())
    }
}
