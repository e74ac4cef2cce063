//! `orderflow loadgen` against the whole suite: it signs shoppers up, runs the mix, sees
//! checkouts complete, writes its report, and fails the run when errors pass the threshold.

use std::time::Duration;

use cli::loadgen::{Mix, Options};

use crate::helpers::{PASSWORD, spawn_suite_with};

fn options(base: &str) -> Options {
    Options {
        url: base.to_string(),
        users: 3,
        rate: None,
        duration: Duration::from_secs(2),
        requests: None,
        think: Duration::ZERO,
        mix: Mix {
            browse: 2,
            checkout: 1,
            read: 1,
        },
        admin_email: Some("admin@tienda.cl".into()),
        admin_password: Some(PASSWORD.into()),
        max_error_ratio: 0.0,
        json: false,
        report: None,
        spawn: false,
        invoice_window: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn a_closed_loop_run_completes_checkouts_and_writes_its_report() {
    let s = spawn_suite_with(&[]).await;
    s.admin("admin@tienda.cl").await;
    let dir = std::env::temp_dir().join(format!("loadgen-{}", uuid::Uuid::new_v4()));
    let summary = cli::loadgen::run(Options {
        report: Some(dir.clone()),
        ..options(&s.base)
    })
    .await
    .expect("the run completes");
    assert!(summary.passed, "{}", summary.json);
    assert_eq!(summary.json["total"]["errors"], 0, "{}", summary.json);
    assert!(
        summary.json["checkouts"]["paid"].as_u64().unwrap() > 0,
        "{}",
        summary.json
    );
    // Complete checkouts: the tax document was issued and the order invoiced.
    assert!(
        summary.json["checkouts"]["invoiced"].as_u64().unwrap() > 0,
        "{}",
        summary.json
    );
    let ops: Vec<&str> = summary.json["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["operation"].as_str().unwrap())
        .collect();
    for op in ["list", "search", "detail", "place", "pay"] {
        assert!(ops.contains(&op), "{op} never ran: {ops:?}");
    }
    let html = std::fs::read_to_string(dir.join("report.html")).expect("a report");
    assert!(html.contains("<svg") && html.contains("Latency over time"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_open_loop_run_with_errors_over_the_threshold_fails() {
    // One request at a time: the rest are shed with 503 and counted, never fatal.
    let s = spawn_suite_with(&[("GATEWAY_MAX_IN_FLIGHT", "1")]).await;
    s.admin("admin@tienda.cl").await;
    let summary = cli::loadgen::run(Options {
        rate: Some(1000.0),
        requests: Some(300),
        mix: Mix {
            browse: 1,
            checkout: 0,
            read: 0,
        },
        max_error_ratio: 0.0,
        ..options(&s.base)
    })
    .await
    .expect("errors do not stop the run");
    let errors = summary.json["total"]["errors"].as_u64().unwrap();
    assert!(errors > 0 && !summary.passed, "{}", summary.json);
    let shed: u64 = summary.json["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["errors"]["503"].as_u64())
        .sum();
    assert_eq!(
        shed, errors,
        "every error is a classified 503: {}",
        summary.json
    );
    assert_eq!(summary.json["mode"], "open");
}

#[tokio::test]
async fn checkouts_invoiced_after_the_window_are_reported_late_not_lost() {
    // No folios at first: paid orders wait for their boletas until a CAF arrives.
    let s = spawn_suite_with(&[("DTE_DEVELOPMENT_CAFS", "false")]).await;
    let admin = s.admin("admin@tienda.cl").await;
    let window = Duration::from_secs(4);
    let run = cli::loadgen::run(Options {
        duration: Duration::from_secs(1),
        mix: Mix {
            browse: 0,
            checkout: 1,
            read: 0,
        },
        max_error_ratio: 1.0,
        invoice_window: window,
        ..options(&s.base)
    });
    let upload_late = async {
        // Past the window of every checkout of the run (placed in its first second), well
        // before twice it.
        tokio::time::sleep(Duration::from_millis(5500)).await;
        let issuer = dte::development_issuer();
        let caf = dte::caf::fake(
            dte::domain::TipoDte::Boleta,
            1,
            1000,
            &issuer.rut,
            &issuer.razon_social,
            chrono::Utc::now().date_naive(),
        )
        .unwrap();
        let uploaded = s
            .http
            .post(format!("{}/v1/dte/cafs", s.base))
            .bearer_auth(&admin)
            .header("content-type", "application/xml")
            .body(caf)
            .send()
            .await
            .unwrap();
        assert_eq!(uploaded.status(), 200);
    };
    let (summary, ()) = futures::future::join(run, upload_late).await;
    let summary = summary.expect("the run completes");
    let checkouts = &summary.json["checkouts"];
    let paid = checkouts["paid"].as_u64().unwrap();
    assert!(paid > 0, "{}", summary.json);
    assert_eq!(
        checkouts["invoiced"].as_u64().unwrap(),
        paid,
        "{}",
        summary.json
    );
    assert_eq!(
        checkouts["late"].as_u64().unwrap(),
        paid,
        "{}",
        summary.json
    );
    assert_eq!(checkouts["not_invoiced"], 0, "{}", summary.json);
    assert_eq!(checkouts["invoice_window_s"], 4.0);
}
