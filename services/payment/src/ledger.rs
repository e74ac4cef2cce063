//! The payment ledger in Postgres: payments, refunds, idempotency keys, cancelled orders,
//! and the outbox events that go with each change (same transaction).
//!
//! Per-order work (settling a capture, refunding, learning of a cancellation) runs under a
//! transaction advisory lock on the order id, so a capture that lands as the order is
//! cancelled is seen by exactly one side and refunded, never left standing.

use chrono::{DateTime, Utc};
use platform::amqp::outbox::{self, NewEvent};
use proto::events::v1::{PaymentCaptured, PaymentFailed, PaymentRefunded};
use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

use crate::provider::PaymentProvider;

/// A payment row.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct PaymentRow {
    /// Id.
    pub id: Uuid,
    /// Order.
    pub order_id: String,
    /// Who paid.
    pub customer_id: String,
    /// pending, captured, failed.
    pub status: String,
    /// CLP.
    pub amount: i64,
    /// CLP.
    pub currency: String,
    /// Card brand.
    pub card_brand: String,
    /// Last four.
    pub card_last4: String,
    /// Why it failed.
    pub failure_code: String,
    /// For the customer.
    pub failure_message: String,
    /// The processor's reference.
    pub provider_reference: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// `sandbox` or `webpay`.
    pub provider: String,
    /// Webpay's transaction token, once Webpay created the transaction.
    pub webpay_token: Option<String>,
    /// The buy order Webpay was given.
    pub webpay_buy_order: Option<String>,
    /// Webpay's payment page for the token.
    pub redirect_url: String,
}

/// A refund row.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct RefundRow {
    /// Id.
    pub id: Uuid,
    /// The refunded payment.
    pub payment_id: Uuid,
    /// Order.
    pub order_id: String,
    /// CLP.
    pub amount: i64,
    /// Why.
    pub reason: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Every column of [`PaymentRow`], for `SELECT` and `RETURNING`.
pub const PAYMENT_COLUMNS: &str = "id, order_id, customer_id, status, amount, currency, card_brand, card_last4, failure_code, failure_message, provider_reference, created_at, provider, webpay_token, webpay_buy_order, redirect_url";

/// The Idempotency-Key the payment was made under (it names it from the start, as
/// `pending_payment`) now replays it.
pub async fn key_replays(conn: &mut PgConnection, payment_id: Uuid) -> anyhow::Result<()> {
    sqlx::query("UPDATE idempotency_keys SET payment_id = $1 WHERE pending_payment = $1")
        .bind(payment_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Serialises per-order work until the transaction ends.
pub async fn lock_order(conn: &mut PgConnection, order_id: &str) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('payment-order:' || $1))")
        .bind(order_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// One payment.
pub async fn payment(db: impl PgExecutor<'_>, id: Uuid) -> anyhow::Result<Option<PaymentRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// An order's payments, oldest first.
pub async fn payments_of(
    db: impl PgExecutor<'_>,
    order_id: &str,
) -> anyhow::Result<Vec<PaymentRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 ORDER BY created_at, id"
    )))
    .bind(order_id)
    .fetch_all(db)
    .await?)
}

/// An order's refunds, oldest first.
pub async fn refunds_of(db: impl PgExecutor<'_>, order_id: &str) -> anyhow::Result<Vec<RefundRow>> {
    Ok(sqlx::query_as(
        "SELECT id, payment_id, order_id, amount, reason, created_at FROM refunds WHERE order_id = $1 ORDER BY created_at, id",
    )
    .bind(order_id)
    .fetch_all(db)
    .await?)
}

/// The order's captured payment, if any.
pub async fn captured_payment(
    conn: &mut PgConnection,
    order_id: &str,
) -> anyhow::Result<Option<PaymentRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 AND status = 'captured'"
    )))
    .bind(order_id)
    .fetch_optional(conn)
    .await?)
}

/// Total refunded of a payment.
pub async fn refunded_total(conn: &mut PgConnection, payment_id: Uuid) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(sum(amount), 0)::bigint FROM refunds WHERE payment_id = $1",
    )
    .bind(payment_id)
    .fetch_one(conn)
    .await?)
}

/// Marks a pending payment captured and publishes `payment.captured`.
pub async fn settle_captured(
    conn: &mut PgConnection,
    payment: &PaymentRow,
    reference: &str,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE payments SET status = 'captured', provider_reference = $2, updated_at = now() WHERE id = $1")
        .bind(payment.id)
        .bind(reference)
        .execute(&mut *conn)
        .await?;
    outbox::enqueue(
        conn,
        NewEvent {
            event_type: "payment.captured",
            aggregate_id: &payment.id.to_string(),
            payload: &PaymentCaptured {
                payment_id: payment.id.to_string(),
                order_id: payment.order_id.clone(),
                amount: payment.amount,
            },
            correlation_id: Some(&payment.order_id),
            causation_id: None,
        },
    )
    .await?;
    Ok(())
}

