//! The signed answers to a supplier, kept to be mailed: the reception of each envelope
//! (made by `receive`), and the buyer's verdict on a document (`decide`: a `ResultadoDTE`,
//! with an `EnvioRecibos` when the goods arrived), within the law's 8 days.

use chrono::{DateTime, Utc};
use platform::chile::Rut;
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

use super::{
    DEADLINE_DAYS, DOCUMENT_COLUMNS, DTE_REPEATED, DocumentRow, ENV_SCHEMA_ERROR, ENVELOPE_COLUMNS,
    EnvelopeRow, ReceiptDocument, Receiver,
};
use crate::{
    sii::{SiiError, SiiRegistry, registry::Action},
    xml::respuesta,
};

/// Keeps the signed answer to an envelope's reception, when there is a supplier to send it
/// to.
pub(super) async fn answer_reception(
    tx: &mut sqlx::PgConnection,
    receiver: Receiver<'_>,
    envelope: &EnvelopeRow,
    documents: &[ReceiptDocument],
) -> anyhow::Result<()> {
    if let Some(sender) = supplier(envelope, documents) {
        let no = answer_number(tx).await?;
        let xml = recepcion(receiver, &sender, no, envelope, documents)?;
        store_answer(tx, no, envelope, None, "recepcion", xml).await?;
    }
    Ok(())
}

/// The supplier the answers go to: the envelope's sender, else its first document's issuer;
/// none when neither is a valid RUT (there is no one to address an answer to).
fn supplier(envelope: &EnvelopeRow, documents: &[ReceiptDocument]) -> Option<Rut> {
    Some(envelope.rut_emisor.as_str())
        .filter(|r| !r.is_empty())
        .or_else(|| documents.first().map(|d| d.row.rut_emisor.as_str()))
        .and_then(|r| Rut::parse(r).ok())
}

/// The next `IdRespuesta`.
async fn answer_number(tx: &mut sqlx::PgConnection) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT nextval('received_answer_numbers')")
            .fetch_one(tx)
            .await?,
    )
}

/// Keeps a signed answer, to be mailed to the envelope's `answer_to`.
async fn store_answer(
    tx: &mut sqlx::PgConnection,
    no: i64,
    envelope: &EnvelopeRow,
    document: Option<Uuid>,
    kind: &str,
    xml: Vec<u8>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO received_answers (id, answer_no, envelope_id, document_id, kind, xml, answer_to) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(no)
    .bind(envelope.id)
    .bind(document)
    .bind(kind)
    .bind(xml)
    .bind(&envelope.answer_to)
    .execute(tx)
    .await?;
    Ok(())
}

fn local(t: DateTime<Utc>) -> chrono::NaiveDateTime {
    t.with_timezone(&chrono_tz::America::Santiago).naive_local()
}

fn document_ref(d: &DocumentRow) -> respuesta::DocumentRef {
    respuesta::DocumentRef {
        tipo_dte: d.tipo_dte,
        folio: d.folio,
        fch_emis: d.fch_emis.clone(),
        rut_emisor: d.rut_emisor.clone(),
        rut_recep: d.rut_receptor.clone(),
        mnt_total: d.mnt_total,
    }
}

