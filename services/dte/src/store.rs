//! The `dte` schema's SQL: CAFs, folio allocation, documents.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{Content, TipoDte};

/// A stored CAF's range and progress.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CafRow {
    pub id: Uuid,
    pub tipo_dte: i32,
    pub folio_from: i64,
    pub folio_to: i64,
    pub fecha_autorizacion: NaiveDate,
    pub uploaded_at: DateTime<Utc>,
    /// The type's next folio (from `folio_counters`).
    pub next_folio: i64,
}

/// A stored range that overlaps a new one.
#[derive(Debug)]
pub struct Overlap {
    pub folio_from: i64,
    pub folio_to: i64,
}

/// Locks the type's folio counter (creating it) for this transaction: every allocation
/// and upload of that type waits here, on every replica.
async fn lock_counter(tx: &mut PgConnection, tipo: TipoDte) -> sqlx::Result<i64> {
    sqlx::query("INSERT INTO folio_counters (tipo_dte) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(tipo.code())
        .execute(&mut *tx)
        .await?;
    sqlx::query_scalar("SELECT next_folio FROM folio_counters WHERE tipo_dte = $1 FOR UPDATE")
        .bind(tipo.code())
        .fetch_one(&mut *tx)
        .await
}

/// Stores a CAF unless its range overlaps one already stored for its type.
pub async fn insert_caf(
    tx: &mut PgConnection,
    id: Uuid,
    tipo: TipoDte,
    folio_from: i64,
    folio_to: i64,
    fecha_autorizacion: NaiveDate,
    xml: &[u8],
) -> sqlx::Result<Result<CafRow, Overlap>> {
    lock_counter(tx, tipo).await?;
    let overlap: Option<(i64, i64)> = sqlx::query_as(
        "SELECT folio_from, folio_to FROM cafs WHERE tipo_dte = $1 AND folio_from <= $3 AND folio_to >= $2 LIMIT 1",
    )
    .bind(tipo.code())
    .bind(folio_from)
    .bind(folio_to)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((folio_from, folio_to)) = overlap {
        return Ok(Err(Overlap {
            folio_from,
            folio_to,
        }));
    }
    sqlx::query("INSERT INTO cafs (id, tipo_dte, folio_from, folio_to, fecha_autorizacion, xml) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(tipo.code())
        .bind(folio_from)
        .bind(folio_to)
        .bind(fecha_autorizacion)
        .bind(xml)
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query_as(CAF_SELECT_BY_ID)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    Ok(Ok(row))
}

const CAF_SELECT: &str = "SELECT c.id, c.tipo_dte, c.folio_from, c.folio_to, c.fecha_autorizacion, c.uploaded_at, \
     COALESCE(f.next_folio, 1) AS next_folio FROM cafs c LEFT JOIN folio_counters f USING (tipo_dte)";
const CAF_SELECT_BY_ID: &str = "SELECT c.id, c.tipo_dte, c.folio_from, c.folio_to, c.fecha_autorizacion, c.uploaded_at, \
     COALESCE(f.next_folio, 1) AS next_folio FROM cafs c LEFT JOIN folio_counters f USING (tipo_dte) WHERE c.id = $1";

/// Every CAF, by type and range.
pub async fn list_cafs(pool: &PgPool) -> sqlx::Result<Vec<CafRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{CAF_SELECT} ORDER BY c.tipo_dte, c.folio_from"
    )))
    .fetch_all(pool)
    .await
}

/// Folios left per type: the unused part of every CAF at or after the type's next folio.
pub async fn folios_remaining(pool: &PgPool) -> sqlx::Result<Vec<(i32, i64)>> {
    sqlx::query_as(
        "SELECT c.tipo_dte, SUM(GREATEST(0, c.folio_to - GREATEST(c.folio_from, COALESCE(f.next_folio, 1)) + 1))::bigint \
         FROM cafs c LEFT JOIN folio_counters f USING (tipo_dte) GROUP BY c.tipo_dte",
    )
    .fetch_all(pool)
    .await
}