/// Settles a pending payment as captured (`reference` is the processor's); when its order
/// was cancelled meanwhile (it expired while the processor thought), refunds the capture at
/// once. Returns whether it was refunded.
pub async fn settle_capture(
    conn: &mut PgConnection,
    provider: &dyn crate::provider::PaymentProvider,
    payment: &PaymentRow,
    reference: String,
) -> anyhow::Result<bool> {
    settle_captured(conn, payment, &reference).await?;
    if !is_cancelled(conn, &payment.order_id).await? {
        return Ok(false);
    }
    let captured = PaymentRow {
        provider_reference: reference,
        status: "captured".into(),
        ..payment.clone()
    };
    refund(
        conn,
        provider,
        &captured,
        captured.amount,
        AUTO_REFUND_REASON,
    )
    .await?;
    Ok(true)
}

/// Marks a pending payment failed; `publish` sends `payment.failed` (a final refusal,
/// which cancels the order), otherwise the order stays payable (a transient failure).
pub async fn settle_failed(
    conn: &mut PgConnection,
    payment: &PaymentRow,
    code: &str,
    message: &str,
    publish: bool,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE payments SET status = 'failed', failure_code = $2, failure_message = $3, updated_at = now() WHERE id = $1")
        .bind(payment.id)
        .bind(code)
        .bind(message)
        .execute(&mut *conn)
        .await?;
    if publish {
        outbox::enqueue(
            conn,
            NewEvent {
                event_type: "payment.failed",
                aggregate_id: &payment.id.to_string(),
                payload: &PaymentFailed {
                    payment_id: payment.id.to_string(),
                    order_id: payment.order_id.clone(),
                    code: code.into(),
                    message: message.into(),
                },
                correlation_id: Some(&payment.order_id),
                causation_id: None,
            },
        )
        .await?;
    }
    Ok(())
}

/// Refunds `amount` of a captured payment through the provider, records it and publishes
/// `payment.refunded`. The caller holds the order lock and has checked the amount.
pub async fn refund(
    conn: &mut PgConnection,
    provider: &dyn PaymentProvider,
    payment: &PaymentRow,
    amount: i64,
    reason: &str,
) -> anyhow::Result<RefundRow> {
    let already = refunded_total(conn, payment.id).await?;
    anyhow::ensure!(
        amount > 0 && already + amount <= payment.amount,
        "refund of {amount} exceeds what remains captured"
    );
    let id = Uuid::now_v7();
    let reference = provider
        .refund(&payment.provider_reference, &id.to_string(), amount)
        .await?;
    let row: RefundRow = sqlx::query_as(
        "INSERT INTO refunds (id, payment_id, order_id, amount, reason, provider_reference) VALUES ($1, $2, $3, $4, $5, $6) \
         RETURNING id, payment_id, order_id, amount, reason, created_at",
    )
    .bind(id)
    .bind(payment.id)
    .bind(&payment.order_id)
    .bind(amount)
    .bind(reason)
    .bind(&reference)
    .fetch_one(&mut *conn)
    .await?;
    let total = already + amount;
    outbox::enqueue(
        conn,
        NewEvent {
            event_type: "payment.refunded",
            aggregate_id: &payment.id.to_string(),
            payload: &PaymentRefunded {
                refund_id: id.to_string(),
                payment_id: payment.id.to_string(),
                order_id: payment.order_id.clone(),
                amount,
                total_refunded: total,
                full: total == payment.amount,
            },
            correlation_id: Some(&payment.order_id),
            causation_id: None,
        },
    )
    .await?;
    metrics::counter!("payment_refunds_total", "reason" => if reason == AUTO_REFUND_REASON { "order_cancelled" } else { "requested" }).increment(1);
    Ok(row)
}

/// The reason recorded on a refund made because the order was cancelled first.
pub const AUTO_REFUND_REASON: &str = "order cancelled before the capture settled";

/// Whether the order service has cancelled `order_id` (as far as we have heard).
pub async fn is_cancelled(conn: &mut PgConnection, order_id: &str) -> anyhow::Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM cancelled_orders WHERE order_id = $1)")
            .bind(order_id)
            .fetch_one(conn)
            .await?,
    )
}

/// Records a cancellation; a capture that is already standing is refunded in full.
/// Returns the refund, if one was made.
pub async fn order_cancelled(
    conn: &mut PgConnection,
    provider: &dyn PaymentProvider,
    order_id: &str,
    reason: &str,
) -> anyhow::Result<Option<RefundRow>> {
    lock_order(conn, order_id).await?;
    sqlx::query(
        "INSERT INTO cancelled_orders (order_id, reason) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(order_id)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    let Some(captured) = captured_payment(conn, order_id).await? else {
        return Ok(None);
    };
    let remaining = captured.amount - refunded_total(conn, captured.id).await?;
    if remaining <= 0 {
        return Ok(None);
    }
    tracing::warn!(%order_id, payment = %captured.id, "captured payment on a cancelled order: refunding it");
    Ok(Some(
        refund(conn, provider, &captured, remaining, AUTO_REFUND_REASON).await?,
    ))
}
