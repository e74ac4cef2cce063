//! Orders through the gateway: place, read, cancel, list (read model), history; bad input
//! answered with problem+json naming the field.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestSuite, spawn_suite};

pub async fn product(s: &TestSuite, admin: &str, sku: &str, net_price: i64, on_hand: i64) {
    let created = s
        .call(
            Method::POST,
            "/v1/products",
            Some(admin),
            Some(json!({"sku": sku, "name": format!("Producto {sku}"), "netPrice": net_price, "onHand": on_hand})),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
}

/// Polls `GET path` until `accept` holds (the list reads the projected read model).
pub async fn eventually_listed(
    s: &TestSuite,
    path: &str,
    token: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let reply = s.call(Method::GET, path, Some(token), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        if accept(&reply.body) {
            return reply.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path}: {}",
            reply.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_customer_places_reads_lists_and_cancels_an_order() {
    let s = spawn_suite().await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "TE-VERDE-100", 2990, 10).await;
    let ana = s.customer("ana@example.cl").await;
    let beto = s.customer("beto@example.cl").await;

    let placed = s
        .call(
            Method::POST,
            "/v1/orders",
            Some(&ana),
            Some(json!({"lines": [{"sku": "TE-VERDE-100", "quantity": 3}]})),
        )
        .await;
    assert_eq!(placed.status, StatusCode::OK, "{}", placed.body);
    let order = &placed.body;
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(
        (
            order["net"].as_i64(),
            order["iva"].as_i64(),
            order["total"].as_i64()
        ),
        (Some(8970), Some(1704), Some(10674))
    );
    let id = order["id"].as_str().unwrap().to_string();

    let read = s
        .call(Method::GET, &format!("/v1/orders/{id}"), Some(&ana), None)
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["lines"][0]["lineNet"], 8970);
    s.call(Method::GET, &format!("/v1/orders/{id}"), Some(&beto), None)
        .await
        .assert_problem(404);
    s.call(Method::GET, &format!("/v1/orders/{id}"), None, None)
        .await
        .assert_problem(401);

    let listed = eventually_listed(&s, "/v1/orders", &ana, |b| {
        b["orders"].as_array().is_some_and(|o| o.len() == 1)
    })
    .await;
    assert_eq!(listed["orders"][0]["id"], id.as_str());
    let others = s.call(Method::GET, "/v1/orders", Some(&beto), None).await;
    assert!(
        others.body["orders"]
            .as_array()
            .is_none_or(|o| o.is_empty()),
        "another customer's list is empty: {}",
        others.body
    );

    let cancelled = s
        .call(
            Method::POST,
            &format!("/v1/orders/{id}:cancel"),
            Some(&ana),
            Some(json!({})),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(cancelled.body["cancelReason"], "customer");

    // Admins list everyone's orders and filter by status.
    let filtered = eventually_listed(&s, "/v1/orders?status=cancelled", &admin, |b| {
        b["orders"].as_array().is_some_and(|o| o.len() == 1)
    })
    .await;
    assert_eq!(filtered["orders"][0]["id"], id.as_str());
    s.call(Method::GET, "/v1/orders?status=lost", Some(&admin), None)
        .await
        .assert_problem(400);

    let history = s
        .call(
            Method::GET,
            &format!("/v1/orders/{id}/events"),
            Some(&ana),
            None,
        )
        .await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    let types: Vec<&str> = history.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["OrderPlaced", "OrderCancelled"]);
}

#[tokio::test]
async fn bad_orders_get_a_problem_naming_the_field_and_reserve_nothing() {
    let s = spawn_suite().await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "SILLA-1", 45000, 2).await;
    let ana = s.customer("ana@example.cl").await;
    let place = |body: Value| s.call(Method::POST, "/v1/orders", Some(&ana), Some(body));

    let factura = place(json!({
        "lines": [{"sku": "SILLA-1", "quantity": 1}],
        "documentType": "factura",
        "buyer": {"rut": "76.369.187-5", "razonSocial": "Comercial Los Andes SpA", "giro": "Comercio", "address": "Av. Apoquindo 3000", "comuna": "Las Condes"}
    }))
    .await;
    factura.assert_problem(400);
    assert_eq!(
        factura.body["errors"][0]["field"], "buyer.rut",
        "{}",
        factura.body
    );

    let no_razon = place(json!({
        "lines": [{"sku": "SILLA-1", "quantity": 1}],
        "documentType": "factura",
        "buyer": {"rut": "76.369.187-K", "giro": "Comercio", "address": "Av. Apoquindo 3000", "comuna": "Las Condes"}
    }))
    .await;
    no_razon.assert_problem(400);
    assert_eq!(no_razon.body["errors"][0]["field"], "buyer.razonSocial");

    place(json!({"lines": []})).await.assert_problem(400);
    place(json!({"lines": [{"sku": "SILLA-1", "quantity": "two"}]}))
        .await
        .assert_problem(400);
    // Well-formed, but more than the stock: 422.
    let short = place(json!({"lines": [{"sku": "SILLA-1", "quantity": 3}]})).await;
    short.assert_problem(422);
    assert!(
        short.body["detail"].as_str().unwrap().contains("SILLA-1"),
        "{}",
        short.body
    );

    let product = s
        .call(Method::GET, "/v1/products/SILLA-1", None, None)
        .await;
    assert_eq!(
        product.body["available"], 2,
        "nothing reserved: {}",
        product.body
    );
}

