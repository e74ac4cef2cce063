//! The order service over gRPC and RabbitMQ, with a real catalog, against the real
//! Postgres and RabbitMQ.

mod helpers;
mod projection;
mod relay;

use helpers::as_caller;
use helpers::{customer, eventually, factura_buyer, line, spawn};
use order::{
    commands::{self, CommandError, Metadata},
    domain::Status,
};
use proto::{
    events::v1::{DteIssued, PaymentCaptured, PaymentFailed, PaymentRefunded},
    order::v1::{
        Buyer, CancelOrderRequest, GetOrderRequest, ListOrderEventsRequest, PlaceOrderRequest,
    },
};
use tonic::Code;
use tonic_types::StatusExt as _;

fn violation_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn placing_an_order_reserves_stock_snapshots_prices_and_computes_totals() {
    let t = spawn().await;
    t.product("TAXED-1", 2990, false, 10).await;
    t.product("TAXED-2", 4201, false, 10).await;
    t.product("BOOK-1", 10000, true, 10).await;
    let user = customer();
    let order = t
        .place(
            &user,
            vec![line("taxed-1", 2), line("TAXED-2", 1), line("BOOK-1", 1)],
        )
        .await;
    assert_eq!(order.status, "pending_payment");
    assert_eq!(order.document_type, "boleta");
    assert_eq!(order.customer_id, user);
    // IVA once on the taxable sum: 10181 × 19 % = 1934.39 → 1934.
    assert_eq!(
        (order.net, order.exempt_total, order.iva, order.total),
        (10181, 10000, 1934, 22115)
    );
    assert_eq!(order.lines[0].name, "Producto TAXED-1");
    assert_eq!(order.lines[0].line_net, 5980);
    assert_eq!(t.stock("TAXED-1").await, (10, 2), "reserved, not yet sold");
    let expires = order.expires_at.unwrap().seconds - order.created_at.unwrap().seconds;
    assert_eq!(
        expires,
        15 * 60,
        "ORDER_PAYMENT_TIMEOUT defaults to 15 minutes"
    );

    // Read back by its owner and by an admin; another customer is told it does not exist.
    let get = |user: String, roles: &'static str| {
        let mut client = t.orders.clone();
        let id = order.id.clone();
        async move {
            client
                .get_order(as_caller(
                    GetOrderRequest { id, wait_for: None },
                    &user,
                    roles,
                ))
                .await
        }
    };
    assert_eq!(
        get(user.clone(), "customer").await.unwrap().into_inner(),
        order
    );
    assert!(get(customer(), "customer,admin").await.is_ok());
    assert_eq!(
        get(customer(), "customer").await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn a_factura_needs_a_valid_buyer_and_bad_input_names_the_field() {
    let t = spawn().await;
    t.product("DESK-1", 50000, false, 5).await;
    let user = customer();
    let factura = |buyer: Option<Buyer>| PlaceOrderRequest {
        lines: vec![line("DESK-1", 1)],
        buyer,
        document_type: "factura".into(),
    };
    for (buyer, field) in [
        (None, "buyer"),
        (
            Some(Buyer {
                rut: "76.369.187-5".into(),
                ..factura_buyer()
            }),
            "buyer.rut",
        ),
        (
            Some(Buyer {
                razon_social: " ".into(),
                ..factura_buyer()
            }),
            "buyer.razon_social",
        ),
        (
            Some(Buyer {
                comuna: String::new(),
                ..factura_buyer()
            }),
            "buyer.comuna",
        ),
    ] {
        let err = t.place_request(&user, factura(buyer)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert_eq!(violation_fields(&err), vec![field.to_string()]);
    }
    let err = t
        .place_request(
            &user,
            PlaceOrderRequest {
                lines: vec![line("DESK-1", 0)],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        violation_fields(&err),
        vec!["lines[0].quantity".to_string()]
    );
    // Nothing was reserved by the refused requests.
    assert_eq!(t.stock("DESK-1").await, (5, 0));

    let order = t
        .place_request(&user, factura(Some(factura_buyer())))
        .await
        .unwrap();
    assert_eq!(order.document_type, "factura");
    assert_eq!(order.buyer.unwrap().rut, "76369187-K", "normalised");

    // More than the catalog has: the catalog's verdict, with the SKU named.
    let err = t
        .place_request(
            &user,
            PlaceOrderRequest {
                lines: vec![line("DESK-1", 5)],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("DESK-1"), "{}", err.message());
}

#[tokio::test]
async fn a_customer_cancels_a_pending_order_and_the_stock_comes_back() {
    let t = spawn().await;
    t.product("LAMP-1", 15000, false, 3).await;
    let user = customer();
    let order = t.place(&user, vec![line("LAMP-1", 2)]).await;
    let cancel = |user: String| {
        let mut client = t.orders.clone();
        let id = order.id.clone();
        async move {
            client
                .cancel_order(as_caller(
                    CancelOrderRequest {
                        id,
                        reason: String::new(),
                    },
                    &user,
                    "customer",
                ))
                .await
        }
    };
    assert_eq!(cancel(customer()).await.unwrap_err().code(), Code::NotFound);
    let cancelled = cancel(user.clone()).await.unwrap().into_inner();
    assert_eq!(
        (cancelled.status.as_str(), cancelled.cancel_reason.as_str()),
        ("cancelled", "customer")
    );
    assert_eq!(cancelled.version, 2);
    // Repeating it changes nothing.
    assert_eq!(cancel(user.clone()).await.unwrap().into_inner().version, 2);
    // order.cancelled → the catalog releases the reservation.
    eventually("the reservation to be released", || async {
        (t.stock("LAMP-1").await == (3, 0)).then_some(())
    })
    .await;
    let history = t
        .orders
        .clone()
        .list_order_events(as_caller(
            ListOrderEventsRequest {
                id: order.id.clone(),
            },
            &user,
            "customer",
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let types: Vec<_> = history.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(types, ["OrderPlaced", "OrderCancelled"]);
    let metadata = history[1].metadata.as_ref().unwrap();
    assert_eq!(
        metadata.fields["user_id"].kind,
        Some(prost_types::value::Kind::StringValue(user.clone()))
    );
}

#[tokio::test]
async fn payment_and_document_events_move_the_order_through_its_life() {
    let t = spawn().await;
    t.product("CHAIR-1", 10000, false, 5).await;
    let user = customer();
    let order = t.place(&user, vec![line("CHAIR-1", 2)]).await;
    assert_eq!(order.total, 23800);
    t.publish(
        "payment.captured",
        &order.id,
        &PaymentCaptured {
            payment_id: "pay-1".into(),
            order_id: order.id.clone(),
            amount: 23800,
        },
    )
    .await;
    eventually("the order to be paid", || async {
        (t.status(&order.id).await == "paid").then_some(())
    })
    .await;
    // order.paid → the catalog turns the reservation into a sale.
    eventually("the reservation to be committed", || async {
        (t.stock("CHAIR-1").await == (3, 0)).then_some(())
    })
    .await;
    t.publish(
        "dte.issued",
        &order.id,
        &DteIssued {
            document_id: "doc-1".into(),
            order_id: order.id.clone(),
            tipo_dte: 39,
            folio: 17,
            refund_id: String::new(),
        },
    )
    .await;
    eventually("the order to be invoiced", || async {
        (t.status(&order.id).await == "invoiced").then_some(())
    })
    .await;
    t.publish(
        "payment.refunded",
        &order.id,
        &PaymentRefunded {
            refund_id: "ref-1".into(),
            payment_id: "pay-1".into(),
            order_id: order.id.clone(),
            amount: 5000,
            total_refunded: 5000,
            full: false,
        },
    )
    .await;
    let refunded = eventually("the partial refund", || async {
        let order = t.load(&order.id).await;
        (order.refunded == 5000).then_some(order)
    })
    .await;
    assert_eq!(
        refunded.status,
        Status::Invoiced,
        "a partial refund keeps it paid"
    );
}

#[tokio::test]
async fn events_the_order_state_does_not_allow_are_rejected_not_applied() {
    let t = spawn().await;
    t.product("MUG-1", 3000, false, 5).await;
    let user = customer();
    let declined = t.place(&user, vec![line("MUG-1", 1)]).await;
    t.publish(
        "payment.failed",
        &declined.id,
        &PaymentFailed {
            payment_id: "pay-x".into(),
            order_id: declined.id.clone(),
            code: "card_declined".into(),
            message: "declined".into(),
        },
    )
    .await;
    eventually("the declined order to be cancelled", || async {
        (t.status(&declined.id).await == "cancelled").then_some(())
    })
    .await;
    // A capture for a cancelled order, and a document for an unpaid one: both refused.
    t.publish(
        "payment.captured",
        &declined.id,
        &PaymentCaptured {
            payment_id: "pay-late".into(),
            order_id: declined.id.clone(),
            amount: declined.total,
        },
    )
    .await;
    let unpaid = t.place(&user, vec![line("MUG-1", 1)]).await;
    t.publish(
        "dte.issued",
        &unpaid.id,
        &DteIssued {
            document_id: "doc-x".into(),
            order_id: unpaid.id.clone(),
            tipo_dte: 39,
            folio: 1,
            refund_id: String::new(),
        },
    )
    .await;
    // A later, legal event on the same queue is applied: so the two before it were handled.
    t.publish(
        "payment.captured",
        &unpaid.id,
        &PaymentCaptured {
            payment_id: "pay-2".into(),
            order_id: unpaid.id.clone(),
            amount: unpaid.total,
        },
    )
    .await;
    eventually("the second order to be paid", || async {
        (t.status(&unpaid.id).await == "paid").then_some(())
    })
    .await;
    assert_eq!(t.status(&declined.id).await, "cancelled");
    let paid = t.load(&unpaid.id).await;
    assert_eq!(
        paid.document_id, None,
        "the early document was not recorded"
    );
    assert_eq!(paid.version, 2);
}

#[tokio::test]
async fn two_commands_at_the_same_version_never_both_apply() {
    let t = spawn().await;
    t.product("PEN-1", 1000, false, 50).await;
    let order = t.place(&customer(), vec![line("PEN-1", 1)]).await;
    // Raw appends built on the same loaded version: exactly one wins.
    let mut conn = t.pool.acquire().await.unwrap();
    let loaded = commands::load(&mut conn, &order.id).await.unwrap().unwrap();
    let attempts = ["pay-a", "pay-b"].map(|payment| {
        let pool = t.pool.clone();
        let loaded = loaded.clone();
        tokio::spawn(async move {
            let events = loaded.pay(payment, loaded.totals.total).unwrap();
            let mut tx = pool.begin().await.unwrap();
            let outcome = commands::append(
                &mut tx,
                100,
                &loaded.id,
                Some(loaded.clone()),
                &events,
                &Metadata::default(),
            )
            .await;
            if outcome.is_ok() {
                tx.commit().await.unwrap();
            }
            outcome
        })
    });
    let mut conflicts = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(order) => assert_eq!(order.version, 2),
            Err(CommandError::Conflict(_)) => conflicts += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(conflicts, 1);

    // Commands (which reload and decide again on a conflict): eight payments race for one
    // pending order; one pays it, the others are refused on the fresh state.
    let order = t.place(&customer(), vec![line("PEN-1", 1)]).await;
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let pool = t.pool.clone();
            let id = order.id.clone();
            let total = order.total;
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap();
                commands::execute(&mut conn, 100, &id, &Metadata::default(), |o| {
                    o.pay(&format!("pay-{i}"), total)
                })
                .await
            })
        })
        .collect();
    let (mut paid, mut refused) = (0, 0);
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => paid += 1,
            Err(CommandError::Illegal(_)) => refused += 1,
            Err(CommandError::Conflict(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((paid, refused), (1, 7));
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id = $1")
        .bind(&order.id)
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(events, 2, "OrderPlaced and exactly one OrderPaid");
}

#[tokio::test]
async fn an_unpaid_order_expires_after_the_payment_timeout_and_releases_its_stock() {
    let t = spawn().await;
    t.product("TENT-1", 80000, false, 4).await;
    let user = customer();
    let order = t.place(&user, vec![line("TENT-1", 3)]).await;
    let paid = t.place(&user, vec![line("TENT-1", 1)]).await;
    t.publish(
        "payment.captured",
        &paid.id,
        &PaymentCaptured {
            payment_id: "pay-1".into(),
            order_id: paid.id.clone(),
            amount: paid.total,
        },
    )
    .await;
    eventually("the second order to be paid", || async {
        (t.status(&paid.id).await == "paid").then_some(())
    })
    .await;

    // One second before the deadline: the expiry worker (every 50 ms) leaves it alone.
    t.clock.advance(chrono::Duration::seconds(15 * 60 - 1));
    let expirer = order::expiry::Expirer {
        pool: t.pool.clone(),
        clock: t.clock.clone(),
        snapshot_interval: 100,
        interval: std::time::Duration::from_millis(50),
    };
    assert_eq!(expirer.expire_due().await.unwrap(), 0);
    assert_eq!(t.status(&order.id).await, "pending_payment");

    t.clock.advance(chrono::Duration::seconds(1));
    eventually("the order to expire", || async {
        (t.status(&order.id).await == "cancelled").then_some(())
    })
    .await;
    let expired = t.load(&order.id).await;
    assert_eq!(
        expired.cancel_reason,
        Some(order::domain::CancelReason::PaymentTimeout)
    );
    assert_eq!(
        t.status(&paid.id).await,
        "paid",
        "a paid order never expires"
    );
    eventually("the expired order's stock to be released", || async {
        (t.stock("TENT-1").await == (3, 0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn snapshots_are_taken_every_interval_and_loading_from_one_equals_the_full_fold() {
    let t = helpers::spawn_with(&[("SNAPSHOT_INTERVAL", "2")]).await;
    t.product("SNAP-1", 1000, false, 5).await;
    let order = t.place(&customer(), vec![line("SNAP-1", 1)]).await;
    let mut conn = t.pool.acquire().await.unwrap();
    let pay = |o: &order::domain::Order| o.pay("pay-1", o.totals.total);
    let paid = commands::execute(&mut conn, 2, &order.id, &Metadata::default(), pay)
        .await
        .unwrap();
    let invoiced = commands::execute(&mut conn, 2, &order.id, &Metadata::default(), |o| {
        o.invoice("doc-1", 39, 1)
    })
    .await
    .unwrap();
    assert_eq!((paid.version, invoiced.version), (2, 3));
    let snapshot = order::event_store::load_snapshot(&t.pool, &order.id)
        .await
        .unwrap()
        .expect("a snapshot at version 2");
    assert_eq!(snapshot.0, 2);
    assert_eq!(snapshot.1["status"], "paid");
    // Loading uses the snapshot plus event 3; a fold of all three events agrees.
    let loaded = t.load(&order.id).await;
    let events: Vec<order::domain::OrderEvent> =
        order::event_store::read_stream(&t.pool, &order.id, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| serde_json::from_value(e.data).unwrap())
            .collect();
    let mut folded = order::domain::Order::from_events(&order.id, &events).unwrap();
    folded.updated_at = loaded.updated_at;
    assert_eq!(loaded, folded);
    assert_eq!(loaded.status, Status::Invoiced);
}

#[tokio::test]
async fn a_duplicate_delivery_of_payment_captured_changes_nothing() {
    let t = spawn().await;
    t.product("DUP-1", 1000, false, 5).await;
    let order = t.place(&customer(), vec![line("DUP-1", 1)]).await;
    let captured = PaymentCaptured {
        payment_id: "pay-1".into(),
        order_id: order.id.clone(),
        amount: order.total,
    };
    let first = t.publish("payment.captured", &order.id, &captured).await;
    t.publish_envelope(&first).await; // the same message again (the inbox drops it)
    t.publish("payment.captured", &order.id, &captured).await; // the same capture, new id
    // A later event on the same queue: once it is applied, the three before it were handled.
    t.publish(
        "dte.issued",
        &order.id,
        &DteIssued {
            document_id: "doc-1".into(),
            order_id: order.id.clone(),
            tipo_dte: 39,
            folio: 1,
            refund_id: String::new(),
        },
    )
    .await;
    let invoiced = eventually("the order to be invoiced", || async {
        let o = t.load(&order.id).await;
        (o.status == Status::Invoiced).then_some(o)
    })
    .await;
    assert_eq!(
        invoiced.version, 3,
        "OrderPlaced, one OrderPaid, OrderInvoiced"
    );
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(
        inbox, 3,
        "three distinct messages recorded, the duplicate not twice"
    );
    eventually("the stock to be committed once", || async {
        (t.stock("DUP-1").await == (4, 0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn concurrent_placements_with_one_key_make_one_order_and_hold_its_stock_once() {
    let app = spawn().await;
    app.product("KEY-1", 1000, false, 10).await;
    let user = customer();
    let request = || {
        let mut request = as_caller(
            PlaceOrderRequest {
                lines: vec![line("KEY-1", 2)],
                ..Default::default()
            },
            &user,
            "customer",
        );
        request
            .metadata_mut()
            .insert("idempotency-key", "double-click".parse().unwrap());
        request
    };
    let placed = futures::future::join_all((0..4).map(|_| {
        let mut client = app.orders.clone();
        let request = request();
        async move { client.place_order(request).await }
    }))
    .await;
    let ids: std::collections::BTreeSet<String> = placed
        .into_iter()
        .map(|r| {
            r.expect("every attempt answers with the order")
                .into_inner()
                .id
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    // The losers gave their reservations back: two units held, for the one order.
    eventually("the losers' reservations released", || async {
        (app.stock("KEY-1").await == (10, 2)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_reservation_whose_order_was_never_recorded_is_released_by_the_sweeper() {
    let app = spawn().await;
    app.product("SWEEP-1", 1000, false, 10).await;
    // A real order holds 2 units...
    let kept = app.place(&customer(), vec![line("SWEEP-1", 2)]).await;
    // ...and a placement that reserved 3 and then could not append OrderPlaced (nor
    // release: Postgres was down) left its reservation behind.
    let orphan = uuid::Uuid::now_v7().to_string();
    app.catalog
        .clone()
        .reserve_stock(platform::testing::as_service(
            proto::catalog::v1::ReserveStockRequest {
                order_id: orphan.clone(),
                lines: vec![proto::catalog::v1::StockLine {
                    sku: "SWEEP-1".into(),
                    quantity: 3,
                }],
            },
            "orderflow.catalog.v1.CatalogService",
            "order",
        ))
        .await
        .unwrap();
    assert_eq!(app.stock("SWEEP-1").await, (10, 5));
    let sweeper = |grace| order::sweeper::ReservationSweeper {
        pool: app.pool.clone(),
        catalog: app.catalog.clone(),
        minter: platform::identity::Minter::new(platform::testing::test_internal_key(), "order"),
        grace,
        interval: std::time::Duration::from_secs(60),
        timeout: std::time::Duration::from_secs(3),
    };
    // Within the grace period nothing is touched (a placement may still be under way).
    assert_eq!(
        sweeper(std::time::Duration::from_secs(120))
            .sweep_once()
            .await
            .unwrap(),
        0
    );
    assert_eq!(app.stock("SWEEP-1").await, (10, 5));
    // Past it, the orphan is released and the real order keeps its units.
    assert_eq!(
        sweeper(std::time::Duration::ZERO)
            .sweep_once()
            .await
            .unwrap(),
        1
    );
    assert_eq!(app.stock("SWEEP-1").await, (10, 2));
    assert_eq!(app.status(&kept.id).await, "pending_payment");
    // Nothing left to do the second time.
    assert_eq!(
        sweeper(std::time::Duration::ZERO)
            .sweep_once()
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_date_filter_out_of_range_is_refused_naming_it_never_read_as_absent() {
    let t = spawn().await;
    let far = prost_types::Timestamp {
        seconds: i64::MAX,
        nanos: 0,
    };
    let refused = t
        .orders
        .clone()
        .summarize_orders(as_caller(
            proto::order::v1::SummarizeOrdersRequest {
                created_from: Some(far),
                ..Default::default()
            },
            &customer(),
            "customer,admin",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(violation_fields(&refused), ["created_from"]);
}
