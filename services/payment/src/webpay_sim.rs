//! `orderflow webpay-sim`: a local Webpay Plus. It serves the REST API
//! [`crate::webpay::WebpayPlus`] calls (create, commit, status, refunds) with Webpay's
//! JSON and rules (the `Tbk-Api-Key-*` headers, the field limits, one commit per
//! transaction, refunds within the balance), and the payment page the shopper's browser is
//! sent to: a plain HTML form with Transbank's integration test cards, a button to abort,
//! and the form's timeout. It sends the browser back to the shop's return URL as Webpay
//! does: `token_ws` after a payment (approved or rejected), `TBK_TOKEN`, `TBK_ORDEN_COMPRA`
//! and `TBK_ID_SESION` after an abort, only the last two after a timeout.
//!
//! Its transactions live in memory: a restarted simulator has forgotten them, as a
//! different Webpay would have.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use platform::CancellationToken;
use rand::Rng as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::webpay::API_PATH;

/// Transbank's integration test cards, as its documentation lists them.
pub mod test_cards {
    /// VISA, approved.
    pub const VISA_APPROVED: &str = "4051885600446623";
    /// Mastercard, rejected.
    pub const MASTERCARD_REJECTED: &str = "5186059559590568";
    /// Redcompra (debit), approved.
    pub const REDCOMPRA_APPROVED: &str = "4051884239937763";
    /// Redcompra (debit), rejected.
    pub const REDCOMPRA_REJECTED: &str = "5186008541233829";
}

/// How long the simulator's payment form waits for the shopper, unless told otherwise.
pub const DEFAULT_FORM_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The `Tbk-Api-Key-Id` it accepts.
    pub commerce_code: String,
    /// The `Tbk-Api-Key-Secret` it accepts.
    pub api_key_secret: String,
    /// How long the payment form waits for the shopper before sending the browser back
    /// as timed out.
    pub form_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Created; the shopper has not finished the form.
    Initialized,
    /// The shopper paid; `response_code` says how the issuer answered.
    Decided,
    /// The shopper aborted on the form.
    Aborted,
    /// The form timed out.
    TimedOut,
}

#[derive(Debug, Clone)]
struct Tx {
    buy_order: String,
    session_id: String,
    amount: i64,
    return_url: String,
    created: Instant,
    created_at: chrono::DateTime<chrono::Utc>,
    stage: Stage,
    response_code: i64,
    card_last4: String,
    authorization_code: String,
    committed: bool,
    refunded: Vec<i64>,
}

impl Tx {
    fn balance(&self) -> i64 {
        self.amount - self.refunded.iter().sum::<i64>()
    }

    fn status(&self) -> &'static str {
        match self.stage {
            Stage::Initialized => "INITIALIZED",
            Stage::Aborted | Stage::TimedOut => "FAILED",
            Stage::Decided if self.response_code != 0 => "FAILED",
            Stage::Decided if !self.refunded.is_empty() && self.balance() == 0 => {
                if self.refunded.len() == 1 {
                    "REVERSED"
                } else {
                    "NULLIFIED"
                }
            }
            Stage::Decided if !self.refunded.is_empty() => "PARTIALLY_NULLIFIED",
            Stage::Decided => "AUTHORIZED",
        }
    }

    /// The transaction as commit and status report it.
    fn body(&self) -> Value {
        let decided = self.stage == Stage::Decided;
        json!({
            "vci": if decided { "TSY" } else { "" },
            "amount": self.amount,
            "status": self.status(),
            "buy_order": self.buy_order,
            "session_id": self.session_id,
            "card_detail": { "card_number": self.card_last4 },
            "accounting_date": self.created_at.format("%m%d").to_string(),
            "transaction_date": self.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "authorization_code": self.authorization_code,
            "payment_type_code": if decided { "VN" } else { "" },
            "response_code": if decided { Some(self.response_code) } else { None },
            "installments_number": 0,
            "balance": self.balance(),
        })
    }
}

#[derive(Default)]
struct SimState {
    txs: HashMap<String, Tx>,
}

