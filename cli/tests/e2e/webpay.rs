//! Webpay Plus end to end: the gateway, the payment service and the local Webpay, with
//! the test as the shopper's browser (it follows each redirect as a browser would; the
//! shop's public address `http://tienda.test` is mapped onto the test's gateway).

use std::collections::HashMap;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    checkout::{a_placed_order, card, order_reaches, pay, payments_of, place, stock_reaches},
    helpers::{TestSuite, spawn_suite_with},
};

const PUBLIC: &str = "http://tienda.test";
const VISA_APPROVED: &str = payment::webpay_sim::test_cards::VISA_APPROVED;
const MASTERCARD_REJECTED: &str = payment::webpay_sim::test_cards::MASTERCARD_REJECTED;

async fn webpay_suite() -> TestSuite {
    spawn_suite_with(&[
        ("PAYMENT_PROVIDER", "webpay"),
        ("PUBLIC_BASE_URL", PUBLIC),
        ("WEBPAY_SIM_FORM_TIMEOUT", "2s"),
    ])
    .await
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{r:?}");
    r.headers()["location"].to_str().unwrap().to_string()
}

/// `http://tienda.test/…` → the same path on the test's gateway.
fn on_gateway(s: &TestSuite, public: &str) -> String {
    let path = public
        .strip_prefix(PUBLIC)
        .unwrap_or_else(|| panic!("{public} is not on the shop's public address"));
    format!("{}{path}", s.base)
}

