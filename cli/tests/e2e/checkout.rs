//! The checkout saga end to end through the gateway: pay, decline, idempotency, refunds,
//! and who may do what. Final states are polled with a deadline, never slept for.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{Reply, TestSuite, TestVhost, spawn_suite, spawn_suite_with},
    orders::product,
};

pub const APPROVE: &str = "4242424242424242";
const DECLINE: &str = "4000000000000002";
const PROCESSOR_ERROR: &str = "4000000000000119";
pub const SLOW: &str = "4000000000003220";

pub fn card(number: &str) -> Value {
    json!({"card": {"number": number, "expMonth": 12, "expYear": 2030, "cvc": "123", "holder": "Ana Pérez"}})
}

pub async fn pay(
    s: &TestSuite,
    token: &str,
    order: &str,
    key: impl ToString,
    body: Value,
) -> Reply {
    let key = key.to_string();
    let mut req = s
        .http
        .post(format!("{}/v1/orders/{order}/payments", s.base))
        .bearer_auth(token)
        .json(&body);
    if !key.is_empty() {
        req = req.header("idempotency-key", &key);
    }
    s.raw(req).await
}

pub async fn place(s: &TestSuite, token: &str, sku: &str, quantity: i64) -> Value {
    let placed = s
        .call(
            Method::POST,
            "/v1/orders",
            Some(token),
            Some(json!({"lines": [{"sku": sku, "quantity": quantity}]})),
        )
        .await;
    assert_eq!(placed.status, StatusCode::OK, "{}", placed.body);
    placed.body
}

/// An admin, a product `sku` (1000 CLP, 10 in stock) and a customer's order of one:
/// (admin token, customer token, order id).
pub async fn a_placed_order(s: &TestSuite, sku: &str) -> (String, String, String) {
    let admin = s.admin("admin@tienda.cl").await;
    product(s, &admin, sku, 1000, 10).await;
    let ana = s.customer("ana@example.cl").await;
    let order = place(s, &ana, sku, 1).await;
    let id = order["id"].as_str().unwrap().to_string();
    (admin, ana, id)
}

/// `GET /v1/orders/{id}/payments` as `token`.
pub async fn payments_of(s: &TestSuite, token: &str, id: &str) -> Reply {
    s.call(
        Method::GET,
        &format!("/v1/orders/{id}/payments"),
        Some(token),
        None,
    )
    .await
}

