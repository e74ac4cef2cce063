//! The buying side's intake: an envelope a supplier sends is stored byte for byte with its
//! checks and reception codes, each valid document once; what is wrong is named; a file
//! that is not a DTE is refused and stores nothing.

use std::{process::Command, sync::LazyLock};

use dte::{
    certificate,
    domain::Issuer,
    received::{self, ReceiveError},
    sii::{
        SiiRegistry as _,
        client::{HttpSiiClient, SiiEndpoints},
        registry::{self, Action},
        sim::SiiSimulator,
    },
    xml::document::SignedDte,
};
use sqlx::PgPool;

mod common;

fn company() -> Issuer {
    dte::development_issuer()
}

/// Our company's signing identity (a test certificate), and its PEM for xmlsec1.
struct Ours {
    identity: dte::xml::signature::SigningIdentity,
    certificate_pem: String,
}

static OURS: LazyLock<Ours> = LazyLock::new(|| {
    let (key, der) = certificate::self_signed(&company().rut_envia.to_string()).unwrap();
    let identity = certificate::identity(&key, der).unwrap();
    Ours {
        certificate_pem: identity.certificate_pem(),
        identity,
    }
});

static US: LazyLock<Issuer> = LazyLock::new(company);

fn receiver() -> received::Receiver<'static> {
    received::Receiver {
        rut: &US.rut,
        identity: &OURS.identity,
        signer: &US.rut_envia,
    }
}

