//! The read model: a singleton projector, the gap, rebuilds, and lag-aware readiness.

use std::{sync::atomic::Ordering, time::Duration};

use crate::helpers::as_caller;
use chrono::Utc;
use order::{
    commands::{self, Metadata},
    domain::{DocumentType, Line, OrderEvent, totals},
    event_store,
    projector::{self, Projector},
};
use platform::CancellationToken;
use proto::order::v1::{CancelOrderRequest, ListOrdersRequest};
use sqlx::PgPool;

use crate::helpers::{customer, eventually, line, spawn};

/// The whole read model, ordered, for comparisons.
async fn read_model(pool: &PgPool) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let summaries =
        sqlx::query_scalar("SELECT to_jsonb(s) FROM order_summaries s ORDER BY order_id")
            .fetch_all(pool)
            .await
            .unwrap();
    let lines =
        sqlx::query_scalar("SELECT to_jsonb(l) FROM order_lines l ORDER BY order_id, line_no")
            .fetch_all(pool)
            .await
            .unwrap();
    (summaries, lines)
}

async fn caught_up(pool: &PgPool) {
    eventually("the projector to catch up", || async {
        (event_store::lag(pool, projector::CHECKPOINT).await.unwrap() == 0).then_some(())
    })
    .await;
}

fn standby(pool: &PgPool) -> Projector {
    let mut p = Projector::new(pool.clone());
    p.standby_interval = Duration::from_millis(100);
    p
}

#[tokio::test]
async fn one_projector_leads_the_other_takes_over_and_the_read_model_equals_a_rebuild() {
    let t = spawn().await;
    t.product("SOFA-1", 199990, false, 20).await;
    let user = customer();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(t.place(&user, vec![line("SOFA-1", 1)]).await.id);
    }
    t.orders
        .clone()
        .cancel_order(as_caller(
            CancelOrderRequest {
                id: ids[0].clone(),
                reason: String::new(),
            },
            &user,
            "customer",
        ))
        .await
        .unwrap();

    let (a, b) = (standby(&t.pool), standby(&t.pool));
    let (a_leads, b_leads) = (a.leader_flag(), b.leader_flag());
    let shutdown = CancellationToken::new();
    let a_task = tokio::spawn(a.run(shutdown.clone()));
    let b_task = tokio::spawn(b.run(shutdown.clone()));
    eventually("a leader", || async {
        (a_leads.load(Ordering::SeqCst) || b_leads.load(Ordering::SeqCst)).then_some(())
    })
    .await;
    caught_up(&t.pool).await;
    // Several standby periods later, still exactly one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        a_leads.load(Ordering::SeqCst) ^ b_leads.load(Ordering::SeqCst),
        "exactly one projector leads"
    );
    let listed = t
        .orders
        .clone()
        .list_orders(as_caller(ListOrdersRequest::default(), &user, "customer"))
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[2].status, "cancelled", "newest first");
    assert_eq!(listed[0].lines[0].sku, "SOFA-1");

    // The leader dies without a word (its task and connection vanish).
    let (dead, survivor) = if a_leads.load(Ordering::SeqCst) {
        (a_task, b_leads.clone())
    } else {
        (b_task, a_leads.clone())
    };
    dead.abort();
    eventually("the standby to take over", || async {
        survivor.load(Ordering::SeqCst).then_some(())
    })
    .await;
    let late = t.place(&user, vec![line("SOFA-1", 2)]).await;
    caught_up(&t.pool).await;
    let (summaries, lines) = read_model(&t.pool).await;
    assert_eq!(summaries.len(), 4);
    assert!(summaries.iter().any(|s| s["order_id"] == late.id.as_str()));

    let rebuilt = projector::rebuild(&t.pool).await.unwrap();
    assert_eq!((rebuilt.events, rebuilt.orders), (5, 4));
    assert_eq!(
        read_model(&t.pool).await,
        (summaries, lines),
        "rebuild equals the live projection"
    );
    // The live projector carries on in the swapped-in tables.
    t.place(&user, vec![line("SOFA-1", 1)]).await;
    caught_up(&t.pool).await;
    assert_eq!(read_model(&t.pool).await.0.len(), 5);
    shutdown.cancel();
}

fn placed(customer: &str) -> OrderEvent {
    let lines = vec![Line {
        sku: "GAP-1".into(),
        name: "Gap".into(),
        quantity: 1,
        unit_net_price: 1000,
        exempt: false,
    }];
    OrderEvent::OrderPlaced {
        customer_id: customer.into(),
        totals: totals(&lines),
        lines,
        buyer: None,
        document_type: DocumentType::Boleta,
        placed_at: Utc::now(),
        expires_at: Utc::now() + chrono::Duration::minutes(15),
        currency: "CLP".into(),
    }
}

#[tokio::test]
async fn an_append_that_commits_late_is_neither_skipped_by_the_projector_nor_by_the_relay() {
    let t = spawn().await;
    let mut watcher = t.watch("order.placed").await;
    let metadata = Metadata::default();
    // The first append takes its position and stays open...
    let mut early = t.pool.begin().await.unwrap();
    commands::append(
        &mut early,
        100,
        "gap-early",
        None,
        &[placed("c-1")],
        &metadata,
    )
    .await
    .unwrap();
    // ...while a later one commits.
    let mut late = t.pool.begin().await.unwrap();
    commands::append(
        &mut late,
        100,
        "gap-late",
        None,
        &[placed("c-2")],
        &metadata,
    )
    .await
    .unwrap();
    late.commit().await.unwrap();
    let positions: Vec<(String, i64)> =
        sqlx::query_as("SELECT stream_id, global_position FROM events ORDER BY global_position")
            .fetch_all(&t.pool)
            .await
            .unwrap();
    assert_eq!(positions.len(), 1, "only the late one is committed");

    let mut conn = t.pool.acquire().await.unwrap().detach();
    assert_eq!(
        projector::project_batch(&mut conn, 100).await.unwrap(),
        0,
        "nothing passes the open transaction"
    );
    early.commit().await.unwrap();
    caught_up_with(&mut conn).await;
    let projected: Vec<String> =
        sqlx::query_scalar("SELECT order_id FROM order_summaries ORDER BY order_id")
            .fetch_all(&t.pool)
            .await
            .unwrap();
    assert_eq!(projected, ["gap-early", "gap-late"]);
    let published = [watcher.next().await, watcher.next().await];
    assert_eq!(
        published.map(|e| e.aggregate_id),
        ["gap-early".to_string(), "gap-late".to_string()],
        "published in store order: the early append first"
    );
}

async fn caught_up_with(conn: &mut sqlx::PgConnection) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        projector::project_batch(conn, 100).await.unwrap();
        if event_store::lag(&mut *conn, projector::CHECKPOINT)
            .await
            .unwrap()
            == 0
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "projection did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readiness_fails_while_the_read_model_lags_too_far() {
    let t = spawn().await;
    t.product("CUP-1", 2000, false, 10).await;
    let readiness = order::readiness(&t.pool, 2);
    assert!(readiness.report().await.0, "empty store: ready");
    let user = customer();
    for _ in 0..3 {
        t.place(&user, vec![line("CUP-1", 1)]).await;
    }
    let (ready, report) = readiness.report().await;
    assert!(!ready);
    assert!(
        report["checks"]["order.projection"]
            .as_str()
            .unwrap()
            .contains("3 events behind"),
        "{report}"
    );
    let mut conn = t.pool.acquire().await.unwrap().detach();
    caught_up_with(&mut conn).await;
    assert!(readiness.report().await.0);
}