/// Polls the order until its status is `status`; `paid` is also reached by `invoiced`,
/// which follows it as soon as the DTE service has issued the document.
pub async fn order_reaches(s: &TestSuite, token: &str, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let order = s
            .call(Method::GET, &format!("/v1/orders/{id}"), Some(token), None)
            .await;
        if order.body["status"] == status
            || (status == "paid" && order.body["status"] == "invoiced")
        {
            return order.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {id} never became {status}: {}",
            order.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Polls the product until `(onHand, available)` is `want`.
pub async fn stock_reaches(s: &TestSuite, sku: &str, want: (i64, i64)) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let p = s
            .call(Method::GET, &format!("/v1/products/{sku}"), None, None)
            .await
            .body;
        if (
            p["onHand"].as_i64().unwrap(),
            p["available"].as_i64().unwrap(),
        ) == want
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sku} never reached {want:?}: {p}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pay_with_the_approve_card_then_refund_partially_and_in_full() {
    let s = spawn_suite().await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "VINO-TINTO-750", 6000, 10).await;
    let ana = s.customer("ana@example.cl").await;
    let browse = s.call(Method::GET, "/v1/products?q=vino", None, None).await;
    assert_eq!(browse.body["products"][0]["sku"], "VINO-TINTO-750");
    let order = place(&s, &ana, "VINO-TINTO-750", 2).await;
    let id = order["id"].as_str().unwrap();
    assert_eq!(order["total"], 14280);

    let paid = pay(&s, &ana, id, "key-1", card(APPROVE)).await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    assert_eq!(paid.body["status"], "captured");
    assert_eq!(
        paid.body["amount"], 14280,
        "the amount comes from the order"
    );
    assert_eq!(
        (
            paid.body["cardBrand"].as_str(),
            paid.body["cardLast4"].as_str()
        ),
        (Some("visa"), Some("4242"))
    );
    order_reaches(&s, &ana, id, "paid").await;
    stock_reaches(&s, "VINO-TINTO-750", (8, 8)).await;

    // The same request again: the first result, no second charge.
    let again = pay(&s, &ana, id, "key-1", card(APPROVE)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["id"], paid.body["id"]);
    // The same key for a different request.
    let other = pay(&s, &ana, id, "key-1", json!({"card": {"number": "5555555555554444", "expMonth": 1, "expYear": 2031, "cvc": "321"}})).await;
    other.assert_problem(422);
    assert_eq!(other.body["errors"][0]["field"], "Idempotency-Key");
    // A paid order cannot be paid again.
    pay(&s, &ana, id, "key-2", card(APPROVE))
        .await
        .assert_problem(409);
    let payments = payments_of(&s, &ana, id).await;
    assert_eq!(
        payments.body["payments"].as_array().unwrap().len(),
        1,
        "{}",
        payments.body
    );

    // Refunds (admin): partial keeps the order paid, the rest refunds it; never more.
    let refunds = format!("/v1/orders/{id}/refunds");
    let refund = |body: Value| s.call(Method::POST, &refunds, Some(&admin), Some(body));
    let partial = refund(json!({"amount": 4280, "reason": "one bottle broken"})).await;
    assert_eq!(partial.status, StatusCode::OK, "{}", partial.body);
    let order = {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let o = s
                .call(Method::GET, &format!("/v1/orders/{id}"), Some(&ana), None)
                .await
                .body;
            if o["refundedAmount"] == 4280 {
                break o;
            }
            assert!(tokio::time::Instant::now() < deadline, "{o}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    assert!(
        order["status"] == "paid" || order["status"] == "invoiced",
        "{order}"
    );
    let too_much = refund(json!({"amount": 10001})).await;
    too_much.assert_problem(400);
    assert_eq!(too_much.body["errors"][0]["field"], "amount");
    let rest = refund(json!({})).await;
    assert_eq!(rest.body["amount"], 10000, "{}", rest.body);
    order_reaches(&s, &ana, id, "refunded").await;
    refund(json!({})).await.assert_problem(400);
    let payments = payments_of(&s, &ana, id).await;
    assert_eq!(payments.body["payments"][0]["refundedAmount"], 14280);
}

#[tokio::test]
async fn a_declined_card_cancels_the_order_and_returns_the_stock() {
    let s = spawn_suite().await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "QUESO-1", 8000, 5).await;
    let ana = s.customer("ana@example.cl").await;
    let order = place(&s, &ana, "QUESO-1", 3).await;
    let id = order["id"].as_str().unwrap();
    stock_reaches(&s, "QUESO-1", (5, 2)).await;
    let declined = pay(&s, &ana, id, "k", card(DECLINE)).await;
    assert_eq!(declined.status, StatusCode::OK, "{}", declined.body);
    assert_eq!(
        (
            declined.body["status"].as_str(),
            declined.body["failureCode"].as_str()
        ),
        (Some("failed"), Some("card_declined"))
    );
    let cancelled = order_reaches(&s, &ana, id, "cancelled").await;
    assert_eq!(cancelled["cancelReason"], "payment_failed");
    stock_reaches(&s, "QUESO-1", (5, 5)).await;
    // Paying a cancelled order is refused.
    pay(&s, &ana, id, "k2", card(APPROVE))
        .await
        .assert_problem(409);
}

