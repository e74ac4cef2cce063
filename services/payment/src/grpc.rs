//! The gRPC adapter: pay (idempotent, amount from the order service), list, refund.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use platform::{
    clock::Clock,
    grpc::{Caller, failed_precondition, internal, invalid_argument, unprocessable},
};
use proto::{
    order::v1::{GetOrderRequest, PayableOrder, order_service_client::OrderServiceClient},
    payment::v1::{
        self as pb, ListPaymentsRequest, ListPaymentsResponse, PayRequest, RefundRequest,
        payment_service_server::PaymentService,
    },
};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tonic::{Code, Request, Response, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    card::Card,
    ledger::{self, PaymentRow, RefundRow},
    provider::{Charge, ChargeOutcome, PaymentProvider, ProviderError},
};

/// What the handlers share.
pub struct PaymentState {
    /// The `payment` schema.
    pub pool: PgPool,
    /// The card processor.
    pub provider: Arc<dyn PaymentProvider>,
    /// The order service (status and amount due).
    pub orders: OrderServiceClient<Channel>,
    /// Deadline of one order-service call.
    pub order_timeout: Duration,
    /// How long the processor may take for one charge (retries included).
    pub provider_timeout: Duration,
    /// What "now" is (card expiry).
    pub clock: Clock,
    /// Mints the credential of this role's calls to the order service.
    pub minter: platform::identity::Minter,
}

/// The `PaymentService` implementation.
#[derive(Clone)]
pub struct PaymentGrpc {
    state: Arc<PaymentState>,
}

impl PaymentGrpc {
    /// Serves `state`.
    pub fn new(state: Arc<PaymentState>) -> Self {
        Self { state }
    }
}

