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
    provider::{
        Charge, ChargeOutcome, ChargeStatus, Committed, Flow, PaymentProvider, Pending,
        ProviderError, Start,
    },
    webpay,
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
    /// Where browsers reach the gateway (the storefront's order page after Webpay).
    pub public_base_url: String,
    /// Where Webpay sends the browser back (`PaymentSettings::webpay_return_url`).
    pub webpay_return_url: String,
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
    // A Webpay payment waiting for the shopper on Webpay's page.
    let awaiting = p.status == "pending" && !p.redirect_url.is_empty();
    pb::Payment {
        id: p.id.to_string(),
        order_id: p.order_id.clone(),
        status: if awaiting {
            "redirect".into()
        } else {
            p.status.clone()
        },
        provider: p.provider.clone(),
        url: if awaiting {
            p.redirect_url.clone()
        } else {
            String::new()
        },
        token: p.webpay_token.clone().unwrap_or_default(),
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
        let payable = platform::telemetry::grpc_client_call(
            &format!("/{ORDER_SERVICE}/GetPayableOrder"),
            |metadata| {
                let mut request = Request::new(GetOrderRequest {
                    id: order_id.to_string(),
                    wait_for: None,
                });
                *request.metadata_mut() = metadata;
                self.state
                    .minter
                    .authorize(&mut request, ORDER_SERVICE, caller);
                request.set_timeout(self.state.order_timeout);
                let mut orders = self.state.orders.clone();
                async move { orders.get_payable_order(request).await }
            },
        )
        .await;
        match payable {
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
        let summary = card.summary();
        let payment = self
            .open_payment(caller, user, key, order_id, summary.brand, &summary.last4)
            .await?;
        self.settle_charge(order_id, card, payment).await
    }

    /// Records a `pending` payment of the order's total, after checking the order is
    /// `user`'s and payable, and names it on the claimed `key`.
    async fn open_payment(
        &self,
        caller: &Caller,
        user: Uuid,
        key: &str,
        order_id: &str,
        card_brand: &str,
        card_last4: &str,
    ) -> Result<PaymentRow, Status> {
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
        let inserted = sqlx::query_as::<_, PaymentRow>(sqlx::AssertSqlSafe(format!(
            "INSERT INTO payments (id, order_id, customer_id, status, amount, card_brand, card_last4, provider) \
             VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7) RETURNING {}",
            ledger::PAYMENT_COLUMNS
        )))
        .bind(Uuid::now_v7())
        .bind(order_id)
        .bind(user.to_string())
        .bind(order.total)
        .bind(card_brand)
        .bind(card_last4)
        .bind(self.state.provider.name())
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
        Ok(payment)
    }

    /// Asks the processor to charge the card for the pending `payment` and settles it.
    async fn settle_charge(
        &self,
        order_id: &str,
        card: &Card,
        payment: PaymentRow,
    ) -> Result<pb::Payment, Status> {
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
                ledger::key_replays(&mut tx, id).await.map_err(internal)?;
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

/// The fingerprint of a redirect-flow request: the order alone (there is no card).
pub fn redirect_fingerprint(order_id: &str) -> String {
    let digest = Sha256::digest(format!("{order_id}|redirect"));
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a Webpay return ended, as the storefront's order page is told (`?pago=`).
fn outcome_word(payment: &PaymentRow) -> &'static str {
    match (payment.status.as_str(), payment.failure_code.as_str()) {
        ("captured", _) => "aprobado",
        ("pending", _) => "pendiente",
        (_, WEBPAY_ABORTED) => "anulado",
        (_, WEBPAY_TIMED_OUT) => "expirado",
        (_, "processor_error") => "error",
        _ => "rechazado",
    }
}

/// The failure code of a Webpay payment the shopper aborted on Webpay's page.
pub const WEBPAY_ABORTED: &str = "webpay_aborted";
/// The failure code of a Webpay payment whose form timed out.
pub const WEBPAY_TIMED_OUT: &str = "webpay_timeout";

impl PaymentGrpc {
    /// The redirect flow's first half: a pending payment and a Webpay transaction for it;
    /// the reply sends the shopper to Webpay. The key replays the same redirect.
    async fn start_redirect(
        &self,
        caller: &Caller,
        user: Uuid,
        key: &str,
        order_id: &str,
    ) -> Result<pb::Payment, Status> {
        let payment = self
            .open_payment(caller, user, key, order_id, "", "")
            .await?;
        let buy_order = webpay::buy_order(payment.id);
        let started = tokio::time::timeout(
            self.state.provider_timeout,
            self.state.provider.start(&Start {
                buy_order: &buy_order,
                session_id: order_id,
                amount: payment.amount,
                return_url: &self.state.webpay_return_url,
            }),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ProviderError::Retryable(
                "Webpay did not answer in time".into(),
            ))
        });
        let mut tx = self.state.pool.begin().await.map_err(internal)?;
        ledger::lock_order(&mut tx, order_id)
            .await
            .map_err(internal)?;
        let redirect = match started {
            Ok(redirect) => redirect,
            Err(e) => {
                // Nothing can have been paid: the payment fails quietly, the order stays
                // payable and the key is freed for a retry.
                ledger::settle_failed(&mut tx, &payment, "processor_error", &e.to_string(), false)
                    .await
                    .map_err(internal)?;
                tx.commit().await.map_err(internal)?;
                metrics::counter!("payments_total", "outcome" => "processor_error").increment(1);
                tracing::warn!(payment = %payment.id, error = %e, "Webpay refused or failed to create a transaction");
                return Err(match e {
                    ProviderError::Refused(_) | ProviderError::Unsupported(_) => {
                        Status::unavailable(
                            "the payment processor refused the shop's request; the shop must check its Webpay settings",
                        )
                    }
                    ProviderError::Retryable(_) => Status::unavailable(
                        "Webpay is not answering; nothing was charged, try again",
                    ),
                });
            }
        };
        sqlx::query(
            "UPDATE payments SET webpay_token = $2, webpay_buy_order = $3, redirect_url = $4, updated_at = now() WHERE id = $1",
        )
        .bind(payment.id)
        .bind(&redirect.token)
        .bind(&buy_order)
        .bind(&redirect.url)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        ledger::key_replays(&mut tx, payment.id)
            .await
            .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        metrics::counter!("payments_total", "outcome" => "redirected").increment(1);
        self.payment_with_refunds(payment.id).await
    }

    /// The storefront's order page, told how the payment went.
    fn order_page(&self, payment: &PaymentRow) -> proto::options::v1::SeeOther {
        proto::options::v1::SeeOther {
            location: format!(
                "{}/pedidos/{}?pago={}",
                self.state.public_base_url,
                payment.order_id,
                outcome_word(payment)
            ),
        }
    }

    /// The second half: Webpay sent the browser back. Settles the payment once, under the
    /// order's lock (a return seen twice, or racing the reconciler, finds it settled).
    async fn webpay_returned(
        &self,
        req: pb::ReturnFromWebpayRequest,
    ) -> Result<proto::options::v1::SeeOther, Status> {
        enum Came {
            Paid(String),
            Aborted(String),
            TimedOut(String),
        }
        let token_ws = req.token_ws.trim().to_string();
        let tbk_token = req.tbk_token.trim().to_string();
        let buy_order = req.tbk_orden_compra.trim().to_string();
        // Both tokens: the shopper aborted after an error on Webpay's form.
        let came = if !tbk_token.is_empty() {
            Came::Aborted(tbk_token)
        } else if !token_ws.is_empty() {
            Came::Paid(token_ws)
        } else if !buy_order.is_empty() {
            Came::TimedOut(buy_order)
        } else {
            return Err(invalid_argument(
                "token_ws",
                "Webpay's return carries token_ws, TBK_TOKEN or TBK_ORDEN_COMPRA; none was sent",
            ));
        };
        let (column, value, field) = match &came {
            Came::Paid(t) => ("webpay_token", t.as_str(), "token_ws"),
            Came::Aborted(t) => ("webpay_token", t.as_str(), "TBK_TOKEN"),
            Came::TimedOut(b) => ("webpay_buy_order", b.as_str(), "TBK_ORDEN_COMPRA"),
        };
        let found: Option<PaymentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM payments WHERE {column} = $1",
            ledger::PAYMENT_COLUMNS
        )))
        .bind(value)
        .fetch_optional(&self.state.pool)
        .await
        .map_err(internal)?;
        let Some(found) = found else {
            return Err(Status::not_found(format!(
                "{field}: no Webpay transaction of this shop has it"
            )));
        };
        // An abort or a timeout names the buy order and the session as Webpay was given
        // them: both must match what we sent, or the return is not Webpay's.
        if !matches!(came, Came::Paid(_))
            && (req.tbk_orden_compra.trim()
                != found.webpay_buy_order.as_deref().unwrap_or_default()
                || req.tbk_id_sesion.trim() != found.order_id)
        {
            return Err(invalid_argument(
                "TBK_ID_SESION",
                "the buy order and session do not match the transaction",
            ));
        }

        let mut tx = self.state.pool.begin().await.map_err(internal)?;
        ledger::lock_order(&mut tx, &found.order_id)
            .await
            .map_err(internal)?;
        let payment = ledger::payment(&mut *tx, found.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::internal("internal error"))?;
        if payment.status != "pending" {
            // Seen before: what it came to stands.
            metrics::counter!("webpay_returns_total", "outcome" => "repeated").increment(1);
            return Ok(self.order_page(&payment));
        }
        // What Webpay says happened. A return's word alone is never believed: a payment
        // (token_ws) is committed, and an abort or a timeout is asked of Webpay too (a
        // shopper may have paid in another tab of the same form), which commits it if it
        // was paid after all.
        let (not_charged_code, not_charged_message, not_charged_metric) = match came {
            Came::Aborted(_) => (
                WEBPAY_ABORTED,
                "the shopper cancelled the payment on Webpay's page; nothing was charged",
                "aborted",
            ),
            _ => (
                WEBPAY_TIMED_OUT,
                "Webpay's payment form timed out; nothing was charged",
                "timeout",
            ),
        };
        let verdict = match &came {
            Came::Paid(token) => self.state.provider.commit(token).await.map(Some),
            Came::Aborted(_) | Came::TimedOut(_) => self
                .state
                .provider
                .status(&Pending {
                    payment_id: &payment.id.to_string(),
                    token: payment.webpay_token.as_deref(),
                })
                .await
                .map(|status| match status {
                    ChargeStatus::Settled(outcome) => Some(Committed {
                        outcome,
                        card_last4: None,
                    }),
                    ChargeStatus::Unknown => None,
                }),
        };
        match verdict {
            Ok(Some(committed)) => {
                if let Some(last4) = committed.card_last4.filter(|l| !l.is_empty()) {
                    sqlx::query(
                        "UPDATE payments SET card_brand = 'webpay', card_last4 = $2 WHERE id = $1",
                    )
                    .bind(payment.id)
                    .bind(last4)
                    .execute(&mut *tx)
                    .await
                    .map_err(internal)?;
                }
                match committed.outcome {
                    ChargeOutcome::Approved { reference } => {
                        ledger::settle_capture(
                            &mut tx,
                            self.state.provider.as_ref(),
                            &payment,
                            reference,
                        )
                        .await
                        .map_err(internal)?;
                        metrics::counter!("payments_total", "outcome" => "captured").increment(1);
                    }
                    ChargeOutcome::Declined { code, message } => {
                        ledger::settle_failed(&mut tx, &payment, &code, &message, true)
                            .await
                            .map_err(internal)?;
                        metrics::counter!("payments_total", "outcome" => "declined").increment(1);
                    }
                }
            }
            // Nothing was paid: the order stays payable.
            Ok(None) => {
                ledger::settle_failed(
                    &mut tx,
                    &payment,
                    not_charged_code,
                    not_charged_message,
                    false,
                )
                .await
                .map_err(internal)?;
                metrics::counter!("payments_total", "outcome" => not_charged_metric).increment(1);
            }
            Err(e) => {
                // Webpay could not be reached even after retries: the payment stays
                // pending and the reconciler settles it later; the page says so.
                tracing::warn!(payment = %payment.id, error = %e, "Webpay did not answer; the reconciler will settle the payment");
                return Ok(self.order_page(&payment));
            }
        }
        let settled = ledger::payment(&mut *tx, payment.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::internal("internal error"))?;
        tx.commit().await.map_err(internal)?;
        metrics::counter!("webpay_returns_total", "outcome" => outcome_word(&settled)).increment(1);
        tracing::info!(payment = %settled.id, order = %settled.order_id, status = %settled.status, "Webpay return settled");
        Ok(self.order_page(&settled))
    }
}

