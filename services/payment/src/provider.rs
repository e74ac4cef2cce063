//! Where money actually moves. [`PaymentProvider`] is what the service needs from a
//! processor, in either of the two ways processors work: the card flow (the shop sends
//! the card, [`PaymentProvider::charge`]; [`SandboxProvider`], built in, deterministic by
//! card number, for development, tests and API clients) and the redirect flow (the
//! shopper types the card on the processor's page: [`PaymentProvider::start`], then
//! [`PaymentProvider::commit`] when the browser comes back; Webpay Plus,
//! [`crate::webpay::WebpayPlus`]). Our payment id is the idempotency key of a charge, so
//! a retried charge never charges twice.

use std::time::Duration;

use async_trait::async_trait;

use crate::card::Card;

/// How a processor takes the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The shop sends the card with the charge.
    Card,
    /// The shopper's browser goes to the processor's page and comes back.
    Redirect,
}

/// A charge request.
#[derive(Debug)]
pub struct Charge<'a> {
    /// Our payment id: the provider's idempotency key.
    pub payment_id: &'a str,
    /// CLP pesos.
    pub amount: i64,
    /// Always `CLP` today.
    pub currency: &'a str,
    /// The card.
    pub card: &'a Card,
}

/// A redirect-flow transaction to open.
#[derive(Debug)]
pub struct Start<'a> {
    /// What the processor calls the purchase (Webpay's `buy_order`, ≤ 26 characters).
    pub buy_order: &'a str,
    /// The shop's session for it (Webpay's `session_id`, ≤ 61 characters).
    pub session_id: &'a str,
    /// CLP pesos.
    pub amount: i64,
    /// Where the processor sends the browser back.
    pub return_url: &'a str,
}

/// An opened redirect-flow transaction: send the browser to `url` with `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The transaction (Webpay's `token`, posted as `token_ws`).
    pub token: String,
    /// The processor's payment page.
    pub url: String,
}

/// A payment the processor is asked about.
#[derive(Debug, Clone, Copy)]
pub struct Pending<'a> {
    /// Our payment id (the card flow's idempotency key).
    pub payment_id: &'a str,
    /// The processor's transaction token (the redirect flow), if it gave one.
    pub token: Option<&'a str>,
}

/// The processor's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Captured; `reference` is the processor's id for it.
    Approved {
        /// Processor reference.
        reference: String,
    },
    /// Refused for good (a retry with the same card will not help).
    Declined {
        /// `card_declined`, `insufficient_funds`, …
        code: String,
        /// For the customer.
        message: String,
    },
}

/// A redirect-flow transaction, committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Captured or declined.
    pub outcome: ChargeOutcome,
    /// The card's last four digits, when the processor tells them.
    pub card_last4: Option<String>,
}

/// What the processor knows of a charge it was asked for (by our payment id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeStatus {
    /// It decided: approved (captured) or declined.
    Settled(ChargeOutcome),
    /// It never completed a charge with this id (never received, or interrupted).
    Unknown,
}

/// The processor could not give a verdict.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    /// A transient failure; the same request may be sent again.
    #[error("processor error (retryable): {0}")]
    Retryable(String),
    /// The processor refused the request itself (credentials, a value it does not
    /// take): sending it again will not help; the shop's settings or code must change.
    #[error("the processor refused the request: {0}")]
    Refused(String),
    /// This processor does not work that way (a card to a redirect processor).
    #[error("the processor does not support {0}")]
    Unsupported(&'static str),
}

/// A payment processor.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// `sandbox`, `webpay`: recorded on each payment.
    fn name(&self) -> &'static str;

    /// How it takes the card.
    fn flow(&self) -> Flow {
        Flow::Card
    }

    /// Charges (authorises and captures) `charge.amount` (the card flow).
    async fn charge(&self, _charge: &Charge<'_>) -> Result<ChargeOutcome, ProviderError> {
        Err(ProviderError::Unsupported("charging a card the shop sends"))
    }

    /// Opens a transaction the shopper completes on the processor's page (the redirect
    /// flow).
    async fn start(&self, _start: &Start<'_>) -> Result<Redirect, ProviderError> {
        Err(ProviderError::Unsupported("the redirect flow"))
    }

    /// Confirms a transaction the shopper completed on the processor's page: the capture
    /// or the decline. Safe to repeat: a transaction committed before answers as it was.
    async fn commit(&self, _token: &str) -> Result<Committed, ProviderError> {
        Err(ProviderError::Unsupported("the redirect flow"))
    }

    /// What became of a payment whose outcome we never recorded.
    async fn status(&self, pending: &Pending<'_>) -> Result<ChargeStatus, ProviderError>;

    /// Returns `amount` of the capture `reference`; `refund_id` is the idempotency key.
    /// Returns the processor's reference for the refund.
    async fn refund(
        &self,
        reference: &str,
        refund_id: &str,
        amount: i64,
    ) -> Result<String, ProviderError>;
}

/// Sandbox test cards (all Luhn-valid).
pub mod test_cards {
    /// Approved.
    pub const APPROVE: &str = "4242424242424242";
    /// Declined.
    pub const DECLINE: &str = "4000000000000002";
    /// Insufficient funds.
    pub const INSUFFICIENT_FUNDS: &str = "4000000000009995";
    /// A retryable processor error, every time.
    pub const PROCESSOR_ERROR: &str = "4000000000000119";
    /// Answers only after the sandbox's slow delay (longer than the provider timeout).
    pub const SLOW: &str = "4000000000003220";
}