#[tokio::test]
async fn concurrent_payments_with_different_keys_capture_once() {
    let s = spawn_suite().await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "PAN-1", 1500, 50).await;
    let ana = s.customer("ana@example.cl").await;
    let order = place(&s, &ana, "PAN-1", 1).await;
    let id = order["id"].as_str().unwrap().to_string();
    let attempts: Vec<_> = (0..6)
        .map(|i| pay(&s, &ana, &id, format!("race-{i}"), card(APPROVE)))
        .collect();
    let replies = futures::future::join_all(attempts).await;
    let captured = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let conflicts = replies
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .count();
    assert_eq!(
        (captured, conflicts),
        (1, 5),
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    order_reaches(&s, &ana, &id, "paid").await;
    let payments = payments_of(&s, &ana, &id).await;
    assert_eq!(payments.body["payments"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_cards_and_missing_keys_are_refused_before_any_charge() {
    let s = spawn_suite_with(&[("PAYMENT_PROVIDER_TIMEOUT", "400ms")]).await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "MIEL-1", 5000, 5).await;
    let ana = s.customer("ana@example.cl").await;
    let order = place(&s, &ana, "MIEL-1", 1).await;
    let id = order["id"].as_str().unwrap();
    for (body, field) in [
        (card("4242424242424241"), "card.number"),
        (
            json!({"card": {"number": APPROVE, "expMonth": 1, "expYear": 2020, "cvc": "123"}}),
            "card.expYear",
        ),
        (
            json!({"card": {"number": APPROVE, "expMonth": 12, "expYear": 2030, "cvc": "12"}}),
            "card.cvc",
        ),
    ] {
        let r = pay(&s, &ana, id, "k", body).await;
        r.assert_problem(400);
        assert_eq!(r.body["errors"][0]["field"], field, "{}", r.body);
    }
    // No card at all is well-formed (a Webpay shop takes none), but this shop needs one.
    let r = pay(&s, &ana, id, "k", json!({})).await;
    r.assert_problem(422);
    assert_eq!(r.body["errors"][0]["field"], "card", "{}", r.body);
    let no_key = pay(&s, &ana, id, "", card(APPROVE)).await;
    no_key.assert_problem(400);
    assert_eq!(no_key.body["errors"][0]["field"], "Idempotency-Key");

    // Transient processor trouble leaves the order payable and the key reusable.
    pay(&s, &ana, id, "k", card(PROCESSOR_ERROR))
        .await
        .assert_problem(503);
    pay(&s, &ana, id, "k", card(SLOW)).await.assert_problem(504);
    let payments = payments_of(&s, &ana, id).await;
    let codes: Vec<&str> = payments.body["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["failureCode"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["processor_error", "provider_timeout"]);
    assert_eq!(
        s.call(Method::GET, &format!("/v1/orders/{id}"), Some(&ana), None)
            .await
            .body["status"],
        "pending_payment"
    );
    let paid = pay(&s, &ana, id, "k", card(APPROVE)).await;
    assert_eq!(paid.body["status"], "captured", "{}", paid.body);
}

#[tokio::test]
async fn a_customer_cannot_pay_read_or_refund_another_customers_order() {
    let s = spawn_suite().await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "TE-1", 3000, 5).await;
    let ana = s.customer("ana@example.cl").await;
    let beto = s.customer("beto@example.cl").await;
    let order = place(&s, &ana, "TE-1", 1).await;
    let id = order["id"].as_str().unwrap();
    pay(&s, &beto, id, "k", card(APPROVE))
        .await
        .assert_problem(404);
    s.call(
        Method::GET,
        &format!("/v1/orders/{id}/payments"),
        Some(&beto),
        None,
    )
    .await
    .assert_problem(404);
    assert_eq!(
        pay(&s, &ana, id, "k", card(APPROVE)).await.status,
        StatusCode::OK
    );
    s.call(
        Method::POST,
        &format!("/v1/orders/{id}/refunds"),
        Some(&ana),
        Some(json!({})),
    )
    .await
    .assert_problem(403);
    s.call(
        Method::POST,
        &format!("/v1/orders/{id}/refunds"),
        Some(&beto),
        Some(json!({})),
    )
    .await
    .assert_problem(403);
    let admin_view = payments_of(&s, &admin, id).await;
    assert_eq!(admin_view.status, StatusCode::OK);
}

#[tokio::test]
async fn the_saga_completes_when_the_broker_closes_every_connection_mid_way() {
    let vhost = TestVhost::create();
    let s = spawn_suite_with(&[("AMQP_URL", vhost.url().as_str())]).await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "PISCO-1", 9000, 20).await;
    let ana = s.customer("ana@example.cl").await;
    let mut orders = Vec::new();
    for i in 0..6 {
        let order = place(&s, &ana, "PISCO-1", 1).await;
        let id = order["id"].as_str().unwrap().to_string();
        let number = if i % 2 == 0 { APPROVE } else { DECLINE };
        let paid = pay(&s, &ana, &id, format!("k-{i}"), card(number)).await;
        assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
        if i == 1 || i == 3 {
            // Mid-saga: every relay and consumer loses its connection.
            assert!(
                vhost.close_connections().await > 0,
                "the suite's connections were closed"
            );
        }
        orders.push((id, if i % 2 == 0 { "paid" } else { "cancelled" }));
    }
    for (id, status) in &orders {
        order_reaches(&s, &ana, id, status).await;
    }
    // Three sold, three released.
    stock_reaches(&s, "PISCO-1", (17, 17)).await;
    for (id, _) in &orders {
        let history = s
            .call(
                Method::GET,
                &format!("/v1/orders/{id}/events"),
                Some(&ana),
                None,
            )
            .await;
        let finals = history.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "OrderPaid" || e["type"] == "OrderCancelled")
            .count();
        assert_eq!(finals, 1, "exactly one final state: {}", history.body);
    }
}