/// The simulator, bound.
pub struct WebpaySimulator {
    listener: TcpListener,
    shared: Arc<Shared>,
}

struct Shared {
    config: SimConfig,
    state: Mutex<SimState>,
    /// Commits whose answer is dropped (the connection closed after the commit was
    /// made), for the tests of a commit lost in transit.
    drop_commit_answers: AtomicUsize,
    /// The address the browser reaches the simulator at.
    base_url: String,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("a valid response")
}

fn json_reply(status: StatusCode, body: Value) -> Reply {
    reply(status, "application/json", body.to_string())
}

fn api_error(status: StatusCode, message: &str) -> Reply {
    json_reply(status, json!({ "error_message": message }))
}

fn see_other(location: &str) -> Reply {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header("location", location)
        .body(Full::new(Bytes::new()))
        .expect("a valid response")
}

fn random_hex(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
        .collect()
}

/// `url` with `pairs` as its query.
fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl WebpaySimulator {
    /// Binds `addr` (port 0 for any).
    pub async fn bind(addr: SocketAddr, config: SimConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("setting WEBPAY_SIM_ADDR: cannot bind {addr}: {e}"))?;
        let bound = listener.local_addr()?;
        let host = if bound.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            bound.ip().to_string()
        };
        Ok(Self {
            listener,
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(SimState::default()),
                drop_commit_answers: AtomicUsize::new(0),
                base_url: format!("http://{host}:{}", bound.port()),
            }),
        })
    }

    /// `http://host:port` of the simulator: the `WEBPAY_URL` to give the shop.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// A handle to steer faults while it runs.
    pub fn faults(&self) -> SimFaults {
        SimFaults(self.shared.clone())
    }

    /// Serves until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(url = %self.shared.base_url, "Webpay simulator listening");
        let shared = self.shared;
        platform::admin::serve_http(
            self.listener,
            "Webpay simulator",
            shutdown,
            move |request| {
                let shared = shared.clone();
                async move { handle(&shared, request).await }
            },
        )
        .await
    }
}

/// Faults the simulator can be told to make (tests).
#[derive(Clone)]
pub struct SimFaults(Arc<Shared>);

impl SimFaults {
    /// The next `n` commits are made, and their answers lost (the connection closes).
    pub fn drop_commit_answers(&self, n: usize) {
        self.0.drop_commit_answers.store(n, Ordering::SeqCst);
    }
}

/// The connection is closed without an answer.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("answer dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Result<Reply, Dropped> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let headers = request.headers().clone();
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(api_error(StatusCode::BAD_REQUEST, "unreadable body")),
    };
    if let Some(tail) = path.strip_prefix(API_PATH) {
        let authorized = headers
            .get("tbk-api-key-id")
            .is_some_and(|v| v.as_bytes() == shared.config.commerce_code.as_bytes())
            && headers
                .get("tbk-api-key-secret")
                .is_some_and(|v| v.as_bytes() == shared.config.api_key_secret.as_bytes());
        if !authorized {
            return Ok(api_error(StatusCode::UNAUTHORIZED, "Not Authorized"));
        }
        let parts: Vec<&str> = tail.trim_start_matches('/').split('/').collect();
        return match (&method, parts.as_slice()) {
            (&Method::POST, [""]) => Ok(create(shared, &body)),
            (&Method::PUT, [token]) => {
                let answer = commit(shared, token);
                let drop = shared
                    .drop_commit_answers
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if drop && answer.status() == StatusCode::OK {
                    return Err(Dropped);
                }
                Ok(answer)
            }
            (&Method::GET, [token]) => {
                Ok(match shared.state.lock().expect("lock").txs.get(*token) {
                    Some(tx) => json_reply(StatusCode::OK, tx.body()),
                    None => api_error(StatusCode::NOT_FOUND, "Transaction not found"),
                })
            }
            (&Method::POST, [token, "refunds"]) => Ok(refund(shared, token, &body)),
            _ => Ok(api_error(StatusCode::NOT_FOUND, "Not found")),
        };
    }
    let mut form: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    form.extend(form_urlencoded::parse(&body).into_owned());
    Ok(match (&method, path.as_str()) {
        (&Method::GET | &Method::POST, "/webpayserver/initTransaction") => {
            payment_page(shared, &form)
        }
        (&Method::POST, "/webpayserver/pay") => pay(shared, &form),
        // Browsers ask for one; nothing to show.
        (&Method::GET, "/favicon.ico") => reply(StatusCode::NO_CONTENT, "image/x-icon", ""),
        (&Method::GET, "/webpayserver/timeout") => {
            let token = form.get("token_ws").cloned().unwrap_or_default();
            time_out(shared, &token)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found",
        ),
    })
}

