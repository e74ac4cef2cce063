//! What a crash or a blink leaves behind is finished or undone, and nothing is doubled.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::{
    checkout::{APPROVE, card, pay, payments_of},
    helpers::{TestSuite, spawn_suite_with},
    orders::product,
};

/// What the payment role had written when it died while the processor was charging:
/// the customer's claimed Idempotency-Key and the `pending` payment it names (an hour old).
/// With `processor_completed`, the processor finished the charge (its records say so).
async fn pending_payment_left_by_a_crash(
    s: &TestSuite,
    customer_id: &str,
    order: &Value,
    key: &str,
    processor_completed: bool,
) -> uuid::Uuid {
    let order_id = order["id"].as_str().unwrap();
    let card = payment::card::Card::parse(
        APPROVE,
        12,
        2030,
        "123",
        "Ana Pérez",
        chrono::Utc::now().date_naive(),
    )
    .unwrap();
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO payment.idempotency_keys (customer_id, key, fingerprint, pending_payment) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(customer_id)
    .bind(key)
    .bind(payment::grpc::fingerprint(order_id, &card))
    .bind(id)
    .execute(&s.payment_pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO payment.payments (id, order_id, customer_id, status, amount, card_brand, card_last4, created_at) \
         VALUES ($1, $2, $3, 'pending', $4, 'visa', '4242', now() - interval '1 hour')",
    )
    .bind(id)
    .bind(order_id)
    .bind(customer_id)
    .bind(order["total"].as_i64().unwrap())
    .execute(&s.payment_pool)
    .await
    .unwrap();
    if processor_completed {
        sqlx::query(
            "INSERT INTO payment.sandbox_charges (payment_id, approved, reference) VALUES ($1, true, $2)",
        )
        .bind(id.to_string())
        .bind(format!("sbx_ch_{}", id.simple()))
        .execute(&s.payment_pool)
        .await
        .unwrap();
    }
    id
}

async fn eventually_status(s: &TestSuite, token: &str, id: &str, wanted: &[&str]) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let order = s
            .call(Method::GET, &format!("/v1/orders/{id}"), Some(token), None)
            .await;
        if wanted.contains(&order.body["status"].as_str().unwrap_or_default()) {
            return order.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order never reached {wanted:?}: {}",
            order.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_payment_left_pending_by_a_crash_is_settled_from_the_processor() {
    let s = spawn_suite_with(&[
        ("PAYMENT_RECONCILE_INTERVAL", "200ms"),
        ("PAYMENT_PROVIDER_TIMEOUT", "1s"),
        ("PAYMENT_RECONCILE_AFTER", "2s"),
    ])
    .await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "CRASH-1", 1000, 10).await;
    let ana = s.customer("ana@example.cl").await;
    let me = s.call(Method::GET, "/v1/me", Some(&ana), None).await;
    let ana_id = me.body["id"].as_str().unwrap().to_string();
    let place = || async {
        let placed = s
            .call(
                Method::POST,
                "/v1/orders",
                Some(&ana),
                Some(serde_json::json!({"lines": [{"sku": "CRASH-1", "quantity": 1}]})),
            )
            .await;
        assert_eq!(placed.status, StatusCode::OK, "{}", placed.body);
        placed.body
    };
    let charged = place().await;
    let interrupted = place().await;
    let charged_id = charged["id"].as_str().unwrap();
    let interrupted_id = interrupted["id"].as_str().unwrap();
    let captured = pending_payment_left_by_a_crash(&s, &ana_id, &charged, "crash-a", true).await;
    pending_payment_left_by_a_crash(&s, &ana_id, &interrupted, "crash-b", false).await;

    // The processor charged: the payment is captured, the order paid and invoiced, and
    // the customer's retry with the same key replays that payment (no second charge).
    eventually_status(&s, &ana, charged_id, &["invoiced"]).await;
    let retry = pay(&s, &ana, charged_id, "crash-a", card(APPROVE)).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    assert_eq!(retry.body["id"], captured.to_string());
    assert_eq!(retry.body["status"], "captured");
    let payments = payments_of(&s, &ana, charged_id).await;
    assert_eq!(payments.body["payments"].as_array().unwrap().len(), 1);

    // The charge never completed: nothing was charged, the payment failed, the key is
    // free, and the order, still payable, is paid by the retry.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let payments = payments_of(&s, &ana, interrupted_id).await;
        if payments.body["payments"][0]["status"] == "failed" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reconciled: {}",
            payments.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let order = s
        .call(
            Method::GET,
            &format!("/v1/orders/{interrupted_id}"),
            Some(&ana),
            None,
        )
        .await;
    assert_eq!(order.body["status"], "pending_payment");
    let paid = pay(&s, &ana, interrupted_id, "crash-b", card(APPROVE)).await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    assert_eq!(paid.body["status"], "captured");
    eventually_status(&s, &ana, interrupted_id, &["paid", "invoiced"]).await;
}
