//! The event store as the outbox: what the relay publishes, and that a broker outage
//! loses and reorders nothing.

use std::collections::{HashMap, HashSet};

use crate::helpers::as_caller;
use order::event_store;
use platform::testing::TcpProxy;
use proto::{
    events::v1::{OrderPaid, PaymentCaptured},
    order::v1::{CancelOrderRequest, PlaceOrderRequest},
};

use crate::helpers::{customer, factura_buyer, line, spawn, spawn_with};

#[tokio::test]
async fn order_events_are_published_with_their_store_ids_and_order_paid_carries_the_order() {
    let t = spawn().await;
    t.product("BIKE-1", 300000, false, 2).await;
    t.product("MAP-1", 5000, true, 2).await;
    let mut watcher = t.watch("order.*").await;
    let order = t
        .place_request(
            &customer(),
            PlaceOrderRequest {
                lines: vec![line("BIKE-1", 1), line("MAP-1", 1)],
                buyer: Some(factura_buyer()),
                document_type: "factura".into(),
            },
        )
        .await
        .unwrap();
    t.publish(
        "payment.captured",
        &order.id,
        &PaymentCaptured {
            payment_id: "pay-1".into(),
            order_id: order.id.clone(),
            amount: order.total,
        },
    )
    .await;
    let placed = watcher.next().await;
    let paid = watcher.next().await;
    assert_eq!(
        (placed.r#type.as_str(), paid.r#type.as_str()),
        ("order.placed", "order.paid")
    );
    let stored = event_store::read_stream(&t.pool, &order.id, 0)
        .await
        .unwrap();
    assert_eq!(placed.id, stored[0].event_id.to_string());
    assert_eq!(paid.id, stored[1].event_id.to_string());
    assert_eq!(paid.correlation_id, order.id);
    let body: OrderPaid = paid.payload.unwrap().to_msg().unwrap();
    assert_eq!(body.payment_id, "pay-1");
    assert_eq!(body.document_type, "factura");
    assert_eq!(body.buyer.unwrap().rut, "76369187-K");
    assert_eq!(body.lines.len(), 2);
    let totals = body.totals.unwrap();
    assert_eq!(
        (totals.net, totals.exempt_total, totals.iva, totals.total),
        (300000, 5000, 57000, 362000)
    );
}

#[tokio::test]
async fn after_the_broker_connection_drops_every_event_is_still_delivered_in_order() {
    let proxy = TcpProxy::start("127.0.0.1:5672").await.unwrap();
    let via_proxy = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    let t = spawn_with(&[("AMQP_URL", via_proxy.as_str())]).await;
    t.product("BALL-1", 990, false, 1000).await;
    let mut watcher = t.watch("order.*").await;
    let user = customer();
    let mut ids = Vec::new();
    for round in 0..4 {
        for _ in 0..5 {
            let order = t.place(&user, vec![line("BALL-1", 1)]).await;
            t.orders
                .clone()
                .cancel_order(as_caller(
                    CancelOrderRequest {
                        id: order.id.clone(),
                        reason: String::new(),
                    },
                    &user,
                    "customer",
                ))
                .await
                .unwrap();
            ids.push(order.id);
        }
        if round % 2 == 0 {
            // Mid-stream: the relay's (and the consumer's) connection is cut. The next cut
            // must find a live connection again, so wait for the service to reconnect.
            let before = proxy.connections();
            proxy.sever();
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
            while proxy.connections() == before {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the service never reconnected"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    let expected: HashSet<String> = sqlx::query_scalar("SELECT event_id::text FROM events")
        .fetch_all(&t.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(expected.len(), 40);
    let mut seen = HashSet::new();
    let mut last_type: HashMap<String, String> = HashMap::new();
    while seen.len() < expected.len() {
        let event = watcher.next().await;
        assert!(expected.contains(&event.id), "an id the store never had");
        if !seen.insert(event.id.clone()) {
            continue; // a re-send after the cut: allowed, consumers de-duplicate
        }
        // Per stream: placed strictly before cancelled.
        let previous = last_type.insert(event.aggregate_id.clone(), event.r#type.clone());
        match event.r#type.as_str() {
            "order.placed" => assert_eq!(previous, None, "{}", event.aggregate_id),
            "order.cancelled" => {
                assert_eq!(
                    previous.as_deref(),
                    Some("order.placed"),
                    "{}",
                    event.aggregate_id
                )
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(last_type.len(), ids.len());
    assert!(
        proxy.connections() >= 3,
        "the service reconnected after each cut ({} connections)",
        proxy.connections()
    );
}
