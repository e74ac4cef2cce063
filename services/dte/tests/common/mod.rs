//! What the DTE service's integration tests share: an issuing service on a fresh database,
//! and a paid order as the order service announces it.
// Each test binary uses part of this module.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use dte::{domain::Issuer, issuing::Issuing};
use platform::clock::Clock;
use proto::events::v1::{Buyer, Line, OrderPaid, Totals};

/// The company of the settings' defaults.
pub fn issuer() -> Issuer {
    dte::development_issuer()
}

/// An issuing service on a fresh, migrated database, signing with the development
/// certificate (generated and kept there).
pub async fn issuing() -> Arc<Issuing> {
    let url = platform::testing::fresh_database().await.unwrap();
    let pool = dte::open_database(&url).await.unwrap();
    let identity = dte::signing_identity(
        &pool,
        &dte::CertificateSource::Development,
        &issuer().rut_envia,
    )
    .await
    .unwrap();
    Arc::new(Issuing::new(pool, issuer(), identity, Clock::system()))
}

/// `order.paid` for `order-{n}`: one line of 1 000 pesos net, a buyer without RUT.
pub fn paid(n: usize) -> OrderPaid {
    OrderPaid {
        order_id: format!("order-{n}"),
        customer_id: "customer".into(),
        payment_id: format!("payment-{n}"),
        lines: vec![Line {
            sku: "SKU-1".into(),
            name: "Té verde".into(),
            quantity: 1,
            unit_net_price: 1000,
            exempt: false,
            line_net: 1000,
        }],
        buyer: Some(Buyer::default()),
        document_type: "boleta".into(),
        totals: Some(Totals {
            net: 1000,
            exempt_total: 0,
            iva: 190,
            total: 1190,
        }),
    }
}

/// Records `order.paid` for `order-{n}` as the consumer does, in its own transaction.
pub async fn pay(issuing: &Issuing, n: usize) -> dte::issuing::Outcome {
    let mut tx = issuing.pool.begin().await.unwrap();
    let outcome = issuing
        .order_paid(&mut tx, &paid(n), &format!("event-{n}"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    outcome
}

/// `../shared/sii` beside the repository (or `ORDERFLOW_SII_REFERENCE`): the SII's schemas
/// and official sample.
pub fn sii_reference() -> PathBuf {
    let dir = std::env::var_os("ORDERFLOW_SII_REFERENCE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/sii"),
        PathBuf::from,
    );
    assert!(
        dir.join("schemas/EnvioDTE_v10.xsd").is_file(),
        "the SII reference data is not at {} (set ORDERFLOW_SII_REFERENCE)",
        dir.display()
    );
    dir
}
