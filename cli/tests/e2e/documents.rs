//! Tax documents end to end: a paid order gets its boleta (or factura), a refund its nota
//! de crédito referencing it, the signed XML downloads exactly as built and verifies; CAFs
//! are uploaded and checked by admins.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    checkout::{APPROVE, a_placed_order, card, order_reaches, pay, place},
    helpers::{TestSuite, spawn_suite, spawn_suite_with},
};

/// Polls the order's documents until `count` are issued (signed and stored; they may
/// already be on their way to the SII).
async fn documents_issued(s: &TestSuite, token: &str, order: &str, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let docs = s
            .call(
                Method::GET,
                &format!("/v1/orders/{order}/documents"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(docs.status, StatusCode::OK, "{}", docs.body);
        let list = docs.body["documents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if list
            .iter()
            .filter(|d| d["status"] != "pending_folio" && d["status"] != "numbered")
            .count()
            >= count
        {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {order} never got {count} issued documents: {}",
            docs.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn download(s: &TestSuite, token: &str, path: &str) -> reqwest::Response {
    s.http
        .get(format!("{}{path}", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_paid_order_gets_its_boleta_and_a_refund_its_nota_de_credito() {
    let s = spawn_suite().await;
    let (admin, ana, id) = a_placed_order(&s, "TE-VERDE-1").await;
    let paid = pay(&s, &ana, &id, "k", card(APPROVE)).await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    let docs = documents_issued(&s, &ana, &id, 1).await;
    let boleta = &docs[0];
    assert_eq!(boleta["tipoDte"], 39, "no buyer RUT: a boleta");
    assert_eq!(
        (&boleta["mntNeto"], &boleta["iva"], &boleta["mntTotal"]),
        (&json!(1000), &json!(190), &json!(1190))
    );
    assert_eq!(boleta["receptorRut"], "66666666-6");
    let folio = boleta["folio"].as_i64().unwrap();
    assert!(folio >= 1);
    // Operators see the folios left per type.
    assert!(
        s.metrics()
            .await
            .contains("dte_folios_remaining{tipo=\"39\"}"),
        "no folio gauge"
    );
    // The order hears of it.
    order_reaches(&s, &ana, &id, "invoiced").await;

    // The XML, ISO-8859-1, exactly as built: it verifies end to end.
    let doc_id = boleta["id"].as_str().unwrap();
    let xml = download(&s, &ana, &format!("/v1/dte/documents/{doc_id}/xml")).await;
    assert_eq!(xml.status(), StatusCode::OK);
    assert_eq!(
        xml.headers()["content-type"],
        "application/xml; charset=ISO-8859-1"
    );
    let bytes = xml.bytes().await.unwrap();
    assert!(bytes.starts_with(b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>"));
    let report = dte::verify::verify(&bytes).unwrap();
    assert!(report.valid(), "{}", report.render());
    assert_eq!(report.kind, "EnvioBOLETA");
    assert_eq!(report.documents[0].folio, folio);

    // The SII (the simulator `orderflow all` starts) accepts it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let accepted = loop {
        let doc = s
            .call(
                Method::GET,
                &format!("/v1/dte/documents/{doc_id}"),
                Some(&ana),
                None,
            )
            .await
            .body;
        if doc["status"] == "accepted" {
            break doc;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never accepted: {doc}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        !accepted["trackId"].as_str().unwrap().is_empty(),
        "{accepted}"
    );
    assert!(
        accepted["siiStatusDetail"]
            .as_str()
            .unwrap()
            .contains(" aceptados"),
        "{accepted}"
    );

    // The printable PDF.
    let pdf = download(&s, &ana, &format!("/v1/dte/documents/{doc_id}/pdf")).await;
    assert_eq!(pdf.status(), StatusCode::OK);
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    assert!(pdf.bytes().await.unwrap().starts_with(b"%PDF-"));

    // The same through the admin verify endpoint.
    let verified = s
        .raw(
            s.http
                .post(format!("{}/v1/dte/verify", s.base))
                .bearer_auth(&admin)
                .header("content-type", "application/xml")
                .body(bytes.to_vec()),
        )
        .await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.body);
    assert_eq!(verified.body["valid"], true, "{}", verified.body);

    // Another customer sees nothing of it.
    let bea = s.customer("bea@example.cl").await;
    let theirs = download(&s, &bea, &format!("/v1/dte/documents/{doc_id}")).await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);

    // A full refund: a nota de crédito that cancels the boleta.
    let refund = s
        .call(
            Method::POST,
            &format!("/v1/orders/{id}/refunds"),
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(refund.status, StatusCode::OK, "{}", refund.body);
    let docs = documents_issued(&s, &ana, &id, 2).await;
    let nc = docs
        .iter()
        .find(|d| d["tipoDte"] == 61)
        .expect("a nota de crédito");
    assert_eq!(nc["referencesDocumentId"], boleta["id"]);
    assert_eq!(nc["mntTotal"], 1190);
    let nc_xml = download(
        &s,
        &admin,
        &format!("/v1/dte/documents/{}/xml", nc["id"].as_str().unwrap()),
    )
    .await
    .bytes()
    .await
    .unwrap();
    let text: String = nc_xml.iter().map(|&b| char::from(b)).collect();
    assert!(text.contains("<TpoDocRef>39</TpoDocRef>"), "{text}");
    assert!(text.contains(&format!("<FolioRef>{folio}</FolioRef>")));
    assert!(text.contains("<CodRef>1</CodRef>"));
    let report = dte::verify::verify(&nc_xml).unwrap();
    assert!(report.valid(), "{}", report.render());

    // The admin list filters by type.
    let ncs = s
        .call(
            Method::GET,
            "/v1/dte/documents?tipoDte=61",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        ncs.body["documents"].as_array().unwrap().len(),
        1,
        "{}",
        ncs.body
    );
    s.call(
        Method::GET,
        "/v1/dte/documents?tipoDte=52",
        Some(&admin),
        None,
    )
    .await
    .assert_problem(400);
    let bad_status = s
        .call(
            Method::GET,
            "/v1/dte/documents?status=lost",
            Some(&admin),
            None,
        )
        .await;
    bad_status.assert_problem(400);
    assert_eq!(bad_status.body["errors"][0]["field"], "status");
    let future = s
        .call(
            Method::GET,
            "/v1/dte/documents?issuedFrom=2099-01-01T00:00:00Z",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(future.status, StatusCode::OK, "{}", future.body);
    assert!(
        future.body["documents"]
            .as_array()
            .is_none_or(|d| d.is_empty()),
        "{}",
        future.body
    );
    let since = s
        .call(
            Method::GET,
            "/v1/dte/documents?issuedFrom=2000-01-01T00:00:00Z&tipoDte=39",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        since.body["documents"][0]["id"], boleta["id"],
        "{}",
        since.body
    );
    s.call(Method::GET, "/v1/dte/documents", Some(&ana), None)
        .await
        .assert_problem(403);
}

#[tokio::test]
async fn cafs_are_checked_on_upload() {
    let s = spawn_suite().await;
    let admin = s.admin("admin@tienda.cl").await;
    let upload = |xml: String, token: String| {
        s.raw(
            s.http
                .post(format!("{}/v1/dte/cafs", s.base))
                .bearer_auth(token)
                .header("content-type", "application/xml")
                .body(xml),
        )
    };
    let rut = platform::chile::Rut::parse("76369187-K").unwrap();
    let today = chrono::Utc::now().date_naive();
    let fresh = dte::caf::fake(
        dte::domain::TipoDte::Factura,
        200_001,
        201_000,
        &rut,
        "Orderflow SpA",
        today,
    )
    .unwrap();
    let stored = upload(fresh.clone(), admin.clone()).await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.body);
    assert_eq!(
        (
            &stored.body["tipoDte"],
            &stored.body["folioFrom"],
            &stored.body["nextFolio"]
        ),
        (&json!(33), &json!(200_001), &json!(200_001)),
        "{}",
        stored.body
    );

    // The same range again overlaps.
    let again = upload(fresh, admin.clone()).await;
    again.assert_problem(400);
    assert_eq!(again.body["errors"][0]["field"], "DA/RNG", "{}", again.body);
    // Another company's CAF.
    let other = dte::caf::fake(
        dte::domain::TipoDte::Boleta,
        5000,
        5001,
        &platform::chile::Rut::parse("97975000-5").unwrap(),
        "Otra",
        today,
    )
    .unwrap();
    let refused = upload(other, admin.clone()).await;
    refused.assert_problem(400);
    assert_eq!(
        refused.body["errors"][0]["field"], "DA/RE",
        "{}",
        refused.body
    );
    // Not XML at all.
    let junk = upload("hello".into(), admin.clone()).await;
    junk.assert_problem(400);
    // Customers may not upload.
    let ana = s.customer("ana@example.cl").await;
    upload(
        dte::caf::fake(dte::domain::TipoDte::Boleta, 7000, 7001, &rut, "X", today).unwrap(),
        ana,
    )
    .await
    .assert_problem(403);
}

#[tokio::test]
async fn the_back_office_dashboard_counts_orders_documents_folios_and_dead_letters() {
    // Every type has the development CAF's 100 000 folios: with this bound, a type that
    // has used one is low.
    let s = spawn_suite_with(&[("DTE_FOLIOS_LOW", "100000")]).await;
    let (admin, ana, id) = a_placed_order(&s, "TE-VERDE-1").await;
    let paid = pay(&s, &ana, &id, "k", card(APPROVE)).await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    let unpaid = place(&s, &ana, "TE-VERDE-1", 2).await;
    let cancelled = s
        .call(
            Method::POST,
            &format!("/v1/orders/{}:cancel", unpaid["id"].as_str().unwrap()),
            Some(&ana),
            Some(json!({})),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    documents_issued(&s, &ana, &id, 1).await;
    order_reaches(&s, &ana, &id, "invoiced").await;

    let today = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let from = format!("{}Z", today.format("%Y-%m-%dT%H:%M:%S"));
    // Counted from the read model, which follows the events within moments.
    let expected = json!({"placed": 2, "paid": 1, "invoiced": 1, "cancelled": 1, "refunded": 0, "revenue": 1190});
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let summary = s
            .call(
                Method::GET,
                &format!("/v1/orders:summarize?createdFrom={from}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(summary.status, StatusCode::OK, "{}", summary.body);
        if summary.body == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} is not {expected}",
            summary.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Nothing was placed before today.
    let before = s
        .call(
            Method::GET,
            &format!("/v1/orders:summarize?createdTo={from}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        before.body["placed"].as_i64().unwrap_or(0),
        0,
        "{}",
        before.body
    );

    let statuses = s
        .call(
            Method::GET,
            "/v1/dte/documents:summarize",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(statuses.status, StatusCode::OK, "{}", statuses.body);
    let counted: i64 = statuses.body["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["documents"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, 1, "{}", statuses.body);

    let cafs = s
        .call(Method::GET, "/v1/dte/cafs", Some(&admin), None)
        .await;
    assert_eq!(cafs.status, StatusCode::OK, "{}", cafs.body);
    let boletas = cafs.body["cafs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["tipoDte"] == 39)
        .cloned()
        .unwrap();
    assert_eq!(
        (&boletas["used"], &boletas["remaining"]),
        (&json!(1), &json!(99_999)),
        "{boletas}"
    );
    let stock = |tipo: i64| {
        cafs.body["folios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["tipoDte"] == tipo)
            .cloned()
            .unwrap()
    };
    assert_eq!(stock(39)["low"], true, "{}", cafs.body);
    assert_eq!(stock(39)["remaining"], 99_999);
    assert!(!stock(33)["low"].as_bool().unwrap_or(false));

    let dead = s
        .call(Method::GET, "/v1/dead-letter-queues", Some(&admin), None)
        .await;
    assert_eq!(dead.status, StatusCode::OK, "{}", dead.body);
    let queues = dead.body["queues"].as_array().unwrap();
    assert_eq!(
        queues.len(),
        platform::amqp::SERVICE_QUEUES.len(),
        "{}",
        dead.body
    );
    for (queue, name) in queues.iter().zip(platform::amqp::SERVICE_QUEUES) {
        assert!(
            queue["queue"].as_str().unwrap().ends_with(name),
            "{}",
            dead.body
        );
        assert_eq!(queue["messages"].as_i64().unwrap_or(0), 0, "{}", dead.body);
    }

    // Customers see none of it.
    for path in [
        "/v1/orders:summarize",
        "/v1/dte/documents:summarize",
        "/v1/dte/cafs",
        "/v1/dead-letter-queues",
    ] {
        s.call(Method::GET, path, Some(&ana), None)
            .await
            .assert_problem(403);
    }
}

/// Messages in `queue`'s dead-letter queue, as the dashboard's API counts them.
async fn dead_count(s: &TestSuite, admin: &str, queue: &str) -> i64 {
    s.call(Method::GET, "/v1/dead-letter-queues", Some(admin), None)
        .await
        .body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == queue)
        .map(|q| q["messages"].as_i64().unwrap_or(0))
        .unwrap()
}

async fn until_dead(s: &TestSuite, admin: &str, queue: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while dead_count(s, admin, queue).await != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {want} dead letters"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_and_dropped_by_admins() {
    let s = spawn_suite().await;
    let admin = s.admin("admin@tienda.cl").await;
    let queues = s
        .call(Method::GET, "/v1/dead-letter-queues", Some(&admin), None)
        .await
        .body;
    let queue = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap().to_string())
        .find(|q| q.ends_with("dte"))
        .unwrap();
    // A message the DTE service cannot read: dead-lettered at once.
    let broker = platform::amqp::Broker::new(&platform::testing::amqp_url(), "unused");
    let channel = broker.channel().await.unwrap();
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            lapin::options::BasicPublishOptions::default(),
            b"not an event envelope",
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap();
    until_dead(&s, &admin, &queue, 1).await;
    let path = format!("/v1/dead-letter-queues/{queue}/messages");
    let listed = s.call(Method::GET, &path, Some(&admin), None).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let letter = &listed.body["messages"][0];
    assert_eq!(letter["id"], "(undecodable)", "{}", listed.body);
    assert_eq!(letter["reason"], "undecodable envelope");

    // An id that is not there is refused by name; nothing moves.
    let refused = s
        .call(
            Method::POST,
            &format!("{path}:drop"),
            Some(&admin),
            Some(json!({"ids": ["no-such-letter"]})),
        )
        .await;
    refused.assert_problem(404);
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("no-such-letter")
    );
    until_dead(&s, &admin, &queue, 1).await;

    // Replayed to the work queue, where it fails again and comes back.
    let replayed = s
        .call(
            Method::POST,
            &format!("{path}:replay"),
            Some(&admin),
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(replayed.body["replayed"], 1, "{}", replayed.body);
    until_dead(&s, &admin, &queue, 1).await;

    // Dropped for good.
    let dropped = s
        .call(
            Method::POST,
            &format!("{path}:drop"),
            Some(&admin),
            Some(json!({"ids": ["(undecodable)"]})),
        )
        .await;
    assert_eq!(dropped.body["dropped"], 1, "{}", dropped.body);
    until_dead(&s, &admin, &queue, 0).await;

    // Customers may not look.
    let ana = s.customer("ana@example.cl").await;
    s.call(Method::GET, &path, Some(&ana), None)
        .await
        .assert_problem(403);
}

/// The buying side's intake through the API: an admin posts a supplier's document (a real
/// one from other software, lib-cl-sii's test data, addressed to another company), gets its
/// checks and reception codes, finds it listed, reads it and downloads it; the same file is
/// received once (also by `orderflow dte receive`); a customer cannot; a body that is not a
/// DTE is a 400 naming it and stores nothing.
#[tokio::test]
async fn suppliers_documents_are_received_listed_and_downloaded_by_admins_only() {
    let s = spawn_suite().await;
    let admin = s.admin("compras@example.cl").await;
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../services/dte/tests/corpus/DTE--60910000-1--33--2336600.xml");
    let bytes = std::fs::read(&corpus).unwrap();
    let post = |token: &str, body: Vec<u8>| {
        s.raw(
            s.http
                .post(format!("{}/v1/dte/received", s.base))
                .bearer_auth(token)
                .header("content-type", "application/xml")
                .body(body),
        )
    };

    let received = post(&admin, bytes.clone()).await;
    assert_eq!(received.status, StatusCode::OK, "{}", received.body);
    let envelope = &received.body;
    assert_eq!(envelope["kind"], "DTE");
    assert_eq!(envelope["repeated"], false);
    let document = &envelope["documents"][0];
    assert_eq!(document["tipoDte"], 33);
    assert_eq!(document["rutEmisor"], "60910000-1");
    assert_eq!(document["signature"]["passed"], true, "{document}");
    assert_eq!(document["ted"]["passed"], true, "{document}");
    // Addressed to another company: named, and answered with EstadoRecepDTE 3.
    assert_eq!(document["receptor"]["passed"], false, "{document}");
    assert_eq!(document["estadoRecepDte"], 3, "{document}");
    assert_eq!(document["valid"], false);
    let id = document["id"].as_str().unwrap().to_string();

    let listed = s
        .call(
            Method::GET,
            "/v1/dte/received?rutEmisor=60.910.000-1",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.body["documents"][0]["id"], id.as_str());
    let one = s
        .call(
            Method::GET,
            &format!("/v1/dte/received/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    assert_eq!(one.body["folio"], document["folio"]);
    let xml = download(&s, &admin, &format!("/v1/dte/received/{id}/xml")).await;
    assert_eq!(xml.status(), StatusCode::OK);
    let xml = xml.text().await.unwrap();
    assert!(xml.starts_with("<DTE"), "{}", &xml[..80.min(xml.len())]);
    assert!(xml.contains("<Folio>2336600</Folio>"));
    // A copy that failed its checks is not printed.
    let pdf = s
        .call(
            Method::GET,
            &format!("/v1/dte/received/{id}/pdf"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(pdf.status, StatusCode::BAD_REQUEST, "{}", pdf.body);
    assert!(
        pdf.body.to_string().contains("not received as valid"),
        "{}",
        pdf.body
    );

    // The signed answer to the supplier, listed with the envelope and the document, and
    // downloadable.
    let answer_id = envelope["answers"][0]["id"].as_str().unwrap();
    assert_eq!(envelope["answers"][0]["kind"], "recepcion");
    assert_eq!(one.body["answers"][0]["id"], answer_id);
    assert!(one.body["deadline"].is_string(), "{}", one.body);
    let answer = download(&s, &admin, &format!("/v1/dte/received-answers/{answer_id}")).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let answer = answer.bytes().await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("<RespuestaDTE"), "{answer}");
    // This file (lib-cl-sii's, not "cleaned") declares no SII namespace, so it does not
    // conform to DTE_v10.xsd: the answer is the envelope's alone, naming the schema.
    assert_eq!(document["schema"]["passed"], false, "{document}");
    assert!(
        answer.contains("<EstadoRecepEnv>1</EstadoRecepEnv>"),
        "{answer}"
    );
    assert!(!answer.contains("<RecepcionDTE>"), "{answer}");
    assert!(
        answer.contains("<RutRecibe>60910000-1</RutRecibe>"),
        "{answer}"
    );

    // Not received as valid: there is nothing to accept; a claim needs its reason.
    let accept = s
        .call(
            Method::POST,
            &format!("/v1/dte/received/{id}:accept"),
            Some(&admin),
            Some(json!({"goodsReceived": false})),
        )
        .await;
    assert_eq!(accept.status, StatusCode::BAD_REQUEST, "{}", accept.body);
    assert!(
        accept.body.to_string().contains("not received"),
        "{}",
        accept.body
    );
    let claim = s
        .call(
            Method::POST,
            &format!("/v1/dte/received/{id}:claim"),
            Some(&admin),
            Some(json!({"reason": ""})),
        )
        .await;
    assert_eq!(claim.status, StatusCode::BAD_REQUEST, "{}", claim.body);
    assert_eq!(claim.body["errors"][0]["field"], "reason", "{}", claim.body);
    // What is claimed is one of the SII registry's claims.
    let claim = s
        .call(
            Method::POST,
            &format!("/v1/dte/received/{id}:claim"),
            Some(&admin),
            Some(json!({"reason": "Faltó todo", "action": "ACD"})),
        )
        .await;
    assert_eq!(claim.status, StatusCode::BAD_REQUEST, "{}", claim.body);
    assert_eq!(claim.body["errors"][0]["field"], "action", "{}", claim.body);

    // The same file again, by the API and by the command: received before, stored once.
    let again = post(&admin, bytes.clone()).await;
    assert_eq!(again.body["repeated"], true, "{}", again.body);
    assert_eq!(again.body["id"], envelope["id"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["dte", "receive"])
        .arg(&corpus)
        .env_clear()
        .envs(&s.env)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("received before"), "{printed}");
    assert!(printed.contains(&id), "{printed}");
    assert!(
        !out.status.success(),
        "the document is not valid for us: {printed}"
    );

    // A customer cannot; a body that is not a DTE is named and nothing is stored.
    let ana = s.customer("ana@example.cl").await;
    assert_eq!(post(&ana, bytes).await.status, StatusCode::FORBIDDEN);
    let bad_address = s
        .raw(
            s.http
                .post(format!("{}/v1/dte/received?replyTo=no-es-correo", s.base))
                .bearer_auth(&admin)
                .header("content-type", "application/xml")
                .body(b"<Factura/>".to_vec()),
        )
        .await;
    assert_eq!(bad_address.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad_address.body["errors"][0]["field"], "replyTo",
        "{}",
        bad_address.body
    );
    for body in [b"no es XML".to_vec(), b"<Factura/>".to_vec()] {
        let refused = post(&admin, body).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
        assert_eq!(
            refused.body["errors"][0]["field"], "body",
            "{}",
            refused.body
        );
    }
    let all = s
        .call(Method::GET, "/v1/dte/received", Some(&admin), None)
        .await;
    assert_eq!(all.body["documents"].as_array().unwrap().len(), 1);
}

/// A supplier's facturas, sent to the SII and to us: an admin accepts one (with the goods)
/// and claims another through the API; both verdicts are on the SII's registry, and the
/// accepted one prints with the supplier's data.
#[tokio::test]
async fn a_suppliers_factura_is_accepted_or_claimed_on_the_sii_registry_and_printed() {
    use dte::sii::sim::SiiSimulator;
    let sim = SiiSimulator::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = sim.url();
    let stop_sim = platform::CancellationToken::new();
    tokio::spawn(sim.run_until_stopped(stop_sim.clone()));
    let endpoints = dte::sii::client::SiiEndpoints::at(&url);
    let settings = endpoints.settings();
    let overrides: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = spawn_suite_with(&overrides).await;
    let admin = s.admin("compras@example.cl").await;
    let us = dte::development_issuer().rut.to_string();

    // The supplier sends its facturas to the SII first, then to us.
    let supplier = dte::testing::Supplier::new().unwrap();
    let facturas = [7, 8].map(|folio| supplier.factura(folio, &us).unwrap());
    supplier
        .send_to_sii(endpoints, &facturas, &us)
        .await
        .unwrap();
    let received = s
        .raw(
            s.http
                .post(format!("{}/v1/dte/received", s.base))
                .bearer_auth(&admin)
                .header("content-type", "application/xml")
                .body(supplier.envelope(&facturas, &us, 2).unwrap()),
        )
        .await;
    assert_eq!(received.status, StatusCode::OK, "{}", received.body);
    let ids: Vec<String> = received.body["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["valid"], true, "{d}");
            d["id"].as_str().unwrap().to_string()
        })
        .collect();
    let codes = |d: &Value| -> Vec<String> {
        d["siiEvents"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["code"].as_str().unwrap_or_default().to_string())
            .collect()
    };

    let accepted = s
        .call(
            Method::POST,
            &format!("/v1/dte/received/{}:accept", ids[0]),
            Some(&admin),
            Some(json!({"goodsReceived": true, "recinto": "Bodega Quilicura"})),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    assert_eq!(accepted.body["decision"], "accepted");
    assert_eq!(codes(&accepted.body), ["ACD", "ERM"], "{}", accepted.body);
    assert!(
        accepted.body["siiReceivedAt"].is_string(),
        "{}",
        accepted.body
    );

    let claimed = s
        .call(
            Method::POST,
            &format!("/v1/dte/received/{}:claim", ids[1]),
            Some(&admin),
            Some(json!({"reason": "No llegó nada", "action": "RFT"})),
        )
        .await;
    assert_eq!(claimed.status, StatusCode::OK, "{}", claimed.body);
    assert_eq!(codes(&claimed.body), ["RFT"], "{}", claimed.body);
    let shown = s
        .call(
            Method::GET,
            &format!("/v1/dte/received/{}", ids[1]),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(codes(&shown.body), ["RFT"], "{}", shown.body);
    let again = s
        .call(
            Method::POST,
            &format!("/v1/dte/received/{}:accept", ids[1]),
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
    assert!(
        again.body.to_string().contains("already claimed"),
        "{}",
        again.body
    );

    // Printed in our layout with the supplier's data.
    let pdf = download(&s, &admin, &format!("/v1/dte/received/{}/pdf", ids[0])).await;
    assert_eq!(pdf.status(), StatusCode::OK);
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    let pdf = pdf.bytes().await.unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    // Text is Latin-1: pdf-writer writes it as a hex string once it leaves ASCII.
    let lower = pdf.to_ascii_lowercase();
    let shown = |text: &str| {
        let hex: String = text.chars().map(|c| format!("{:02x}", c as u32)).collect();
        let needle = format!("<{hex}>").into_bytes();
        lower.windows(needle.len()).any(|w| w == needle.as_slice())
    };
    assert!(shown("Proveedora Ñuñoa Ltda."), "the supplier's name");
    assert!(shown("Nº 7"), "the folio");
    stop_sim.cancel();
}
