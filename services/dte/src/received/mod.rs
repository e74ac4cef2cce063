//! The buying side: envelopes suppliers send to the company. Each is stored byte for byte
//! with what verification found (`verify`), and each of its documents once: a valid
//! document already received (same RUTEmisor, TipoDTE, Folio) is answered as repeated, not
//! stored again. The reception codes are those the answer to the supplier carries
//! (`EstadoRecepEnv` and `EstadoRecepDTE` of RespuestaEnvioDTE_v10.xsd).

use chrono::{DateTime, Utc};
use platform::chile::Rut;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

use crate::{
    verify::{self, Check, Report},
    xml::signature::SigningIdentity,
};

mod answers;
mod deadlines;

pub use answers::{
    AnswerRow, DecideError, Decision, answer_xml, decide, document_answers, envelope_answer,
    envelope_answers,
};
pub use deadlines::{learn_reception_dates, refresh_deadline_gauges, watch_deadlines};

/// The company receiving: its RUT (`DTE_RUT_EMISOR`), the certificate its answers are
/// signed with, and whose that certificate is (`DTE_RUT_ENVIA`: `RutFirma` of a receipt).
#[derive(Clone, Copy)]
pub struct Receiver<'a> {
    pub rut: &'a Rut,
    pub identity: &'a SigningIdentity,
    pub signer: &'a Rut,
}

/// `EstadoRecepEnv`: the envelope was received as it should be.
pub const ENV_OK: i32 = 0;
/// `EstadoRecepEnv`: the envelope does not conform to its schema.
pub const ENV_SCHEMA_ERROR: i32 = 1;
/// `EstadoRecepEnv`: the envelope's signature does not verify.
pub const ENV_SIGNATURE_ERROR: i32 = 2;
/// `EstadoRecepEnv`: the envelope is addressed to another company.
pub const ENV_WRONG_RECEPTOR: i32 = 3;

/// `EstadoRecepDTE`: the document was received.
pub const DTE_OK: i32 = 0;
/// `EstadoRecepDTE`: the document's signature does not verify.
pub const DTE_SIGNATURE_ERROR: i32 = 1;
/// `EstadoRecepDTE`: the document's issuer is not the envelope's sender.
pub const DTE_ISSUER_ERROR: i32 = 2;
/// `EstadoRecepDTE`: the document is addressed to another company.
pub const DTE_RECEPTOR_ERROR: i32 = 3;
/// `EstadoRecepDTE`: the document had been received before.
pub const DTE_REPEATED: i32 = 4;
/// `EstadoRecepDTE`: another fault (schema, TED).
pub const DTE_OTHER: i32 = 99;

/// A check as stored with a received document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredCheck {
    pub passed: bool,
    pub applicable: bool,
    pub detail: String,
}

impl From<&Check> for StoredCheck {
    fn from(c: &Check) -> Self {
        Self {
            passed: c.passed,
            applicable: c.applicable,
            detail: c.detail.clone(),
        }
    }
}

impl StoredCheck {
    fn of(passed: bool, detail: String) -> Self {
        Self {
            passed,
            applicable: true,
            detail,
        }
    }
}

/// Every check of a received document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checks {
    pub schema: StoredCheck,
    pub signature: StoredCheck,
    pub ted: StoredCheck,
    pub ted_consistency: StoredCheck,
    pub receptor: StoredCheck,
}

impl Checks {
    fn all_passed(&self) -> bool {
        [
            &self.schema,
            &self.signature,
            &self.ted,
            &self.ted_consistency,
            &self.receptor,
        ]
        .iter()
        .all(|c| c.passed)
    }
}

/// A stored envelope (without its bytes).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EnvelopeRow {
    pub id: Uuid,
    pub cod_envio: i64,
    pub source: String,
    pub name: String,
    pub kind: String,
    pub rut_emisor: String,
    pub rut_receptor: String,
    pub set_id: String,
    pub signature_ok: bool,
    pub signature_detail: String,
    pub estado_recep_env: i32,
    pub estado_detail: String,
    pub answer_to: String,
    pub received_at: DateTime<Utc>,
}