#[tonic::async_trait]
impl PaymentService for PaymentGrpc {
    async fn get_payment_options(
        &self,
        _request: Request<pb::GetPaymentOptionsRequest>,
    ) -> Result<Response<pb::PaymentOptions>, Status> {
        Ok(Response::new(pb::PaymentOptions {
            provider: self.state.provider.name().into(),
            card_in_request: self.state.provider.flow() == Flow::Card,
        }))
    }

    async fn return_from_webpay(
        &self,
        request: Request<pb::ReturnFromWebpayRequest>,
    ) -> Result<Response<proto::options::v1::SeeOther>, Status> {
        if self.state.provider.flow() != Flow::Redirect {
            return Err(failed_precondition(
                "token_ws",
                "this shop does not take payments through Webpay",
            ));
        }
        Ok(Response::new(
            self.webpay_returned(request.into_inner()).await?,
        ))
    }

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
        let redirect = self.state.provider.flow() == Flow::Redirect;
        let card = match (req.card, redirect) {
            (Some(_), true) => {
                return Err(invalid_argument(
                    "card",
                    "must not be sent: this shop takes cards on Webpay's page (send no card, then send the shopper to the url in the reply)",
                ));
            }
            // Well-formed by the contract (a Webpay shop takes none): 422, not 400.
            (None, false) => {
                return Err(unprocessable(
                    "card",
                    "is required: this shop takes the card in the request",
                ));
            }
            (None, true) => None,
            (Some(card), false) => Some(card),
        };
        let card = match card {
            None => None,
            Some(card) => Some(
                Card::parse(
                    &card.number,
                    card.exp_month,
                    card.exp_year,
                    &card.cvc,
                    &card.holder,
                    self.state.clock.now().date_naive(),
                )
                .map_err(|e| invalid_argument(e.field, e.problem))?,
            ),
        };
        let fingerprint = match &card {
            Some(card) => fingerprint(&order_id, card),
            None => redirect_fingerprint(&order_id),
        };

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

        let result = match &card {
            Some(card) => self.charge(&caller, user, &key, &order_id, card).await,
            None => self.start_redirect(&caller, user, &key, &order_id).await,
        };
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
            .ok_or_else(|| unprocessable("order_id", "the order has no captured payment"))?;
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
