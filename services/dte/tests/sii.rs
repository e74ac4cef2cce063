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
        Processed, SiiClient, SiiError, SiiStatus, Verdict,
        client::{HttpSiiClient, SiiEndpoints},
        sim::SiiSimulator,
        worker::{self, Round, WorkerSettings},
    },
    xml::{
        document::{self, SignedDte, Stamp},
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

/// A signed document of one line, to `receptor` (a factura) or to no one (a boleta).
fn signed_dte(identity: &SigningIdentity, receptor: Option<Receptor>, folio: i64) -> SignedDte {
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
    document::build_dte(
        &issuer(),
        &content,
        folio,
        today,
        today.and_hms_opt(10, 0, 0).unwrap(),
        &Stamp {
            caf_element: &caf.caf_element,
            caf_key: &caf.private_key,
        },
        identity,
    )
    .unwrap()
}

fn sealed(identity: &SigningIdentity, dtes: &[SignedDte]) -> Vec<u8> {
    let now = NaiveDate::from_ymd_opt(2026, 11, 23)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap();
    document::build_envelope(&issuer(), dtes, now, identity).unwrap()
}

fn envelope(identity: &SigningIdentity, receptor: Option<Receptor>, folio: i64) -> (Vec<u8>, bool) {
    let dte = signed_dte(identity, receptor, folio);
    let boleta = dte.tipo.is_boleta();
    (sealed(identity, &[dte]), boleta)
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

/// A processed upload's counts.
fn processed(status: SiiStatus) -> Processed {
    match status {
        SiiStatus::Processed(p) => p,
        other => panic!("not processed: {other:?}"),
    }
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
    let p = processed(final_status(&sii, &track, true).await);
    assert_eq!((p.accepted, p.rejected, p.objections), (1, 0, 0), "{p:?}");
    assert_eq!(p.verdict_of(39, 1).0, Verdict::Accepted);

    let (factura, is_boleta) = envelope(&identity, Some(buyer("Comercio")), 2);
    assert!(!is_boleta);
    let track = sii.submit(&factura, false).await.unwrap();
    let p = processed(final_status(&sii, &track, false).await);
    assert_eq!(p.verdict_of(33, 2).0, Verdict::Accepted, "{p:?}");

    let (no_giro, _) = envelope(&identity, Some(buyer("")), 3);
    let track = sii.submit(&no_giro, false).await.unwrap();
    let p = processed(final_status(&sii, &track, false).await);
    assert!(p.summary.contains("1 reparos"), "{p:?}");
    // QueryEstUp answers with counts: they are the verdict of an upload of one.
    assert_eq!(p.verdict_of(33, 3).0, Verdict::AcceptedWithObjections);
}

#[tokio::test]
async fn in_an_envelope_of_many_boletas_each_gets_its_own_verdict() {
    let (endpoints, _stop) = simulator().await;
    let identity = identity();
    let sii = client(endpoints, identity.clone(), "76369187-K");
    let mut dtes: Vec<SignedDte> = (1..=5)
        .map(|folio| signed_dte(&identity, None, folio))
        .collect();
    // Folio 3's total changed after it was signed (and before the envelope was): its own
    // signature fails, the envelope's holds.
    dtes[2].xml = dtes[2]
        .xml
        .replace("<MntTotal>2380</MntTotal>", "<MntTotal>2381</MntTotal>");
    let track = sii.submit(&sealed(&identity, &dtes), true).await.unwrap();
    let p = processed(final_status(&sii, &track, true).await);
    assert_eq!((p.accepted, p.rejected, p.objections), (4, 1, 0), "{p:?}");
    let (verdict, detail) = p.verdict_of(39, 3);
    assert_eq!(verdict, Verdict::Rejected);
    assert!(detail.contains("firma"), "{detail}");
    for folio in [1, 2, 4, 5] {
        assert_eq!(
            p.verdict_of(39, folio).0,
            Verdict::Accepted,
            "folio {folio}"
        );
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

/// One worker round.
async fn round(issuing: &Issuing, sii: &dyn SiiClient, settings: &WorkerSettings) -> Round {
    worker::step(issuing, sii, settings).await.unwrap()
}

/// Envelopes close at once, of up to 500 boletas.
fn settings() -> WorkerSettings {
    WorkerSettings {
        poll_interval: Duration::ZERO,
        max_backoff: Duration::from_secs(60),
        lease: Duration::ZERO,
        batch_window: Duration::ZERO,
        batch_size: worker::MAX_BOLETAS_PER_ENVELOPE,
    }
}

async fn documents(issuing: &Issuing) -> Vec<(i64, String, String, String)> {
    sqlx::query_as(
        "SELECT folio, status, track_id, sii_status_detail FROM documents ORDER BY folio",
    )
    .fetch_all(&issuing.pool)
    .await
    .unwrap()
}

async fn events(issuing: &Issuing) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY seq")
        .fetch_all(&issuing.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_worker_sends_follows_and_publishes_the_sii_verdict() {
    let issuing = issued_boletas(1).await;
    let (endpoints, _stop) = simulator().await;
    let sii = client(endpoints, issuing.identity.clone(), "76369187-K");
    let sent = round(&issuing, &sii, &settings()).await;
    assert_eq!((sent.packed, sent.handled), (1, 1));
    let docs = documents(&issuing).await;
    assert_eq!(docs[0].1, "submitted");
    assert!(!docs[0].2.is_empty());
    // REC, then the verdict.
    round(&issuing, &sii, &settings()).await;
    assert_eq!(documents(&issuing).await[0].1, "submitted");
    round(&issuing, &sii, &settings()).await;
    let docs = documents(&issuing).await;
    assert_eq!(docs[0].1, "accepted");
    assert!(docs[0].3.contains("1 aceptados"), "{docs:?}");
    assert_eq!(events(&issuing).await, ["dte.issued", "dte.accepted"]);
    // Nothing more to do.
    assert_eq!(round(&issuing, &sii, &settings()).await.handled, 0);
}

#[tokio::test]
async fn boletas_go_to_the_sii_together_in_one_signed_envelope() {
    let issuing = issued_boletas(3).await;
    let (endpoints, _stop) = simulator().await;
    let sii = client(endpoints, issuing.identity.clone(), "76369187-K");
    let sent = round(&issuing, &sii, &settings()).await;
    assert_eq!(
        (sent.packed, sent.handled),
        (1, 1),
        "one envelope, one upload"
    );
    let docs = documents(&issuing).await;
    assert!(docs.iter().all(|d| d.1 == "submitted"), "{docs:?}");
    let tracks: std::collections::HashSet<_> = docs.iter().map(|d| d.2.clone()).collect();
    assert_eq!(tracks.len(), 1, "one track id for the three: {docs:?}");
    // What went to the SII: one EnvioBOLETA holding the three, valid.
    let xml: Vec<u8> = sqlx::query_scalar("SELECT xml FROM sii_envelopes")
        .fetch_one(&issuing.pool)
        .await
        .unwrap();
    let report = dte::verify::verify(&xml).unwrap();
    assert!(report.valid(), "{}", report.render());
    assert_eq!(report.kind, "EnvioBOLETA");
    assert_eq!(
        report.documents.iter().map(|d| d.folio).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // REC, then the three verdicts, each with its event, from one status query a round.
    for _ in 0..2 {
        assert_eq!(round(&issuing, &sii, &settings()).await.handled, 1);
    }
    let docs = documents(&issuing).await;
    assert!(docs.iter().all(|d| d.1 == "accepted"), "{docs:?}");
    let accepted = events(&issuing).await;
    assert_eq!(accepted.iter().filter(|e| *e == "dte.accepted").count(), 3);
}

#[tokio::test]
async fn an_envelope_waits_for_boletas_until_full_or_its_window_has_passed() {
    let issuing = issued_boletas(3).await;
    let (endpoints, _stop) = simulator().await;
    let sii = client(endpoints, issuing.identity.clone(), "76369187-K");
    let patient = WorkerSettings {
        batch_window: Duration::from_secs(3600),
        ..settings()
    };
    let quiet = round(&issuing, &sii, &patient).await;
    assert_eq!((quiet.packed, quiet.handled, quiet.waiting), (0, 0, true));
    assert!(documents(&issuing).await.iter().all(|d| d.1 == "issued"));
    // Two make a full envelope: sent now; the third waits for company.
    let pairs = WorkerSettings {
        batch_size: 2,
        ..patient.clone()
    };
    let sent = round(&issuing, &sii, &pairs).await;
    assert_eq!((sent.packed, sent.handled, sent.waiting), (1, 1, true));
    let mut statuses: Vec<String> = documents(&issuing).await.into_iter().map(|d| d.1).collect();
    statuses.sort();
    assert_eq!(statuses, ["issued", "submitted", "submitted"]);
    // Once the window has passed, it goes alone.
    sqlx::query("UPDATE documents SET issued_at = issued_at - interval '2 hours'")
        .execute(&issuing.pool)
        .await
        .unwrap();
    let late = round(&issuing, &sii, &pairs).await;
    assert_eq!((late.packed, late.waiting), (1, false));
    let statuses: Vec<String> = documents(&issuing).await.into_iter().map(|d| d.1).collect();
    assert_eq!(statuses, ["submitted"; 3]);
}

#[tokio::test]
async fn a_boleta_the_sii_rejects_does_not_reject_its_neighbours() {
    let issuing = issued_boletas(3).await;
    // Folio 2 was altered after it was signed: its signature no longer holds.
    sqlx::query(
        "UPDATE documents SET signed_dte = replace(signed_dte, '<MntTotal>1190</MntTotal>', '<MntTotal>1191</MntTotal>') \
         WHERE folio = 2",
    )
    .execute(&issuing.pool)
    .await
    .unwrap();
    let (endpoints, _stop) = simulator().await;
    let sii = client(endpoints, issuing.identity.clone(), "76369187-K");
    for _ in 0..3 {
        round(&issuing, &sii, &settings()).await;
    }
    let docs = documents(&issuing).await;
    let statuses: Vec<&str> = docs.iter().map(|d| d.1.as_str()).collect();
    assert_eq!(statuses, ["accepted", "rejected", "accepted"], "{docs:?}");
    assert!(docs[1].3.contains("firma"), "the SII's reason: {docs:?}");
    let published: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, aggregate_id FROM outbox WHERE event_type <> 'dte.issued' ORDER BY seq",
    )
    .fetch_all(&issuing.pool)
    .await
    .unwrap();
    assert_eq!(published.len(), 3, "{published:?}");
    assert_eq!(
        published
            .iter()
            .filter(|(event, _)| event == "dte.rejected")
            .count(),
        1
    );
}

#[tokio::test]
async fn facturas_go_one_per_envelope() {
    let issuing = issuing().await;
    dte::load_development_cafs(&issuing.pool, &issuer())
        .await
        .unwrap();
    for n in 1..=2 {
        let mut paid = common::paid(n);
        paid.buyer = Some(proto::events::v1::Buyer {
            rut: "97975000-5".into(),
            razon_social: "Compras Ltda.".into(),
            giro: "Comercio".into(),
            address: "San Diego 2222".into(),
            comuna: "Santiago".into(),
            ..Default::default()
        });
        paid.document_type = "factura".into();
        let mut tx = issuing.pool.begin().await.unwrap();
        issuing
            .order_paid(&mut tx, &paid, &format!("event-{n}"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(issuing.issue_pending().await.unwrap(), 2);
    let (endpoints, _stop) = simulator().await;
    let sii = client(endpoints, issuing.identity.clone(), "76369187-K");
    let sent = round(&issuing, &sii, &settings()).await;
    assert_eq!((sent.packed, sent.handled), (2, 2));
    for _ in 0..2 {
        round(&issuing, &sii, &settings()).await;
    }
    let docs = documents(&issuing).await;
    assert!(docs.iter().all(|d| d.1 == "accepted"), "{docs:?}");
    assert_ne!(docs[0].2, docs[1].2, "each its own upload");
}

#[tokio::test]
async fn while_the_sii_is_unreachable_the_envelope_waits_and_backs_off() {
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
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, sii_attempts FROM sii_envelopes")
            .fetch_one(&issuing.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("built", 1));
    assert_eq!(documents(&issuing).await[0].1, "issued");
    // Not due again before its back-off (2 s).
    assert_eq!(round(&issuing, &sii, &backing_off).await.handled, 0);
    let wait: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM sii_next_at - now())::float8 FROM sii_envelopes",
    )
    .fetch_one(&issuing.pool)
    .await
    .unwrap();
    assert!(wait > 1.0 && wait <= 2.0, "{wait}");
}

#[tokio::test]
async fn documents_with_the_sii_before_envelopes_were_shared_go_on_as_envelopes_of_one() {
    // A database as the release before left it: migrations up to 0006.
    let url = platform::testing::fresh_database().await.unwrap();
    let pool = platform::db::connect(&url, dte::SCHEMA, 2).await.unwrap();
    let before = std::env::temp_dir().join(format!("dte-0006-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&before).unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < "0007" {
            std::fs::copy(&path, before.join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(before.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    std::fs::remove_dir_all(&before).unwrap();
    // A factura issued (its own signed envelope, not yet sent), a boleta the SII has, and
    // a boleta done with.
    let identity = identity();
    let (factura, _) = envelope(&identity, Some(buyer("Comercio")), 2);
    for (tipo, folio, status, envelope, track) in [
        (33, 2, "issued", factura, ""),
        (39, 1, "submitted", b"<EnvioBOLETA/>".to_vec(), "77"),
        (39, 2, "accepted", b"<EnvioBOLETA/>".to_vec(), "78"),
    ] {
        sqlx::query(
            "INSERT INTO documents (id, order_id, customer_id, tipo_dte, folio, status, envelope, track_id) \
             VALUES ($1, $2, 'c', $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(format!("order-{tipo}-{folio}"))
        .bind(tipo)
        .bind(folio)
        .bind(status)
        .bind(envelope)
        .bind(track)
        .execute(&pool)
        .await
        .unwrap();
    }
    // This release's migrations: the two still with the SII become envelopes of one.
    let pool = dte::open_database(&url).await.unwrap();
    let moved: Vec<(bool, String, String, i64)> = sqlx::query_as(
        "SELECT e.boleta, e.status, e.track_id, count(*) FROM sii_envelopes e \
         JOIN documents d ON d.sii_envelope_id = e.id GROUP BY e.id ORDER BY min(d.tipo_dte)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        moved,
        [
            (false, "built".to_string(), String::new(), 1),
            (true, "submitted".to_string(), "77".to_string(), 1)
        ]
    );
    // The worker sends the factura's own envelope as it was signed, and the SII accepts it.
    let issuing = Issuing::new(
        pool.clone(),
        issuer(),
        identity.clone(),
        platform::clock::Clock::system(),
    );
    let (endpoints, _stop) = simulator().await;
    let sii = client(endpoints, identity, "76369187-K");
    for _ in 0..3 {
        round(&issuing, &sii, &settings()).await;
    }
    let factura: String = sqlx::query_scalar("SELECT status FROM documents WHERE tipo_dte = 33")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(factura, "accepted");
}