/// A stored document.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DocumentRow {
    pub id: Uuid,
    pub envelope_id: Uuid,
    pub rut_emisor: String,
    pub razon_social_emisor: String,
    pub tipo_dte: i32,
    pub folio: i64,
    pub rut_receptor: String,
    pub fch_emis: String,
    pub mnt_total: i64,
    pub checks: Json<Checks>,
    pub valid: bool,
    pub estado_recep_dte: i32,
    pub estado_detail: String,
    /// `accepted`, `accepted_with_discrepancies`, `claimed`; empty while undecided.
    pub decision: String,
    pub decision_reason: String,
    pub decided_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    /// When the SII received it, once the registry said so.
    pub sii_received_at: Option<DateTime<Utc>>,
    /// Its events in the SII's registry, as last listed.
    pub sii_events: Json<Vec<crate::sii::registry::Event>>,
}

impl DocumentRow {
    /// The end of the law's 8 days to accept or claim it (Ley 19.983): from the SII's
    /// reception once the registry told it (it comes before ours: a supplier sends the SII
    /// its document first), else from ours.
    pub fn deadline(&self) -> DateTime<Utc> {
        self.sii_received_at.unwrap_or(self.received_at) + chrono::Duration::days(DEADLINE_DAYS)
    }

    /// Whether its acceptance or claim is registered with the SII (facturas 33, 34, 43).
    pub fn on_registry(&self) -> bool {
        crate::sii::registry::REGISTRY_TYPES.contains(&self.tipo_dte)
    }
}

/// A document's deadline in SQL, as [`DocumentRow::deadline`] computes it (`$days`: the
/// parameter holding [`DEADLINE_DAYS`]).
macro_rules! deadline_sql {
    ($days:literal) => {
        concat!(
            "(coalesce(sii_received_at, received_at) + make_interval(days => ",
            $days,
            "))"
        )
    };
}
pub(crate) use deadline_sql;

/// Days a buyer has to accept or claim a document; after them it counts as accepted.
pub const DEADLINE_DAYS: i64 = 8;

const ENVELOPE_COLUMNS: &str = "id, cod_envio, source, name, kind, rut_emisor, rut_receptor, \
    set_id, signature_ok, signature_detail, estado_recep_env, estado_detail, answer_to, \
    received_at";
const DOCUMENT_COLUMNS: &str = "id, envelope_id, rut_emisor, razon_social_emisor, tipo_dte, \
    folio, rut_receptor, fch_emis, mnt_total, checks, valid, estado_recep_dte, estado_detail, \
    decision, decision_reason, decided_at, received_at, sii_received_at, sii_events";

/// A document as one receipt saw it.
#[derive(Debug, Clone)]
pub struct ReceiptDocument {
    /// The stored document: this envelope's, or the first one's when `duplicate`.
    pub row: DocumentRow,
    /// Received before: this copy was not stored, and is answered as repeated.
    pub duplicate: bool,
}

/// What receiving one file did.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub envelope: EnvelopeRow,
    pub documents: Vec<ReceiptDocument>,
    /// The very same file had been received before; nothing was stored now.
    pub repeated: bool,
}

/// Why a file was not received (nothing was stored).
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// Not an envelope or a DTE at all: the problem with the body.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Two RUTs are the same company (`76.086.428-5` is `76086428-5`).
fn same_rut(a: &str, b: &Rut) -> bool {
    Rut::parse(a).is_ok_and(|a| a == *b)
}