/// The signed `RespuestaDTE` (`RecepcionEnvio`) answering an envelope.
fn recepcion(
    receiver: Receiver<'_>,
    sender: &Rut,
    no: i64,
    envelope: &EnvelopeRow,
    documents: &[ReceiptDocument],
) -> anyhow::Result<Vec<u8>> {
    // An envelope that does not conform to its schema is answered as a whole: its
    // documents' fields cannot be trusted to fit the answer's.
    let lines = if envelope.estado_recep_env == ENV_SCHEMA_ERROR {
        Vec::new()
    } else {
        documents
            .iter()
            .map(|d| respuesta::RecepcionDte {
                document: document_ref(&d.row),
                estado: if d.duplicate {
                    DTE_REPEATED
                } else {
                    d.row.estado_recep_dte
                },
                glosa: if d.duplicate {
                    "DTE No Recibido - DTE Repetido".to_string()
                } else {
                    d.row.estado_detail.clone()
                },
            })
            .collect()
    };
    let parties = respuesta::Parties {
        rut_responde: receiver.rut.to_string(),
        rut_recibe: sender.to_string(),
        id_respuesta: no,
    };
    let recepcion = respuesta::Recepcion {
        cod_envio: envelope.cod_envio,
        nmb_envio: envelope.name.clone(),
        fch_recep: local(envelope.received_at),
        envio_dte_id: envelope.set_id.clone(),
        rut_emisor: envelope.rut_emisor.clone(),
        rut_receptor: envelope.rut_receptor.clone(),
        estado: envelope.estado_recep_env,
        glosa: envelope.estado_detail.clone(),
        documents: lines,
    };
    Ok(respuesta::build(
        &parties,
        &recepcion,
        local(Utc::now()),
        receiver.identity,
    )?)
}

/// A stored answer, without its XML.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AnswerRow {
    pub id: Uuid,
    pub answer_no: i64,
    pub envelope_id: Uuid,
    pub document_id: Option<Uuid>,
    /// `recepcion`, `resultado` or `recibos`.
    pub kind: String,
    pub answer_to: String,
    pub sent_at: Option<DateTime<Utc>>,
    pub error: String,
    pub created_at: DateTime<Utc>,
}

const ANSWER_COLUMNS: &str =
    "id, answer_no, envelope_id, document_id, kind, answer_to, sent_at, error, created_at";

/// The answers about one document: its envelope's reception, and its own.
pub async fn document_answers(
    pool: &PgPool,
    document: &DocumentRow,
) -> anyhow::Result<Vec<AnswerRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ANSWER_COLUMNS} FROM received_answers \
         WHERE (envelope_id = $1 AND kind = 'recepcion') OR document_id = $2 ORDER BY answer_no"
    )))
    .bind(document.envelope_id)
    .bind(document.id)
    .fetch_all(pool)
    .await?)
}

/// The answers to one envelope (its reception).
pub async fn envelope_answers(pool: &PgPool, envelope: Uuid) -> anyhow::Result<Vec<AnswerRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ANSWER_COLUMNS} FROM received_answers \
         WHERE envelope_id = $1 AND kind = 'recepcion' ORDER BY answer_no"
    )))
    .bind(envelope)
    .fetch_all(pool)
    .await?)
}

/// One answer's signed XML (ISO-8859-1) and kind.
pub async fn answer_xml(pool: &PgPool, id: Uuid) -> anyhow::Result<Option<(String, Vec<u8>)>> {
    Ok(
        sqlx::query_as("SELECT kind, xml FROM received_answers WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The signed `RespuestaDTE` answering an envelope's reception (ISO-8859-1), if one was made.
pub async fn envelope_answer(pool: &PgPool, envelope: Uuid) -> anyhow::Result<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar(
        "SELECT xml FROM received_answers WHERE envelope_id = $1 AND kind = 'recepcion'",
    )
    .bind(envelope)
    .fetch_optional(pool)
    .await?)
}

/// The buyer's verdict on a received document.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Accepted; with `discrepancies` (non-empty), accepted with discrepancies. With
    /// `goods_received_at` (the place, `Recinto`), also a receipt of the goods or services.
    Accept {
        discrepancies: String,
        goods_received_at: Option<String>,
    },
    /// Rejected, for `reason`: a claim on the content (`RCD`), or on goods partly (`RFP`) or
    /// wholly (`RFT`) missing.
    Claim { reason: String, action: Action },
}

impl Decision {
    /// What the SII's registry is told, in order.
    fn registry_actions(&self) -> Vec<Action> {
        match self {
            Decision::Accept {
                goods_received_at, ..
            } => {
                let mut actions = vec![Action::AcceptContent];
                if goods_received_at.is_some() {
                    actions.push(Action::ReceiptOfGoods);
                }
                actions
            }
            Decision::Claim { action, .. } => vec![*action],
        }
    }
}

