//! Folio allocation against the real Postgres: gapless and unique under concurrency, moves
//! to the next CAF, and documents wait (nothing lost) when folios run out.

mod common;

use common::{issuer, issuing, pay};
use dte::{caf, domain::TipoDte, issuing::Outcome, store};
use sqlx::PgPool;

async fn upload(pool: &PgPool, tipo: TipoDte, from: i64, to: i64) {
    let today = chrono::Utc::now().date_naive();
    let xml = caf::fake(tipo, from, to, &issuer().rut, "Orderflow SpA", today).unwrap();
    let mut tx = pool.begin().await.unwrap();
    store::insert_caf(
        &mut tx,
        uuid::Uuid::now_v7(),
        tipo,
        from,
        to,
        today,
        xml.as_bytes(),
    )
    .await
    .unwrap()
    .map_err(|o| format!("overlaps {}..{}", o.folio_from, o.folio_to))
    .unwrap();
    tx.commit().await.unwrap();
}

async fn folios(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT folio FROM documents WHERE folio IS NOT NULL ORDER BY folio")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_hundred_concurrent_sales_take_one_contiguous_range_across_two_cafs() {
    let issuing = issuing().await;
    // Two CAFs with a hole between them: allocation moves from one to the next.
    upload(&issuing.pool, TipoDte::Boleta, 1, 60).await;
    upload(&issuing.pool, TipoDte::Boleta, 101, 200).await;
    let sales: Vec<_> = (0..100)
        .map(|i| {
            let issuing = issuing.clone();
            tokio::spawn(async move { pay(&issuing, i).await })
        })
        .collect();
    for sale in sales {
        assert_eq!(sale.await.unwrap(), Outcome::Queued);
    }
    // Four issuers at once, as four replicas would run.
    let issuers: Vec<_> = (0..4)
        .map(|_| {
            let issuing = issuing.clone();
            tokio::spawn(async move { issuing.issue_pending().await.unwrap() })
        })
        .collect();
    let mut issued = 0;
    for issuer in issuers {
        issued += issuer.await.unwrap();
    }
    assert_eq!(issued, 100);
    let expected: Vec<i64> = (1..=60).chain(101..=140).collect();
    assert_eq!(
        folios(&issuing.pool).await,
        expected,
        "no gap, no duplicate"
    );
    // Every issued document announced itself through the outbox.
    let announced: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE event_type = 'dte.issued'")
            .fetch_one(&issuing.pool)
            .await
            .unwrap();
    assert_eq!(announced, 100);
    // A redelivered order.paid changes nothing.
    assert_eq!(pay(&issuing, 7).await, Outcome::AlreadyDone);
    assert_eq!(folios(&issuing.pool).await.len(), 100);
}

#[tokio::test]
async fn without_folios_documents_wait_and_are_issued_when_a_caf_arrives() {
    let issuing = issuing().await;
    upload(&issuing.pool, TipoDte::Boleta, 1, 2).await;
    for i in 0..4 {
        assert_eq!(pay(&issuing, i).await, Outcome::Queued);
    }
    assert_eq!(issuing.issue_pending().await.unwrap(), 2);
    assert_eq!(folios(&issuing.pool).await, vec![1, 2]);
    let remaining = store::folios_remaining(&issuing.pool).await.unwrap();
    assert_eq!(remaining, vec![(39, 0)]);
    assert_eq!(
        store::pending_counts(&issuing.pool).await.unwrap(),
        vec![(39, 2)]
    );
    // Nothing was lost: the two wait, then take the next folios in order of arrival.
    assert_eq!(issuing.issue_pending().await.unwrap(), 0);
    upload(&issuing.pool, TipoDte::Boleta, 3, 10).await;
    assert_eq!(issuing.issue_pending().await.unwrap(), 2);
    let by_order: Vec<(String, i64)> =
        sqlx::query_as("SELECT order_id, folio FROM documents ORDER BY folio")
            .fetch_all(&issuing.pool)
            .await
            .unwrap();
    assert_eq!(
        by_order,
        vec![
            ("order-0".into(), 1),
            ("order-1".into(), 2),
            ("order-2".into(), 3),
            ("order-3".into(), 4)
        ]
    );
    assert!(
        store::pending_counts(&issuing.pool)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store::folios_remaining(&issuing.pool).await.unwrap(),
        vec![(39, 6)]
    );
}