/// A document's checks and reception code, as the envelope they came in says.
fn judge(
    d: &verify::DocumentReport,
    envelope_sender: Option<&str>,
    company: &Rut,
) -> (Checks, i32, String) {
    let receptor = if same_rut(&d.rut_receptor, company) {
        StoredCheck::of(true, format!("RUTRecep {} is this company", d.rut_receptor))
    } else {
        StoredCheck::of(
            false,
            format!(
                "RUTRecep {:?} is not this company ({company})",
                d.rut_receptor
            ),
        )
    };
    let checks = Checks {
        schema: (&d.schema).into(),
        signature: (&d.signature).into(),
        ted: (&d.ted).into(),
        ted_consistency: (&d.ted_consistency).into(),
        receptor,
    };
    let issuer_mismatch = envelope_sender
        .filter(|sender| Rut::parse(sender).ok() != Rut::parse(&d.rut_emisor).ok())
        .map(|sender| {
            format!(
                "RUTEmisor {} is not the envelope's sender {sender}",
                d.rut_emisor
            )
        });
    let (code, detail) = if !checks.signature.passed {
        (
            DTE_SIGNATURE_ERROR,
            format!("signature: {}", checks.signature.detail),
        )
    } else if let Some(mismatch) = issuer_mismatch {
        (DTE_ISSUER_ERROR, mismatch)
    } else if !checks.receptor.passed {
        (DTE_RECEPTOR_ERROR, checks.receptor.detail.clone())
    } else if !checks.schema.passed {
        (DTE_OTHER, format!("schema: {}", checks.schema.detail))
    } else if !checks.ted.passed {
        (DTE_OTHER, format!("TED: {}", checks.ted.detail))
    } else if !checks.ted_consistency.passed {
        (
            DTE_OTHER,
            format!("TED vs document: {}", checks.ted_consistency.detail),
        )
    } else {
        (DTE_OK, "DTE recibido OK".to_string())
    };
    (checks, code, detail)
}

/// The envelope's reception code.
fn judge_envelope(report: &Report, company: &Rut) -> (i32, String) {
    let schema = report.documents.iter().find(|d| !d.schema.passed);
    if let Some(d) = schema {
        return (ENV_SCHEMA_ERROR, format!("schema: {}", d.schema.detail));
    }
    if !report.envelope_signature.passed {
        return (
            ENV_SIGNATURE_ERROR,
            format!("signature: {}", report.envelope_signature.detail),
        );
    }
    if let Some(caratula) = &report.caratula
        && !same_rut(&caratula.rut_receptor, company)
    {
        return (
            ENV_WRONG_RECEPTOR,
            format!(
                "RutReceptor {:?} is not this company ({company})",
                caratula.rut_receptor
            ),
        );
    }
    (ENV_OK, "Envío recibido conforme".to_string())
}

