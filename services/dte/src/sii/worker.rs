//! The submission worker: sends issued documents to the SII and follows their status until
//! accepted, accepted with objections, or rejected. A document is claimed for a lease
//! before the SII is called (so replicas never send one twice at once), transport failures
//! back off exponentially, and a final status is stored with its `dte.accepted` /
//! `dte.rejected` event in one transaction.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tracing::Instrument as _;

use platform::{
    CancellationToken,
    amqp::outbox::{self, NewEvent},
};
use proto::events::v1::DteSiiStatus;
use sqlx::PgPool;
use uuid::Uuid;

use super::{SiiClient, SiiError, SiiStatus};
use crate::domain::TipoDte;

/// How the worker paces itself.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// How often due documents are looked for, and how soon a status is asked again.
    pub poll_interval: Duration,
    /// The longest back-off after transport failures.
    pub max_backoff: Duration,
    /// How long a claimed document is left alone before another worker may try it.
    pub lease: Duration,
}

#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    order_id: String,
    tipo_dte: i32,
    folio: Option<i64>,
    status: String,
    track_id: String,
    envelope: Option<Vec<u8>>,
    sii_attempts: i32,
    /// The trace of the payment that asked for the document.
    trace_context: sqlx::types::Json<std::collections::BTreeMap<String, String>>,
}

