//! Events stored by earlier versions load as today's: `tests/fixtures/order-events-v1.json`
//! holds order events exactly as the store kept them before events carried a version (one
//! order paid, invoiced, judged by the SII and partly refunded; a factura that expired).
//! Appended verbatim, they fold into today's orders and rebuild today's read model; the
//! OrderPlaced among them (v1) gains the `currency` its v2 added (`order::versions`).

use order::event_store::{self, NewEvent};
use serde_json::{Value, json};

const BOLETA: &str = "01a20000-0000-7000-8000-000000000001";
const FACTURA: &str = "01a20000-0000-7000-8000-000000000002";

#[tokio::test]
async fn events_stored_before_versions_load_project_and_rebuild_as_todays_orders() {
    let url = platform::testing::fresh_database().await.unwrap();
    let pool = order::open_database(&url).await.unwrap();
    let fixture: Vec<Value> =
        serde_json::from_str(include_str!("fixtures/order-events-v1.json")).unwrap();
    let mut conn = pool.acquire().await.unwrap();
    for stream in [BOLETA, FACTURA] {
        let events: Vec<NewEvent> = fixture
            .iter()
            .filter(|e| e["stream_id"] == stream)
            .map(|e| NewEvent {
                event_type: e["data"]["type"].as_str().unwrap().to_string(),
                data: e["data"].clone(),
                metadata: json!({}),
            })
            .collect();
        event_store::append(&mut conn, stream, 0, &events)
            .await
            .unwrap();
    }

    // Folded, as every command and read loads an order.
    let boleta = order::commands::load(&mut conn, BOLETA)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(boleta.status, order::domain::Status::Invoiced);
    assert_eq!(boleta.totals.total, 24_040);
    assert_eq!(boleta.refunded, 1_000);
    assert_eq!(boleta.document_status.as_deref(), Some("accepted"));
    assert_eq!(boleta.version, 5);
    let factura = order::commands::load(&mut conn, FACTURA)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(factura.status, order::domain::Status::Cancelled);
    assert_eq!(factura.buyer.unwrap().rut.as_deref(), Some("76369187-K"));

    // Read through today's decoder, the v1 OrderPlaced has the field v2 added; written
    // today, an event carries its version.
    let (_, stored) = event_store::load_stream(&mut *conn, BOLETA).await.unwrap();
    assert!(
        stored[0].data.get("v").is_none(),
        "stored verbatim, never rewritten"
    );
    let placed = order::versions::decode(stored[0].data.clone()).unwrap();
    let order::domain::OrderEvent::OrderPlaced { currency, .. } = &placed else {
        panic!("{placed:?}")
    };
    assert_eq!(currency, "CLP");
    assert_eq!(order::versions::encode(&placed).unwrap()["v"], 2);

    // The read model rebuilt from them.
    order::projector::rebuild(&pool).await.unwrap();
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT order_id, status, total, refunded_amount FROM order_summaries ORDER BY order_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            (BOLETA.to_string(), "invoiced".to_string(), 24_040, 1_000),
            (FACTURA.to_string(), "cancelled".to_string(), 3_570, 0),
        ]
    );
}