/// The built-in sandbox processor. Any other valid card number is approved.
pub struct SandboxProvider {
    /// How long the [`test_cards::SLOW`] card takes.
    pub slow_delay: Duration,
    /// Where it keeps its decisions, as a real processor does on its side (the
    /// `sandbox_charges` table): a charge repeated with the same id gets the first
    /// answer, and [`PaymentProvider::status`] answers after our process died. Without
    /// it (unit tests) every status is unknown.
    pub records: Option<sqlx::PgPool>,
}

impl SandboxProvider {
    /// The decision for a card, as the sandbox makes it.
    async fn decide(&self, charge: &Charge<'_>) -> Result<ChargeOutcome, ProviderError> {
        match charge.card.number.as_str() {
            test_cards::DECLINE => Ok(ChargeOutcome::Declined {
                code: "card_declined".into(),
                message: "the card was declined".into(),
            }),
            test_cards::INSUFFICIENT_FUNDS => Ok(ChargeOutcome::Declined {
                code: "insufficient_funds".into(),
                message: "the card has insufficient funds".into(),
            }),
            test_cards::PROCESSOR_ERROR => Err(ProviderError::Retryable(
                "the processor is temporarily unavailable".into(),
            )),
            number => {
                if number == test_cards::SLOW {
                    tokio::time::sleep(self.slow_delay).await;
                }
                Ok(ChargeOutcome::Approved {
                    reference: format!("sbx_ch_{}", charge.payment_id.replace('-', "")),
                })
            }
        }
    }
}

#[async_trait]
impl PaymentProvider for SandboxProvider {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn charge(&self, charge: &Charge<'_>) -> Result<ChargeOutcome, ProviderError> {
        let outcome = self.decide(charge).await?;
        if let Some(pool) = &self.records {
            let (approved, reference, code, message) = match &outcome {
                ChargeOutcome::Approved { reference } => (true, reference.as_str(), "", ""),
                ChargeOutcome::Declined { code, message } => {
                    (false, "", code.as_str(), message.as_str())
                }
            };
            let recorded = sqlx::query(
                "INSERT INTO sandbox_charges (payment_id, approved, reference, code, message) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(charge.payment_id)
            .bind(approved)
            .bind(reference)
            .bind(code)
            .bind(message)
            .execute(pool)
            .await
            .map_err(|e| ProviderError::Retryable(format!("the sandbox's records: {e}")))?
            .rows_affected();
            // Charged before with this id: the first answer stands, as a processor's
            // idempotency key makes it.
            if recorded == 0
                && let ChargeStatus::Settled(first) = self
                    .status(&Pending {
                        payment_id: charge.payment_id,
                        token: None,
                    })
                    .await?
            {
                return Ok(first);
            }
        }
        Ok(outcome)
    }

    async fn status(&self, pending: &Pending<'_>) -> Result<ChargeStatus, ProviderError> {
        let payment_id = pending.payment_id;
        let Some(pool) = &self.records else {
            return Ok(ChargeStatus::Unknown);
        };
        let row: Option<(bool, String, String, String)> = sqlx::query_as(
            "SELECT approved, reference, code, message FROM sandbox_charges WHERE payment_id = $1",
        )
        .bind(payment_id)
        .fetch_optional(pool)
        .await
        .map_err(|e| ProviderError::Retryable(format!("the sandbox's records: {e}")))?;
        Ok(match row {
            None => ChargeStatus::Unknown,
            Some((true, reference, _, _)) => {
                ChargeStatus::Settled(ChargeOutcome::Approved { reference })
            }
            Some((false, _, code, message)) => {
                ChargeStatus::Settled(ChargeOutcome::Declined { code, message })
            }
        })
    }

    async fn refund(
        &self,
        _reference: &str,
        refund_id: &str,
        _amount: i64,
    ) -> Result<String, ProviderError> {
        Ok(format!("sbx_re_{}", refund_id.replace('-', "")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(number: &str) -> Card {
        Card::parse(
            number,
            12,
            2030,
            "123",
            "Ana",
            chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
        )
        .unwrap()
    }

    async fn charge(
        provider: &SandboxProvider,
        number: &str,
    ) -> Result<ChargeOutcome, ProviderError> {
        let card = card(number);
        provider
            .charge(&Charge {
                payment_id: "0193-abc",
                amount: 1190,
                currency: "CLP",
                card: &card,
            })
            .await
    }

    fn declined(outcome: Result<ChargeOutcome, ProviderError>) -> String {
        match outcome {
            Ok(ChargeOutcome::Declined { code, .. }) => code,
            other => panic!("expected a decline, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_sandbox_card_has_its_outcome() {
        let sandbox = SandboxProvider {
            slow_delay: Duration::from_secs(30),
            records: None,
        };
        assert!(matches!(
            charge(&sandbox, test_cards::APPROVE).await,
            Ok(ChargeOutcome::Approved { .. })
        ));
        assert_eq!(
            declined(charge(&sandbox, test_cards::DECLINE).await),
            "card_declined"
        );
        assert_eq!(
            declined(charge(&sandbox, test_cards::INSUFFICIENT_FUNDS).await),
            "insufficient_funds"
        );
        assert!(matches!(
            charge(&sandbox, test_cards::PROCESSOR_ERROR).await,
            Err(ProviderError::Retryable(_))
        ));
        // Virtual time: the slow card takes its full delay, then approves.
        let started = tokio::time::Instant::now();
        assert!(charge(&sandbox, test_cards::SLOW).await.is_ok());
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }
}
