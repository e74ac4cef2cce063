//! The gateway's Idempotency-Key layer: replay, mismatch, in flight, per caller, and what
//! still holds when Redis is away (the services' own idempotency).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    checkout::{APPROVE, SLOW, a_placed_order, card, pay, payments_of},
    helpers::{TestSuite, spawn_suite, spawn_suite_with},
    orders::product,
};

/// `POST /v1/orders` with `key`, read raw: (status, headers, body bytes).
async fn order_with_key(
    s: &TestSuite,
    token: &str,
    key: &str,
    body: &Value,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let resp = s
        .http
        .post(format!("{}/v1/orders", s.base))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("the gateway answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn a_repeated_post_replays_the_first_response_and_a_different_body_is_422() {
    let s = spawn_suite().await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "TE-1", 1000, 10).await;
    let ana = s.customer("ana@example.cl").await;
    let body = json!({"lines": [{"sku": "TE-1", "quantity": 1}]});

    let (status, first_headers, first) = order_with_key(&s, &ana, "\"order-1\"", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(first_headers.get("idempotent-replayed").is_none());
    let (status, headers, again) = order_with_key(&s, &ana, "\"order-1\"", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first, "replayed byte for byte");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(headers["content-type"], first_headers["content-type"]);
    // One order, one reservation.
    let stock = s.call(Method::GET, "/v1/products/TE-1", None, None).await;
    assert_eq!(stock.body["available"], 9);

    // The same key for another request.
    let other = json!({"lines": [{"sku": "TE-1", "quantity": 2}]});
    let (status, headers, problem) = order_with_key(&s, &ana, "\"order-1\"", &other).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(headers["content-type"], "application/problem+json");
    let problem: Value = serde_json::from_slice(&problem).unwrap();
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");

    // Keys belong to their caller: another customer's "order-1" is a new order.
    let bea = s.customer("bea@example.cl").await;
    let (status, headers, theirs) = order_with_key(&s, &bea, "\"order-1\"", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("idempotent-replayed").is_none());
    assert_ne!(theirs, first);

    // A malformed key is refused before anything happens.
    let (status, _, problem) = order_with_key(&s, &ana, "two words", &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let problem: Value = serde_json::from_slice(&problem).unwrap();
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    let stock = s.call(Method::GET, "/v1/products/TE-1", None, None).await;
    assert_eq!(stock.body["available"], 8);
}

#[tokio::test]
async fn a_key_still_in_flight_is_409_then_replays_once_done() {
    let s = spawn_suite_with(&[
        ("PAYMENT_SANDBOX_SLOW_DELAY", "2s"),
        ("PAYMENT_PROVIDER_TIMEOUT", "10s"),
    ])
    .await;
    let (_, ana, id) = a_placed_order(&s, "CAFE-1").await;
    let id = id.as_str();

    let slow = pay(&s, &ana, id, "pay-1", card(SLOW));
    let meanwhile = async {
        // Give the first request a head start, then repeat it while it is served.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        pay(&s, &ana, id, "pay-1", card(SLOW)).await
    };
    let (first, second) = futures::future::join(slow, meanwhile).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    second.assert_problem(409);
    assert_eq!(second.body["errors"][0]["field"], "Idempotency-Key");
    assert_eq!(second.header("retry-after"), "1");

    let replay = pay(&s, &ana, id, "pay-1", card(SLOW)).await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.header("idempotent-replayed"), "true");
    assert_eq!(replay.body["id"], first.body["id"]);
}

#[tokio::test]
async fn with_redis_away_the_payment_service_still_charges_once_per_key() {
    let s = spawn_suite_with(&[("REDIS_URL", &platform::testing::closed_port_url("redis"))]).await;
    let (_, ana, id) = a_placed_order(&s, "MIEL-1").await;
    let id = id.as_str();

    let paid = pay(&s, &ana, id, "k-1", card(APPROVE)).await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    // Not replayed by the gateway (it cannot reach Redis) but by the service itself.
    let again = pay(&s, &ana, id, "k-1", card(APPROVE)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert!(again.header("idempotent-replayed").is_empty());
    assert_eq!(again.body["id"], paid.body["id"]);
    let payments = payments_of(&s, &ana, id).await;
    assert_eq!(payments.body["payments"].as_array().unwrap().len(), 1);
    let metrics = s.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_idempotency_unavailable_total ")),
        "the unguarded pass-through is counted"
    );
}

#[tokio::test]
async fn with_redis_away_the_order_service_still_places_once_per_key() {
    let s = spawn_suite_with(&[("REDIS_URL", &platform::testing::closed_port_url("redis"))]).await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "PAN-1", 1000, 10).await;
    let ana = s.customer("ana@example.cl").await;
    let body = json!({"lines": [{"sku": "PAN-1", "quantity": 2}]});
    let (first, _, first_body) = order_with_key(&s, &ana, "place-1", &body).await;
    assert_eq!(
        first,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&first_body)
    );
    let first: Value = serde_json::from_slice(&first_body).unwrap();
    // The retry (a lost response, a double click) gets the same order, not a second one.
    let (again, headers, again_body) = order_with_key(&s, &ana, "place-1", &body).await;
    assert_eq!(again, StatusCode::OK);
    assert!(
        headers.get("idempotent-replayed").is_none(),
        "not the gateway's replay"
    );
    let again: Value = serde_json::from_slice(&again_body).unwrap();
    assert_eq!(again["id"], first["id"]);
    // The same key for another order is refused naming the key.
    let other = json!({"lines": [{"sku": "PAN-1", "quantity": 3}]});
    let (refused, _, refused_body) = order_with_key(&s, &ana, "place-1", &other).await;
    assert_eq!(refused, StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = serde_json::from_slice(&refused_body).unwrap();
    assert_eq!(
        problem["errors"][0]["field"], "Idempotency-Key",
        "{problem}"
    );
    // Another customer's identical key is another placement.
    let bea = s.customer("bea@example.cl").await;
    let (bea_status, _, bea_body) = order_with_key(&s, &bea, "place-1", &body).await;
    assert_eq!(bea_status, StatusCode::OK);
    let bea_order: Value = serde_json::from_slice(&bea_body).unwrap();
    assert_ne!(bea_order["id"], first["id"]);
    // Stock: two units for Ana's one order, two for Bea's.
    let product = s.call(Method::GET, "/v1/products/PAN-1", None, None).await;
    assert_eq!(product.body["available"], 6, "{}", product.body);
}

#[tokio::test]
async fn credential_endpoints_are_never_stored_or_replayed() {
    let s = spawn_suite().await;
    s.register("ana@example.cl").await;
    let login = || {
        s.raw(
            s.http
                .post(format!("{}/v1/auth/login", s.base))
                .header("idempotency-key", "login-1")
                .json(&serde_json::json!({"email": "ana@example.cl", "password": crate::helpers::PASSWORD})),
        )
    };
    let first = login().await;
    let second = login().await;
    assert_eq!(
        (first.status, second.status),
        (StatusCode::OK, StatusCode::OK)
    );
    assert!(second.header("idempotent-replayed").is_empty());
    assert_ne!(
        first.body["refreshToken"], second.body["refreshToken"],
        "each login is its own session, not a replay"
    );
}
