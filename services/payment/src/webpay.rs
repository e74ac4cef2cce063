//! Webpay Plus, Transbank's REST API (`/rswebpaytransaction/api/webpay/v1.2`), as Transbank
//! documents it: every call carries `Tbk-Api-Key-Id` (the código de comercio) and
//! `Tbk-Api-Key-Secret`; a transaction is created (`POST transactions` → `token`, `url`),
//! the shopper's browser posts `token_ws` to `url` and pays on Webpay's page, Webpay sends
//! the browser back to our return URL, and we commit it (`PUT transactions/{token}`:
//! `response_code` 0 with `status` AUTHORIZED is a capture, anything else a decline).
//! `GET transactions/{token}` tells a transaction's state; `POST
//! transactions/{token}/refunds` returns money (`REVERSED` or `NULLIFIED`).
//!
//! No Transbank SDK exists for Rust; the API is four JSON calls, made here with reqwest.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::provider::{
    ChargeOutcome, ChargeStatus, Committed, Flow, PaymentProvider, Pending, ProviderError,
    Redirect, Start,
};

/// The API's path under the environment's host.
pub const API_PATH: &str = "/rswebpaytransaction/api/webpay/v1.2/transactions";

/// Transbank's integration environment (test cards, no money moves).
pub const INTEGRATION_URL: &str = "https://webpay3gint.transbank.cl";
/// Transbank's production environment.
pub const PRODUCTION_URL: &str = "https://webpay3g.transbank.cl";

/// How a Webpay client is set up.
#[derive(Clone)]
pub struct WebpayConfig {
    /// Scheme and host, e.g. [`INTEGRATION_URL`] or the simulator's.
    pub base_url: String,
    /// `Tbk-Api-Key-Id`: the código de comercio.
    pub commerce_code: String,
    /// `Tbk-Api-Key-Secret`.
    pub api_key_secret: String,
    /// Deadline of one HTTP call.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for WebpayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebpayConfig")
            .field("base_url", &self.base_url)
            .field("commerce_code", &self.commerce_code)
            .field("api_key_secret", &"[redacted]")
            .finish()
    }
}

/// The Webpay Plus processor.
pub struct WebpayPlus {
    config: WebpayConfig,
    http: reqwest::Client,
}

/// A transaction as Webpay reports it (commit and status share the shape), the fields
/// the shop reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Transaction {
    /// INITIALIZED, AUTHORIZED, FAILED, REVERSED, NULLIFIED, PARTIALLY_NULLIFIED, CAPTURED.
    #[serde(default)]
    pub status: String,
    /// 0 approved; negative a rejection (-1 … -5).
    #[serde(default)]
    pub response_code: Option<i64>,
    /// What remains after refunds.
    #[serde(default)]
    pub balance: Option<f64>,
    /// The card's last four digits.
    #[serde(default)]
    pub card_detail: Option<CardDetail>,
}

/// `card_detail` of a transaction.
#[derive(Debug, Clone, Deserialize)]
pub struct CardDetail {
    /// The last four digits.
    #[serde(default)]
    pub card_number: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Created {
    token: String,
    url: String,
}

#[derive(Debug, Deserialize)]
struct RefundReply {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    authorization_code: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorReply {
    #[serde(default)]
    error_message: String,
}

/// What a call came to.
enum CallError {
    /// No answer, a dropped connection, or a 5xx: may be repeated.
    Transient(String),
    /// 401/403: the credentials are wrong.
    Credentials(String),
    /// 422 (or another 4xx): Webpay will not do this (a value, or the transaction's state).
    Refused(StatusCode, String),
}

impl WebpayPlus {
    /// A client for `config`.
    pub fn new(config: WebpayConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self { config, http })
    }

