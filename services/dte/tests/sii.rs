//! Submission to the SII against the local simulator, over real HTTP in the SII's formats:
//! the client takes a seed and a token, uploads (DTEUpload or the boleta API), and follows
//! the status; the simulator judges like the SII. Also the worker against Postgres.

mod common;

use std::{sync::Arc, time::Duration};

use common::{issuer, issuing, pay};

use chrono::NaiveDate;
use dte::{
    caf::{self, Caf},
    certificate,
    domain::{self, Item, Receptor, Sale},
    issuing::Issuing,
    sii::{
        SiiClient, SiiError, SiiStatus,
        client::{HttpSiiClient, SiiEndpoints},
        sim::SiiSimulator,
        worker::{self, WorkerSettings},
    },
    xml::{
        document::{self, Stamp},
        latin1,
        signature::SigningIdentity,
    },
};
use platform::{CancellationToken, chile::Rut};

fn identity() -> SigningIdentity {
    let (key, der) = certificate::self_signed("12345678-5").unwrap();
    certificate::identity(&key, der).unwrap()
}

/// A running simulator and its endpoints.
async fn simulator() -> (SiiEndpoints, CancellationToken) {
    let sim = SiiSimulator::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = sim.url();
    let shutdown = CancellationToken::new();
    tokio::spawn(sim.run_until_stopped(shutdown.clone()));
    (SiiEndpoints::at(&url), shutdown)
}

fn client(endpoints: SiiEndpoints, identity: SigningIdentity, company: &str) -> HttpSiiClient {
    HttpSiiClient::new(
        endpoints,
        identity,
        Rut::parse(company).unwrap(),
        issuer().rut_envia,
        Duration::from_secs(10),
    )
    .unwrap()
}