/// `GET /v1/orders/{id}?waitFor=<version>`: the long poll a page follows an order with.
#[tokio::test]
async fn waiting_for_an_order_answers_when_it_changes_up_to_the_sii_verdict() {
    let s = crate::helpers::spawn_suite_with(&[
        ("ORDER_WATCH_MAX_WAIT", "10s"),
        ("ORDER_WATCH_PER_USER", "1"),
    ])
    .await;
    let (_admin, ana, id) = crate::checkout::a_placed_order(&s, "WATCH-1").await;
    let order = s
        .call(Method::GET, &format!("/v1/orders/{id}"), Some(&ana), None)
        .await
        .body;
    let version = order["version"].as_i64().unwrap();
    assert_eq!(order["documentStatus"], "");

    // A wait on the current version, answered by the payment's effect (well before the
    // longest wait: the answer carries the change, which a wait that ran out would not).
    let url = format!("{}/v1/orders/{id}?waitFor={version}", s.base);
    let wait = spawn_wait(&s, &url, &ana);
    // One wait per user here: a second one is refused while the first is open.
    second_wait_refused(&s, &url, &ana).await;
    let paid = crate::checkout::pay(
        &s,
        &ana,
        &id,
        "watch-pay",
        crate::checkout::card(crate::checkout::APPROVE),
    )
    .await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    let changed = tokio::time::timeout(std::time::Duration::from_secs(9), wait)
        .await
        .expect("the wait answered with the change, not at its deadline")
        .unwrap()
        .1;
    assert!(changed["version"].as_i64().unwrap() > version, "{changed}");
    assert_ne!(changed["status"], "pending_payment", "{changed}");

    // Followed on, the order reaches its document's verdict from the SII.
    let mut current = changed;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while current["documentStatus"] != "accepted" {
        assert!(tokio::time::Instant::now() < deadline, "{current}");
        let v = current["version"].as_i64().unwrap();
        current = s
            .call(
                Method::GET,
                &format!("/v1/orders/{id}?waitFor={v}"),
                Some(&ana),
                None,
            )
            .await
            .body;
    }
    assert_eq!(current["status"], "invoiced");

    // Nothing changes: the wait answers the same order at its deadline.
    let v = current["version"].as_i64().unwrap();
    let same = s
        .call(
            Method::GET,
            &format!("/v1/orders/{id}?waitFor={v}"),
            Some(&ana),
            None,
        )
        .await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(same.body["version"], v);
}

/// A shopper following an order holds no work permit of the gateway: with room for one
/// request at work, a request still gets through while a long poll waits.
#[tokio::test]
async fn a_waiting_long_poll_does_not_crowd_out_the_gateways_work() {
    let s = crate::helpers::spawn_suite_with(&[
        ("GATEWAY_MAX_IN_FLIGHT", "1"),
        ("ORDER_WATCH_MAX_WAIT", "20s"),
        ("ORDER_WATCH_PER_USER", "1"),
    ])
    .await;
    let (_admin, ana, id) = crate::checkout::a_placed_order(&s, "WATCH-2").await;
    let url = format!("{}/v1/orders/{id}?waitFor=1", s.base);
    let wait = spawn_wait(&s, &url, &ana);
    // This user's one wait is open (a second is refused) while the read below goes through.
    second_wait_refused(&s, &url, &ana).await;
    let read = s
        .call(Method::GET, &format!("/v1/orders/{id}"), Some(&ana), None)
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let cancelled = s
        .call(
            Method::POST,
            &format!("/v1/orders/{id}:cancel"),
            Some(&ana),
            Some(json!({})),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    // The cancellation changed the order: the wait answers.
    assert_eq!(wait.await.unwrap().0, StatusCode::OK);
}

/// Starts a long poll at `url` as `token` (taken again if a probe held the user's one
/// slot); its answer's status and body.
fn spawn_wait(
    s: &TestSuite,
    url: &str,
    token: &str,
) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    let (http, url, token) = (s.http.clone(), url.to_string(), token.to_string());
    tokio::spawn(async move {
        loop {
            let reply = http.get(&url).bearer_auth(&token).send().await.unwrap();
            if reply.status() != StatusCode::TOO_MANY_REQUESTS {
                return (reply.status(), reply.json::<Value>().await.unwrap());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
}

/// Returns once a second long poll at `url` is refused with 429: the user's one wait is
/// open. A probe that gets in first holds the slot until its wait runs out
/// (ORDER_WATCH_MAX_WAIT: an abandoned request is not noticed sooner), then answers; the
/// waiting request, retrying every 50 ms, takes the slot before the next probe.
async fn second_wait_refused(s: &TestSuite, url: &str, token: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let probe = s.http.get(url).bearer_auth(token).send().await.unwrap();
        if probe.status() == StatusCode::TOO_MANY_REQUESTS {
            let body: Value = probe.json().await.unwrap();
            assert!(
                body["detail"].as_str().unwrap().contains("waitFor"),
                "{body}"
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a second wait was never refused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}