fn create(shared: &Shared, body: &[u8]) -> Reply {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return api_error(StatusCode::BAD_REQUEST, "the body must be a JSON object");
    };
    // A refusal names the parameter, as Webpay's 422 does.
    let text = |name: &'static str, max: usize| -> Result<String, &'static str> {
        match fields.get(name).and_then(Value::as_str) {
            Some(v) if !v.is_empty() && v.len() <= max => Ok(v.to_string()),
            _ => Err(name),
        }
    };
    let parsed = (|| {
        let buy_order = text("buy_order", 26)?;
        let session_id = text("session_id", 61)?;
        let return_url = text("return_url", 256)?;
        let amount = fields
            .get("amount")
            .and_then(Value::as_f64)
            .filter(|a| *a >= 1.0 && a.fract() == 0.0)
            .ok_or("amount")? as i64;
        Ok::<_, &'static str>((buy_order, session_id, return_url, amount))
    })();
    let (buy_order, session_id, return_url, amount) = match parsed {
        Ok(p) => p,
        Err(name) => {
            return api_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("Invalid value for parameter: {name}"),
            );
        }
    };
    let token = random_hex(64);
    shared.state.lock().expect("lock").txs.insert(
        token.clone(),
        Tx {
            buy_order,
            session_id,
            amount,
            return_url,
            created: Instant::now(),
            created_at: chrono::Utc::now(),
            stage: Stage::Initialized,
            response_code: 0,
            card_last4: String::new(),
            authorization_code: String::new(),
            committed: false,
            refunded: Vec::new(),
        },
    );
    json_reply(
        StatusCode::OK,
        json!({ "token": token, "url": format!("{}/webpayserver/initTransaction", shared.base_url) }),
    )
}

fn commit(shared: &Shared, token: &str) -> Reply {
    let mut state = shared.state.lock().expect("lock");
    let Some(tx) = state.txs.get_mut(token) else {
        return api_error(StatusCode::NOT_FOUND, "Transaction not found");
    };
    if tx.committed {
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "Invalid status '{}' for transaction while authorizing. Commerce has already confirmed the transaction",
                tx.status()
            ),
        );
    }
    if tx.stage != Stage::Decided {
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "Invalid status '{}' for transaction while authorizing",
                tx.status()
            ),
        );
    }
    tx.committed = true;
    json_reply(StatusCode::OK, tx.body())
}

fn refund(shared: &Shared, token: &str, body: &[u8]) -> Reply {
    let amount = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("amount").and_then(Value::as_f64))
        .filter(|a| *a >= 1.0 && a.fract() == 0.0)
        .map(|a| a as i64);
    let mut state = shared.state.lock().expect("lock");
    let Some(tx) = state.txs.get_mut(token) else {
        return api_error(StatusCode::NOT_FOUND, "Transaction not found");
    };
    if !(tx.committed && tx.stage == Stage::Decided && tx.response_code == 0) {
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "Invalid status '{}' for transaction while refunding",
                tx.status()
            ),
        );
    }
    let Some(amount) = amount.filter(|a| *a <= tx.balance()) else {
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid value for parameter: amount",
        );
    };
    let whole_on_the_day = tx.refunded.is_empty()
        && amount == tx.amount
        && tx.created_at.date_naive() == chrono::Utc::now().date_naive();
    tx.refunded.push(amount);
    if whole_on_the_day {
        return json_reply(StatusCode::OK, json!({ "type": "REVERSED" }));
    }
    json_reply(
        StatusCode::OK,
        json!({
            "type": "NULLIFIED",
            "authorization_code": format!("{:06}", rand::thread_rng().gen_range(0..1_000_000)),
            "authorization_date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "nullified_amount": amount,
            "balance": tx.balance(),
            "response_code": 0,
        }),
    )
}

