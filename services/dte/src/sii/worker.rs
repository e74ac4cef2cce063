//! The submission worker: packs issued documents into envelopes, sends each envelope to
//! the SII and follows its status until the SII has judged every document in it.
//!
//! Boletas go in `EnvioBOLETA`s of up to `batch_size` (the schema's 500): one signature, one
//! upload and one status query for all of them. An envelope is closed when it is full, or
//! when its oldest document has waited `batch_window`, so a quiet shop still sends promptly.
//! The boleta API's status names every boleta it rejected or objected to, so each document
//! gets its own verdict (one bad boleta does not reject its neighbours). Other documents go
//! in an `EnvioDTE` of one: `QueryEstUp` answers with counts only, which tell one document's
//! verdict only when the upload holds one.
//!
//! An envelope is claimed for a lease before the SII is called (so replicas never send one
//! twice at once), transport failures back off exponentially, and a verdict is stored for
//! every document of the envelope with its `dte.accepted` / `dte.rejected` event in one
//! transaction.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tracing::Instrument as _;

use platform::{
    CancellationToken,
    amqp::outbox::{self, NewEvent},
};
use proto::events::v1::DteSiiStatus;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Processed, SiiClient, SiiError, SiiStatus, Verdict};
use crate::{
    domain::TipoDte,
    issuing::Issuing,
    xml::document::{self, SignedDte},
};

/// The most boletas an `EnvioBOLETA` holds (its schema's limit).
pub const MAX_BOLETAS_PER_ENVELOPE: usize = 500;

/// How the worker paces itself.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// How often due envelopes are looked for, and how soon a status is asked again.
    pub poll_interval: Duration,
    /// The longest back-off after transport failures.
    pub max_backoff: Duration,
    /// How long a claimed envelope is left alone before another worker may try it.
    pub lease: Duration,
    /// How long an issued boleta may wait for others to fill its envelope.
    pub batch_window: Duration,
    /// The most boletas per envelope (1 to [`MAX_BOLETAS_PER_ENVELOPE`]).
    pub batch_size: usize,
}

/// An envelope due for the SII.
#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    boleta: bool,
    status: String,
    track_id: String,
    xml: Option<Vec<u8>>,
    sii_attempts: i32,
    /// How many documents it holds.
    documents: i32,
    /// Its first document's type, naming the span.
    tipo_dte: i32,
    /// The traces of the payments its documents were issued for, first issued first.
    traces: sqlx::types::Json<Vec<std::collections::BTreeMap<String, String>>>,
}

/// Sends and follows envelopes until `shutdown`.
pub async fn run(
    issuing: Arc<Issuing>,
    client: Arc<dyn SiiClient>,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let pause = match step(&issuing, client.as_ref(), &settings).await {
            Ok(Round { handled, .. }) if handled > 0 => continue,
            // Boletas wait for their envelope to fill: come back when it is due.
            Ok(Round { waiting: true, .. }) => settings.poll_interval.min(settings.batch_window),
            Ok(_) => settings.poll_interval,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "SII submission round failed");
                settings.poll_interval
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Envelopes built from issued documents.
    pub packed: usize,
    /// Envelopes sent or asked about.
    pub handled: usize,
    /// Whether issued boletas wait for their envelope to fill.
    pub waiting: bool,
}

/// What the SII answered for one claimed envelope.
enum Outcome {
    Submitted {
        track_id: String,
    },
    Pending {
        estado: String,
    },
    Processed(Processed),
    /// The whole envelope was rejected (at upload or at processing).
    Rejected {
        detail: String,
    },
    Failed {
        detail: String,
    },
}

/// SII calls in flight at once within a round.
const CONCURRENT_CALLS: usize = 8;