/// Documents per status, of those issued in `[from, to)` (a document still waiting for
/// its folio counts by when it was created).
pub async fn status_counts(
    pool: &PgPool,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT status, count(*) FROM documents \
         WHERE ($1::timestamptz IS NULL OR COALESCE(issued_at, created_at) >= $1) \
           AND ($2::timestamptz IS NULL OR COALESCE(issued_at, created_at) < $2) \
         GROUP BY status ORDER BY status",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// Takes the type's next folio, in the caller's transaction, from the first CAF that still
/// has one; `None` when every CAF of the type is used up.
pub async fn allocate_folio(
    tx: &mut PgConnection,
    tipo: TipoDte,
) -> sqlx::Result<Option<(i64, Uuid)>> {
    let next = lock_counter(tx, tipo).await?;
    let caf: Option<(Uuid, i64)> = sqlx::query_as(
        "SELECT id, GREATEST(folio_from, $2) FROM cafs WHERE tipo_dte = $1 AND folio_to >= $2 ORDER BY folio_from LIMIT 1",
    )
    .bind(tipo.code())
    .bind(next)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((caf_id, folio)) = caf else {
        return Ok(None);
    };
    sqlx::query("UPDATE folio_counters SET next_folio = $2 WHERE tipo_dte = $1")
        .bind(tipo.code())
        .bind(folio + 1)
        .execute(&mut *tx)
        .await?;
    Ok(Some((folio, caf_id)))
}

/// A CAF's XML as uploaded.
pub async fn caf_xml(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<Vec<u8>> {
    sqlx::query_scalar("SELECT xml FROM cafs WHERE id = $1")
        .bind(id)
        .fetch_one(tx)
        .await
}

/// A document as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DocumentRow {
    pub id: Uuid,
    pub caf_id: Option<Uuid>,
    pub causation_id: String,
    pub order_id: String,
    pub customer_id: String,
    pub refund_id: Option<String>,
    pub refund_amount: Option<i64>,
    pub refund_full: Option<bool>,
    pub tipo_dte: i32,
    pub folio: Option<i64>,
    pub status: String,
    pub content: Option<sqlx::types::Json<Content>>,
    pub receptor_rut: String,
    pub mnt_neto: i64,
    pub mnt_exe: i64,
    pub iva: i64,
    pub mnt_total: i64,
    pub fch_emis: Option<NaiveDate>,
    pub track_id: String,
    pub sii_status_detail: String,
    pub references_document_id: Option<Uuid>,
    pub issued_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The trace context of the event that asked for it: read only by the queries that
    /// hand documents to the issuer (`ISSUING_COLUMNS`), empty elsewhere.
    #[sqlx(default)]
    pub trace_context: sqlx::types::Json<std::collections::BTreeMap<String, String>>,
}

/// Every column of a document row (a macro, so `ISSUING_COLUMNS` can extend it in a const).
macro_rules! document_columns {
    () => {
        "id, caf_id, causation_id, order_id, customer_id, refund_id, refund_amount, refund_full, tipo_dte, folio, status, content, \
     receptor_rut, mnt_neto, mnt_exe, iva, mnt_total, fch_emis, track_id, sii_status_detail, references_document_id, issued_at, created_at"
    };
}

const DOCUMENT_COLUMNS: &str = document_columns!();

/// What the issuer reads of a document: everything, and the trace to continue.
const ISSUING_COLUMNS: &str = concat!(document_columns!(), ", trace_context");

/// A document waiting for its folio.
pub struct NewDocument<'a> {
    pub id: Uuid,
    pub order_id: &'a str,
    pub customer_id: &'a str,
    pub tipo: TipoDte,
    /// The sale's content; `None` for a nota de crédito, whose content is derived from the
    /// original when it is issued.
    pub content: Option<&'a Content>,
    pub refund: Option<(&'a str, i64, bool)>,
    /// The event that asked for it.
    pub causation_id: &'a str,
}

/// Records a document as `pending_folio`; `false` when the order (or refund) already has
/// one, so a redelivered event does nothing.
pub async fn insert_pending(tx: &mut PgConnection, doc: &NewDocument<'_>) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO documents (id, order_id, customer_id, refund_id, refund_amount, refund_full, tipo_dte, status, content, causation_id, trace_context) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending_folio', $8, $9, $10) ON CONFLICT DO NOTHING",
    )
    .bind(doc.id)
    .bind(doc.order_id)
    .bind(doc.customer_id)
    .bind(doc.refund.map(|r| r.0))
    .bind(doc.refund.map(|r| r.1))
    .bind(doc.refund.map(|r| r.2))
    .bind(doc.tipo.code())
    .bind(doc.content.map(sqlx::types::Json))
    .bind(doc.causation_id)
    // The span recording it (the consumer's): issuing continues its trace.
    .bind(sqlx::types::Json(platform::amqp::current_trace_headers()))
    .execute(tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// What numbering a pending document records: its folio and everything it will say.
pub struct Numbering<'a> {
    pub id: Uuid,
    pub folio: i64,
    pub caf_id: Uuid,
    pub fch_emis: NaiveDate,
    pub content: &'a Content,
    pub references_document_id: Option<Uuid>,
}

/// Gives a pending document its folio (`numbered`).
pub async fn mark_numbered(tx: &mut PgConnection, n: &Numbering<'_>) -> sqlx::Result<()> {
    let t = n.content.totals;
    sqlx::query(
        "UPDATE documents SET status = 'numbered', folio = $2, caf_id = $3, fch_emis = $4, content = $5, receptor_rut = $6, \
         mnt_neto = $7, mnt_exe = $8, iva = $9, mnt_total = $10, references_document_id = $11, \
         updated_at = now() WHERE id = $1 AND status = 'pending_folio'",
    )
    .bind(n.id)
    .bind(n.folio)
    .bind(n.caf_id)
    .bind(n.fch_emis)
    .bind(sqlx::types::Json(n.content))
    .bind(&n.content.receptor.rut)
    .bind(t.net)
    .bind(t.exempt)
    .bind(t.iva)
    .bind(t.total)
    .bind(n.references_document_id)
    .execute(tx)
    .await?;
    Ok(())
}

