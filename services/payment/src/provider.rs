//! Where money actually moves. [`PaymentProvider`] is what the service needs from a card
//! processor; [`SandboxProvider`] is the built-in one, deterministic by card number, for
//! development and tests. A real processor (a Webpay- or Stripe-style HTTP API) is one
//! more implementation: it gets the payment id as its idempotency key, so a retried
//! charge never charges twice.

use std::time::Duration;

use async_trait::async_trait;

use crate::card::Card;

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
}

/// A card processor.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// Charges (authorises and captures) `charge.amount`.
    async fn charge(&self, charge: &Charge<'_>) -> Result<ChargeOutcome, ProviderError>;

    /// What became of the charge with our `payment_id` (for a payment whose outcome we
    /// never recorded).
    async fn status(&self, payment_id: &str) -> Result<ChargeStatus, ProviderError>;

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
                && let ChargeStatus::Settled(first) = self.status(charge.payment_id).await?
            {
                return Ok(first);
            }
        }
        Ok(outcome)
    }

    async fn status(&self, payment_id: &str) -> Result<ChargeStatus, ProviderError> {
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