/// What the shopper does on Webpay's page (`fields`: the card, or the abort button);
/// returns where Webpay sends the browser back.
async fn on_webpay(redirect: &Value, fields: &[(&str, &str)]) -> String {
    let token = redirect["token"].as_str().unwrap();
    let url = redirect["url"].as_str().unwrap();
    let b = browser();
    let page = b
        .post(url)
        .form(&[("token_ws", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let mut form = vec![("token_ws", token)];
    form.extend_from_slice(fields);
    let pay_url = url.replace("/webpayserver/initTransaction", "/webpayserver/pay");
    assert!(html.contains("/webpayserver/pay"), "{html}");
    location(&b.post(pay_url).form(&form).send().await.unwrap())
}

/// Pays with a fresh key and expects Webpay's redirect.
async fn start(s: &TestSuite, token: &str, order: &str) -> Value {
    let r = pay(s, token, order, uuid::Uuid::new_v4(), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "redirect", "{}", r.body);
    assert_eq!(r.body["provider"], "webpay");
    r.body
}

fn pago(location: &str) -> String {
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect::<HashMap<String, String>>()
        .remove("pago")
        .unwrap_or_default()
}

#[tokio::test]
async fn a_shopper_pays_on_webpay_and_comes_back_to_a_paid_order_with_its_boleta() {
    let s = webpay_suite().await;
    let (admin, ana, id) = a_placed_order(&s, "WP-1").await;

    // A card is refused: this shop takes cards on Webpay's page only.
    pay(&s, &ana, &id, "k-card", card("4242424242424242"))
        .await
        .assert_problem(400);

    let key = uuid::Uuid::new_v4().to_string();
    let redirect = pay(&s, &ana, &id, &key, json!({})).await;
    assert_eq!(redirect.status, StatusCode::OK, "{}", redirect.body);
    let redirect = redirect.body;
    assert_eq!(redirect["status"], "redirect");
    assert!(
        redirect["url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    // The same key replays the same redirect.
    let again = pay(&s, &ana, &id, &key, json!({})).await;
    assert_eq!(again.body["token"], redirect["token"]);

    let back = on_webpay(&redirect, &[("card", VISA_APPROVED), ("action", "pay")]).await;
    assert!(
        back.starts_with(&format!("{PUBLIC}/v1/payments/webpay/return?token_ws=")),
        "{back}"
    );
    let returned = browser().get(on_gateway(&s, &back)).send().await.unwrap();
    let page = location(&returned);
    assert_eq!(page, format!("{PUBLIC}/pedidos/{id}?pago=aprobado"));
    // The same return again (a reload, a double click): the same page, one capture.
    let twice = browser().get(on_gateway(&s, &back)).send().await.unwrap();
    assert_eq!(location(&twice), page);

    let payments = payments_of(&s, &ana, &id).await.body["payments"].clone();
    assert_eq!(payments.as_array().unwrap().len(), 1, "{payments}");
    assert_eq!(payments[0]["status"], "captured");
    assert_eq!(payments[0]["amount"], 1190);
    assert_eq!(payments[0]["cardLast4"], "6623");
    assert_eq!(payments[0]["url"], "");
    order_reaches(&s, &ana, &id, "invoiced").await;

    // Refunds go to Webpay and are recorded once each.
    let part = s
        .call(
            Method::POST,
            &format!("/v1/orders/{id}/refunds"),
            Some(&admin),
            Some(json!({"amount": 190, "reason": "descuento"})),
        )
        .await;
    assert_eq!(part.status, StatusCode::OK, "{}", part.body);
    let rest = s
        .call(
            Method::POST,
            &format!("/v1/orders/{id}/refunds"),
            Some(&admin),
            Some(json!({"reason": "devolución"})),
        )
        .await;
    assert_eq!(rest.status, StatusCode::OK, "{}", rest.body);
    assert_eq!(rest.body["amount"], 1000);
    let payments = payments_of(&s, &ana, &id).await.body["payments"].clone();
    assert_eq!(payments[0]["refundedAmount"], 1190);
    assert_eq!(payments[0]["refunds"].as_array().unwrap().len(), 2);

    // Nothing the shop stored holds a card number.
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT row_to_json(p)::text FROM payments p UNION ALL SELECT row_to_json(r)::text FROM refunds r \
         UNION ALL SELECT row_to_json(k)::text FROM idempotency_keys k",
    )
    .fetch_all(&s.payment_pool)
    .await
    .unwrap();
    assert!(!stored.is_empty());
    assert!(
        stored.iter().all(|row| !row.contains(VISA_APPROVED)),
        "{stored:?}"
    );
}

#[tokio::test]
async fn a_rejected_card_cancels_the_order_and_returns_the_stock() {
    let s = webpay_suite().await;
    let (_admin, ana, id) = a_placed_order(&s, "WP-2").await;
    let redirect = start(&s, &ana, &id).await;
    let back = on_webpay(
        &redirect,
        &[("card", MASTERCARD_REJECTED), ("action", "pay")],
    )
    .await;
    let page = location(&browser().get(on_gateway(&s, &back)).send().await.unwrap());
    assert_eq!(pago(&page), "rechazado");
    let payments = payments_of(&s, &ana, &id).await.body["payments"].clone();
    assert_eq!(payments[0]["status"], "failed");
    assert_eq!(payments[0]["failureCode"], "card_declined");
    assert!(
        payments[0]["failureMessage"]
            .as_str()
            .unwrap()
            .contains("response_code -1"),
        "{payments}"
    );
    order_reaches(&s, &ana, &id, "cancelled").await;
    stock_reaches(&s, "WP-2", (10, 10)).await;
}

#[tokio::test]
async fn an_abort_or_a_timeout_charges_nothing_and_the_order_stays_payable() {
    let s = webpay_suite().await;
    let (_admin, ana, id) = a_placed_order(&s, "WP-3").await;

    // Aborted on Webpay's page; Webpay posts the browser back with a form.
    let redirect = start(&s, &ana, &id).await;
    let back = on_webpay(&redirect, &[("action", "abort")]).await;
    let (_, query) = back.split_once('?').unwrap();
    let returned = browser()
        .post(format!("{}/v1/payments/webpay/return", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(query.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(pago(&location(&returned)), "anulado");
    let payments = payments_of(&s, &ana, &id).await.body["payments"].clone();
    assert_eq!(payments[0]["status"], "failed");
    assert_eq!(payments[0]["failureCode"], "webpay_aborted");
    let order = s
        .call(Method::GET, &format!("/v1/orders/{id}"), Some(&ana), None)
        .await;
    assert_eq!(order.body["status"], "pending_payment");

    // A forged abort (the right token, the wrong session) is refused.
    let second = start(&s, &ana, &id).await;
    let forged = browser()
        .get(format!(
            "{}/v1/payments/webpay/return?TBK_TOKEN={}&TBK_ORDEN_COMPRA=X&TBK_ID_SESION=Y",
            s.base,
            second["token"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);

    // Left alone on Webpay's form until it times out: only the buy order comes back.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let b = browser();
    let timed_out = location(
        &b.post(second["url"].as_str().unwrap())
            .form(&[("token_ws", second["token"].as_str().unwrap())])
            .send()
            .await
            .unwrap(),
    );
    assert!(!timed_out.contains("token_ws") && timed_out.contains("TBK_ORDEN_COMPRA"));
    let page = location(&b.get(on_gateway(&s, &timed_out)).send().await.unwrap());
    assert_eq!(pago(&page), "expirado");
    let order = s
        .call(Method::GET, &format!("/v1/orders/{id}"), Some(&ana), None)
        .await;
    assert_eq!(order.body["status"], "pending_payment");

    // Still payable: a third attempt pays. The browser then comes back claiming an abort
    // (a stale tab, a forged link with the right names): Webpay is asked, and what it says
    // stands: the payment is captured, not failed.
    let third = start(&s, &ana, &id).await;
    on_webpay(&third, &[("card", VISA_APPROVED), ("action", "pay")]).await;
    let buy_order: String =
        sqlx::query_scalar("SELECT webpay_buy_order FROM payments WHERE webpay_token = $1")
            .bind(third["token"].as_str().unwrap())
            .fetch_one(&s.payment_pool)
            .await
            .unwrap();
    let claimed_abort = browser()
        .get(format!(
            "{}/v1/payments/webpay/return?TBK_TOKEN={}&TBK_ORDEN_COMPRA={buy_order}&TBK_ID_SESION={id}",
            s.base,
            third["token"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(pago(&location(&claimed_abort)), "aprobado");
    order_reaches(&s, &ana, &id, "paid").await;

    // A return naming nothing is a 400 naming the field.
    let empty = s
        .call(Method::GET, "/v1/payments/webpay/return", None, None)
        .await;
    empty.assert_problem(400);
    assert_eq!(
        empty.body["errors"][0]["field"], "token_ws",
        "{}",
        empty.body
    );
}

#[tokio::test]
async fn a_commit_lost_in_transit_is_retried_and_a_return_that_never_came_is_reconciled() {
    let s = spawn_suite_with(&[
        ("PAYMENT_PROVIDER", "webpay"),
        ("PUBLIC_BASE_URL", PUBLIC),
        ("PAYMENT_PROVIDER_TIMEOUT", "2s"),
        ("PAYMENT_RECONCILE_AFTER", "3s"),
        ("PAYMENT_RECONCILE_INTERVAL", "500ms"),
    ])
    .await;
    let (_, faults) = s
        .webpay_sim
        .clone()
        .expect("the suite runs the local Webpay");
    let admin = s.admin("admin@tienda.cl").await;
    crate::orders::product(&s, &admin, "WP-4", 1000, 10).await;
    let ana = s.customer("ana@example.cl").await;

    // The commit reaches Webpay, its answer is lost: retried, it settles once.
    let first = place(&s, &ana, "WP-4", 1).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let redirect = start(&s, &ana, &first).await;
    let back = on_webpay(&redirect, &[("card", VISA_APPROVED), ("action", "pay")]).await;
    faults.drop_commit_answers(1);
    let page = location(&browser().get(on_gateway(&s, &back)).send().await.unwrap());
    assert_eq!(pago(&page), "aprobado");
    order_reaches(&s, &ana, &first, "paid").await;

    // The shopper paid, but the browser never came back: the reconciler commits it.
    let second = place(&s, &ana, "WP-4", 1).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let redirect = start(&s, &ana, &second).await;
    on_webpay(&redirect, &[("card", VISA_APPROVED), ("action", "pay")]).await;
    order_reaches(&s, &ana, &second, "paid").await;
    let payments = payments_of(&s, &ana, &second).await.body["payments"].clone();
    assert_eq!(payments[0]["status"], "captured", "{payments}");

    // The shopper closed the tab on Webpay's form: released, nothing charged, payable.
    let third = place(&s, &ana, "WP-4", 1).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    start(&s, &ana, &third).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let payments = payments_of(&s, &ana, &third).await.body["payments"].clone();
        if payments[0]["status"] == "failed" {
            assert_eq!(payments[0]["failureCode"], "processor_unknown");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{payments}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    start(&s, &ana, &third).await;
}