/// Stores a numbered document's signed `DTE` element (`issued`); `false` when another
/// issuer stored it first.
pub async fn mark_issued(tx: &mut PgConnection, id: Uuid, signed_dte: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE documents SET status = 'issued', signed_dte = $2, issued_at = now(), updated_at = now() \
         WHERE id = $1 AND status = 'numbered'",
    )
    .bind(id)
    .bind(signed_dte)
    .execute(tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Numbered documents nobody finished within `stale` (their issuer died between numbering
/// and storing): claimed for another `stale`.
pub async fn claim_stale_numbered(
    pool: &PgPool,
    stale: std::time::Duration,
    limit: i64,
) -> sqlx::Result<Vec<DocumentRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE documents SET updated_at = now() WHERE id IN ( \
            SELECT id FROM documents WHERE status = 'numbered' AND updated_at < now() - $1 \
            ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING {ISSUING_COLUMNS}"
    )))
    .bind(stale)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Pending documents, oldest first, locked for numbering (other issuers skip them).
pub async fn lock_pending(tx: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<DocumentRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ISSUING_COLUMNS} FROM documents WHERE status = 'pending_folio' \
         ORDER BY created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED"
    )))
    .bind(limit)
    .fetch_all(tx)
    .await
}

/// How many documents wait for a folio, per type.
pub async fn pending_counts(pool: &PgPool) -> sqlx::Result<Vec<(i32, i64)>> {
    sqlx::query_as(
        "SELECT tipo_dte, COUNT(*) FROM documents WHERE status = 'pending_folio' GROUP BY tipo_dte",
    )
    .fetch_all(pool)
    .await
}

/// The sale document of an order (not a nota de crédito).
pub async fn sale_document(
    tx: &mut PgConnection,
    order_id: &str,
) -> sqlx::Result<Option<DocumentRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE order_id = $1 AND refund_id IS NULL"
    )))
    .bind(order_id)
    .fetch_optional(tx)
    .await
}

/// One document.
pub async fn document(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<DocumentRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// A document's signed XML: its own envelope (documents issued before envelopes were
/// shared), or its signed `DTE` element.
pub enum SignedXml {
    Envelope(Vec<u8>),
    Dte(String),
}

/// A document's signed XML; `None` until it is issued.
pub async fn signed_xml(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<SignedXml>> {
    let row: Option<(Option<Vec<u8>>, Option<String>)> = sqlx::query_as(
        "SELECT envelope, signed_dte FROM documents WHERE id = $1 AND (envelope IS NOT NULL OR signed_dte IS NOT NULL)",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(envelope, dte)| match (envelope, dte) {
        (Some(envelope), _) => Some(SignedXml::Envelope(envelope)),
        (None, Some(dte)) => Some(SignedXml::Dte(dte)),
        (None, None) => None,
    }))
}

/// An order's documents, oldest first.
pub async fn order_documents(pool: &PgPool, order_id: &str) -> sqlx::Result<Vec<DocumentRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE order_id = $1 ORDER BY created_at, id"
    )))
    .bind(order_id)
    .fetch_all(pool)
    .await
}

/// Filters of the admin list.
#[derive(Debug, Default, Clone)]
pub struct DocumentFilter {
    pub tipo: Option<i32>,
    pub status: Option<String>,
    pub issued_from: Option<DateTime<Utc>>,
    pub issued_to: Option<DateTime<Utc>>,
    /// Keyset cursor: (created_at, id) of the last row of the previous page.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// The admin list, newest first.
pub async fn list_documents(pool: &PgPool, f: &DocumentFilter) -> sqlx::Result<Vec<DocumentRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE ($1::int IS NULL OR tipo_dte = $1) \
         AND ($2::text IS NULL OR status = $2) AND ($3::timestamptz IS NULL OR issued_at >= $3) \
         AND ($4::timestamptz IS NULL OR issued_at < $4) \
         AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6)) \
         ORDER BY created_at DESC, id DESC LIMIT $7"
    )))
    .bind(f.tipo)
    .bind(&f.status)
    .bind(f.issued_from)
    .bind(f.issued_to)
    .bind(f.after.map(|a| a.0))
    .bind(f.after.map(|a| a.1))
    .bind(f.limit)
    .fetch_all(pool)
    .await
}

/// The stored development certificate, if one was generated.
pub async fn dev_certificate(pool: &PgPool) -> sqlx::Result<Option<(String, Vec<u8>)>> {
    sqlx::query_as("SELECT key_pem, certificate FROM dev_certificate")
        .fetch_optional(pool)
        .await
}

/// Keeps a generated development certificate unless another replica stored one first;
/// returns the one that is kept.
pub async fn keep_dev_certificate(
    pool: &PgPool,
    key_pem: &str,
    certificate: &[u8],
) -> sqlx::Result<(String, Vec<u8>)> {
    sqlx::query(
        "INSERT INTO dev_certificate (key_pem, certificate) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(key_pem)
    .bind(certificate)
    .execute(pool)
    .await?;
    sqlx::query_as("SELECT key_pem, certificate FROM dev_certificate")
        .fetch_one(pool)
        .await
}