#[tokio::test]
async fn a_capture_that_lands_after_the_order_expired_is_refunded_automatically() {
    // The order expires after 1 s; the slow card answers after 3 s.
    let s = spawn_suite_with(&[
        ("ORDER_PAYMENT_TIMEOUT", "1s"),
        ("ORDER_EXPIRY_INTERVAL", "100ms"),
        ("PAYMENT_SANDBOX_SLOW_DELAY", "3s"),
        ("PAYMENT_PROVIDER_TIMEOUT", "10s"),
    ])
    .await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "ACEITE-1", 7000, 5).await;
    let ana = s.customer("ana@example.cl").await;
    let order = place(&s, &ana, "ACEITE-1", 2).await;
    let id = order["id"].as_str().unwrap();
    let reply = pay(&s, &ana, id, "k", card(SLOW)).await;
    // Whichever side saw the other first, the outcome is the same: the order is cancelled
    // and the capture is refunded in full, on record.
    assert!(
        reply.status == StatusCode::CONFLICT || reply.status == StatusCode::OK,
        "{}",
        reply.body
    );
    order_reaches(&s, &ana, id, "cancelled").await;
    stock_reaches(&s, "ACEITE-1", (5, 5)).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let payments = payments_of(&s, &ana, id).await.body;
        let p = &payments["payments"][0];
        if p["status"] == "captured" && p["refundedAmount"] == p["amount"] {
            assert_eq!(p["refunds"].as_array().unwrap().len(), 1);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not refunded: {payments}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn beyond_its_concurrency_limit_the_gateway_sheds_load_with_503_instead_of_queueing() {
    let s = spawn_suite_with(&[
        ("GATEWAY_MAX_IN_FLIGHT", "2"),
        ("PAYMENT_SANDBOX_SLOW_DELAY", "3s"),
        ("PAYMENT_PROVIDER_TIMEOUT", "10s"),
    ])
    .await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "LENTO-1", 1000, 10).await;
    let ana = s.customer("ana@example.cl").await;
    let first = place(&s, &ana, "LENTO-1", 1).await;
    let second = place(&s, &ana, "LENTO-1", 1).await;
    // Two slow payments hold both slots...
    let slow = futures::future::join(
        pay(
            &s,
            &ana,
            first["id"].as_str().unwrap(),
            "slow-1",
            card(SLOW),
        ),
        pay(
            &s,
            &ana,
            second["id"].as_str().unwrap(),
            "slow-2",
            card(SLOW),
        ),
    );
    let probes = async {
        // ...wait until they are in flight (the metric counts them)...
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let text = s.metrics().await;
            if text
                .lines()
                .any(|l| l.starts_with("http_requests_in_flight ") && l.ends_with(" 2"))
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the slow payments never got in flight"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // ...and everything else is turned away at once, not queued behind them.
        let mut shed = Vec::new();
        for _ in 0..5 {
            shed.push(
                s.call(Method::GET, "/v1/products/LENTO-1", None, None)
                    .await,
            );
        }
        // Readiness is never shed: a busy gateway stays in its Service.
        let ready = s.call(Method::GET, "/health/ready", None, None).await;
        (shed, ready)
    };
    let ((a, b), (shed, ready)) = futures::future::join(slow, probes).await;
    for reply in &shed {
        reply.assert_problem(503);
        assert_eq!(reply.header("retry-after"), "1");
    }
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(
        (a.status, b.status),
        (StatusCode::OK, StatusCode::OK),
        "{} {}",
        a.body,
        b.body
    );
    // Capacity is back once they finish.
    let after = s
        .call(Method::GET, "/v1/products/LENTO-1", None, None)
        .await;
    assert_eq!(after.status, StatusCode::OK);
}