/// The transaction behind a form post, if its form is still open; otherwise why not.
fn open_form(shared: &Shared, token: &str) -> Result<Tx, (StatusCode, &'static str)> {
    let state = shared.state.lock().expect("lock");
    match state.txs.get(token) {
        None => Err((StatusCode::NOT_FOUND, "Transacción no encontrada")),
        Some(tx) if tx.stage != Stage::Initialized => {
            Err((StatusCode::CONFLICT, "Esta transacción ya fue procesada"))
        }
        Some(tx) => Ok(tx.clone()),
    }
}

fn text_reply((status, message): (StatusCode, &'static str)) -> Reply {
    reply(status, "text/plain; charset=utf-8", message)
}

fn payment_page(shared: &Shared, form: &HashMap<String, String>) -> Reply {
    let token = form.get("token_ws").cloned().unwrap_or_default();
    let tx = match open_form(shared, &token) {
        Ok(tx) => tx,
        Err(refused) => return text_reply(refused),
    };
    let remaining = shared
        .config
        .form_timeout
        .saturating_sub(tx.created.elapsed());
    if remaining.is_zero() {
        return time_out(shared, &token);
    }
    let token = escape(&token);
    let cards = [
        (test_cards::VISA_APPROVED, "VISA (aprobada)"),
        (test_cards::MASTERCARD_REJECTED, "Mastercard (rechazada)"),
        (test_cards::REDCOMPRA_APPROVED, "Redcompra (aprobada)"),
        (test_cards::REDCOMPRA_REJECTED, "Redcompra (rechazada)"),
    ]
    .iter()
    .map(|(n, label)| format!("<option value=\"{n}\">{label}</option>"))
    .collect::<String>();
    let page = format!(
        r#"<!doctype html>
<html lang="es-CL"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{seconds};url=/webpayserver/timeout?token_ws={token}">
<title>Webpay (simulador)</title></head>
<body>
<h1>Webpay Plus (simulador local)</h1>
<p>Orden de compra <strong>{buy_order}</strong>: <strong id="monto">${amount}</strong></p>
<form method="post" action="/webpayserver/pay">
<input type="hidden" name="token_ws" value="{token}">
<label for="card">Número de tarjeta</label>
<input id="card" name="card" list="test-cards" autocomplete="off" required>
<datalist id="test-cards">{cards}</datalist>
<button type="submit" name="action" value="pay">Pagar</button>
</form>
<form method="post" action="/webpayserver/pay">
<input type="hidden" name="token_ws" value="{token}">
<button type="submit" name="action" value="abort">Anular compra y volver al comercio</button>
</form>
<p>Este formulario expira en {seconds} segundos.</p>
</body></html>"#,
        seconds = remaining.as_secs() + 1,
        buy_order = escape(&tx.buy_order),
        amount = tx.amount,
    );
    Response::builder()
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(page)))
        .expect("a valid response")
}