/// Why a verdict was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no such received document")]
    NotFound,
    /// The document's state forbids it: the problem.
    #[error("{0}")]
    Refused(String),
    /// The SII's registry could not be reached: nothing was recorded; try again.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<sqlx::Error> for DecideError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

fn registry_error(e: SiiError) -> DecideError {
    match e {
        SiiError::Transport(detail) => DecideError::Unavailable(format!(
            "the SII's registry of acceptance and claims cannot be reached ({detail}): nothing was recorded; try again"
        )),
        SiiError::Refused(detail) => DecideError::Refused(format!("the SII refused: {detail}")),
    }
}

/// Gives the verdict on document `id` at `now`: for a factura (33, 34, 43) it is first
/// registered with the SII (`registry`: ACD, and ERM for goods received; RCD, RFP or RFT),
/// then the signed `ResultadoDTE` (and, for goods received, `EnvioRecibos`) are stored to be
/// mailed, with the decision and the SII's events, in one transaction. Refused for a
/// document that was not received as valid, one already decided, after the law's 8 days
/// (counted from the SII's reception), or when the SII refuses the action; nothing is
/// recorded then. The document stays locked meanwhile, so two verdicts never race.
pub async fn decide(
    pool: &PgPool,
    receiver: Receiver<'_>,
    registry: Option<&dyn SiiRegistry>,
    id: Uuid,
    decision: &Decision,
    now: DateTime<Utc>,
) -> Result<DocumentRow, DecideError> {
    if let Decision::Claim { action, .. } = decision
        && !action.is_claim()
    {
        return Err(DecideError::Refused(format!(
            "{} is not a claim (RCD, RFP or RFT)",
            action.code()
        )));
    }
    let mut tx = pool.begin().await?;
    let mut document: DocumentRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DOCUMENT_COLUMNS} FROM received_documents WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(DecideError::NotFound)?;
    if !document.valid {
        return Err(DecideError::Refused(format!(
            "the document was not received (EstadoRecepDTE {}: {}): there is nothing to accept or claim",
            document.estado_recep_dte, document.estado_detail
        )));
    }
    if !document.decision.is_empty() {
        return Err(DecideError::Refused(format!(
            "the document was already {} on {}",
            document.decision.replace('_', " "),
            document
                .decided_at
                .map(|t| local(t).format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default()
        )));
    }
    let registry = registry.filter(|_| document.on_registry());
    if let Some(registry) = registry
        && document.sii_received_at.is_none()
    {
        let at = registry
            .reception_date(&document.rut_emisor, document.tipo_dte, document.folio)
            .await
            .map_err(registry_error)?
            .ok_or_else(|| {
                DecideError::Refused(format!(
                    "the SII has not received this document (RUTEmisor {}, TipoDTE {}, Folio {}): its issuer has not sent it to the SII, so it cannot be accepted or claimed yet",
                    document.rut_emisor, document.tipo_dte, document.folio
                ))
            })?;
        document.sii_received_at = Some(at);
    }
    if now > document.deadline() {
        return Err(DecideError::Refused(format!(
            "the {DEADLINE_DAYS} days to accept or claim it ended on {}: it counts as accepted (Ley 19.983)",
            local(document.deadline()).format("%Y-%m-%d %H:%M")
        )));
    }
    let mut events = None;
    if let Some(registry) = registry {
        for action in decision.registry_actions() {
            let answer = registry
                .register(
                    &document.rut_emisor,
                    document.tipo_dte,
                    document.folio,
                    action,
                )
                .await
                .map_err(registry_error)?;
            if !answer.registered() {
                // What the SII holds instead (an event registered before, by us before a
                // crash or by another system) is kept, so the document shows it.
                drop(tx);
                if let Ok((_, held)) = registry
                    .events(&document.rut_emisor, document.tipo_dte, document.folio)
                    .await
                {
                    sqlx::query(
                        "UPDATE received_documents SET sii_events = $2, \
                             sii_received_at = coalesce(sii_received_at, $3) WHERE id = $1",
                    )
                    .bind(document.id)
                    .bind(Json(held))
                    .bind(document.sii_received_at)
                    .execute(pool)
                    .await?;
                }
                return Err(DecideError::Refused(format!(
                    "the SII's registry refused {} ({}): codResp {}, {}",
                    action.code(),
                    action.description(),
                    answer.code,
                    answer.description
                )));
            }
        }
        // What the registry now holds; the verdict stands without it (it is listed again
        // when the document is next shown).
        match registry
            .events(&document.rut_emisor, document.tipo_dte, document.folio)
            .await
        {
            Ok((_, listed)) => events = Some(listed),
            Err(e) => {
                tracing::warn!(error = %e, "listing a document's events in the SII's registry failed")
            }
        }
    }
    let envelope: EnvelopeRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENVELOPE_COLUMNS} FROM received_envelopes WHERE id = $1"
    )))
    .bind(document.envelope_id)
    .fetch_one(&mut *tx)
    .await?;
    let sender = Rut::parse(&document.rut_emisor)
        .map_err(|e| DecideError::Refused(format!("RUTEmisor: {e}")))?;
    let (verdict, stored, reason, glosa) = match decision {
        Decision::Accept { discrepancies, .. } if discrepancies.trim().is_empty() => (
            respuesta::Verdict::Accepted,
            "accepted",
            String::new(),
            "DTE aceptado".to_string(),
        ),
        Decision::Accept { discrepancies, .. } => (
            respuesta::Verdict::AcceptedWithDiscrepancies,
            "accepted_with_discrepancies",
            discrepancies.trim().to_string(),
            format!("DTE aceptado con discrepancias: {}", discrepancies.trim()),
        ),
        Decision::Claim { reason, .. } => (
            respuesta::Verdict::Rejected,
            "claimed",
            reason.trim().to_string(),
            format!("DTE rechazado: {}", reason.trim()),
        ),
    };
    let signed_at = local(now);
    let no = answer_number(&mut tx).await?;
    let parties = respuesta::Parties {
        rut_responde: receiver.rut.to_string(),
        rut_recibe: sender.to_string(),
        id_respuesta: no,
    };
    let resultado = respuesta::build_resultado(
        &parties,
        &respuesta::Resultado {
            document: document_ref(&document),
            cod_envio: envelope.cod_envio,
            verdict,
            glosa,
        },
        signed_at,
        receiver.identity,
    )
    .map_err(anyhow::Error::from)?;
    store_answer(
        &mut tx,
        no,
        &envelope,
        Some(document.id),
        "resultado",
        resultado,
    )
    .await?;
    if let Decision::Accept {
        goods_received_at: Some(recinto),
        ..
    } = decision
    {
        let no = answer_number(&mut tx).await?;
        let recibos = respuesta::build_recibos(
            &respuesta::Parties {
                id_respuesta: no,
                ..parties
            },
            &document_ref(&document),
            recinto,
            &receiver.signer.to_string(),
            signed_at,
            receiver.identity,
        )
        .map_err(anyhow::Error::from)?;
        store_answer(
            &mut tx,
            no,
            &envelope,
            Some(document.id),
            "recibos",
            recibos,
        )
        .await?;
    }
    let document: DocumentRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE received_documents SET decision = $2, decision_reason = $3, decided_at = $4, \
             sii_received_at = $5, sii_events = coalesce($6, sii_events) \
         WHERE id = $1 RETURNING {DOCUMENT_COLUMNS}"
    )))
    .bind(document.id)
    .bind(stored)
    .bind(&reason)
    .bind(now)
    .bind(document.sii_received_at)
    .bind(events.map(Json))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    metrics::counter!("dte_received_decisions_total", "decision" => stored).increment(1);
    Ok(document)
}