#[tokio::test]
async fn a_document_numbered_by_an_issuer_that_died_is_finished_by_the_next() {
    let issuing = issuing().await;
    upload(&issuing.pool, TipoDte::Boleta, 1, 10).await;
    pay(&issuing, 0).await;
    // The issuer died right after numbering: the folio is the document's, nothing is built.
    sqlx::query("UPDATE folio_counters SET next_folio = 2")
        .execute(&issuing.pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE documents SET status = 'numbered', folio = 1, caf_id = (SELECT id FROM cafs), \
         fch_emis = current_date, updated_at = now() - interval '1 minute'",
    )
    .execute(&issuing.pool)
    .await
    .unwrap();
    pay(&issuing, 1).await;
    assert_eq!(issuing.issue_pending().await.unwrap(), 2);
    let issued: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT order_id, folio, status FROM documents ORDER BY folio")
            .fetch_all(&issuing.pool)
            .await
            .unwrap();
    assert_eq!(
        issued,
        vec![
            ("order-0".into(), 1, "issued".into()),
            ("order-1".into(), 2, "issued".into())
        ]
    );
}

#[tokio::test]
async fn the_development_certificate_is_generated_once_and_kept() {
    let issuing = issuing().await;
    let first = store::dev_certificate(&issuing.pool)
        .await
        .unwrap()
        .unwrap();
    let again = dte::signing_identity(
        &issuing.pool,
        &dte::CertificateSource::Development,
        &issuer().rut_envia,
    )
    .await
    .unwrap();
    assert_eq!(again.certificate_der(), first.1.as_slice());
}

#[tokio::test]
async fn a_document_that_fails_to_finish_does_not_hold_back_its_batch_and_is_retried_at_once() {
    let issuing = issuing().await;
    upload(&issuing.pool, TipoDte::Boleta, 1, 10).await;
    for n in 0..3 {
        pay(&issuing, n).await;
    }
    // Postgres refuses to store folio 2 once (a blip: the sequence is not rolled back
    // with the failed statement, so the next attempt passes).
    for statement in [
        "CREATE SEQUENCE blip",
        "CREATE FUNCTION blip_once() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.folio = 2 AND nextval('blip') = 1 THEN \
         RAISE EXCEPTION 'connection to the server was lost (simulated)'; END IF; \
         RETURN NEW; END $$",
        "CREATE TRIGGER blip BEFORE UPDATE OF status ON documents FOR EACH ROW \
         WHEN (NEW.status = 'issued') EXECUTE FUNCTION blip_once()",
    ] {
        sqlx::query(statement).execute(&issuing.pool).await.unwrap();
    }
    // One round issues all three: the others were not abandoned with the failed one, and
    // it did not wait for another issuer to find it stale.
    assert_eq!(issuing.issue_pending().await.unwrap(), 3);
    let statuses: Vec<(i64, String)> =
        sqlx::query_as("SELECT folio, status FROM documents ORDER BY folio")
            .fetch_all(&issuing.pool)
            .await
            .unwrap();
    assert_eq!(
        statuses,
        vec![
            (1, "issued".into()),
            (2, "issued".into()),
            (3, "issued".into())
        ]
    );
    let blips: i64 = sqlx::query_scalar("SELECT last_value FROM blip")
        .fetch_one(&issuing.pool)
        .await
        .unwrap();
    assert_eq!(blips, 2, "the failure happened, and the retry passed");
}