async fn receive(pool: &PgPool, bytes: Vec<u8>) -> Result<received::Receipt, ReceiveError> {
    received::receive(pool, receiver(), "api", "", "", bytes).await
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}); ./dev test installs it"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks a signed answer with tools that are not ours: xmllint against its schema, xmlsec1
/// with our certificate on the signature at `xpath` (IDs in `id_attrs`); its text.
fn checked(bytes: &[u8], schema: &str, id_attrs: &[&str], xpath: &str) -> String {
    let dir = std::env::temp_dir().join(format!("respuesta-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (file, cert) = (dir.join("respuesta.xml"), dir.join("ours.pem"));
    std::fs::write(&file, bytes).unwrap();
    std::fs::write(&cert, &OURS.certificate_pem).unwrap();
    run(Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(common::sii_reference().join("schemas").join(schema))
        .arg(&file));
    let mut verify = Command::new("xmlsec1");
    verify.arg("--verify");
    for id in id_attrs {
        verify.args(["--id-attr:ID", id]);
    }
    run(verify
        .arg("--pubkey-cert-pem")
        .arg(&cert)
        .args(["--node-xpath", xpath])
        .arg(&file));
    std::fs::remove_dir_all(dir).ok();
    encoding_rs::mem::decode_latin1(bytes).into_owned()
}

const ROOT_SIGNATURE: &str = "/*/*[local-name()='Signature']";

/// The envelope's signed RespuestaDTE (RecepcionEnvio), checked; its text.
async fn answer(pool: &PgPool, envelope: uuid::Uuid) -> String {
    let bytes = received::envelope_answer(pool, envelope)
        .await
        .unwrap()
        .expect("an answer");
    checked(
        &bytes,
        "RespuestaEnvioDTE_v10.xsd",
        &["Resultado"],
        ROOT_SIGNATURE,
    )
}

/// Another company, selling to ours: `dte::testing::Supplier`, its documents unwrapped.
struct Supplier(dte::testing::Supplier);

fn supplier_with_caf() -> Supplier {
    Supplier(dte::testing::Supplier::new().unwrap())
}

impl std::ops::Deref for Supplier {
    type Target = dte::testing::Supplier;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Supplier {
    fn factura(&self, folio: i64, buyer: &str) -> SignedDte {
        self.0.factura(folio, buyer).unwrap()
    }

    fn envelope(&self, dtes: &[SignedDte], receptor: &str, second: u32) -> Vec<u8> {
        self.0.envelope(dtes, receptor, second).unwrap()
    }
}

async fn database() -> PgPool {
    let url = platform::testing::fresh_database().await.unwrap();
    dte::open_database(&url).await.unwrap()
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_suppliers_envelope_is_stored_as_sent_and_each_document_once() {
    let pool = database().await;
    let us = company().rut;
    let s = supplier_with_caf();
    let facturas = [s.factura(7, &us.to_string()), s.factura(8, &us.to_string())];
    let bytes = s.envelope(&facturas, &us.to_string(), 1);

    let receipt = receive(&pool, bytes.clone()).await.unwrap();
    let envelope = &receipt.envelope;
    assert!(!receipt.repeated);
    assert_eq!(envelope.kind, "EnvioDTE");
    assert_eq!(envelope.rut_emisor, s.issuer.rut.to_string());
    assert_eq!(
        envelope.estado_recep_env,
        received::ENV_OK,
        "{}",
        envelope.estado_detail
    );
    assert!(envelope.signature_ok, "{}", envelope.signature_detail);
    assert_eq!(receipt.documents.len(), 2);
    for (d, folio) in receipt.documents.iter().zip([7, 8]) {
        assert!(!d.duplicate);
        let row = &d.row;
        assert_eq!((row.tipo_dte, row.folio), (33, folio));
        assert!(row.valid, "{row:?}");
        assert_eq!(row.estado_recep_dte, received::DTE_OK);
        assert_eq!(row.razon_social_emisor, "Proveedora Ñuñoa Ltda.");
        assert_eq!(row.mnt_total, 17_850);
        assert!(row.checks.0.receptor.passed);
    }
    // Kept byte for byte, and each document's XML as received still verifies.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT bytes FROM received_envelopes WHERE id = $1")
        .bind(envelope.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, bytes);
    let xml = received::document_xml(&pool, receipt.documents[0].row.id)
        .await
        .unwrap()
        .unwrap();
    let alone = dte::verify::verify(xml.as_bytes()).unwrap();
    assert!(alone.documents[0].signature.passed, "{}", alone.render());

    // Answered with a signed RespuestaDTE naming the envelope and each document.
    let text = answer(&pool, envelope.id).await;
    for part in [
        format!("<RutResponde>{us}</RutResponde>"),
        format!("<RutRecibe>{}</RutRecibe>", s.issuer.rut),
        format!("<CodEnvio>{}</CodEnvio>", envelope.cod_envio),
        "<EnvioDTEID>SetDoc</EnvioDTEID>".to_string(),
        "<EstadoRecepEnv>0</EstadoRecepEnv>".to_string(),
        "<NroDTE>2</NroDTE>".to_string(),
        "<Folio>8</Folio><FchEmis>2026-11-30</FchEmis>".to_string(),
        "<EstadoRecepDTE>0</EstadoRecepDTE>".to_string(),
    ] {
        assert!(text.contains(&part), "{part} not in {text}");
    }

    // The same file again: the first receipt, nothing stored.
    let again = receive(&pool, bytes.clone()).await.unwrap();
    assert!(again.repeated);
    assert_eq!(again.envelope.id, envelope.id);
    assert_eq!(count(&pool, "received_envelopes").await, 1);

    // Another envelope holding folio 8 again and a new folio 9: it is stored, folio 8 is
    // answered as repeated from the first, and only folio 9 is new.
    let other = s.envelope(
        &[s.factura(8, &us.to_string()), s.factura(9, &us.to_string())],
        &us.to_string(),
        2,
    );
    let receipt = receive(&pool, other).await.unwrap();
    assert!(!receipt.repeated);
    assert!(receipt.documents[0].duplicate);
    assert_eq!(receipt.documents[0].row.folio, 8);
    assert_eq!(receipt.documents[0].row.envelope_id, envelope.id);
    assert!(!receipt.documents[1].duplicate);
    let text = answer(&pool, receipt.envelope.id).await;
    assert!(
        text.contains("<Folio>8</Folio>")
            && text.contains("<EstadoRecepDTE>4</EstadoRecepDTE>")
            && text.contains("<EstadoRecepDTE>0</EstadoRecepDTE>"),
        "{text}"
    );
    assert_eq!(count(&pool, "received_envelopes").await, 2);
    assert_eq!(count(&pool, "received_documents").await, 3);

    // The same new file twice at once is stored once.
    let concurrent = s.envelope(&[s.factura(10, &us.to_string())], &us.to_string(), 3);
    let (a, b) = tokio::join!(
        receive(&pool, concurrent.clone()),
        receive(&pool, concurrent),
    );
    assert_eq!(a.unwrap().envelope.id, b.unwrap().envelope.id);
    assert_eq!(count(&pool, "received_envelopes").await, 3);
    assert_eq!(count(&pool, "received_documents").await, 4);

    // Listed newest first, by supplier.
    let listed = received::list(
        &pool,
        &received::Filter {
            rut_emisor: Some(s.issuer.rut.to_string()),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let folios: Vec<i64> = listed.iter().map(|d| d.folio).collect();
    assert_eq!(folios, [10, 9, 8, 7]);
}

#[tokio::test]
async fn what_is_wrong_is_named_and_a_forgery_does_not_keep_the_genuine_document_out() {
    let pool = database().await;
    let us = company().rut;
    let s = supplier_with_caf();

    // Addressed to another company.
    let elsewhere = "97975000-5";
    let receipt = receive(&pool, s.envelope(&[s.factura(20, elsewhere)], elsewhere, 1))
        .await
        .unwrap();
    assert_eq!(
        receipt.envelope.estado_recep_env,
        received::ENV_WRONG_RECEPTOR
    );
    assert!(
        receipt.envelope.estado_detail.contains(elsewhere),
        "{}",
        receipt.envelope.estado_detail
    );
    let d = &receipt.documents[0].row;
    assert_eq!(d.estado_recep_dte, received::DTE_RECEPTOR_ERROR);
    assert!(!d.valid);
    let text = answer(&pool, receipt.envelope.id).await;
    assert!(
        text.contains("<EstadoRecepEnv>3</EstadoRecepEnv>")
            && text.contains("<EstadoRecepDTE>3</EstadoRecepDTE>"),
        "{text}"
    );

    // A forged copy of folio 21 (the amount raised after signing) comes first: both
    // signatures fail and it is named; it holds nothing, so the genuine one is received.
    let genuine = s.envelope(&[s.factura(21, &us.to_string())], &us.to_string(), 2);
    let text = encoding_rs::mem::decode_latin1(&genuine).into_owned();
    let forged = text.replace("<MntTotal>17850</MntTotal>", "<MntTotal>178500</MntTotal>");
    assert_ne!(forged, text);
    let (forged, _, _) = encoding_rs::WINDOWS_1252.encode(&forged);
    let receipt = receive(&pool, forged.into_owned()).await.unwrap();
    assert_eq!(
        receipt.envelope.estado_recep_env,
        received::ENV_SIGNATURE_ERROR
    );
    let d = &receipt.documents[0].row;
    assert_eq!(d.estado_recep_dte, received::DTE_SIGNATURE_ERROR);
    assert!(d.estado_detail.contains("digest"), "{}", d.estado_detail);
    assert!(!d.valid);
    let text = answer(&pool, receipt.envelope.id).await;
    assert!(
        text.contains("<EstadoRecepEnv>2</EstadoRecepEnv>")
            && text.contains("<EstadoRecepDTE>1</EstadoRecepDTE>"),
        "{text}"
    );
    let receipt = receive(&pool, genuine).await.unwrap();
    assert!(!receipt.documents[0].duplicate);
    assert!(receipt.documents[0].row.valid);

    // A real supplier's factura from other software (lib-cl-sii's test data): its own
    // checks hold, and it is named as addressed to another company.
    let real = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/DTE--60910000-1--33--2336600.xml"),
    )
    .unwrap();
    let receipt = receive(&pool, real).await.unwrap();
    let d = &receipt.documents[0].row;
    assert_eq!(d.rut_emisor, "60910000-1");
    assert!(
        d.checks.0.signature.passed && d.checks.0.ted.passed,
        "{d:?}"
    );
    assert_eq!(d.estado_recep_dte, received::DTE_RECEPTOR_ERROR);

    // Not a DTE at all: refused with the problem, nothing stored.
    let stored = count(&pool, "received_envelopes").await;
    for (body, problem) in [
        (b"not xml at all".to_vec(), "not well-formed"),
        (b"<Factura/>".to_vec(), "Factura"),
        (
            b"<EnvioDTE xmlns=\"http://www.sii.cl/SiiDte\"><SetDTE/></EnvioDTE>".to_vec(),
            "holds no DTE",
        ),
        (vec![b' '; received::MAX_FILE_BYTES + 1], "more than"),
    ] {
        match receive(&pool, body).await {
            Err(ReceiveError::Invalid(found)) => {
                assert!(found.contains(problem), "{found}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(count(&pool, "received_envelopes").await, stored);
}

/// What a real SMTP server (aiosmtpd from PyPI, storing to a Maildir) received, read with
/// Python's own email parser: per message its From, To, Subject and attachments.
fn mailbox(python: &std::path::Path, maildir: &std::path::Path) -> Vec<serde_json::Value> {
    let script = r#"
import base64, email, email.policy, json, pathlib, sys
out = []
for folder in ("new", "cur"):
    for path in sorted(pathlib.Path(sys.argv[1], folder).glob("*")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        files = {p.get_filename(): base64.b64encode(p.get_payload(decode=True)).decode()
                 for p in msg.walk() if p.get_filename()}
        out.append({"from": str(msg["From"]), "to": str(msg["To"]),
                    "subject": str(msg["Subject"]), "files": files})
print(json.dumps(out))
"#;
    let out = Command::new(python)
        .args(["-c", script])
        .arg(maildir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn answers_are_mailed_to_the_supplier_once_the_smtp_server_takes_them() {
    let pool = database().await;
    let us = company().rut;
    let s = supplier_with_caf();
    let bytes = s.envelope(&[s.factura(30, &us.to_string())], &us.to_string(), 1);
    let receipt = received::receive(
        &pool,
        receiver(),
        "api",
        "envio-30.xml",
        "intercambio@proveedora.cl",
        bytes,
    )
    .await
    .unwrap();
    let envelope = receipt.envelope.id;
    let sent = received::envelope_answers(&pool, envelope).await.unwrap();
    let (answer_id, answer_no) = (sent[0].id, sent[0].answer_no);
    assert_eq!(sent[0].answer_to, "intercambio@proveedora.cl");

    // The SMTP server is not up yet: the answer waits, the failure is recorded.
    let addr = platform::testing::free_listen_addr();
    let mailer = dte::mail::Mailer::new(
        pool.clone(),
        dte::mail::MailSettings {
            smtp_url: format!("smtp://{addr}"),
            from: "Intercambio Orderflow <dte@orderflow.example>".into(),
            poll_interval: std::time::Duration::from_millis(50),
            max_backoff: std::time::Duration::from_secs(1),
        },
    )
    .unwrap();
    assert_eq!(mailer.send_due().await.unwrap(), 1);
    let (sent, attempts, error): (Option<chrono::DateTime<chrono::Utc>>, i32, String) =
        sqlx::query_as("SELECT sent_at, attempts, error FROM received_answers WHERE id = $1")
            .bind(answer_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(sent.is_none());
    assert_eq!(attempts, 1);
    assert!(!error.is_empty());

    // A real SMTP server comes up; the answer goes out once, as sent.
    let python = platform::testing::python_venv(
        &std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("smtp-venv"),
        9,
        &["aiosmtpd==1.4.6"],
    );
    let maildir = std::env::temp_dir().join(format!("maildir-{}", uuid::Uuid::new_v4()));
    let mut server = Command::new(&python)
        .args(["-m", "aiosmtpd", "-n", "-l", &addr.to_string()])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        mailer.send_due().await.unwrap();
        let sent: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT sent_at FROM received_answers WHERE id = $1")
                .bind(answer_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        if sent.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the answer was never sent"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(mailer.send_due().await.unwrap(), 0, "sent once");
    let messages = mailbox(&python, &maildir);
    server.kill().ok();
    server.wait().ok();
    std::fs::remove_dir_all(&maildir).ok();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    assert_eq!(message["to"], "intercambio@proveedora.cl");
    assert!(
        message["from"]
            .as_str()
            .unwrap()
            .contains("dte@orderflow.example")
    );
    assert_eq!(message["subject"], "Respuesta de recepción: envio-30.xml");
    let attached = message["files"][format!("RespuestaDTE-{answer_no}.xml")]
        .as_str()
        .expect("the answer attached");
    use base64::Engine as _;
    let attached = base64::engine::general_purpose::STANDARD
        .decode(attached)
        .unwrap();
    let stored = received::envelope_answer(&pool, envelope)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attached, stored, "the answer as stored and signed");
    answer(&pool, envelope).await;
}

/// The `Recibo` element of an EnvioRecibos, taken out as it was signed.
fn recibo_of(text: &str) -> String {
    let start = text.find("<Recibo ").unwrap();
    let end = text.find("</Recibo>").unwrap() + "</Recibo>".len();
    text[start..end].to_string()
}

#[tokio::test]
async fn a_valid_document_is_accepted_or_claimed_once_within_eight_days_with_signed_answers() {
    let pool = database().await;
    let us = company().rut.to_string();
    let s = supplier_with_caf();
    let receipt = receive(
        &pool,
        s.envelope(
            &[s.factura(40, &us), s.factura(41, &us), s.factura(42, &us)],
            &us,
            1,
        ),
    )
    .await
    .unwrap();
    let ids: Vec<uuid::Uuid> = receipt.documents.iter().map(|d| d.row.id).collect();
    let now = chrono::Utc::now();

    // Accepted, the goods received: a ResultadoDTE (EstadoDTE 0) and an EnvioRecibos with
    // the law's declaration, each signed and valid.
    let accepted = received::decide(
        &pool,
        receiver(),
        None,
        ids[0],
        &received::Decision::Accept {
            discrepancies: String::new(),
            goods_received_at: Some("Bodega Quilicura".into()),
        },
        now,
    )
    .await
    .unwrap();
    assert_eq!(accepted.decision, "accepted");
    let answers = received::document_answers(&pool, &accepted).await.unwrap();
    let kinds: Vec<&str> = answers.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds, ["recepcion", "resultado", "recibos"]);
    let xml = |i: usize| {
        let pool = pool.clone();
        let id = answers[i].id;
        async move { received::answer_xml(&pool, id).await.unwrap().unwrap().1 }
    };
    let resultado = checked(
        &xml(1).await,
        "RespuestaEnvioDTE_v10.xsd",
        &["Resultado"],
        ROOT_SIGNATURE,
    );
    assert!(
        resultado.contains("<ResultadoDTE><TipoDTE>33</TipoDTE><Folio>40</Folio>")
            && resultado.contains("<EstadoDTE>0</EstadoDTE>")
            && resultado.contains(&format!(
                "<CodEnvio>{}</CodEnvio>",
                receipt.envelope.cod_envio
            )),
        "{resultado}"
    );
    let recibos = checked(
        &xml(2).await,
        "EnvioRecibos_v10.xsd",
        &["SetRecibos"],
        ROOT_SIGNATURE,
    );
    assert!(
        recibos.contains("<Recinto>Bodega Quilicura</Recinto>"),
        "{recibos}"
    );
    assert!(
        recibos.contains(dte::xml::respuesta::DECLARACION),
        "{recibos}"
    );
    assert!(
        recibos.contains(&format!("<RutFirma>{}</RutFirma>", company().rut_envia)),
        "{recibos}"
    );
    // The Recibo's own signature, on the Recibo as it was signed.
    let recibo = recibo_of(&recibos);
    let (recibo, _, _) = encoding_rs::WINDOWS_1252.encode(&recibo);
    checked(
        &recibo,
        "Recibos_v10.xsd",
        &["DocumentoRecibo"],
        ROOT_SIGNATURE,
    );

    // Once only.
    let again = received::decide(
        &pool,
        receiver(),
        None,
        ids[0],
        &received::Decision::Claim {
            reason: "tarde".into(),
            action: Action::ClaimContent,
        },
        now,
    )
    .await;
    assert!(
        matches!(&again, Err(received::DecideError::Refused(p)) if p.contains("already accepted")),
        "{again:?}"
    );

    // With discrepancies (EstadoDTE 1), and claimed (EstadoDTE 2 with the reason).
    let with = received::decide(
        &pool,
        receiver(),
        None,
        ids[1],
        &received::Decision::Accept {
            discrepancies: "Faltaron 2 cajas".into(),
            goods_received_at: None,
        },
        now,
    )
    .await
    .unwrap();
    assert_eq!(with.decision, "accepted_with_discrepancies");
    assert_eq!(with.decision_reason, "Faltaron 2 cajas");
    let claimed = received::decide(
        &pool,
        receiver(),
        None,
        ids[2],
        &received::Decision::Claim {
            reason: "Precio distinto al convenido".into(),
            action: Action::ClaimContent,
        },
        now,
    )
    .await
    .unwrap();
    let answers = received::document_answers(&pool, &claimed).await.unwrap();
    let text = checked(
        &received::answer_xml(&pool, answers[1].id)
            .await
            .unwrap()
            .unwrap()
            .1,
        "RespuestaEnvioDTE_v10.xsd",
        &["Resultado"],
        ROOT_SIGNATURE,
    );
    assert!(
        text.contains("<EstadoDTE>2</EstadoDTE>")
            && text.contains("Precio distinto al convenido")
            && text.contains("<CodRchDsc>-1</CodRchDsc>"),
        "{text}"
    );

    // After the law's 8 days it counts as accepted: no verdict any more.
    let late = receive(&pool, s.envelope(&[s.factura(43, &us)], &us, 2))
        .await
        .unwrap();
    let document = &late.documents[0].row;
    let refused = received::decide(
        &pool,
        receiver(),
        None,
        document.id,
        &received::Decision::Claim {
            reason: "tarde".into(),
            action: Action::ClaimContent,
        },
        document.received_at + chrono::Duration::days(8) + chrono::Duration::minutes(1),
    )
    .await;
    assert!(
        matches!(&refused, Err(received::DecideError::Refused(p)) if p.contains("counts as accepted")),
        "{refused:?}"
    );

    // A document that was not received as valid cannot be accepted.
    let elsewhere = receive(
        &pool,
        s.envelope(&[s.factura(44, "97975000-5")], "97975000-5", 3),
    )
    .await
    .unwrap();
    let refused = received::decide(
        &pool,
        receiver(),
        None,
        elsewhere.documents[0].row.id,
        &received::Decision::Accept {
            discrepancies: String::new(),
            goods_received_at: None,
        },
        now,
    )
    .await;
    assert!(
        matches!(&refused, Err(received::DecideError::Refused(p)) if p.contains("not received")),
        "{refused:?}"
    );

    // Listed by what was decided, and by deadline.
    let folios = |status: &'static str, deadline_before: Option<chrono::DateTime<chrono::Utc>>| {
        let pool = pool.clone();
        async move {
            let mut folios: Vec<i64> = received::list(
                &pool,
                &received::Filter {
                    status: (!status.is_empty()).then(|| status.to_string()),
                    deadline_before,
                    limit: 50,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .iter()
            .map(|d| d.folio)
            .collect();
            folios.sort_unstable();
            folios
        }
    };
    assert_eq!(folios("accepted", None).await, [40]);
    assert_eq!(folios("accepted_with_discrepancies", None).await, [41]);
    assert_eq!(folios("claimed", None).await, [42]);
    assert_eq!(folios("pending", None).await, [43]);
    assert_eq!(folios("not_received", None).await, [44]);
    let soon = chrono::Utc::now() + chrono::Duration::days(9);
    assert_eq!(folios("", Some(soon)).await, [43]);
    assert!(folios("", Some(chrono::Utc::now())).await.is_empty());
}

/// A real IMAP server for one test: Debian's Dovecot (`./dev test` installs it), IMAPS
/// only, on a free port, one user with a static password, mail in a Maildir the test
/// delivers into as an MTA would.
struct Dovecot {
    child: std::process::Child,
    dir: std::path::PathBuf,
    port: u16,
    ca: std::path::PathBuf,
}

const MAIL_USER: &str = "dte";
const MAIL_PASSWORD: &str = "test-only-password";

impl Dovecot {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("dovecot-{}", uuid::Uuid::new_v4().simple()));
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        open_to_all(&dir.join("mail"));
        let tls = platform::tls::generate_development(&dir.join("tls"), &["imap"]).unwrap();
        let (_, cert, key) = &tls.roles[0];
        let port = platform::testing::free_listen_addr().port();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let (uid, gid) = (
            String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap(),
            String::from_utf8(Command::new("id").arg("-g").output().unwrap().stdout).unwrap(),
        );
        // As root, Dovecot drops its login and internal processes to its own users, and
        // never reads mail as root: the mail belongs to nobody (65534) in directories
        // anyone may write. As anyone else, every process runs as that user.
        let root = uid.trim() == "0";
        let (uid, gid) = if root {
            ("65534".to_string(), "65534".to_string())
        } else {
            (uid, gid)
        };
        let unprivileged = if root {
            String::new()
        } else {
            format!(
                "default_internal_user = {user}\ndefault_login_user = {user}\n\
                 service imap-login {{\n  chroot =\n}}\nservice auth {{\n  user = {user}\n}}\n"
            )
        };
        let d = dir.display();
        let config = format!(
            "protocols = imap\nlisten = 127.0.0.1\nbase_dir = {d}/run\nstate_dir = {d}/state\n\
             log_path = /dev/stderr\ninfo_log_path = /dev/null\nssl = required\n\
             ssl_cert = <{cert}\nssl_key = <{key}\nauth_mechanisms = plain login\n\
             mail_location = maildir:{d}/mail/%u\nfirst_valid_uid = 0\n\
             passdb {{\n  driver = static\n  args = password={MAIL_PASSWORD}\n}}\n\
             userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={d}/mail/%u\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    port = 0\n  }}\n\
             inet_listener imaps {{\n    port = {port}\n    ssl = yes\n  }}\n}}\n{unprivileged}",
            cert = cert.display(),
            key = key.display(),
            uid = uid.trim(),
            gid = gid.trim(),
        );
        std::fs::write(dir.join("dovecot.conf"), config).unwrap();
        let child = Command::new("dovecot")
            .args(["-F", "-c"])
            .arg(dir.join("dovecot.conf"))
            .spawn()
            .expect("dovecot runs (./dev test installs dovecot-imapd)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "dovecot did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self {
            child,
            dir,
            port,
            ca: tls.ca,
        }
    }

    /// Delivers `message` to the user's Maildir as an MTA does (written in tmp, moved into
    /// new).
    fn deliver(&self, message: &[u8]) {
        let maildir = self.dir.join("mail").join(MAIL_USER);
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        for dir in [
            maildir.clone(),
            maildir.join("tmp"),
            maildir.join("new"),
            maildir.join("cur"),
        ] {
            open_to_all(&dir);
        }
        let name = format!("{}.orderflow-test", uuid::Uuid::new_v4().simple());
        std::fs::write(maildir.join("tmp").join(&name), message).unwrap();
        std::fs::rename(
            maildir.join("tmp").join(&name),
            maildir.join("new").join(&name),
        )
        .unwrap();
    }
}

/// Lets the mail user (another user than the test's when it runs as root) write `dir`.
fn open_to_all(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// A supplier's message with `attachments` (name, content type, bytes).
fn mail_from_supplier(attachments: &[(&str, &str, Vec<u8>)]) -> Vec<u8> {
    use lettre::message::{Attachment, MultiPart, SinglePart, header::ContentType};
    let mut parts = MultiPart::mixed().singlepart(SinglePart::plain(
        "Adjuntamos nuestro envío de documentos.".to_string(),
    ));
    for (name, kind, bytes) in attachments {
        parts = parts.singlepart(
            Attachment::new(name.to_string())
                .body(bytes.clone(), ContentType::parse(kind).unwrap()),
        );
    }
    lettre::Message::builder()
        .from(
            "Proveedora Ñuñoa <intercambio@proveedora.cl>"
                .parse()
                .unwrap(),
        )
        .to("dte@orderflow.example".parse().unwrap())
        .subject("Envío de DTE")
        .multipart(parts)
        .unwrap()
        .formatted()
}

#[tokio::test]
async fn the_exchange_mailbox_is_read_over_imaps_and_a_message_is_marked_seen_only_once_stored() {
    let pool = database().await;
    let us = company().rut.to_string();
    let s = supplier_with_caf();
    let dovecot = Dovecot::start();
    let envelope = s.envelope(&[s.factura(60, &us)], &us, 1);
    dovecot.deliver(&mail_from_supplier(&[
        ("envio-60.xml", "application/xml", envelope.clone()),
        (
            "factura-60.pdf",
            "application/pdf",
            b"%PDF-1.4 not read".to_vec(),
        ),
    ]));
    dovecot.deliver(&mail_from_supplier(&[(
        "catalogo.xml",
        "text/xml",
        b"<Catalogo/>".to_vec(),
    )]));
    // As text in its charset, as much software attaches XML: its bytes must reach
    // verification untouched (the issuer's name, Ñuñoa, is in the signed document).
    let text_attached = s.envelope(&[s.factura(61, &us)], &us, 2);
    dovecot.deliver(&mail_from_supplier(&[(
        "envio-61.xml",
        "text/xml; charset=ISO-8859-1",
        text_attached.clone(),
    )]));
    let intake = dte::intake::Intake::new(
        pool.clone(),
        company(),
        OURS.identity.clone(),
        dte::intake::ImapSettings {
            url: format!("imaps://{MAIL_USER}@localhost:{}", dovecot.port),
            password: MAIL_PASSWORD.into(),
            ca: Some(dovecot.ca.clone()),
            poll_interval: std::time::Duration::from_millis(100),
        },
    )
    .unwrap();

    // The process dies after storing, before marking the messages seen: the envelope is
    // stored (its answer to go to the sender), the other XML refused, nothing is seen.
    let round = intake.poll(false).await.unwrap();
    assert_eq!(
        round,
        dte::intake::Round {
            messages: 3,
            received: 2,
            refused: 1
        }
    );
    assert_eq!(count(&pool, "received_envelopes").await, 2);
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT bytes FROM received_envelopes WHERE name = 'envio-61.xml'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        stored == text_attached,
        "not kept byte for byte: {} bytes stored, {} sent",
        stored.len(),
        text_attached.len()
    );
    let valid: Vec<bool> = sqlx::query_scalar("SELECT valid FROM received_documents")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(valid, [true, true], "both verify");
    let (source, name, answer_to): (String, String, String) = sqlx::query_as(
        "SELECT source, name, answer_to FROM received_envelopes WHERE name = 'envio-60.xml'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(source.starts_with("imap:"), "{source}");
    assert_eq!(name, "envio-60.xml");
    assert_eq!(answer_to, "intercambio@proveedora.cl");

    // Read again: nothing stored twice, and now both are marked seen.
    let round = intake.poll(true).await.unwrap();
    assert_eq!((round.messages, round.received), (3, 2));
    assert_eq!(count(&pool, "received_envelopes").await, 2);
    assert_eq!(count(&pool, "received_documents").await, 2);
    assert_eq!(intake.poll(true).await.unwrap().messages, 0);

    // A wrong password is an error naming the login, and reads nothing.
    let wrong = dte::intake::Intake::new(
        pool.clone(),
        company(),
        OURS.identity.clone(),
        dte::intake::ImapSettings {
            url: format!("imaps://{MAIL_USER}@localhost:{}", dovecot.port),
            password: "wrong".into(),
            ca: Some(dovecot.ca.clone()),
            poll_interval: std::time::Duration::from_millis(100),
        },
    )
    .unwrap();
    let error = wrong.poll(true).await.unwrap_err();
    assert!(format!("{error:#}").contains("login"), "{error:#}");
}

#[tokio::test]
async fn documents_near_their_deadline_are_counted_until_decided() {
    let handle = platform::admin::prometheus();
    let gauge = |tipo: i32| {
        let line = format!("dte_received_deadline_soon{{tipo=\"{tipo}\"}} ");
        handle
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(&line).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let pool = database().await;
    let us = company().rut.to_string();
    let s = supplier_with_caf();
    let receipt = receive(
        &pool,
        s.envelope(&[s.factura(70, &us), s.factura(71, &us)], &us, 1),
    )
    .await
    .unwrap();
    received::refresh_deadline_gauges(&pool).await.unwrap();
    assert_eq!(gauge(33), "0", "fresh documents have 8 days");
    assert_eq!(gauge(52), "0", "every type a buyer receives is exported");

    // Received 7 days ago: one day left.
    sqlx::query("UPDATE received_documents SET received_at = now() - interval '7 days'")
        .execute(&pool)
        .await
        .unwrap();
    received::refresh_deadline_gauges(&pool).await.unwrap();
    assert_eq!(gauge(33), "2");
    received::decide(
        &pool,
        receiver(),
        None,
        receipt.documents[0].row.id,
        &received::Decision::Accept {
            discrepancies: String::new(),
            goods_received_at: None,
        },
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    received::refresh_deadline_gauges(&pool).await.unwrap();
    assert_eq!(gauge(33), "1", "decided documents no longer count");
}

#[tokio::test]
async fn facturas_are_accepted_and_claimed_on_the_sii_registry_within_the_siis_eight_days() {
    let pool = database().await;
    let us = company().rut.to_string();
    let s = supplier_with_caf();
    let sim = SiiSimulator::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sii_registry = sim.registry();
    let endpoints = SiiEndpoints::at(&sim.url());
    let shutdown = platform::CancellationToken::new();
    tokio::spawn(sim.run_until_stopped(shutdown.clone()));
    let timeout = std::time::Duration::from_secs(10);

    // The supplier sends folios 50 to 53 to the SII, and 50 to 54 to us (54 never reached
    // the SII).
    let sent = [50, 51, 52, 53, 55].map(|folio| s.factura(folio, &us));
    s.send_to_sii(endpoints.clone(), &sent, &us).await.unwrap();
    let mut to_us = sent.to_vec();
    to_us.push(s.factura(54, &us));
    let receipt = receive(&pool, s.envelope(&to_us, &us, 2)).await.unwrap();
    let id = |folio: i64| {
        receipt
            .documents
            .iter()
            .find(|d| d.row.folio == folio)
            .unwrap()
            .row
            .id
    };
    let ours = HttpSiiClient::new(
        endpoints,
        OURS.identity.clone(),
        company().rut,
        company().rut_envia,
        timeout,
    )
    .unwrap();
    let now = chrono::Utc::now();
    let decide = |id, decision| {
        let pool = pool.clone();
        let ours = &ours;
        async move { received::decide(&pool, receiver(), Some(ours), id, &decision, now).await }
    };
    let codes = |d: &received::DocumentRow| -> Vec<String> {
        d.sii_events.iter().map(|e| e.code.clone()).collect()
    };

    // Accepted with the goods received: ACD and ERM on the registry, with the SII's date.
    let accepted = decide(
        id(50),
        received::Decision::Accept {
            discrepancies: String::new(),
            goods_received_at: Some("Bodega Quilicura".into()),
        },
    )
    .await
    .unwrap();
    assert_eq!(accepted.decision, "accepted");
    assert_eq!(codes(&accepted), ["ACD", "ERM"]);
    assert_eq!(accepted.sii_events[0].responsible, us);
    let sii_received_at = accepted.sii_received_at.expect("the SII's reception date");
    assert!(sii_received_at <= accepted.received_at);
    assert_eq!(
        accepted.deadline(),
        sii_received_at + chrono::Duration::days(8)
    );

    // Claimed for goods partly missing: RFP; the SII then refuses to accept it (codResp 12),
    // and our record refuses a second verdict.
    let claimed = decide(
        id(51),
        received::Decision::Claim {
            reason: "Faltaron 3 cajas".into(),
            action: Action::ClaimPartialGoods,
        },
    )
    .await
    .unwrap();
    assert_eq!(claimed.decision, "claimed");
    assert_eq!(codes(&claimed), ["RFP"]);
    let refused = ours
        .register(&s.issuer.rut.to_string(), 33, 51, Action::AcceptContent)
        .await
        .unwrap();
    assert_eq!(refused.code, 12, "{refused:?}");
    let (listed, events) = ours
        .events(&s.issuer.rut.to_string(), 33, 51)
        .await
        .unwrap();
    assert_eq!(listed.code, registry::EVENTS_LISTED);
    assert_eq!(events, claimed.sii_events.0);

    // The registry's answer is the rule: registering the same event again is "already
    // registered", which a retry after a lost answer counts as done.
    let again = ours
        .register(&s.issuer.rut.to_string(), 33, 51, Action::ClaimPartialGoods)
        .await
        .unwrap();
    assert_eq!(again.code, registry::ALREADY_REGISTERED);
    assert!(again.registered());

    // The SII received folio 52 nine days ago: the deadline runs from that date, not from
    // ours. The watcher learns it, the document counts as accepted, and a late claim is
    // refused here (and by the SII: codResp 8).
    assert!(sii_registry.backdate(&s.issuer.rut.to_string(), 33, 52, chrono::Duration::days(9)));
    assert_eq!(
        received::learn_reception_dates(&pool, &ours).await.unwrap(),
        3,
        "52, 53 and 55; the SII has no date for 54"
    );
    let late = decide(
        id(52),
        received::Decision::Claim {
            reason: "tarde".into(),
            action: Action::ClaimContent,
        },
    )
    .await;
    assert!(
        matches!(&late, Err(received::DecideError::Refused(p)) if p.contains("counts as accepted")),
        "{late:?}"
    );
    let too_late = ours
        .register(&s.issuer.rut.to_string(), 33, 52, Action::ClaimContent)
        .await
        .unwrap();
    assert_eq!(too_late.code, registry::TOO_LATE, "{too_late:?}");
    let by_law = received::list(
        &pool,
        &received::Filter {
            status: Some("accepted_by_law".into()),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        by_law.iter().map(|d| d.folio).collect::<Vec<_>>(),
        [52],
        "{by_law:?}"
    );

    // A factura the SII never received cannot be registered: refused, nothing recorded.
    let unknown = decide(
        id(54),
        received::Decision::Accept {
            discrepancies: String::new(),
            goods_received_at: None,
        },
    )
    .await;
    assert!(
        matches!(&unknown, Err(received::DecideError::Refused(p)) if p.contains("has not received")),
        "{unknown:?}"
    );

    // The registry unreachable: unavailable, nothing recorded; the verdict goes through
    // once it is back.
    let unreachable = HttpSiiClient::new(
        SiiEndpoints::at(&platform::testing::closed_port_url("http")),
        OURS.identity.clone(),
        company().rut,
        company().rut_envia,
        timeout,
    )
    .unwrap();
    let decision = received::Decision::Accept {
        discrepancies: String::new(),
        goods_received_at: None,
    };
    let down = received::decide(
        &pool,
        receiver(),
        Some(&unreachable),
        id(53),
        &decision,
        now,
    )
    .await;
    assert!(
        matches!(&down, Err(received::DecideError::Unavailable(p)) if p.contains("try again")),
        "{down:?}"
    );
    let untouched = received::document(&pool, id(53)).await.unwrap().unwrap();
    assert_eq!(untouched.decision, "");
    assert_eq!(
        received::document_answers(&pool, &untouched)
            .await
            .unwrap()
            .len(),
        1,
        "only the envelope's reception"
    );
    let accepted = decide(id(53), decision).await.unwrap();
    assert_eq!(codes(&accepted), ["ACD"]);

    // The SII already holds a claim on 55 that was never recorded here (the process died
    // between the registry's answer and its commit): accepting it now is refused by the
    // SII (codResp 12), nothing is decided, and the document shows the SII's claim.
    let registered = ours
        .register(&s.issuer.rut.to_string(), 33, 55, Action::ClaimContent)
        .await
        .unwrap();
    assert!(registered.registered());
    let refused = decide(
        id(55),
        received::Decision::Accept {
            discrepancies: String::new(),
            goods_received_at: None,
        },
    )
    .await;
    assert!(
        matches!(&refused, Err(received::DecideError::Refused(p)) if p.contains("codResp 12")),
        "{refused:?}"
    );
    let shown = received::document(&pool, id(55)).await.unwrap().unwrap();
    assert_eq!(shown.decision, "");
    assert_eq!(codes(&shown), ["RCD"]);
    shutdown.cancel();
}

/// The intake of the child process [`a_poller_killed_mid_mailbox_loses_nothing_and_stores_nothing_twice`]
/// starts: `database url|port|ca path`.
const INTAKE_CHILD: &str = "DTE_TEST_INTAKE_CHILD";

fn intake_for(pool: PgPool, port: u16, ca: std::path::PathBuf) -> dte::intake::Intake {
    dte::intake::Intake::new(
        pool,
        company(),
        OURS.identity.clone(),
        dte::intake::ImapSettings {
            url: format!("imaps://{MAIL_USER}@localhost:{port}"),
            password: MAIL_PASSWORD.into(),
            ca: Some(ca),
            poll_interval: std::time::Duration::from_millis(50),
        },
    )
    .unwrap()
}

#[tokio::test]
async fn a_poller_killed_mid_mailbox_loses_nothing_and_stores_nothing_twice() {
    // In the child process: poll the mailbox until killed.
    if let Ok(child) = std::env::var(INTAKE_CHILD) {
        let mut parts = child.splitn(3, '|');
        let (url, port, ca) = (
            parts.next().unwrap(),
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap(),
        );
        let pool = dte::open_database(url).await.unwrap();
        intake_for(pool, port, ca.into())
            .run(platform::CancellationToken::new())
            .await
            .unwrap();
        return;
    }
    const MESSAGES: i64 = 30;
    let url = platform::testing::fresh_database().await.unwrap();
    let pool = dte::open_database(&url).await.unwrap();
    let us = company().rut.to_string();
    let s = supplier_with_caf();
    let dovecot = Dovecot::start();
    for folio in 1..=MESSAGES {
        let envelope = s.envelope(&[s.factura(folio, &us)], &us, 0);
        dovecot.deliver(&mail_from_supplier(&[(
            &format!("envio-{folio}.xml"),
            "application/xml",
            envelope,
        )]));
    }
    // A real process, killed (SIGKILL) once it has stored a few envelopes: wherever it was
    // (downloading a message, storing an envelope, marking a message seen), it was not let
    // finish.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_poller_killed_mid_mailbox_loses_nothing_and_stores_nothing_twice",
            "--nocapture",
        ])
        .env(
            INTAKE_CHILD,
            format!("{url}|{}|{}", dovecot.port, dovecot.ca.display()),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count(&pool, "received_envelopes").await < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the child stored nothing"
        );
        assert!(child.try_wait().unwrap().is_none(), "the child stopped");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = count(&pool, "received_envelopes").await;
    assert!(
        at_kill < MESSAGES,
        "killed only after all {MESSAGES} were stored"
    );

    // Started again, it reads what is left: every envelope once, every document once, one
    // answer each, and every message seen.
    let intake = intake_for(pool.clone(), dovecot.port, dovecot.ca.clone());
    let round = intake.poll(true).await.unwrap();
    assert!(round.messages as i64 >= MESSAGES - at_kill, "{round:?}");
    assert_eq!(count(&pool, "received_envelopes").await, MESSAGES);
    assert_eq!(count(&pool, "received_documents").await, MESSAGES);
    assert_eq!(count(&pool, "received_answers").await, MESSAGES);
    let folios: Vec<i64> =
        sqlx::query_scalar("SELECT folio FROM received_documents ORDER BY folio")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(folios, (1..=MESSAGES).collect::<Vec<_>>());
    assert_eq!(intake.poll(true).await.unwrap().messages, 0, "all seen");
}