/// Sends and follows documents until `shutdown`.
pub async fn run(
    pool: PgPool,
    client: Arc<dyn SiiClient>,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        match step(&pool, client.as_ref(), &settings).await {
            Ok(0) => {}
            Ok(_) => continue,
            Err(e) => tracing::warn!(error = format!("{e:#}"), "SII submission round failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(settings.poll_interval) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// What the SII answered for one claimed document.
enum Outcome {
    Submitted {
        track_id: String,
    },
    Pending {
        estado: String,
    },
    Final {
        status: &'static str,
        detail: String,
    },
    Failed {
        detail: String,
    },
}

/// SII calls in flight at once within a round.
const CONCURRENT_CALLS: usize = 8;

/// One round: claims due documents, asks the SII about each (a few at a time), and records
/// every outcome of the round in one transaction (one commit per round, not per document;
/// if it fails, the leases expire and the documents are handled again). How many were
/// handled.
pub async fn step(
    pool: &PgPool,
    client: &dyn SiiClient,
    settings: &WorkerSettings,
) -> anyhow::Result<usize> {
    // The envelope is only read for documents still to be sent.
    let due: Vec<Due> = sqlx::query_as(
        "UPDATE documents SET sii_next_at = now() + $1 WHERE id IN ( \
            SELECT id FROM documents WHERE status IN ('issued', 'submitted') AND sii_next_at <= now() \
            ORDER BY sii_next_at LIMIT 20 FOR UPDATE SKIP LOCKED) \
         RETURNING id, order_id, tipo_dte, folio, status, track_id, \
                   CASE WHEN status = 'issued' THEN envelope END AS envelope, sii_attempts, \
                   trace_context",
    )
    .bind(settings.lease)
    .fetch_all(pool)
    .await?;
    if due.is_empty() {
        return Ok(0);
    }
    // The futures are collected first: with the closure inside the stream's type, the
    // spawned worker future fails the compiler's higher-ranked lifetime check.
    let calls: Vec<_> = due.iter().map(|doc| ask(client, doc)).collect();
    let outcomes: Vec<Outcome> = futures::stream::iter(calls)
        .buffered(CONCURRENT_CALLS)
        .collect()
        .await;
    let mut tx = pool.begin().await?;
    for (doc, outcome) in due.iter().zip(&outcomes) {
        match outcome {
            Outcome::Submitted { track_id } => {
                sqlx::query(
                    "UPDATE documents SET status = 'submitted', track_id = $2, sii_attempts = 0, \
                     sii_next_at = now() + $3, updated_at = now() WHERE id = $1",
                )
                .bind(doc.id)
                .bind(track_id)
                .bind(settings.poll_interval)
                .execute(&mut *tx)
                .await?;
            }
            Outcome::Pending { estado } => {
                sqlx::query(
                    "UPDATE documents SET sii_status_detail = $2, sii_attempts = 0, sii_next_at = now() + $3, \
                     updated_at = now() WHERE id = $1",
                )
                .bind(doc.id)
                .bind(estado)
                .bind(settings.poll_interval)
                .execute(&mut *tx)
                .await?;
            }
            Outcome::Final { status, detail } => settle(&mut tx, doc, status, detail).await?,
            Outcome::Failed { detail } => back_off(&mut tx, doc, settings, detail).await?,
        }
    }
    tx.commit().await?;
    for (doc, outcome) in due.iter().zip(&outcomes) {
        match outcome {
            Outcome::Submitted { track_id } => {
                tracing::info!(document_id = %doc.id, %track_id, "sent to the SII")
            }
            Outcome::Final { status, detail } => {
                metrics::counter!("dte_sii_final_total", "status" => *status).increment(1);
                if *status == "rejected" {
                    tracing::error!(document_id = %doc.id, track_id = %doc.track_id, detail, "the SII rejected a document");
                } else {
                    tracing::info!(document_id = %doc.id, track_id = %doc.track_id, status, "the SII accepted a document");
                }
            }
            Outcome::Pending { .. } | Outcome::Failed { .. } => {}
        }
    }
    Ok(due.len())
}

/// Sends an issued document, or asks for a submitted one's status, in a CLIENT span of the
/// trace of the payment that asked for the document (the checkout's trace ends at the
/// SII's verdict).
async fn ask(client: &dyn SiiClient, doc: &Due) -> Outcome {
    let submitting = doc.status == "issued";
    let span = tracing::info_span!(
        "sii",
        otel.name = %format!(
            "{} DTE {}",
            if submitting { "submit" } else { "query" },
            doc.tipo_dte
        ),
        otel.kind = "client",
        orderflow.role = "dte",
        dte.tipo = doc.tipo_dte,
        dte.folio = doc.folio,
        sii.track_id = %doc.track_id,
    );
    platform::telemetry::adopt_stored_parent(&span, &doc.trace_context.0);
    ask_sii(client, doc, submitting).instrument(span).await
}

async fn ask_sii(client: &dyn SiiClient, doc: &Due, submitting: bool) -> Outcome {
    let boleta = TipoDte::from_code(doc.tipo_dte).is_some_and(TipoDte::is_boleta);
    if submitting {
        let envelope = doc.envelope.as_deref().unwrap_or_default();
        return match client.submit(envelope, boleta).await {
            Ok(track_id) => Outcome::Submitted { track_id },
            Err(SiiError::Refused(detail)) => Outcome::Final {
                status: "rejected",
                detail,
            },
            Err(SiiError::Transport(detail)) => Outcome::Failed { detail },
        };
    }
    match client.status(&doc.track_id, boleta).await {
        Ok(SiiStatus::Pending { estado }) => Outcome::Pending { estado },
        Ok(SiiStatus::Accepted { detail }) => Outcome::Final {
            status: "accepted",
            detail,
        },
        Ok(SiiStatus::AcceptedWithObjections { detail }) => Outcome::Final {
            status: "accepted_with_objections",
            detail,
        },
        Ok(SiiStatus::Rejected { detail }) => Outcome::Final {
            status: "rejected",
            detail,
        },
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
    tx: &mut sqlx::PgConnection,
    doc: &Due,
    settings: &WorkerSettings,
    detail: &str,
) -> anyhow::Result<()> {
    let attempts = doc.sii_attempts + 1;
    let wait = backoff(settings, attempts);
    tracing::warn!(document_id = %doc.id, attempts, ?wait, detail, "the SII call failed; trying again later");
    metrics::counter!("dte_sii_transport_errors_total").increment(1);
    sqlx::query(
        "UPDATE documents SET sii_attempts = $2, sii_next_at = now() + $3, updated_at = now() WHERE id = $1",
    )
    .bind(doc.id)
    .bind(attempts)
    .bind(wait)
    .execute(tx)
    .await?;
    Ok(())
}

/// Stores a final status and enqueues its event, in the round's transaction.
async fn settle(
    tx: &mut sqlx::PgConnection,
    doc: &Due,
    status: &str,
    detail: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE documents SET status = $2, sii_status_detail = $3, updated_at = now() WHERE id = $1",
    )
    .bind(doc.id)
    .bind(status)
    .bind(detail)
    .execute(&mut *tx)
    .await?;
    let document_id = doc.id.to_string();
    let event_type = if status == "rejected" {
        "dte.rejected"
    } else {
        "dte.accepted"
    };
    outbox::enqueue(
        tx,
        NewEvent {
            event_type,
            aggregate_id: &document_id,
            payload: &DteSiiStatus {
                document_id: document_id.clone(),
                order_id: doc.order_id.clone(),
                tipo_dte: doc.tipo_dte,
                folio: doc.folio.unwrap_or_default(),
                track_id: doc.track_id.clone(),
                status: status.to_string(),
                detail: detail.to_string(),
            },
            correlation_id: Some(&doc.order_id),
            causation_id: None,
        },
    )
    .await?;
    Ok(())
}