fn pay(shared: &Shared, form: &HashMap<String, String>) -> Reply {
    let token = form.get("token_ws").cloned().unwrap_or_default();
    let tx = match open_form(shared, &token) {
        Ok(tx) => tx,
        Err(refused) => return text_reply(refused),
    };
    if tx.created.elapsed() >= shared.config.form_timeout {
        return time_out(shared, &token);
    }
    let mut state = shared.state.lock().expect("lock");
    let Some(tx) = state.txs.get_mut(&token) else {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "Transacción no encontrada",
        );
    };
    if form.get("action").map(String::as_str) == Some("abort") {
        tx.stage = Stage::Aborted;
        return see_other(&with_query(
            &tx.return_url,
            &[
                ("TBK_TOKEN", &token),
                ("TBK_ORDEN_COMPRA", &tx.buy_order),
                ("TBK_ID_SESION", &tx.session_id),
            ],
        ));
    }
    let card: String = form
        .get("card")
        .map(|c| c.chars().filter(char::is_ascii_digit).collect())
        .unwrap_or_default();
    if card.len() < 12 {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            "Ingrese un número de tarjeta válido",
        );
    }
    tx.stage = Stage::Decided;
    tx.card_last4 = card[card.len() - 4..].to_string();
    tx.response_code = match card.as_str() {
        test_cards::VISA_APPROVED | test_cards::REDCOMPRA_APPROVED => 0,
        // Any other card is refused by the issuer, as in the integration environment.
        _ => -1,
    };
    if tx.response_code == 0 {
        tx.authorization_code = format!("{:06}", rand::thread_rng().gen_range(0..1_000_000));
    }
    see_other(&with_query(&tx.return_url, &[("token_ws", &token)]))
}

fn time_out(shared: &Shared, token: &str) -> Reply {
    let mut state = shared.state.lock().expect("lock");
    let Some(tx) = state.txs.get_mut(token) else {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "Transacción no encontrada",
        );
    };
    if tx.stage != Stage::Initialized {
        return reply(
            StatusCode::CONFLICT,
            "text/plain; charset=utf-8",
            "Esta transacción ya fue procesada",
        );
    }
    if tx.created.elapsed() < shared.config.form_timeout {
        return reply(
            StatusCode::CONFLICT,
            "text/plain; charset=utf-8",
            "El formulario aún no expira",
        );
    }
    tx.stage = Stage::TimedOut;
    see_other(&with_query(
        &tx.return_url,
        &[
            ("TBK_ORDEN_COMPRA", &tx.buy_order),
            ("TBK_ID_SESION", &tx.session_id),
        ],
    ))
}

#[cfg(test)]
mod tests {
    //! The Webpay client against the simulator, over real HTTP, as the shop and a
    //! shopper's browser would use them.
    use super::*;
    use crate::{
        provider::{ChargeOutcome, ChargeStatus, PaymentProvider, Pending, ProviderError, Start},
        webpay::{WebpayConfig, WebpayPlus},
    };

    const RETURN_URL: &str = "http://tienda.test/v1/payments/webpay/return";

    struct Fixture {
        client: WebpayPlus,
        faults: SimFaults,
        base: String,
        browser: reqwest::Client,
        _stop: platform::CancellationToken,
    }

    async fn fixture(form_timeout: Duration) -> Fixture {
        let sim = WebpaySimulator::bind(
            "127.0.0.1:0".parse().unwrap(),
            SimConfig {
                commerce_code: "597000000001".into(),
                api_key_secret: "test-fixture-secret".into(),
                form_timeout,
            },
        )
        .await
        .unwrap();
        let base = sim.url();
        let faults = sim.faults();
        let stop = platform::CancellationToken::new();
        tokio::spawn(sim.run_until_stopped(stop.clone()));
        Fixture {
            client: client(&base, "test-fixture-secret"),
            faults,
            base,
            browser: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            _stop: stop,
        }
    }