#[tokio::test]
async fn one_trace_spans_gateway_services_broker_and_consumers() {
    let s = spawn_suite().await;
    let (admin, ana, id) = a_placed_order(&s, "TRAZA-1").await;
    let id = id.as_str();

    // The client's trace: the payment request carries it…
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let paid = s
        .raw(
            s.http
                .post(format!("{}/v1/orders/{id}/payments", s.base))
                .bearer_auth(&ana)
                .header("idempotency-key", "traced")
                .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
                .json(&card(APPROVE)),
        )
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    order_reaches(&s, &ana, id, "paid").await;
    // …through the gateway to the payment service, its outbox, RabbitMQ, and the order
    // service's consumer, which records it on the event it appends.
    let events = s
        .call(
            Method::GET,
            &format!("/v1/orders/{id}/events"),
            Some(&admin),
            None,
        )
        .await;
    let events = events.body["events"].as_array().expect("events").clone();
    let trace_of = |kind: &str| {
        events
            .iter()
            .find(|e| e["type"] == kind)
            .and_then(|e| e["metadata"]["trace"]["traceparent"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let paid_trace = trace_of("OrderPaid");
    assert!(
        paid_trace.starts_with(&format!("00-{trace_id}-")),
        "OrderPaid carries {paid_trace:?}: {events:?}"
    );
    // The order was placed in a trace of its own (the client sent none).
    let placed_trace = trace_of("OrderPlaced");
    assert!(placed_trace.starts_with("00-"), "{events:?}");
    assert!(!placed_trace.contains(trace_id));
}

#[tokio::test]
async fn a_draining_gateway_finishes_what_is_in_flight_and_tells_clients_to_reconnect() {
    let s = spawn_suite_with(&[
        ("PAYMENT_SANDBOX_SLOW_DELAY", "2s"),
        ("PAYMENT_PROVIDER_TIMEOUT", "10s"),
    ])
    .await;
    let (_, ana, id) = a_placed_order(&s, "DRENAJE-1").await;
    // A kept-alive connection with a slow payment in flight when SIGTERM arrives.
    let slow = pay(&s, &ana, &id, "drain-1", card(SLOW));
    let stop = async {
        // Once the payment is at the processor (recorded pending), stop.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM payment.payments WHERE status = 'pending'",
            )
            .fetch_one(&s.payment_pool)
            .await
            .unwrap();
            if pending == 1 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never at the processor"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        s.stop();
    };
    let (paid, ()) = futures::future::join(slow, stop).await;
    // Finished, not cut, and the client is told not to reuse the connection.
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    assert_eq!(paid.body["status"], "captured");
    assert_eq!(paid.header("connection"), "close");
}

/// A second gateway in front of the suite's services, stopped on its own (as one replica
/// of the gateway is during a rolling restart while the services carry on).
async fn second_gateway(s: &TestSuite) -> (String, platform::CancellationToken) {
    let mut vars = s.env.clone();
    vars.insert("GATEWAY_ADDR".into(), "127.0.0.1:0".into());
    for (setting, service) in [
        ("GATEWAY_IAM_URL", "orderflow.iam.v1.IamService"),
        ("GATEWAY_CATALOG_URL", "orderflow.catalog.v1.CatalogService"),
        ("GATEWAY_ORDER_URL", "orderflow.order.v1.OrderService"),
        ("GATEWAY_PAYMENT_URL", "orderflow.payment.v1.PaymentService"),
        ("GATEWAY_DTE_URL", "orderflow.dte.v1.DteService"),
    ] {
        vars.insert(setting.into(), format!("http://{}", s.grpc_addrs[service]));
    }
    let reader = platform::config::Reader::new(&vars);
    let mut settings = gateway::GatewaySettings::from_source(&reader).unwrap();
    settings.internal_key = platform::config::CommonSettings::from_source(&reader)
        .unwrap()
        .internal_key;
    let gateway = gateway::Gateway::build(settings).await.unwrap();
    let base = format!("http://{}", gateway.local_addr());
    let stop = platform::CancellationToken::new();
    tokio::spawn(gateway.run_until_stopped(stop.clone()));
    (base, stop)
}

#[tokio::test]
async fn a_draining_gateway_answers_a_long_poll_at_once_with_the_order_as_it_is() {
    // The order service would hold the wait a minute.
    let s = spawn_suite_with(&[("ORDER_WATCH_MAX_WAIT", "60s")]).await;
    let (_, ana, id) = a_placed_order(&s, "DRENAJE-2").await;
    let (base, stop) = second_gateway(&s).await;
    let order = s
        .call(Method::GET, &format!("/v1/orders/{id}"), Some(&ana), None)
        .await
        .body;
    let version = order["version"].as_i64().unwrap();
    let wait = s
        .http
        .get(format!("{base}/v1/orders/{id}?waitFor={version}"))
        .bearer_auth(&ana)
        .send();
    let drain = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        stop.cancel();
    };
    // Answered long before the order service's wait would end, with the order as it is,
    // and the client told to reconnect (elsewhere).
    let (answer, ()) = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        futures::future::join(wait, drain),
    )
    .await
    .expect("the drain does not wait for the long poll");
    let answer = crate::helpers::read(answer.expect("answered")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["id"], id);
    assert_eq!(answer.body["version"], version);
    assert_eq!(answer.header("connection"), "close");
    // The suite's own gateway is untouched.
    assert_eq!(
        s.call(Method::GET, &format!("/v1/orders/{id}"), Some(&ana), None)
            .await
            .status,
        StatusCode::OK
    );
}
