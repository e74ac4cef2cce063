//! The issuer's gauges follow the table: a document waiting for a folio shows at once, and
//! so does its going, however long the issuer's interval (a test binary of its own: the
//! gauges are the process's).

mod common;

use std::time::Duration;

use common::{issuer, issuing, pay};
use dte::{caf, domain::TipoDte, store};

fn gauge(name: &str) -> f64 {
    platform::testing::metric_sum(
        &platform::admin::prometheus().render(),
        name,
        &[("tipo", &TipoDte::Boleta.to_string())],
    )
}

async fn until(name: &str, wanted: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while gauge(name) != wanted {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed {} (wanted {wanted})",
            gauge(name)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_pending_folio_gauge_follows_the_documents_not_the_issuers_interval() {
    platform::admin::prometheus();
    let issuing = issuing().await;
    let shutdown = platform::CancellationToken::new();
    // An hour between rounds: only wakes and the gauges' own refresh move anything.
    tokio::spawn(
        issuing
            .clone()
            .run_issuer(Duration::from_secs(3600), shutdown.clone()),
    );
    until("dte_documents_pending_folio", 0.0).await;

    // Paid with no CAF: the document waits for its folio, and the gauge says so.
    pay(&issuing, 1).await;
    pay(&issuing, 2).await;
    issuing.wake();
    until("dte_documents_pending_folio", 2.0).await;

    // Folios arrive: both are issued and the gauge is back to 0, the folios counted.
    let today = chrono::Utc::now().date_naive();
    let xml = caf::fake(
        TipoDte::Boleta,
        1,
        50,
        &issuer().rut,
        "Orderflow SpA",
        today,
    )
    .unwrap();
    let mut tx = issuing.pool.begin().await.unwrap();
    store::insert_caf(
        &mut tx,
        uuid::Uuid::now_v7(),
        TipoDte::Boleta,
        1,
        50,
        today,
        xml.as_bytes(),
    )
    .await
    .unwrap()
    .unwrap();
    tx.commit().await.unwrap();
    issuing.wake();
    until("dte_documents_pending_folio", 0.0).await;
    until("dte_folios_remaining", 48.0).await;
    shutdown.cancel();
}