    fn client(base: &str, secret: &str) -> WebpayPlus {
        WebpayPlus::new(WebpayConfig {
            base_url: base.into(),
            commerce_code: "597000000001".into(),
            api_key_secret: secret.into(),
            request_timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    impl Fixture {
        async fn start(&self, amount: i64) -> crate::provider::Redirect {
            let buy_order = crate::webpay::buy_order(uuid::Uuid::now_v7());
            self.client
                .start(&Start {
                    buy_order: &buy_order,
                    session_id: "order-1",
                    amount,
                    return_url: RETURN_URL,
                })
                .await
                .unwrap()
        }

        /// The shopper's browser: posts token_ws to Webpay's url, reads the form, then
        /// submits it. Returns where Webpay sends the browser back.
        async fn shopper(&self, token: &str, url: &str, fields: &[(&str, &str)]) -> String {
            let page = self
                .browser
                .post(url)
                .form(&[("token_ws", token)])
                .send()
                .await
                .unwrap();
            assert_eq!(page.status(), StatusCode::OK);
            let html = page.text().await.unwrap();
            assert!(html.contains("Pagar") && html.contains("Anular"), "{html}");
            let mut form = vec![("token_ws", token)];
            form.extend_from_slice(fields);
            let back = self
                .browser
                .post(format!("{}/webpayserver/pay", self.base))
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(back.status(), StatusCode::SEE_OTHER);
            back.headers()["location"].to_str().unwrap().to_string()
        }

        async fn pay(&self, token: &str, url: &str, card: &str) -> String {
            self.shopper(token, url, &[("card", card), ("action", "pay")])
                .await
        }
    }

    fn query(location: &str) -> HashMap<String, String> {
        let (_, query) = location.split_once('?').expect("a query");
        form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    }

    #[tokio::test]
    async fn an_approved_payment_is_committed_once_and_a_repeated_commit_answers_the_same() {
        let f = fixture(Duration::from_secs(60)).await;
        let redirect = f.start(12_990).await;
        assert_eq!(redirect.token.len(), 64);
        assert!(redirect.url.ends_with("/webpayserver/initTransaction"));
        let back = f
            .pay(&redirect.token, &redirect.url, test_cards::VISA_APPROVED)
            .await;
        assert!(back.starts_with(RETURN_URL), "{back}");
        assert_eq!(
            query(&back),
            HashMap::from([("token_ws".into(), redirect.token.clone())])
        );

        let committed = f.client.commit(&redirect.token).await.unwrap();
        assert_eq!(
            committed.outcome,
            ChargeOutcome::Approved {
                reference: redirect.token.clone()
            }
        );
        assert_eq!(committed.card_last4.as_deref(), Some("6623"));
        // Webpay refuses a second commit; the client reads the first one's verdict.
        let again = f.client.commit(&redirect.token).await.unwrap();
        assert_eq!(again.outcome, committed.outcome);
        let tx = f.client.transaction(&redirect.token).await.unwrap();
        assert_eq!(
            (tx.status.as_str(), tx.response_code),
            ("AUTHORIZED", Some(0))
        );
    }

    #[tokio::test]
    async fn a_rejected_card_is_a_decline_carrying_webpays_code() {
        let f = fixture(Duration::from_secs(60)).await;
        let redirect = f.start(5_000).await;
        f.pay(
            &redirect.token,
            &redirect.url,
            test_cards::MASTERCARD_REJECTED,
        )
        .await;
        match f.client.commit(&redirect.token).await.unwrap().outcome {
            ChargeOutcome::Declined { code, message } => {
                assert_eq!(code, "card_declined");
                assert!(message.contains("response_code -1"), "{message}");
            }
            other => panic!("expected a decline, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_abort_returns_the_tbk_fields_and_nothing_can_be_committed() {
        let f = fixture(Duration::from_secs(60)).await;
        let redirect = f.start(5_000).await;
        let back = f
            .shopper(&redirect.token, &redirect.url, &[("action", "abort")])
            .await;
        let fields = query(&back);
        assert_eq!(fields["TBK_TOKEN"], redirect.token);
        assert_eq!(fields["TBK_ID_SESION"], "order-1");
        assert_eq!(fields["TBK_ORDEN_COMPRA"].len(), 26);
        assert!(!fields.contains_key("token_ws"));
        assert!(matches!(
            f.client.commit(&redirect.token).await,
            Err(ProviderError::Refused(_))
        ));
        // The reconciler's question: nothing was paid.
        let status = f
            .client
            .status(&Pending {
                payment_id: "p",
                token: Some(&redirect.token),
            })
            .await
            .unwrap();
        assert_eq!(status, ChargeStatus::Unknown);
    }

    #[tokio::test]
    async fn a_form_left_alone_times_out_and_returns_only_the_buy_order_and_session() {
        let f = fixture(Duration::from_millis(600)).await;
        let redirect = f.start(5_000).await;
        // Not before its time.
        let early = f
            .browser
            .get(format!(
                "{}/webpayserver/timeout?token_ws={}",
                f.base, redirect.token
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(early.status(), StatusCode::CONFLICT);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let back = f
            .browser
            .post(&redirect.url)
            .form(&[("token_ws", redirect.token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(back.status(), StatusCode::SEE_OTHER);
        let fields = query(back.headers()["location"].to_str().unwrap());
        assert_eq!(
            fields
                .keys()
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>(),
            ["TBK_ID_SESION", "TBK_ORDEN_COMPRA"].into()
        );
        assert!(matches!(
            f.client.commit(&redirect.token).await,
            Err(ProviderError::Refused(_))
        ));
    }

    #[tokio::test]
    async fn a_commit_whose_answer_is_lost_is_retried_and_settles_as_webpay_decided() {
        let f = fixture(Duration::from_secs(60)).await;
        let redirect = f.start(7_000).await;
        f.pay(&redirect.token, &redirect.url, test_cards::VISA_APPROVED)
            .await;
        // The first commit lands at Webpay, its answer never arrives.
        f.faults.drop_commit_answers(1);
        let committed = f.client.commit(&redirect.token).await.unwrap();
        assert!(matches!(committed.outcome, ChargeOutcome::Approved { .. }));
        assert_eq!(committed.card_last4.as_deref(), Some("6623"));
    }

    #[tokio::test]
    async fn refunds_reverse_the_whole_or_nullify_a_part_never_beyond_the_balance() {
        let f = fixture(Duration::from_secs(60)).await;
        let whole = f.start(10_000).await;
        f.pay(&whole.token, &whole.url, test_cards::VISA_APPROVED)
            .await;
        f.client.commit(&whole.token).await.unwrap();
        assert_eq!(
            f.client.refund(&whole.token, "r1", 10_000).await.unwrap(),
            "REVERSED"
        );
        assert_eq!(
            f.client.transaction(&whole.token).await.unwrap().status,
            "REVERSED"
        );

        let part = f.start(10_000).await;
        f.pay(&part.token, &part.url, test_cards::VISA_APPROVED)
            .await;
        f.client.commit(&part.token).await.unwrap();
        let first = f.client.refund(&part.token, "r2", 4_000).await.unwrap();
        assert!(first.starts_with("NULLIFIED:"), "{first}");
        let tx = f.client.transaction(&part.token).await.unwrap();
        assert_eq!(
            (tx.status.as_str(), tx.balance),
            ("PARTIALLY_NULLIFIED", Some(6_000.0))
        );
        assert!(matches!(
            f.client.refund(&part.token, "r3", 6_001).await,
            Err(ProviderError::Refused(_))
        ));
        f.client.refund(&part.token, "r4", 6_000).await.unwrap();
        assert_eq!(
            f.client.transaction(&part.token).await.unwrap().status,
            "NULLIFIED"
        );
    }

    #[tokio::test]
    async fn wrong_credentials_and_bad_values_are_refused_naming_what_to_fix() {
        let f = fixture(Duration::from_secs(60)).await;
        let stranger = client(&f.base, "not-the-secret");
        let refused = stranger
            .start(&Start {
                buy_order: "B1",
                session_id: "s",
                amount: 1000,
                return_url: RETURN_URL,
            })
            .await;
        match refused {
            Err(ProviderError::Refused(message)) => {
                assert!(message.contains("WEBPAY_API_KEY_SECRET"), "{message}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let too_long = f
            .client
            .start(&Start {
                buy_order: &"9".repeat(27),
                session_id: "s",
                amount: 1000,
                return_url: RETURN_URL,
            })
            .await;
        match too_long {
            Err(ProviderError::Refused(message)) => {
                assert!(message.contains("buy_order"), "{message}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