/// One round: packs issued documents into envelopes, claims due envelopes, asks the SII
/// about each (a few at a time), and records every outcome of the round in one transaction
/// (if it fails, the leases expire and the envelopes are handled again).
pub async fn step(
    issuing: &Issuing,
    client: &dyn SiiClient,
    settings: &WorkerSettings,
) -> anyhow::Result<Round> {
    let (packed, waiting) = pack(issuing, settings).await?;
    let pool = &issuing.pool;
    // The XML is only read for envelopes still to be sent; what the spans say of the
    // documents is read from them.
    let due: Vec<Due> = sqlx::query_as(
        "WITH claimed AS ( \
            UPDATE sii_envelopes SET sii_next_at = now() + $1 WHERE id IN ( \
                SELECT id FROM sii_envelopes WHERE status IN ('built', 'submitted') AND sii_next_at <= now() \
                ORDER BY sii_next_at LIMIT 20 FOR UPDATE SKIP LOCKED) \
            RETURNING id, boleta, status, track_id, CASE WHEN status = 'built' THEN xml END AS xml, sii_attempts) \
         SELECT c.*, d.documents, d.tipo_dte, d.traces FROM claimed c CROSS JOIN LATERAL ( \
            SELECT count(*)::int AS documents, COALESCE(min(tipo_dte), 0) AS tipo_dte, \
                   COALESCE(jsonb_agg(trace_context ORDER BY issued_at, id), '[]') AS traces \
            FROM documents WHERE sii_envelope_id = c.id) d",
    )
    .bind(settings.lease)
    .fetch_all(pool)
    .await?;
    if due.is_empty() {
        return Ok(Round {
            packed,
            handled: 0,
            waiting,
        });
    }
    // The futures are collected first: with the closure inside the stream's type, the
    // spawned worker future fails the compiler's higher-ranked lifetime check.
    let calls: Vec<_> = due.iter().map(|envelope| ask(client, envelope)).collect();
    let outcomes: Vec<Outcome> = futures::stream::iter(calls)
        .buffered(CONCURRENT_CALLS)
        .collect()
        .await;
    let mut tx = pool.begin().await?;
    let mut settled = Vec::new();
    for (envelope, outcome) in due.iter().zip(&outcomes) {
        match outcome {
            Outcome::Submitted { track_id } => {
                sqlx::query(
                    "WITH sent AS (UPDATE sii_envelopes SET status = 'submitted', track_id = $2, sii_attempts = 0, \
                     sii_next_at = now() + $3, updated_at = now() WHERE id = $1 RETURNING id) \
                     UPDATE documents SET status = 'submitted', track_id = $2, updated_at = now() \
                     WHERE sii_envelope_id = (SELECT id FROM sent)",
                )
                .bind(envelope.id)
                .bind(track_id)
                .bind(settings.poll_interval)
                .execute(&mut *tx)
                .await?;
            }
            Outcome::Pending { estado } => {
                sqlx::query(
                    "UPDATE sii_envelopes SET sii_status_detail = $2, sii_attempts = 0, sii_next_at = now() + $3, \
                     updated_at = now() WHERE id = $1",
                )
                .bind(envelope.id)
                .bind(estado)
                .bind(settings.poll_interval)
                .execute(&mut *tx)
                .await?;
            }
            Outcome::Processed(processed) => {
                let verdicts = settle(&mut tx, envelope, &processed.summary, |tipo, folio| {
                    processed.verdict_of(tipo, folio)
                })
                .await?;
                settled.push((envelope, verdicts));
            }
            Outcome::Rejected { detail } => {
                let verdicts = settle(&mut tx, envelope, detail, |_, _| {
                    (Verdict::Rejected, detail.clone())
                })
                .await?;
                settled.push((envelope, verdicts));
            }
            Outcome::Failed { detail } => back_off(&mut tx, envelope, settings, detail).await?,
        }
    }
    tx.commit().await?;
    for (envelope, outcome) in due.iter().zip(&outcomes) {
        if let Outcome::Submitted { track_id } = outcome {
            tracing::info!(envelope_id = %envelope.id, documents = envelope.documents, %track_id, "sent to the SII");
        }
    }
    for (envelope, verdicts) in settled {
        for (folio, verdict, detail) in verdicts {
            metrics::counter!("dte_sii_final_total", "status" => verdict.status()).increment(1);
            if verdict == Verdict::Rejected {
                tracing::error!(envelope_id = %envelope.id, track_id = %envelope.track_id, folio, detail, "the SII rejected a document");
            }
        }
        tracing::info!(envelope_id = %envelope.id, track_id = %envelope.track_id, documents = envelope.documents, "the SII judged an envelope");
    }
    Ok(Round {
        packed,
        handled: due.len(),
        waiting,
    })
}

/// An issued document not yet in an envelope.
#[derive(sqlx::FromRow)]
struct Unpacked {
    id: Uuid,
    tipo_dte: i32,
    folio: i64,
    signed_dte: String,
    /// Whether it has waited the batch window.
    ripe: bool,
}

