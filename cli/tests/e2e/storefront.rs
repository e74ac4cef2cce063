//! The storefront in a real browser (Playwright driving Debian's Chromium): a new
//! customer registers, searches, fills the cart, pays a boleta on Webpay's page and comes
//! back to watch the order reach "aceptado por el SII", then downloads the PDF and the
//! XML, which are checked here. The browser script is `web/tests/storefront.mjs`; its
//! screenshots land in `target/web/`.

use std::{path::PathBuf, process::Command};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::spawn_suite_with;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Starts the suite with `overrides` on a known port (the browser's origin is the shop's
/// `PUBLIC_BASE_URL`), with products to buy, runs `web/tests/<script>` against it and
/// returns what it printed; screenshots go to `target/web/<shots>/`. `env` is passed to
/// the script.
async fn in_chromium(
    script: &str,
    shots: &str,
    overrides: &[(&str, &str)],
    env: &[(&str, String)],
    dead_letter: bool,
) -> String {
    let tools = platform::testing::npm_tools(
        &root().join("target/test-tools/node-web"),
        &["playwright-core@1.65.1", "@axe-core/playwright@4.14.1"],
    );
    let addr = platform::testing::free_listen_addr();
    let base = format!("http://{addr}");
    let mut settings = vec![
        ("GATEWAY_ADDR", addr.to_string()),
        ("PUBLIC_BASE_URL", base.clone()),
    ];
    settings.extend(overrides.iter().map(|(k, v)| (*k, v.to_string())));
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = spawn_suite_with(&settings).await;
    let admin = s.admin("admin@tienda.cl").await;
    for (sku, name, price, on_hand) in [
        ("CAFE-GRANO", "Café de grano 250 g", 8000, 5),
        ("CAFE-MOLIDO", "Café molido 250 g", 6000, 5),
        ("TE-VERDE", "Té verde", 3000, 5),
        ("ULTIMA", "Yerba mate (última unidad)", 4000, 1),
    ] {
        let created = s
            .call(
                Method::POST,
                "/v1/products",
                Some(&admin),
                Some(json!({"sku": sku, "name": name, "netPrice": price, "onHand": on_hand, "category": "bebidas"})),
            )
            .await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    }
    if dead_letter {
        // A message the DTE service cannot read: it lands in the dte dead-letter queue.
        let queues = s
            .call(Method::GET, "/v1/dead-letter-queues", Some(&admin), None)
            .await
            .body;
        let dte = queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|q| q["queue"].as_str())
            .find(|q| q.ends_with("dte"))
            .unwrap()
            .to_string();
        let broker = platform::amqp::Broker::new(&platform::testing::amqp_url(), "unused");
        broker
            .channel()
            .await
            .unwrap()
            .basic_publish(
                "".into(),
                dte.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                b"not an event envelope",
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    let modules = tools
        .parent()
        .and_then(|m| m.parent())
        .expect("node_modules/.bin sits in the tools' directory")
        .to_path_buf();
    let (script, shots) = (
        root().join("web/tests").join(script),
        root().join("target/web").join(shots),
    );
    // Only this run's screenshots.
    std::fs::remove_dir_all(&shots).ok();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let run = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .envs(env)
            .env("TOOLS", modules)
            .env("BASE_URL", base)
            .env("SCREENSHOTS", shots)
            .env("CARD", payment::webpay_sim::test_cards::VISA_APPROVED)
            .env(
                "REJECTED_CARD",
                payment::webpay_sim::test_cards::MASTERCARD_REJECTED,
            )
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "the browser journey failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    drop(s);
    stdout
}

#[tokio::test]
async fn a_shopper_buys_pays_on_webpay_and_downloads_the_boleta_in_chromium() {
    let stdout = in_chromium(
        "storefront.mjs",
        "journey",
        &[("PAYMENT_PROVIDER", "webpay")],
        &[],
        false,
    )
    .await;
    let total = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TOTAL "))
        .expect("the script reports the total");
    // 8000 + 6000 net + IVA = 16660.
    assert_eq!(total, "$16.660");

    // The PDF is a PDF carrying the order's total; the XML verifies.
    let shots = root().join("target/web/journey");
    let pdf = std::fs::read(shots.join("boleta.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"), "not a PDF");
    // Its text is uncompressed Helvetica: the total as the document prints it.
    assert!(
        pdf.windows(b"($ 16.660)".len()).any(|w| w == b"($ 16.660)"),
        "the PDF does not show the total"
    );
    let xml = shots.join("boleta.xml");
    let verified = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["dte", "verify"])
        .arg(&xml)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    let xml = std::fs::read(&xml).unwrap();
    assert!(
        String::from_utf8_lossy(&xml).contains("<MntTotal>16660</MntTotal>"),
        "the boleta's total"
    );
}

#[tokio::test]
async fn with_the_sandbox_a_shopper_pays_by_card_with_the_keyboard_alone() {
    // Access tokens of 65 s: the page refreshes them silently within seconds.
    in_chromium(
        "card.mjs",
        "card",
        &[
            ("PAYMENT_PROVIDER", "sandbox"),
            ("IAM_ACCESS_TOKEN_TTL", "65s"),
        ],
        &[],
        false,
    )
    .await;
}

#[tokio::test]
async fn the_back_office_runs_products_orders_and_refunds_and_refuses_customers() {
    in_chromium(
        "admin.mjs",
        "admin",
        &[("PAYMENT_PROVIDER", "sandbox")],
        &[],
        false,
    )
    .await;
    let pdf = std::fs::read(root().join("target/web/admin/nota-de-credito.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"), "not a PDF");
}

#[tokio::test]
async fn the_back_office_runs_the_dashboard_cafs_documents_verification_and_users() {
    // The CAFs the admin uploads: one for this shop's facturas, one of another company.
    let dir = root().join("target/web/admin-docs-input");
    std::fs::create_dir_all(&dir).unwrap();
    let today = chrono::Utc::now().date_naive();
    let ours = platform::chile::Rut::parse("76369187-K").unwrap();
    let theirs = platform::chile::Rut::parse("97975000-5").unwrap();
    let caf = dir.join("caf-33.xml");
    let foreign = dir.join("caf-otra-empresa.xml");
    let factura = dte::domain::TipoDte::Factura;
    std::fs::write(
        &caf,
        dte::caf::fake(factura, 200_001, 200_050, &ours, "Orderflow SpA", today).unwrap(),
    )
    .unwrap();
    std::fs::write(
        &foreign,
        dte::caf::fake(
            dte::domain::TipoDte::Boleta,
            5000,
            5001,
            &theirs,
            "Otra",
            today,
        )
        .unwrap(),
    )
    .unwrap();
    in_chromium(
        "admin-docs.mjs",
        "admin-docs",
        &[("PAYMENT_PROVIDER", "sandbox")],
        &[
            ("CAF_FILE", caf.display().to_string()),
            ("FOREIGN_CAF_FILE", foreign.display().to_string()),
        ],
        true,
    )
    .await;
    // What the browser downloaded is the signed boleta, as `orderflow dte verify` sees it.
    let xml = root().join("target/web/admin-docs/boleta.xml");
    let verified = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["dte", "verify"])
        .arg(&xml)
        .output()
        .unwrap();
    assert!(verified.status.success(), "the downloaded boleta verifies");
    let tampered = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["dte", "verify"])
        .arg(root().join("target/web/admin-docs/boleta-alterada.xml"))
        .output()
        .unwrap();
    assert!(!tampered.status.success(), "the altered copy does not");
}