/// The largest file received: the schema's 2,000 documents per envelope at a few kB each.
/// The API's body limit is the gateway's; the mailbox and the CLI are bounded here.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// Receives one file (an `EnvioDTE`, `EnvioBOLETA` or lone `DTE`) named `name` (empty: named
/// after its kind and digest), whose answer goes to `reply_to` (empty: the documents'
/// `CorreoEmisor`, if any), for
/// `receiver` from `source` (`api`, `cli`, a mailbox message): verifies it, stores it and
/// each new document, with the signed `RespuestaDTE` answering it, in one transaction. The
/// same bytes again answer the first receipt.
pub async fn receive(
    pool: &PgPool,
    receiver: Receiver<'_>,
    source: &str,
    name: &str,
    reply_to: &str,
    bytes: Vec<u8>,
) -> Result<Receipt, ReceiveError> {
    let company = receiver.rut;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ReceiveError::Invalid(format!(
            "the file is {} bytes, more than the {MAX_FILE_BYTES} an envelope can need",
            bytes.len()
        )));
    }
    let sha256 = sha2::Sha256::digest(&bytes).to_vec();
    if let Some(receipt) = stored_receipt(pool, &sha256).await? {
        return Ok(receipt);
    }
    let (bytes, report) = tokio::task::spawn_blocking(move || {
        let report = verify::verify(&bytes);
        (bytes, report)
    })
    .await
    .map_err(|e| anyhow::anyhow!("verifying: {e}"))?;
    let report = report.map_err(|e| ReceiveError::Invalid(e.to_string()))?;
    if report.documents.is_empty() {
        return Err(ReceiveError::Invalid(format!(
            "the {} holds no DTE",
            report.kind
        )));
    }
    // A file with no name (the API's body) is named after its kind and digest.
    let name = if name.is_empty() {
        let digest: String = sha256[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{digest}.xml", report.kind)
    } else {
        name.to_string()
    };
    let answer_to = Some(reply_to.trim())
        .filter(|a| !a.is_empty())
        .or_else(|| {
            report
                .documents
                .iter()
                .map(|d| d.correo_emisor.trim())
                .find(|a| !a.is_empty())
        })
        .unwrap_or_default()
        .to_string();
    let (estado, estado_detail) = judge_envelope(&report, company);
    let sender = report.caratula.as_ref().map(|c| c.rut_emisor.as_str());
    let mut tx = pool.begin().await.map_err(anyhow::Error::from)?;
    let envelope: Option<EnvelopeRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO received_envelopes (id, source, name, kind, rut_emisor, rut_receptor, set_id, \
         bytes, sha256, signature_ok, signature_detail, estado_recep_env, estado_detail, answer_to) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (sha256) DO NOTHING RETURNING {ENVELOPE_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(source)
    .bind(&name)
    .bind(&report.kind)
    .bind(
        report
            .caratula
            .as_ref()
            .map_or("", |c| c.rut_emisor.as_str()),
    )
    .bind(
        report
            .caratula
            .as_ref()
            .map_or("", |c| c.rut_receptor.as_str()),
    )
    .bind(report.caratula.as_ref().map_or("", |c| c.set_id.as_str()))
    .bind(&bytes)
    .bind(&sha256)
    .bind(report.envelope_signature.passed)
    .bind(&report.envelope_signature.detail)
    .bind(estado)
    .bind(&estado_detail)
    .bind(&answer_to)
    .fetch_optional(&mut *tx)
    .await
    .map_err(anyhow::Error::from)?;
    let Some(envelope) = envelope else {
        // The same file, received at the same moment by another request.
        drop(tx);
        return stored_receipt(pool, &sha256)
            .await?
            .ok_or_else(|| anyhow::anyhow!("a received envelope vanished").into());
    };
    let mut documents = Vec::with_capacity(report.documents.len());
    for d in &report.documents {
        let (checks, code, detail) = judge(d, sender, company);
        let valid = checks.all_passed() && code == DTE_OK;
        // Only a valid document holds its (RUTEmisor, TipoDTE, Folio): a forged copy
        // cannot keep the genuine one out.
        let inserted: Option<DocumentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO received_documents (id, envelope_id, rut_emisor, razon_social_emisor, \
             tipo_dte, folio, rut_receptor, fch_emis, mnt_total, xml, checks, valid, \
             estado_recep_dte, estado_detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (rut_emisor, tipo_dte, folio) WHERE valid DO NOTHING \
             RETURNING {DOCUMENT_COLUMNS}"
        )))
        .bind(Uuid::now_v7())
        .bind(envelope.id)
        .bind(&d.rut_emisor)
        .bind(&d.razon_social_emisor)
        .bind(d.tipo_dte)
        .bind(d.folio)
        .bind(&d.rut_receptor)
        .bind(&d.fch_emis)
        .bind(d.mnt_total)
        .bind(&d.xml)
        .bind(Json(&checks))
        .bind(valid)
        .bind(code)
        .bind(&detail)
        .fetch_optional(&mut *tx)
        .await
        .map_err(anyhow::Error::from)?;
        let document = match inserted {
            Some(row) => ReceiptDocument {
                row,
                duplicate: false,
            },
            None => {
                let first: DocumentRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {DOCUMENT_COLUMNS} FROM received_documents \
                     WHERE rut_emisor = $1 AND tipo_dte = $2 AND folio = $3 AND valid"
                )))
                .bind(&d.rut_emisor)
                .bind(d.tipo_dte)
                .bind(d.folio)
                .fetch_one(&mut *tx)
                .await
                .map_err(anyhow::Error::from)?;
                ReceiptDocument {
                    row: first,
                    duplicate: true,
                }
            }
        };
        metrics::counter!(
            "dte_received_documents_total",
            "tipo" => d.tipo_dte.to_string(),
            "estado" => if document.duplicate { DTE_REPEATED } else { code }.to_string()
        )
        .increment(1);
        documents.push(document);
    }
    answers::answer_reception(&mut tx, receiver, &envelope, &documents).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    tracing::info!(
        envelope = %envelope.id,
        kind = %envelope.kind,
        sender = %envelope.rut_emisor,
        estado,
        documents = documents.len(),
        "received an envelope"
    );
    Ok(Receipt {
        envelope,
        documents,
        repeated: false,
    })
}