fn timestamp(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

fn refund_proto(r: &RefundRow) -> pb::Refund {
    pb::Refund {
        id: r.id.to_string(),
        payment_id: r.payment_id.to_string(),
        order_id: r.order_id.clone(),
        amount: r.amount,
        reason: r.reason.clone(),
        created_at: timestamp(r.created_at),
    }
}

fn payment_proto(p: &PaymentRow, refunds: &[RefundRow]) -> pb::Payment {
    let refunds: Vec<pb::Refund> = refunds
        .iter()
        .filter(|r| r.payment_id == p.id)
        .map(refund_proto)
        .collect();
    pb::Payment {
        id: p.id.to_string(),
        order_id: p.order_id.clone(),
        status: p.status.clone(),
        amount: p.amount,
        currency: p.currency.clone(),
        card_brand: p.card_brand.clone(),
        card_last4: p.card_last4.clone(),
        failure_code: p.failure_code.clone(),
        failure_message: p.failure_message.clone(),
        refunded_amount: refunds.iter().map(|r| r.amount).sum(),
        refunds,
        created_at: timestamp(p.created_at),
    }
}

/// The audience of this role's calls to the order service.
const ORDER_SERVICE: &str = "orderflow.order.v1.OrderService";

fn not_found(order_id: &str) -> Status {
    Status::not_found(format!("no order {order_id}"))
}

enum Charged {
    Outcome(ChargeOutcome),
    Failed(ProviderError),
    TimedOut,
}

impl PaymentGrpc {
    /// The order's owner, status and amount, asked of the order service on `caller`'s
    /// behalf.
    async fn payable(&self, caller: &Caller, order_id: &str) -> Result<PayableOrder, Status> {
        let mut request = Request::new(GetOrderRequest {
            id: order_id.to_string(),
        });
        let mut trace = http::HeaderMap::new();
        platform::telemetry::inject_context(&mut trace);
        *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(trace);
        self.state
            .minter
            .authorize(&mut request, ORDER_SERVICE, caller);
        request.set_timeout(self.state.order_timeout);
        match self.state.orders.clone().get_payable_order(request).await {
            Ok(reply) => Ok(reply.into_inner()),
            Err(s) if s.code() == Code::NotFound => Err(not_found(order_id)),
            Err(s) => {
                tracing::error!(code = ?s.code(), message = s.message(), "order service call failed");
                Err(Status::unavailable(
                    "the order service is not answering; try again shortly",
                ))
            }
        }
    }

    /// The order, if `caller` may see its payments (its owner, or an admin).
    async fn visible_order(&self, caller: &Caller, order_id: &str) -> Result<PayableOrder, Status> {
        let user = caller.require_user()?;
        let order = self.payable(caller, order_id).await?;
        if order.customer_id != user.to_string() && !caller.has_role("admin") {
            return Err(not_found(order_id));
        }
        Ok(order)
    }

    async fn payment_with_refunds(&self, id: Uuid) -> Result<pb::Payment, Status> {
        let payment = ledger::payment(&self.state.pool, id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::internal("internal error"))?;
        let refunds = ledger::refunds_of(&self.state.pool, &payment.order_id)
            .await
            .map_err(internal)?;
        Ok(payment_proto(&payment, &refunds))
    }

    /// Asks the processor, retrying transient errors, all within the provider timeout.
    async fn ask_provider(&self, charge: &Charge<'_>) -> Charged {
        let attempts = async {
            let mut backoff = Duration::from_millis(100);
            let mut attempt = 1;
            loop {
                match self.state.provider.charge(charge).await {
                    Ok(outcome) => return Charged::Outcome(outcome),
                    Err(e) if attempt < 3 => {
                        tracing::warn!(payment = charge.payment_id, attempt, error = %e, "processor error; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        attempt += 1;
                    }
                    Err(e) => return Charged::Failed(e),
                }
            }
        };
        tokio::time::timeout(self.state.provider_timeout, attempts)
            .await
            .unwrap_or(Charged::TimedOut)
    }

    /// Everything after the idempotency key was claimed. `Ok(payment id)` is a settled
    /// result the key keeps (captured or declined); errors free the key.
    /// Charges the order and returns the settled payment. `key` is the request's
    /// Idempotency-Key, already claimed: a settled outcome is recorded on it in the same
    /// transaction as the settlement.
    async fn charge(
        &self,
        caller: &Caller,
        user: Uuid,
        key: &str,
        order_id: &str,
        card: &Card,
    ) -> Result<pb::Payment, Status> {
        let order = self.payable(caller, order_id).await?;
        if order.customer_id != user.to_string() {
            return Err(not_found(order_id));
        }
        if order.status != "pending_payment" {
            return Err(Status::aborted(format!(
                "the order is {}: only a pending_payment order can be paid",
                order.status
            )));
        }
        let summary = card.summary();
        let mut tx = self.state.pool.begin().await.map_err(internal)?;
        ledger::lock_order(&mut tx, order_id)
            .await
            .map_err(internal)?;
        if ledger::is_cancelled(&mut tx, order_id)
            .await
            .map_err(internal)?
        {
            return Err(Status::aborted("the order was cancelled"));
        }
        let inserted = sqlx::query_as::<_, PaymentRow>(
            "INSERT INTO payments (id, order_id, customer_id, status, amount, card_brand, card_last4) \
             VALUES ($1, $2, $3, 'pending', $4, $5, $6) \
             RETURNING id, order_id, customer_id, status, amount, currency, card_brand, card_last4, failure_code, failure_message, provider_reference, created_at",
        )
        .bind(Uuid::now_v7())
        .bind(order_id)
        .bind(user.to_string())
        .bind(order.total)
        .bind(summary.brand)
        .bind(&summary.last4)
        .fetch_one(&mut *tx)
        .await;
        let payment = match inserted {
            Ok(p) => p,
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505") => {
                return Err(Status::aborted(
                    "the order already has a payment captured or in progress",
                ));
            }
            Err(e) => return Err(internal(e)),
        };
        // The key names its payment from the start, so a payment left pending by a crash
        // can settle (or free) the key it was made under.
        sqlx::query(
            "UPDATE idempotency_keys SET pending_payment = $3 WHERE customer_id = $1 AND key = $2",
        )
        .bind(user.to_string())
        .bind(key)
        .bind(payment.id)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        tx.commit().await.map_err(internal)?;

        let id = payment.id.to_string();
        let charged = self
            .ask_provider(&Charge {
                payment_id: &id,
                amount: payment.amount,
                currency: &payment.currency,
                card,
            })
            .await;

        let mut tx = self.state.pool.begin().await.map_err(internal)?;
        ledger::lock_order(&mut tx, order_id)
            .await
            .map_err(internal)?;
        let outcome: Result<Uuid, Status> = match charged {
            Charged::Outcome(ChargeOutcome::Approved { reference }) => {
                let refunded = ledger::settle_capture(
                    &mut tx,
                    self.state.provider.as_ref(),
                    &payment,
                    reference,
                )
                .await
                .map_err(internal)?;
                metrics::counter!("payments_total", "outcome" => "captured").increment(1);
                if refunded {
                    Err(Status::aborted(
                        "the order was cancelled before the payment completed; the charge was refunded",
                    ))
                } else {
                    Ok(payment.id)
                }
            }
            Charged::Outcome(ChargeOutcome::Declined { code, message }) => {
                ledger::settle_failed(&mut tx, &payment, &code, &message, true)
                    .await
                    .map_err(internal)?;
                metrics::counter!("payments_total", "outcome" => "declined").increment(1);
                Ok(payment.id)
            }
            Charged::Failed(e) => {
                ledger::settle_failed(&mut tx, &payment, "processor_error", &e.to_string(), false)
                    .await
                    .map_err(internal)?;
                metrics::counter!("payments_total", "outcome" => "processor_error").increment(1);
                Err(Status::unavailable(
                    "the card processor is temporarily unavailable; nothing was charged, try again",
                ))
            }
            Charged::TimedOut => {
                ledger::settle_failed(
                    &mut tx,
                    &payment,
                    "provider_timeout",
                    "the card processor did not answer in time",
                    false,
                )
                .await
                .map_err(internal)?;
                metrics::counter!("payments_total", "outcome" => "timeout").increment(1);
                Err(Status::deadline_exceeded(
                    "the card processor did not answer in time; try again",
                ))
            }
        };
        let outcome = match outcome {
            Ok(id) => {
                sqlx::query(
                    "UPDATE idempotency_keys SET payment_id = $3 WHERE customer_id = $1 AND key = $2",
                )
                .bind(user.to_string())
                .bind(key)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(internal)?;
                let settled = ledger::payment(&mut *tx, id)
                    .await
                    .map_err(internal)?
                    .ok_or_else(|| Status::internal("internal error"))?;
                let refunds = ledger::refunds_of(&mut *tx, order_id)
                    .await
                    .map_err(internal)?;
                Ok(payment_proto(&settled, &refunds))
            }
            Err(status) => Err(status),
        };
        tx.commit().await.map_err(internal)?;
        outcome
    }
}

/// What makes two payment requests under one Idempotency-Key the same request: the
/// order and the card (never its number or CVC: brand, last four, expiry, holder).
pub fn fingerprint(order_id: &str, card: &Card) -> String {
    // No card number or CVC goes in: brand, last four and expiry tell requests apart
    // without making the stored fingerprint a way back to the number.
    let summary = card.summary();
    let digest = Sha256::digest(format!(
        "{order_id}|{}|{}|{}|{}|{}",
        summary.brand, summary.last4, card.exp_month, card.exp_year, card.holder
    ));
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl PaymentService for PaymentGrpc {
    async fn pay(&self, request: Request<PayRequest>) -> Result<Response<pb::Payment>, Status> {
        let caller = Caller::of(&request);
        let user = caller.require_user()?;
        let key = platform::grpc::idempotency_key(request.metadata())?.ok_or_else(|| {
            invalid_argument(
                "Idempotency-Key",
                "send an Idempotency-Key header (a unique value per payment attempt, at most 255 characters)",
            )
        })?;
        let req = request.into_inner();
        let order_id = req.order_id.trim().to_string();
        if order_id.is_empty() {
            return Err(invalid_argument("order_id", "is required"));
        }
        let card = req
            .card
            .ok_or_else(|| invalid_argument("card", "is required"))?;
        let card = Card::parse(
            &card.number,
            card.exp_month,
            card.exp_year,
            &card.cvc,
            &card.holder,
            self.state.clock.now().date_naive(),
        )
        .map_err(|e| invalid_argument(e.field, e.problem))?;
        let fingerprint = fingerprint(&order_id, &card);

        // Claim the key, or find what it already stands for.
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (customer_id, key, fingerprint) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(user.to_string())
        .bind(&key)
        .bind(&fingerprint)
        .execute(&self.state.pool)
        .await
        .map_err(internal)?
        .rows_affected()
            == 1;
        if !claimed {
            let (stored, payment_id): (String, Option<Uuid>) = sqlx::query_as(
                "SELECT fingerprint, payment_id FROM idempotency_keys WHERE customer_id = $1 AND key = $2",
            )
            .bind(user.to_string())
            .bind(&key)
            .fetch_one(&self.state.pool)
            .await
            .map_err(internal)?;
            if stored != fingerprint {
                return Err(unprocessable(
                    "Idempotency-Key",
                    "was already used for a different request",
                ));
            }
            return match payment_id {
                Some(id) => {
                    metrics::counter!("payment_idempotent_replays_total").increment(1);
                    Ok(Response::new(self.payment_with_refunds(id).await?))
                }
                None => Err(Status::aborted(
                    "a request with this Idempotency-Key is still being processed",
                )),
            };
        }

        let result = self.charge(&caller, user, &key, &order_id, &card).await;
        let forget = || async {
            // Not a settled result: the key is free for a retry.
            if let Err(e) =
                sqlx::query("DELETE FROM idempotency_keys WHERE customer_id = $1 AND key = $2")
                    .bind(user.to_string())
                    .bind(&key)
                    .execute(&self.state.pool)
                    .await
            {
                tracing::error!(error = %e, "cannot release an idempotency key");
            }
        };
        match result {
            Ok(payment) => Ok(Response::new(payment)),
            Err(status) => {
                forget().await;
                Err(status)
            }
        }
    }

    async fn list_payments(
        &self,
        request: Request<ListPaymentsRequest>,
    ) -> Result<Response<ListPaymentsResponse>, Status> {
        let caller = Caller::of(&request);
        let order_id = request.get_ref().order_id.trim().to_string();
        if order_id.is_empty() {
            return Err(invalid_argument("order_id", "is required"));
        }
        self.visible_order(&caller, &order_id).await?;
        let payments = ledger::payments_of(&self.state.pool, &order_id)
            .await
            .map_err(internal)?;
        let refunds = ledger::refunds_of(&self.state.pool, &order_id)
            .await
            .map_err(internal)?;
        Ok(Response::new(ListPaymentsResponse {
            payments: payments
                .iter()
                .map(|p| payment_proto(p, &refunds))
                .collect(),
        }))
    }

    async fn refund(
        &self,
        request: Request<RefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let caller = Caller::of(&request);
        caller.require_admin()?;
        let req = request.into_inner();
        let order_id = req.order_id.trim().to_string();
        if order_id.is_empty() {
            return Err(invalid_argument("order_id", "is required"));
        }
        if req.amount.is_some_and(|a| a <= 0) {
            return Err(invalid_argument(
                "amount",
                "must be a positive number of pesos",
            ));
        }
        let mut tx = self.state.pool.begin().await.map_err(internal)?;
        ledger::lock_order(&mut tx, &order_id)
            .await
            .map_err(internal)?;
        let payment = ledger::captured_payment(&mut tx, &order_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| failed_precondition("order_id", "the order has no captured payment"))?;
        let remaining = payment.amount
            - ledger::refunded_total(&mut tx, payment.id)
                .await
                .map_err(internal)?;
        let amount = req.amount.unwrap_or(remaining);
        if amount > remaining || remaining == 0 {
            return Err(failed_precondition(
                "amount",
                format!("at most {remaining} remains captured"),
            ));
        }
        let refund = ledger::refund(
            &mut tx,
            self.state.provider.as_ref(),
            &payment,
            amount,
            req.reason.trim(),
        )
        .await
        .map_err(|e| match e.downcast_ref::<ProviderError>() {
            Some(_) => {
                Status::unavailable("the card processor is temporarily unavailable; try again")
            }
            None => internal(e),
        })?;
        tx.commit().await.map_err(internal)?;
        tracing::info!(%order_id, amount, "refunded");
        Ok(Response::new(refund_proto(&refund)))
    }
}
