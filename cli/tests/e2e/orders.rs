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
    let short = place(json!({"lines": [{"sku": "SILLA-1", "quantity": 3}]})).await;
    short.assert_problem(400);
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