    fn url(&self, tail: &str) -> String {
        format!(
            "{}{API_PATH}{tail}",
            self.config.base_url.trim_end_matches('/')
        )
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        tail: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, CallError> {
        let mut request = self
            .http
            .request(method, self.url(tail))
            .header("Tbk-Api-Key-Id", &self.config.commerce_code)
            .header("Tbk-Api-Key-Secret", &self.config.api_key_secret)
            .header("Content-Type", "application/json");
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| CallError::Transient(format!("Webpay did not answer: {e}")))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CallError::Transient(format!("Webpay's answer was cut: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                CallError::Transient(format!(
                    "Webpay answered {status} with an unreadable body: {e}"
                ))
            });
        }
        let message = serde_json::from_slice::<ErrorReply>(&bytes)
            .map(|e| e.error_message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CallError::Credentials(message),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                CallError::Transient(format!("Webpay answered {s}: {message}"))
            }
            s => CallError::Refused(s, message),
        })
    }

    /// A call, repeated (three attempts in all) while it fails in transit.
    async fn call_retrying<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        tail: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, CallError> {
        let mut backoff = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self.call(method.clone(), tail, body.clone()).await {
                Err(CallError::Transient(e)) if attempt < 3 => {
                    tracing::warn!(attempt, error = %e, "Webpay call failed in transit; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn error(&self, e: CallError) -> ProviderError {
        match e {
            CallError::Transient(e) => ProviderError::Retryable(e),
            CallError::Credentials(message) => {
                tracing::error!(
                    commerce_code = %self.config.commerce_code,
                    %message,
                    "Webpay refused the shop's credentials: check WEBPAY_COMMERCE_CODE and WEBPAY_API_KEY_SECRET"
                );
                ProviderError::Refused(format!(
                    "Webpay refused the credentials (WEBPAY_COMMERCE_CODE, WEBPAY_API_KEY_SECRET): {message}"
                ))
            }
            CallError::Refused(status, message) => {
                ProviderError::Refused(format!("Webpay answered {status}: {message}"))
            }
        }
    }

    /// `GET transactions/{token}`.
    pub async fn transaction(&self, token: &str) -> Result<Transaction, ProviderError> {
        self.call_retrying(Method::GET, &format!("/{token}"), None)
            .await
            .map_err(|e| self.error(e))
    }
}

/// What Webpay's `response_code` means, for the payment's failure code and message.
fn decline(response_code: i64) -> ChargeOutcome {
    let (code, meaning) = match response_code {
        -1 => (
            "card_declined",
            "rechazo: posible error en los datos de la tarjeta",
        ),
        -2 => (
            "processing_failed",
            "rechazo: falló el procesamiento de la transacción",
        ),
        -3 => ("processing_error", "error en la transacción"),
        -4 => ("issuer_declined", "rechazo del emisor"),
        -5 => ("fraud_suspected", "rechazo por riesgo de fraude"),
        _ => ("card_declined", "rechazo"),
    };
    ChargeOutcome::Declined {
        code: code.into(),
        message: format!("Webpay declined the payment (response_code {response_code}: {meaning})"),
    }
}

/// The verdict a committed transaction carries.
fn verdict(token: &str, tx: &Transaction) -> ChargeOutcome {
    match tx.response_code {
        Some(0) if tx.status == "AUTHORIZED" => ChargeOutcome::Approved {
            reference: token.to_string(),
        },
        Some(code) if code != 0 => decline(code),
        _ => decline(-1),
    }
}

#[async_trait]
impl PaymentProvider for WebpayPlus {
    fn name(&self) -> &'static str {
        "webpay"
    }

    fn flow(&self) -> Flow {
        Flow::Redirect
    }

    async fn start(&self, start: &Start<'_>) -> Result<Redirect, ProviderError> {
        // A create repeated after a lost answer only leaves an unused transaction behind
        // at Webpay (nothing is charged until a shopper pays and we commit).
        let created: Created = self
            .call_retrying(
                Method::POST,
                "",
                Some(json!({
                    "buy_order": start.buy_order,
                    "session_id": start.session_id,
                    "amount": start.amount,
                    "return_url": start.return_url,
                })),
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(Redirect {
            token: created.token,
            url: created.url,
        })
    }

    async fn commit(&self, token: &str) -> Result<Committed, ProviderError> {
        match self
            .call_retrying::<Transaction>(Method::PUT, &format!("/{token}"), None)
            .await
        {
            Ok(tx) => Ok(Committed {
                outcome: verdict(token, &tx),
                card_last4: tx.card_detail.and_then(|c| c.card_number),
            }),
            // Committed before (a repeated return, or our first attempt landed and its
            // answer was lost in transit): Webpay refuses a second commit, and its status
            // tells what the first one decided.
            Err(CallError::Refused(_, message)) => {
                let tx = self.transaction(token).await?;
                match tx.status.as_str() {
                    "AUTHORIZED"
                    | "FAILED"
                    | "REVERSED"
                    | "NULLIFIED"
                    | "PARTIALLY_NULLIFIED"
                    | "CAPTURED"
                        if tx.response_code.is_some() =>
                    {
                        Ok(Committed {
                            outcome: match tx.status.as_str() {
                                "FAILED" => verdict(token, &tx),
                                _ => ChargeOutcome::Approved {
                                    reference: token.to_string(),
                                },
                            },
                            card_last4: tx.card_detail.and_then(|c| c.card_number),
                        })
                    }
                    _ => Err(ProviderError::Refused(format!(
                        "Webpay will not commit the transaction ({}): {message}",
                        tx.status
                    ))),
                }
            }
            Err(e) => Err(self.error(e)),
        }
    }

    async fn status(&self, pending: &Pending<'_>) -> Result<ChargeStatus, ProviderError> {
        // Never reached Webpay: nothing can have been paid.
        let Some(token) = pending.token else {
            return Ok(ChargeStatus::Unknown);
        };
        // The shopper may have paid while the return never reached us: committing is how
        // such a payment is taken (and a transaction already committed answers as it was).
        match self.commit(token).await {
            Ok(committed) => Ok(ChargeStatus::Settled(committed.outcome)),
            // Not committable: the shopper never paid (abandoned, aborted, timed out).
            Err(ProviderError::Refused(_)) => Ok(ChargeStatus::Unknown),
            Err(e) => Err(e),
        }
    }

    async fn refund(
        &self,
        reference: &str,
        refund_id: &str,
        amount: i64,
    ) -> Result<String, ProviderError> {
        // Webpay's refunds carry no idempotency key, so a refund is never sent twice
        // blindly: when the first attempt's answer is lost, the transaction's balance
        // tells whether it was made.
        let before = self.transaction(reference).await?.balance;
        match self
            .call::<RefundReply>(
                Method::POST,
                &format!("/{reference}/refunds"),
                Some(json!({ "amount": amount })),
            )
            .await
        {
            Ok(reply) => Ok(match reply.authorization_code {
                Some(code) if !code.is_empty() => format!("{}:{code}", reply.kind),
                _ => reply.kind,
            }),
            Err(CallError::Transient(e)) => {
                let after = self.transaction(reference).await?.balance;
                match (before, after) {
                    (Some(b), Some(a)) if (b - a - amount as f64).abs() < 0.5 => {
                        tracing::warn!(%refund_id, "a refund's answer was lost; Webpay's balance shows it was made");
                        Ok("NULLIFIED".into())
                    }
                    _ => Err(ProviderError::Retryable(e)),
                }
            }
            Err(e) => Err(self.error(e)),
        }
    }
}

/// Webpay's `buy_order` for a payment: its UUID's 128 bits in Crockford's base32, exactly
/// 26 characters (Webpay's limit) and reversible. Written out because it is one loop and
/// no crate for it is already in the build.
pub fn buy_order(payment_id: uuid::Uuid) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut value = payment_id.as_u128();
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    String::from_utf8(out.to_vec()).expect("ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buy_order_is_26_characters_and_distinct_per_payment() {
        let a = buy_order(uuid::Uuid::now_v7());
        let b = buy_order(uuid::Uuid::now_v7());
        assert_eq!(a.len(), 26);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(buy_order(uuid::Uuid::nil()), "0".repeat(26));
        assert_eq!(buy_order(uuid::Uuid::max()), format!("7{}", "Z".repeat(25)));
    }

    #[test]
    fn a_response_code_is_a_capture_only_when_authorized_with_zero() {
        let tx = |status: &str, code: i64| Transaction {
            status: status.into(),
            response_code: Some(code),
            balance: None,
            card_detail: None,
        };
        assert!(matches!(
            verdict("t", &tx("AUTHORIZED", 0)),
            ChargeOutcome::Approved { .. }
        ));
        match verdict("t", &tx("FAILED", -4)) {
            ChargeOutcome::Declined { code, message } => {
                assert_eq!(code, "issuer_declined");
                assert!(message.contains("-4"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            verdict("t", &tx("FAILED", 0)),
            ChargeOutcome::Declined { .. }
        ));
    }
}