fn envelope(identity: &SigningIdentity, receptor: Option<Receptor>, folio: i64) -> (Vec<u8>, bool) {
    let sale = Sale {
        receptor,
        items: vec![Item {
            code: "SKU-1".into(),
            name: "Té verde".into(),
            quantity: 2,
            unit_price: 1000,
            exempt: false,
            amount: 2000,
        }],
    };
    let content = domain::document_for_sale(sale);
    let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let caf = Caf::parse(
        caf::fake(content.tipo, 1, 100, &issuer().rut, "Orderflow SpA", today)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let now = today.and_hms_opt(10, 0, 0).unwrap();
    let dte = document::build_dte(
        &issuer(),
        &content,
        folio,
        today,
        now,
        &Stamp {
            caf_element: &caf.caf_element,
            caf_key: &caf.private_key,
        },
        identity,
    )
    .unwrap();
    (
        document::build_envelope(&issuer(), &[dte], now, identity).unwrap(),
        content.tipo.is_boleta(),
    )
}

fn buyer(giro: &str) -> Receptor {
    Receptor {
        rut: "97975000-5".into(),
        razon_social: "Compras Ltda.".into(),
        giro: giro.into(),
        address: "San Diego 2222".into(),
        comuna: "Santiago".into(),
    }
}

/// Follows an upload to its final status; the first answer is `REC`, as the SII's.
async fn final_status(client: &HttpSiiClient, track: &str, boleta: bool) -> SiiStatus {
    let first = client.status(track, boleta).await.unwrap();
    assert_eq!(
        first,
        SiiStatus::Pending {
            estado: "REC".into()
        }
    );
    client.status(track, boleta).await.unwrap()
}

#[tokio::test]
async fn boletas_and_facturas_are_accepted_and_a_missing_giro_is_an_objection() {
    let (endpoints, _stop) = simulator().await;
    let identity = identity();
    let sii = client(endpoints, identity.clone(), "76369187-K");

    let (boleta, is_boleta) = envelope(&identity, None, 1);
    assert!(is_boleta);
    let track = sii.submit(&boleta, true).await.unwrap();
    assert!(track.parse::<u64>().is_ok(), "{track}");
    assert!(matches!(
        final_status(&sii, &track, true).await,
        SiiStatus::Accepted { .. }
    ));

    let (factura, is_boleta) = envelope(&identity, Some(buyer("Comercio")), 2);
    assert!(!is_boleta);
    let track = sii.submit(&factura, false).await.unwrap();
    assert!(matches!(
        final_status(&sii, &track, false).await,
        SiiStatus::Accepted { .. }
    ));

    let (no_giro, _) = envelope(&identity, Some(buyer("")), 3);
    let track = sii.submit(&no_giro, false).await.unwrap();
    match final_status(&sii, &track, false).await {
        SiiStatus::AcceptedWithObjections { detail } => {
            assert!(detail.contains("1 reparos"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_simulator_rejects_what_the_sii_would() {
    let (endpoints, _stop) = simulator().await;
    let identity = identity();
    let sii = client(endpoints.clone(), identity.clone(), "76369187-K");

    // One peso changed after signing: the envelope signature fails (RFR).
    let (boleta, _) = envelope(&identity, None, 1);
    let text =
        latin1::decode(&boleta).replace("<MntTotal>2380</MntTotal>", "<MntTotal>2381</MntTotal>");
    let track = sii
        .submit(&latin1::encode(&text).unwrap(), true)
        .await
        .unwrap();
    match final_status(&sii, &track, true).await {
        SiiStatus::Rejected { detail } => assert!(detail.starts_with("RFR"), "{detail}"),
        other => panic!("{other:?}"),
    }

    // An EnvioDTE through the boleta API is a schema error (RSC).
    let (factura, _) = envelope(&identity, Some(buyer("Comercio")), 2);
    let track = sii.submit(&factura, true).await.unwrap();
    match final_status(&sii, &track, true).await {
        SiiStatus::Rejected { detail } => assert!(detail.starts_with("RSC"), "{detail}"),
        other => panic!("{other:?}"),
    }

    // Sent on behalf of another company than the Carátula's (RCT).
    let other = client(endpoints.clone(), identity.clone(), "97975000-5");
    let track = other.submit(&factura, false).await.unwrap();
    match final_status(&other, &track, false).await {
        SiiStatus::Rejected { detail } => assert!(detail.starts_with("RCT"), "{detail}"),
        other => panic!("{other:?}"),
    }

    // A token request whose seed was changed after signing is refused.
    let http = reqwest::Client::new();
    let seed_doc = http
        .get(format!("{}/boleta.electronica.semilla", endpoints.boleta))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let seed = dte::sii::protocol::element_text(&seed_doc, "SEMILLA").unwrap();
    let signed = identity
        .sign_enveloped(&dte::sii::protocol::get_token_request(&seed))
        .unwrap()
        .replace(&seed, "000000000000");
    let answer = http
        .post(format!("{}/boleta.electronica.token", endpoints.boleta))
        .body(signed)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        dte::sii::protocol::element_text(&answer, "ESTADO").unwrap(),
        "-07",
        "{answer}"
    );

    // An upload without a token.
    let no_token = http
        .post(format!("{}/cgi_dte/UPL/DTEUpload", endpoints.dte))
        .body("x")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(no_token.contains("<STATUS>5</STATUS>"), "{no_token}");
}

#[tokio::test]
async fn an_unreachable_sii_is_a_transport_error() {
    let url = platform::testing::closed_port_url("http");
    let url = url.trim_end_matches('/').to_string();
    let sii = client(SiiEndpoints::at(&url), identity(), "76369187-K");
    assert!(matches!(
        sii.submit(b"<x/>", true).await,
        Err(SiiError::Transport(_))
    ));
}

/// An issuing service on a fresh database with `count` boletas issued.
async fn issued_boletas(count: usize) -> Arc<Issuing> {
    let issuing = issuing().await;
    dte::load_development_cafs(&issuing.pool, &issuer())
        .await
        .unwrap();
    for n in 1..=count {
        assert_eq!(pay(&issuing, n).await, dte::issuing::Outcome::Queued);
    }
    assert_eq!(issuing.issue_pending().await.unwrap(), count);
    issuing
}

/// One worker round; how many documents it handled.
async fn round(issuing: &Issuing, sii: &dyn SiiClient, settings: &WorkerSettings) -> usize {
    worker::step(&issuing.pool, sii, settings).await.unwrap()
}

fn settings() -> WorkerSettings {
    WorkerSettings {
        poll_interval: Duration::ZERO,
        max_backoff: Duration::from_secs(60),
        lease: Duration::ZERO,
    }
}

async fn status_of(issuing: &Issuing) -> (String, String, i32) {
    sqlx::query_as("SELECT status, track_id, sii_attempts FROM documents")
        .fetch_one(&issuing.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_worker_sends_follows_and_publishes_the_sii_verdict() {
    let issuing = issued_boletas(1).await;
    let (endpoints, _stop) = simulator().await;
    let sii = client(endpoints, issuing.identity.clone(), "76369187-K");
    round(&issuing, &sii, &settings()).await;
    let (status, track, _) = status_of(&issuing).await;
    assert_eq!(status, "submitted");
    assert!(!track.is_empty());
    // REC, then the verdict.
    round(&issuing, &sii, &settings()).await;
    assert_eq!(status_of(&issuing).await.0, "submitted");
    round(&issuing, &sii, &settings()).await;
    assert_eq!(status_of(&issuing).await.0, "accepted");
    let published: Vec<String> = sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY seq")
        .fetch_all(&issuing.pool)
        .await
        .unwrap();
    assert_eq!(published, ["dte.issued", "dte.accepted"]);
    // Nothing more to do.
    assert_eq!(round(&issuing, &sii, &settings()).await, 0);
}

#[tokio::test]
async fn one_round_sends_every_due_document_and_records_them_together() {
    let issuing = issued_boletas(3).await;
    let (endpoints, _stop) = simulator().await;
    let sii = client(endpoints, issuing.identity.clone(), "76369187-K");
    assert_eq!(round(&issuing, &sii, &settings()).await, 3);
    let sent: Vec<(String, String)> =
        sqlx::query_as("SELECT status, track_id FROM documents ORDER BY folio")
            .fetch_all(&issuing.pool)
            .await
            .unwrap();
    assert!(
        sent.iter().all(|(status, _)| status == "submitted"),
        "{sent:?}"
    );
    let tracks: std::collections::HashSet<_> = sent.iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(
        tracks.len(),
        3,
        "each document its own upload and track id: {sent:?}"
    );
    // REC for all three, then all three verdicts, each with its event.
    for _ in 0..2 {
        assert_eq!(round(&issuing, &sii, &settings()).await, 3);
    }
    let accepted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'dte.accepted'")
            .fetch_one(&issuing.pool)
            .await
            .unwrap();
    assert_eq!(accepted, 3);
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM documents")
        .fetch_all(&issuing.pool)
        .await
        .unwrap();
    assert_eq!(statuses, ["accepted"; 3]);
}

#[tokio::test]
async fn while_the_sii_is_unreachable_the_document_waits_and_backs_off() {
    let issuing = issued_boletas(1).await;
    let url = platform::testing::closed_port_url("http")
        .trim_end_matches('/')
        .to_string();
    let sii = client(
        SiiEndpoints::at(&url),
        issuing.identity.clone(),
        "76369187-K",
    );
    let backing_off = WorkerSettings {
        poll_interval: Duration::from_secs(1),
        ..settings()
    };
    round(&issuing, &sii, &backing_off).await;
    let (status, _, attempts) = status_of(&issuing).await;
    assert_eq!((status.as_str(), attempts), ("issued", 1));
    // Not due again before its back-off (2 s).
    assert_eq!(round(&issuing, &sii, &backing_off).await, 0);
    let wait: f64 =
        sqlx::query_scalar("SELECT EXTRACT(EPOCH FROM sii_next_at - now())::float8 FROM documents")
            .fetch_one(&issuing.pool)
            .await
            .unwrap();
    assert!(wait > 1.0 && wait <= 2.0, "{wait}");
}
