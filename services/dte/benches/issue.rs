//! Documents per second for build + TED + signature on one core, next to one bare
//! RSA-2048 PKCS#1 v1.5 signature on the same machine (the floor), as a ratio; and the
//! envelope (its `SetDTE` signature, another RSA-2048) on top, which an envelope of many
//! documents shares: as the SII worker sends boletas, 500 to an `EnvioBOLETA`.
//!
//! `cargo bench -p dte --bench issue` (BENCH_SECONDS sets the time per measurement,
//! default 5).

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use dte::{
    caf::{self, Caf},
    certificate,
    domain::{self, Item, Receptor, Sale, TipoDte},
    xml::document::{self, Stamp},
};
use rsa::{Pkcs1v15Sign, RsaPrivateKey, pkcs8::DecodePrivateKey as _};
use sha2::{Digest as _, Sha256};

fn per_second(seconds: u64, mut f: impl FnMut()) -> (f64, Duration) {
    // Warm up, then count whole runs in the window.
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        f();
        n += 1;
    }
    let elapsed = start.elapsed();
    (n as f64 / elapsed.as_secs_f64(), elapsed / n as u32)
}

/// A development CAF of `tipo` with a million folios.
fn dev_caf(tipo: TipoDte, issuer: &dte::domain::Issuer, today: NaiveDate) -> anyhow::Result<Caf> {
    Ok(Caf::parse(
        caf::fake(tipo, 1, 1_000_000, &issuer.rut, "Orderflow SpA", today)?.as_bytes(),
    )?)
}

/// Three lines, as a typical order.
fn content_items() -> Vec<Item> {
    (1..=3)
        .map(|i| Item {
            code: format!("SKU-{i}"),
            name: format!("Producto número {i}"),
            quantity: i,
            unit_price: 4_990,
            exempt: false,
            amount: i * 4_990,
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let issuer = dte::development_issuer();
    let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let caf = dev_caf(TipoDte::Factura, &issuer, today)?;
    let (key_pem, der) = certificate::self_signed("12345678-5")?;
    let identity = certificate::identity(&key_pem, der)?;
    let content = domain::document_for_sale(Sale {
        receptor: Some(Receptor {
            rut: "97975000-5".into(),
            razon_social: "Compras Ltda.".into(),
            giro: "Comercio".into(),
            address: "San Diego 2222".into(),
            comuna: "Santiago".into(),
        }),
        items: content_items(),
    });
    let now = today.and_hms_opt(12, 0, 0).unwrap();
    let mut folio = 0;
    let stamp = Stamp {
        caf_element: &caf.caf_element,
        caf_key: &caf.private_key,
    };
    let (docs, doc_time) = per_second(seconds, || {
        folio += 1;
        document::build_dte(&issuer, &content, folio, today, now, &stamp, &identity)
            .expect("builds");
    });
    let (enveloped, enveloped_time) = per_second(seconds, || {
        folio += 1;
        let dte = document::build_dte(
            &issuer,
            &content,
            folio,
            today,
            now,
            &Stamp {
                caf_element: &caf.caf_element,
                caf_key: &caf.private_key,
            },
            &identity,
        )
        .expect("builds");
        document::build_envelope(&issuer, &[dte], now, &identity).expect("wraps");
    });
    // Boletas as the worker sends them: each signed on its own, then an EnvioBOLETA of the
    // schema's 500 signed once over all of them.
    let boleta_caf = dev_caf(TipoDte::Boleta, &issuer, today)?;
    let boleta_content = domain::document_for_sale(Sale {
        receptor: None,
        items: content_items(),
    });
    let boleta_stamp = Stamp {
        caf_element: &boleta_caf.caf_element,
        caf_key: &boleta_caf.private_key,
    };
    let mut boleta_folio = 0;
    let mut boletas = Vec::with_capacity(dte::sii::worker::MAX_BOLETAS_PER_ENVELOPE);
    let (_, boleta_time) = per_second(seconds, || {
        boleta_folio += 1;
        let dte = document::build_dte(
            &issuer,
            &boleta_content,
            boleta_folio,
            today,
            now,
            &boleta_stamp,
            &identity,
        )
        .expect("builds");
        if boletas.len() < dte::sii::worker::MAX_BOLETAS_PER_ENVELOPE {
            boletas.push(dte);
        }
    });
    let (_, batch_time) = per_second(seconds, || {
        document::build_envelope(&issuer, &boletas, now, &identity).expect("wraps");
    });
    let batched_time = boleta_time + batch_time / boletas.len() as u32;
    // What checking an envelope costs (the SII simulator and `dte verify` do it per upload).
    let sample = {
        let dte = document::build_dte(&issuer, &content, 1, today, now, &stamp, &identity)?;
        document::build_envelope(&issuer, &[dte], now, &identity)?
    };
    let (verified, verify_time) = per_second(seconds, || {
        assert!(dte::verify::verify(&sample).expect("verifies").valid());
    });
    let key = RsaPrivateKey::from_pkcs8_pem(&key_pem)?;
    let digest = Sha256::digest(b"the floor: one bare RSA-2048 signature");
    let (sigs, sig_time) = per_second(seconds, || {
        key.sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
            .expect("signs");
    });
    println!("dte issue, one core:");
    println!("  RSA-2048 sign/s                        {sigs:>8.1}   ({sig_time:?} each)");
    println!("  documents/s (build + TED + signature)  {docs:>8.1}   ({doc_time:?} each)");
    println!(
        "  documents/s in an envelope of their own {enveloped:>7.1}   ({enveloped_time:?} each)"
    );
    println!("  envelopes verified/s                   {verified:>8.1}   ({verify_time:?} each)");
    println!(
        "  EnvioBOLETA of {} boletas           {:>8.1} ms   ({batched_time:?} a boleta with its share)",
        boletas.len(),
        batch_time.as_secs_f64() * 1000.0
    );
    println!(
        "  one document costs {:.2}× one RSA-2048 signature ({:.2}× with an envelope of its own, which signs once more)",
        doc_time.as_secs_f64() / sig_time.as_secs_f64(),
        enveloped_time.as_secs_f64() / sig_time.as_secs_f64()
    );
    println!(
        "  one boleta with its share of an EnvioBOLETA of {} costs {:.2}× one RSA-2048 signature",
        boletas.len(),
        batched_time.as_secs_f64() / sig_time.as_secs_f64()
    );
    Ok(())
}
