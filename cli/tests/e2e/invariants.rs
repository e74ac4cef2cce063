//! `orderflow invariants` (the fault suite's table) holds on a suite at rest, and each
//! of its checks fails, naming the culprit, when what it guards is broken.

use reqwest::StatusCode;

use crate::{
    checkout::{APPROVE, a_placed_order, card, order_reaches, pay, place},
    helpers::spawn_suite,
};

#[tokio::test]
async fn the_invariant_table_holds_at_rest_and_names_each_broken_one() {
    let s = spawn_suite().await;
    let (_, ana, paid) = a_placed_order(&s, "INVARIANTE-1").await;
    let unpaid = place(&s, &ana, "INVARIANTE-1", 2).await;
    let unpaid = unpaid["id"].as_str().unwrap().to_string();
    let payment = pay(&s, &ana, &paid, "inv-1", card(APPROVE)).await;
    assert_eq!(payment.status, StatusCode::OK, "{}", payment.body);
    order_reaches(&s, &ana, &paid, "invoiced").await;
    // At rest means after the SII's verdict too: its event is the last one dte writes.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let order = s
            .call(
                reqwest::Method::GET,
                &format!("/v1/orders/{paid}"),
                Some(&ana),
                None,
            )
            .await
            .body;
        if order["documentStatus"] == "accepted" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{order}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let common =
        platform::config::CommonSettings::from_source(&platform::config::Reader::new(&s.env))
            .unwrap();
    let stores = cli::invariants::Stores::open(&common).await.unwrap();
    let report = cli::invariants::check_until(&stores, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert!(report.passed(), "{report}");
    assert!(
        report
            .check("every paid order invoiced once")
            .unwrap()
            .detail
            .starts_with("1 paid orders"),
        "{report}"
    );

    // The suite stops (nothing repairs what follows), and each invariant is broken once.
    s.stop();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let pool = &s.payment_pool; // one database for every schema here
    // Whatever the stopped relay had not yet sent, plus the row inserted below.
    let unsent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dte.outbox WHERE published_at IS NULL")
            .fetch_one(pool)
            .await
            .unwrap();
    let unsent = format!("dte: {} events not yet published", unsent + 1);
    let statements = [
        "INSERT INTO catalog.reservations (order_id, status) VALUES ('ghost-order', 'reserved')",
        "UPDATE dte.folio_counters SET next_folio = next_folio + 1 WHERE tipo_dte = 39",
        "INSERT INTO dte.outbox (id, event_type, aggregate_id, envelope) VALUES (gen_random_uuid(), 'dte.issued', 'x', '')",
    ];
    for sql in statements {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
    for sql in [
        "UPDATE orders.order_summaries SET status = 'cancelled' WHERE order_id = $1",
        "UPDATE dte.documents SET status = 'numbered' WHERE order_id = $1",
    ] {
        sqlx::query(sql).bind(&paid).execute(pool).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO payment.payments (id, order_id, customer_id, status, amount, card_brand, card_last4) \
         VALUES (gen_random_uuid(), $1, 'someone', 'pending', 1000, 'visa', '4242')",
    )
    .bind(&unpaid)
    .execute(pool)
    .await
    .unwrap();
    let broker = platform::amqp::Broker::new(&s.env["AMQP_URL"], &s.env["AMQP_EXCHANGE"]);
    let dead = format!("{}dte.dead", s.env["AMQP_QUEUE_PREFIX"]);
    broker
        .confirm_channel()
        .await
        .unwrap()
        .basic_publish(
            "".into(),
            dead.as_str().into(),
            Default::default(),
            b"not an event",
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let report = cli::invariants::check(&stores).await.unwrap();
    for (check, named) in [
        (
            "every reservation ended as its order",
            "ghost-order: held with no order",
        ),
        ("every payment settled or failed", "still pending"),
        ("every paid order invoiced once", "is still numbered"),
        ("folios gapless", "TipoDTE 39 folio 2 was never used"),
        ("read model = event store", "in the read model"),
        ("outboxes drained", &unsent),
        ("dead-letter queues empty", &format!("{dead}: 1 messages")),
    ] {
        let found = report
            .check(check)
            .unwrap_or_else(|| panic!("no {check}: {report}"));
        assert!(!found.ok, "{check} held: {report}");
        assert!(found.detail.contains(named), "{check}: {}", found.detail);
    }
    assert!(
        report
            .check("every paid order invoiced once")
            .unwrap()
            .detail
            .contains(&paid),
        "{report}"
    );
    assert!(
        report
            .check("every payment settled or failed")
            .unwrap()
            .detail
            .contains(&unpaid),
        "{report}"
    );
    stores.close().await;
}