/// Packs issued documents into envelopes: boletas by up to `batch_size` once full or once
/// the oldest has waited `batch_window`, other documents one per envelope. Each envelope is
/// built and signed while its documents are locked (other replicas skip them), and stored
/// with them in one transaction. How many envelopes were built, and whether boletas were
/// left waiting for their envelope to fill.
async fn pack(issuing: &Issuing, settings: &WorkerSettings) -> anyhow::Result<(usize, bool)> {
    let mut packed = 0;
    let mut waiting = false;
    for boleta in [true, false] {
        let size = if boleta {
            settings.batch_size.clamp(1, MAX_BOLETAS_PER_ENVELOPE)
        } else {
            1
        };
        loop {
            let mut tx = issuing.pool.begin().await?;
            let docs: Vec<Unpacked> = sqlx::query_as(
                "SELECT id, tipo_dte, folio, signed_dte, issued_at <= now() - $3 AS ripe \
                 FROM documents WHERE status = 'issued' AND sii_envelope_id IS NULL AND signed_dte IS NOT NULL \
                 AND (tipo_dte IN (39, 41)) = $1 \
                 ORDER BY issued_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .bind(boleta)
            .bind(size as i64)
            .bind(settings.batch_window)
            .fetch_all(&mut *tx)
            .await?;
            let Some(first) = docs.first() else { break };
            if docs.len() < size && !first.ripe {
                waiting = true;
                break;
            }
            seal(issuing, &mut tx, boleta, &docs).await?;
            tx.commit().await?;
            packed += 1;
            if docs.len() < size {
                break;
            }
        }
    }
    Ok((packed, waiting))
}

/// Builds and signs the envelope of `docs` and stores it, in the packing transaction.
async fn seal(
    issuing: &Issuing,
    tx: &mut PgConnection,
    boleta: bool,
    docs: &[Unpacked],
) -> anyhow::Result<()> {
    // In folio order, however they were issued.
    let mut in_order: Vec<&Unpacked> = docs.iter().collect();
    in_order.sort_by_key(|d| (d.tipo_dte, d.folio));
    let dtes = in_order
        .into_iter()
        .map(|d| {
            Ok(SignedDte {
                tipo: TipoDte::try_from(d.tipo_dte).map_err(anyhow::Error::msg)?,
                folio: d.folio,
                xml: d.signed_dte.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let issuer = issuing.issuer.clone();
    let identity = issuing.identity.clone();
    let now = issuing.now_in_chile();
    let xml = tokio::task::spawn_blocking(move || {
        document::build_envelope(&issuer, &dtes, now, &identity)
    })
    .await??;
    let id = Uuid::now_v7();
    let ids: Vec<Uuid> = docs.iter().map(|d| d.id).collect();
    sqlx::query(
        "WITH envelope AS ( \
            INSERT INTO sii_envelopes (id, boleta, status, xml) VALUES ($1, $2, 'built', $3) RETURNING id) \
         UPDATE documents SET sii_envelope_id = (SELECT id FROM envelope) WHERE id = ANY($4)",
    )
    .bind(id)
    .bind(boleta)
    .bind(&xml)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Sends a built envelope, or asks for a submitted one's status, in a CLIENT span of the
/// trace of the payment of its first document, linked to the traces of the others' (every
/// checkout's trace leads to the SII's verdict).
async fn ask(client: &dyn SiiClient, envelope: &Due) -> Outcome {
    let submitting = envelope.status == "built";
    let span = tracing::info_span!(
        "sii",
        otel.name = %format!(
            "{} DTE {}",
            if submitting { "submit" } else { "query" },
            envelope.tipo_dte
        ),
        otel.kind = "client",
        orderflow.role = "dte",
        dte.tipo = envelope.tipo_dte,
        sii.documents = envelope.documents,
        sii.track_id = %envelope.track_id,
    );
    if let Some((first, others)) = envelope.traces.0.split_first() {
        platform::telemetry::adopt_stored_parent(&span, first);
        for linked in others {
            platform::telemetry::link_stored(&span, linked);
        }
    }
    ask_sii(client, envelope, submitting).instrument(span).await
}

async fn ask_sii(client: &dyn SiiClient, envelope: &Due, submitting: bool) -> Outcome {
    if submitting {
        let xml = envelope.xml.as_deref().unwrap_or_default();
        return match client.submit(xml, envelope.boleta).await {
            Ok(track_id) => Outcome::Submitted { track_id },
            Err(SiiError::Refused(detail)) => Outcome::Rejected { detail },
            Err(SiiError::Transport(detail)) => Outcome::Failed { detail },
        };
    }
    match client.status(&envelope.track_id, envelope.boleta).await {
        Ok(SiiStatus::Pending { estado }) => Outcome::Pending { estado },
        Ok(SiiStatus::Processed(processed)) => Outcome::Processed(processed),
        Ok(SiiStatus::Rejected { detail }) => Outcome::Rejected { detail },
        Err(SiiError::Refused(detail)) | Err(SiiError::Transport(detail)) => {
            Outcome::Failed { detail }
        }
    }
}

/// Exponential back-off: 1, 2, 4 … poll intervals, at most `max_backoff`.
fn backoff(settings: &WorkerSettings, attempts: i32) -> Duration {
    let factor = 1u32 << attempts.clamp(0, 16);
    (settings.poll_interval * factor).min(settings.max_backoff)
}

async fn back_off(
    tx: &mut PgConnection,
    envelope: &Due,
    settings: &WorkerSettings,
    detail: &str,
) -> anyhow::Result<()> {
    let attempts = envelope.sii_attempts + 1;
    let wait = backoff(settings, attempts);
    tracing::warn!(envelope_id = %envelope.id, attempts, ?wait, detail, "the SII call failed; trying again later");
    metrics::counter!("dte_sii_transport_errors_total").increment(1);
    sqlx::query(
        "UPDATE sii_envelopes SET sii_attempts = $2, sii_next_at = now() + $3, updated_at = now() WHERE id = $1",
    )
    .bind(envelope.id)
    .bind(attempts)
    .bind(wait)
    .execute(tx)
    .await?;
    Ok(())
}

/// A document of a judged envelope.
#[derive(sqlx::FromRow)]
struct Judged {
    id: Uuid,
    order_id: String,
    tipo_dte: i32,
    folio: Option<i64>,
}

/// Closes a judged envelope: each of its documents gets its verdict and its event, in the
/// round's transaction. The verdicts, by folio.
async fn settle(
    tx: &mut PgConnection,
    envelope: &Due,
    summary: &str,
    verdict_of: impl Fn(i32, i64) -> (Verdict, String),
) -> anyhow::Result<Vec<(i64, Verdict, String)>> {
    let docs: Vec<Judged> = sqlx::query_as(
        "WITH done AS (UPDATE sii_envelopes SET status = 'done', sii_status_detail = $2, updated_at = now() \
         WHERE id = $1 RETURNING id) \
         SELECT id, order_id, tipo_dte, folio FROM documents WHERE sii_envelope_id = (SELECT id FROM done) \
         ORDER BY folio",
    )
    .bind(envelope.id)
    .bind(summary)
    .fetch_all(&mut *tx)
    .await?;
    let verdicts: Vec<(i64, Verdict, String)> = docs
        .iter()
        .map(|d| {
            let folio = d.folio.unwrap_or_default();
            let (verdict, detail) = verdict_of(d.tipo_dte, folio);
            (folio, verdict, detail)
        })
        .collect();
    let ids: Vec<Uuid> = docs.iter().map(|d| d.id).collect();
    let statuses: Vec<&str> = verdicts.iter().map(|v| v.1.status()).collect();
    let details: Vec<&str> = verdicts.iter().map(|v| v.2.as_str()).collect();
    sqlx::query(
        "UPDATE documents d SET status = v.status, sii_status_detail = v.detail, updated_at = now() \
         FROM unnest($1::uuid[], $2::text[], $3::text[]) AS v(id, status, detail) WHERE d.id = v.id",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&details)
    .execute(&mut *tx)
    .await?;
    for (doc, (folio, verdict, detail)) in docs.iter().zip(&verdicts) {
        let document_id = doc.id.to_string();
        outbox::enqueue(
            &mut *tx,
            NewEvent {
                event_type: if *verdict == Verdict::Rejected {
                    "dte.rejected"
                } else {
                    "dte.accepted"
                },
                aggregate_id: &document_id,
                payload: &DteSiiStatus {
                    document_id: document_id.clone(),
                    order_id: doc.order_id.clone(),
                    tipo_dte: doc.tipo_dte,
                    folio: *folio,
                    track_id: envelope.track_id.clone(),
                    status: verdict.status().to_string(),
                    detail: detail.clone(),
                },
                correlation_id: Some(&doc.order_id),
                causation_id: None,
            },
        )
        .await?;
    }
    Ok(verdicts)
}
