//! Nothing stays `pending`: a payment whose outcome was never recorded (the role died
//! while the processor was being asked) is settled from what the processor says of it.
//!
//! On start and every interval, payments still `pending` after `PAYMENT_RECONCILE_AFTER`
//! (longer than any charge may take, so one in flight is never touched) are looked up at
//! the processor by our payment id, the idempotency key it received:
//! - captured → settled as captured and `payment.captured` published (refunded at once
//!   if the order was cancelled meanwhile), and the customer's Idempotency-Key replays it;
//! - declined → settled as declined and `payment.failed` published, as a live decline;
//! - unknown (the charge never completed) → failed without an event, and the key freed:
//!   nothing was charged, the order stays payable until it expires.

use std::{sync::Arc, time::Duration};

use platform::CancellationToken;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    ledger,
    provider::{ChargeOutcome, ChargeStatus, PaymentProvider, Pending},
};

/// Settles stale pending payments.
pub struct Reconciler {
    /// The `payment` schema.
    pub pool: PgPool,
    /// The processor that was asked.
    pub provider: Arc<dyn PaymentProvider>,
    /// How old a pending payment must be to be looked up.
    pub after: Duration,
    /// How often to look.
    pub interval: Duration,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Settled as captured.
    pub captured: usize,
    /// Settled as declined.
    pub declined: usize,
    /// Failed: the processor never completed them.
    pub abandoned: usize,
}

impl Reconciler {
    /// Reconciles now, then every interval, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            match self.reconcile_once().await {
                Ok(done) if done != Reconciled::default() => {
                    tracing::warn!(?done, "reconciled payments left pending")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = format!("{e:#}"), "payment reconciliation failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// One pass over the stale pending payments.
    pub async fn reconcile_once(&self) -> anyhow::Result<Reconciled> {
        let before = chrono::Utc::now() - chrono::Duration::from_std(self.after)?;
        let stale: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
            "SELECT id, order_id, webpay_token FROM payments WHERE status = 'pending' AND created_at < $1 \
             ORDER BY created_at LIMIT 100",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        let mut done = Reconciled::default();
        for (id, order_id, token) in stale {
            // Ask first, outside any transaction (a processor call can be slow).
            let status = self
                .provider
                .status(&Pending {
                    payment_id: &id.to_string(),
                    token: token.as_deref(),
                })
                .await?;
            let mut tx = self.pool.begin().await?;
            // The order's lock, as every settlement takes it; then the payment as it is now.
            ledger::lock_order(&mut tx, &order_id).await?;
            let Some(payment) = ledger::payment(&mut *tx, id).await? else {
                continue;
            };
            // Settled meanwhile by someone else (another replica): nothing to do.
            if payment.status != "pending" {
                continue;
            }
            match status {
                ChargeStatus::Settled(ChargeOutcome::Approved { reference }) => {
                    ledger::settle_capture(&mut tx, self.provider.as_ref(), &payment, reference)
                        .await?;
                    ledger::key_replays(&mut tx, id).await?;
                    metrics::counter!("payments_reconciled_total", "outcome" => "captured")
                        .increment(1);
                    done.captured += 1;
                }
                ChargeStatus::Settled(ChargeOutcome::Declined { code, message }) => {
                    ledger::settle_failed(&mut tx, &payment, &code, &message, true).await?;
                    ledger::key_replays(&mut tx, id).await?;
                    metrics::counter!("payments_reconciled_total", "outcome" => "declined")
                        .increment(1);
                    done.declined += 1;
                }
                ChargeStatus::Unknown => {
                    ledger::settle_failed(
                        &mut tx,
                        &payment,
                        "processor_unknown",
                        "the charge was interrupted and never completed; nothing was charged",
                        false,
                    )
                    .await?;
                    sqlx::query("DELETE FROM idempotency_keys WHERE pending_payment = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    metrics::counter!("payments_reconciled_total", "outcome" => "abandoned")
                        .increment(1);
                    done.abandoned += 1;
                }
            }
            tx.commit().await?;
            tracing::warn!(payment = %id, order = %payment.order_id, "reconciled a payment left pending");
        }
        Ok(done)
    }
}