#[tokio::test]
async fn the_back_office_receives_accepts_and_claims_suppliers_documents() {
    use dte::sii::sim::SiiSimulator;
    // A SII the supplier sends its facturas to, and the suite registers its verdicts on.
    let sim = SiiSimulator::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let endpoints = dte::sii::client::SiiEndpoints::at(&sim.url());
    let stop_sim = platform::CancellationToken::new();
    tokio::spawn(sim.run_until_stopped(stop_sim.clone()));
    let us = dte::development_issuer().rut.to_string();
    let supplier = dte::testing::Supplier::new().unwrap();
    let facturas = [7, 8].map(|folio| supplier.factura(folio, &us).unwrap());
    supplier
        .send_to_sii(endpoints.clone(), &facturas, &us)
        .await
        .unwrap();
    let dir = root().join("target/web/admin-purchases-input");
    std::fs::create_dir_all(&dir).unwrap();
    let envelope = dir.join("envio-proveedor.xml");
    std::fs::write(&envelope, supplier.envelope(&facturas, &us, 2).unwrap()).unwrap();
    let not_ours = root().join("services/dte/tests/corpus/DTE--60910000-1--33--2336600.xml");
    let settings = endpoints.settings();
    let overrides: Vec<(&str, &str)> = std::iter::once(("PAYMENT_PROVIDER", "sandbox"))
        .chain(settings.iter().map(|(k, v)| (*k, v.as_str())))
        .collect();
    in_chromium(
        "admin-purchases.mjs",
        "admin-purchases",
        &overrides,
        &[
            ("ENVELOPE_FILE", envelope.display().to_string()),
            ("NOT_OURS_FILE", not_ours.display().to_string()),
        ],
        false,
    )
    .await;
    let pdf =
        std::fs::read(root().join("target/web/admin-purchases/factura-proveedor.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"), "not a PDF");
    stop_sim.cancel();
}
