//! Documents per second for build + TED + signatures on one core, next to one bare
//! RSA-2048 PKCS#1 v1.5 signature on the same machine (the floor), as a ratio.
//!
//! A document costs one TED signature (the CAF's RSA-512 key) and two RSA-2048 signatures
//! (the `Documento`'s and the envelope's `SetDTE`), plus XML building and C14N, so the best
//! possible ratio is about 0.5. `cargo bench -p dte --bench issue` (BENCH_SECONDS sets the
//! time per measurement, default 5).

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use dte::{
    caf::{self, Caf},
    certificate,
    domain::{self, Issuer, Item, Receptor, Sale, TipoDte},
    xml::document::{self, Stamp},
};
use platform::chile::Rut;
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

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let issuer = Issuer {
        rut: Rut::parse("76369187-K").unwrap(),
        razon_social: "Orderflow SpA".into(),
        giro: "Venta por internet".into(),
        acteco: 479100,
        address: "Av. Providencia 1234".into(),
        comuna: "Providencia".into(),
        ciudad: "Santiago".into(),
        rut_envia: Rut::parse("12345678-5").unwrap(),
        fch_resol: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        nro_resol: 0,
    };
    let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let caf = Caf::parse(
        caf::fake(TipoDte::Factura, 1, 1_000_000, &issuer.rut, "Orderflow SpA", today)?.as_bytes(),
    )?;
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
        items: (1..=3)
            .map(|i| Item {
                code: format!("SKU-{i}"),
                name: format!("Producto número {i}"),
                quantity: i,
                unit_price: 4_990,
                exempt: false,
                amount: i * 4_990,
            })
            .collect(),
    });
    let now = today.and_hms_opt(12, 0, 0).unwrap();
    let mut folio = 0;
    let (docs, doc_time) = per_second(seconds, || {
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
    let key = RsaPrivateKey::from_pkcs8_pem(&key_pem)?;
    let digest = Sha256::digest(b"the floor: one bare RSA-2048 signature");
    let (sigs, sig_time) = per_second(seconds, || {
        key.sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
            .expect("signs");
    });
    println!("dte issue (build + TED + Documento and SetDTE signatures, one core):");
    println!("  documents/s      {docs:>10.1}   ({doc_time:?} each)");
    println!("  RSA-2048 sign/s  {sigs:>10.1}   ({sig_time:?} each)");
    println!(
        "  ratio documents/s ÷ signatures/s = {:.3} (two RSA-2048 signatures per document: 0.5 is the ceiling)",
        docs / sigs
    );
    Ok(())
}
