//! The catalog over gRPC, against real Postgres, Redis and RabbitMQ.

mod helpers;

use std::time::Duration;

use helpers::{as_admin, spawn_app_with};
use prost::Message as _;
use proto::{
    catalog::v1::{
        GetProductRequest, ListProductsRequest, ReservationRef, ReserveStockRequest,
        SetStockRequest, StockLine, UpdateProductRequest,
    },
    events::v1::{EventEnvelope, OrderCancelled, OrderPaid},
};
use tonic::Code;

async fn spawn_app() -> helpers::TestApp {
    spawn_app_with(&[]).await
}

/// The audience of calls to the catalog.
const CATALOG: &str = "orderflow.catalog.v1.CatalogService";

/// An internal call as the order service makes it.
fn from_order<T>(message: T) -> tonic::Request<T> {
    platform::testing::as_service(message, CATALOG, "order")
}

fn reserve(order: &str, lines: &[(&str, i64)]) -> tonic::Request<ReserveStockRequest> {
    from_order(ReserveStockRequest {
        order_id: order.into(),
        lines: lines
            .iter()
            .map(|(sku, quantity)| StockLine {
                sku: sku.to_string(),
                quantity: *quantity,
            })
            .collect(),
    })
}

#[tokio::test]
async fn fifty_concurrent_reservations_for_ten_in_stock_sell_exactly_ten() {
    let app = spawn_app().await;
    app.create("LIMITED-1", "Edición limitada", 9990, 10).await;
    let attempts: Vec<_> = (0..50)
        .map(|i| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                client
                    .reserve_stock(reserve(&format!("order-{i}"), &[("LIMITED-1", 1)]))
                    .await
            })
        })
        .collect();
    let (mut ok, mut short) = (0, 0);
    for a in attempts {
        match a.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) if s.code() == Code::FailedPrecondition => short += 1,
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
    assert_eq!((ok, short), (10, 40));
    assert_eq!(app.stock("LIMITED-1").await, (10, 10));
    let product = app
        .client
        .clone()
        .get_product(GetProductRequest {
            sku: "LIMITED-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(product.available, 0);
}

#[tokio::test]
async fn a_repeated_reservation_reserves_once_and_returns_the_same_snapshot() {
    let app = spawn_app().await;
    app.create("CAFE-1", "Café", 5033, 5).await;
    let first = app
        .client
        .clone()
        .reserve_stock(reserve("o-1", &[("CAFE-1", 2)]))
        .await
        .unwrap()
        .into_inner();
    // The price changes between the two calls: the retry still gets the first snapshot.
    app.client
        .clone()
        .update_product(as_admin(UpdateProductRequest {
            sku: "CAFE-1".into(),
            net_price: Some(9999),
            ..Default::default()
        }))
        .await
        .unwrap();
    let again = app
        .client
        .clone()
        .reserve_stock(reserve("o-1", &[("CAFE-1", 2)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    assert_eq!(first.lines[0].unit_net_price, 5033);
    assert_eq!(first.lines[0].name, "Café");
    assert_eq!(app.stock("CAFE-1").await, (5, 2));
}

#[tokio::test]
async fn a_reservation_is_all_or_nothing_and_names_the_short_skus() {
    let app = spawn_app().await;
    app.create("PLENTY-1", "Mucho", 1000, 100).await;
    app.create("SCARCE-1", "Poco", 1000, 1).await;
    let err = app
        .client
        .clone()
        .reserve_stock(reserve("o-2", &[("PLENTY-1", 3), ("SCARCE-1", 2)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("SCARCE-1") && !err.message().contains("PLENTY-1"),
        "{}",
        err.message()
    );
    assert_eq!(
        app.stock("PLENTY-1").await,
        (100, 0),
        "nothing was reserved"
    );
    let err = app
        .client
        .clone()
        .reserve_stock(reserve("o-3", &[("NOPE-1", 1)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn commit_and_release_are_idempotent() {
    let app = spawn_app().await;
    app.create("MATE-1", "Yerba", 4193, 10).await;
    app.client
        .clone()
        .reserve_stock(reserve("paid", &[("MATE-1", 3)]))
        .await
        .unwrap();
    app.client
        .clone()
        .reserve_stock(reserve("cancelled", &[("MATE-1", 2)]))
        .await
        .unwrap();
    for _ in 0..2 {
        app.client
            .clone()
            .commit_reservation(from_order(ReservationRef {
                order_id: "paid".into(),
            }))
            .await
            .unwrap();
        app.client
            .clone()
            .release_reservation(from_order(ReservationRef {
                order_id: "cancelled".into(),
            }))
            .await
            .unwrap();
    }
    // Releasing a committed reservation changes nothing either.
    app.client
        .clone()
        .release_reservation(from_order(ReservationRef {
            order_id: "paid".into(),
        }))
        .await
        .unwrap();
    assert_eq!(app.stock("MATE-1").await, (7, 0));
}

#[tokio::test]
async fn order_events_settle_reservations_once_even_when_delivered_twice() {
    let app = spawn_app().await;
    app.create("PISCO-1", "Pisco", 6714, 10).await;
    app.client
        .clone()
        .reserve_stock(reserve("o-cancel", &[("PISCO-1", 4)]))
        .await
        .unwrap();
    app.client
        .clone()
        .reserve_stock(reserve("o-paid", &[("PISCO-1", 3)]))
        .await
        .unwrap();
    assert_eq!(app.stock("PISCO-1").await, (10, 7));

    // Warm the cache with the pre-event stock.
    let before = app
        .client
        .clone()
        .get_product(GetProductRequest {
            sku: "PISCO-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.available, 3);
    let broker =
        platform::amqp::Broker::new("amqp://guest:guest@127.0.0.1:5672/%2f", &app.exchange);
    let cancelled = EventEnvelope {
        id: uuid::Uuid::now_v7().to_string(),
        r#type: "order.cancelled".into(),
        payload: Some(
            prost_types::Any::from_msg(&OrderCancelled {
                order_id: "o-cancel".into(),
                reason: "payment_timeout".into(),
            })
            .unwrap(),
        ),
        ..Default::default()
    };
    let paid = EventEnvelope {
        id: uuid::Uuid::now_v7().to_string(),
        r#type: "order.paid".into(),
        payload: Some(
            prost_types::Any::from_msg(&OrderPaid {
                order_id: "o-paid".into(),
                ..Default::default()
            })
            .unwrap(),
        ),
        ..Default::default()
    };
    platform::testing::wait_for_queue(&platform::testing::amqp_url(), &app.queue)
        .await
        .unwrap();
    let channel = broker.confirm_channel().await.unwrap();
    for (envelope, key) in [
        (&cancelled, "order.cancelled"),
        (&cancelled, "order.cancelled"),
        (&paid, "order.paid"),
        (&paid, "order.paid"),
    ] {
        channel
            .basic_publish(
                app.exchange.as_str().into(),
                key.into(),
                Default::default(),
                &envelope.encode_to_vec(),
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.stock("PISCO-1").await != (7, 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stock is {:?}",
            app.stock("PISCO-1").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The cached product is invalidated once the settlement commits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let p = app
            .client
            .clone()
            .get_product(GetProductRequest {
                sku: "PISCO-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if (p.on_hand, p.available) == (7, 7) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cache still serves {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(inbox, 2, "each event applied once");
}

#[tokio::test]
async fn search_copes_with_spanish_accents_and_plurals() {
    let app = spawn_app_with(&[("SEED_DEMO_DATA", "true")]).await;
    let search = |q: &str| {
        let mut client = app.client.clone();
        let q = q.to_string();
        async move {
            client
                .list_products(ListProductsRequest {
                    q,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .products
        }
    };
    let found = search("cafe").await;
    assert!(
        found
            .iter()
            .any(|p| p.name == "Café de grano tostado 250 g"),
        "{found:?}"
    );
    assert!(
        search("cafés")
            .await
            .iter()
            .any(|p| p.sku == "CAFE-GRANO-250")
    );
    assert!(
        search("quesos")
            .await
            .iter()
            .any(|p| p.sku == "QUESO-MANTECOSO")
    );
    assert!(search("xyzzy").await.is_empty());
}

#[tokio::test]
async fn pagination_over_120_products_returns_each_exactly_once_in_every_order() {
    let app = spawn_app().await;
    for i in 0..120 {
        app.create(
            &format!("P-{i:03}"),
            &format!("Producto {}", (i * 37) % 120),
            100 + (i % 7) * 10,
            1,
        )
        .await;
    }
    for order_by in ["name", "-name", "price", "-price"] {
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = app
                .client
                .clone()
                .list_products(ListProductsRequest {
                    order_by: order_by.into(),
                    page_size: 17,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            seen.extend(page.products.iter().map(|p| (p.sku.clone(), p.gross_price)));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let mut skus: Vec<&String> = seen.iter().map(|(s, _)| s).collect();
        assert_eq!(skus.len(), 120, "{order_by}");
        skus.sort();
        skus.dedup();
        assert_eq!(skus.len(), 120, "{order_by}: every product exactly once");
        if order_by == "price" {
            assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "sorted by price");
        }
    }
}

#[tokio::test]
async fn filters_by_category_and_price_range() {
    let app = spawn_app_with(&[("SEED_DEMO_DATA", "true")]).await;
    let page = app
        .client
        .clone()
        .list_products(ListProductsRequest {
            category: "Bebidas".into(),
            min_price: Some(5000),
            max_price: Some(8000),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!page.products.is_empty());
    assert!(
        page.products
            .iter()
            .all(|p| p.category == "Bebidas" && (5000..=8000).contains(&p.gross_price)),
        "{:?}",
        page.products
    );
}

#[tokio::test]
async fn reads_keep_working_when_redis_is_unreachable() {
    let url = platform::testing::closed_port_url("redis");
    let app = spawn_app_with(&[("REDIS_URL", url.as_str())]).await;
    app.create("OFFLINE-1", "Sin caché", 1000, 3).await;
    for _ in 0..3 {
        let p = app
            .client
            .clone()
            .get_product(GetProductRequest {
                sku: "OFFLINE-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(p.gross_price, 1190);
        assert!(
            !app.client
                .clone()
                .list_products(ListProductsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .products
                .is_empty()
        );
    }
}

#[tokio::test]
async fn stock_cannot_be_set_below_what_is_reserved() {
    let app = spawn_app().await;
    app.create("HELD-1", "Reservado", 1000, 5).await;
    app.client
        .clone()
        .reserve_stock(reserve("o-held", &[("HELD-1", 4)]))
        .await
        .unwrap();
    let err = app
        .client
        .clone()
        .set_stock(as_admin(SetStockRequest {
            sku: "HELD-1".into(),
            on_hand: 3,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let ok = app
        .client
        .clone()
        .set_stock(as_admin(SetStockRequest {
            sku: "HELD-1".into(),
            on_hand: 4,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ok.on_hand, ok.available), (4, 0));
}