/// The receipt of a file stored before (by its SHA-256), marked repeated.
async fn stored_receipt(pool: &PgPool, sha256: &[u8]) -> Result<Option<Receipt>, ReceiveError> {
    let envelope: Option<EnvelopeRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENVELOPE_COLUMNS} FROM received_envelopes WHERE sha256 = $1"
    )))
    .bind(sha256)
    .fetch_optional(pool)
    .await
    .map_err(anyhow::Error::from)?;
    let Some(envelope) = envelope else {
        return Ok(None);
    };
    let documents = envelope_documents(pool, envelope.id).await?;
    Ok(Some(Receipt {
        envelope,
        documents: documents
            .into_iter()
            .map(|row| ReceiptDocument {
                row,
                duplicate: false,
            })
            .collect(),
        repeated: true,
    }))
}

/// The documents stored from one envelope (the column lists are constants: the SQL holds
/// no input).
pub async fn envelope_documents(pool: &PgPool, envelope: Uuid) -> anyhow::Result<Vec<DocumentRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DOCUMENT_COLUMNS} FROM received_documents WHERE envelope_id = $1 ORDER BY id"
    )))
    .bind(envelope)
    .fetch_all(pool)
    .await?)
}

/// One received document.
pub async fn document(pool: &PgPool, id: Uuid) -> anyhow::Result<Option<DocumentRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DOCUMENT_COLUMNS} FROM received_documents WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// One received document's DTE element, as received.
pub async fn document_xml(pool: &PgPool, id: Uuid) -> anyhow::Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT xml FROM received_documents WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// Which received documents to list.
#[derive(Debug, Default)]
pub struct Filter {
    pub rut_emisor: Option<String>,
    pub tipo: Option<i32>,
    /// `pending` (undecided, within the 8 days), `accepted_by_law` (undecided after them),
    /// `accepted`, `accepted_with_discrepancies`, `claimed`, `not_received`.
    pub status: Option<String>,
    /// Only pending documents whose deadline ends before this.
    pub deadline_before: Option<DateTime<Utc>>,
    /// Strictly before this (received_at, id): the page after a token.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// Received documents, newest first.
pub async fn list(pool: &PgPool, filter: &Filter) -> anyhow::Result<Vec<DocumentRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DOCUMENT_COLUMNS} FROM received_documents \
         WHERE ($1::text IS NULL OR rut_emisor = $1) AND ($2::int IS NULL OR tipo_dte = $2) \
           AND ($3::timestamptz IS NULL OR (received_at, id) < ($3, $4)) \
           AND ($6::text IS NULL \
                OR ($6 = 'pending' AND valid AND decision = '' AND {deadline} >= now()) \
                OR ($6 = 'accepted_by_law' AND valid AND decision = '' AND {deadline} < now()) \
                OR ($6 = 'not_received' AND NOT valid) \
                OR decision = $6) \
           AND ($7::timestamptz IS NULL \
                OR (valid AND decision = '' AND {deadline} < $7)) \
         ORDER BY received_at DESC, id DESC LIMIT $5",
        deadline = deadline_sql!("$8")
    )))
    .bind(&filter.rut_emisor)
    .bind(filter.tipo)
    .bind(filter.after.map(|a| a.0))
    .bind(filter.after.map(|a| a.1))
    .bind(filter.limit)
    .bind(&filter.status)
    .bind(filter.deadline_before)
    .bind(DEADLINE_DAYS as i32)
    .fetch_all(pool)
    .await?)
}
