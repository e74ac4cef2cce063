//! The submission worker: sends issued documents to the SII and follows their status until
//! accepted, accepted with objections, or rejected. A document is claimed for a lease
//! before the SII is called (so replicas never send one twice at once), transport failures
//! back off exponentially, and a final status is stored with its `dte.accepted` /
//! `dte.rejected` event in one transaction.

use std::{sync::Arc, time::Duration};

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

/// One round: claims due documents and handles each; how many were handled.
pub async fn step(
    pool: &PgPool,
    client: &dyn SiiClient,
    settings: &WorkerSettings,
) -> anyhow::Result<usize> {
    let due: Vec<Due> = sqlx::query_as(
        "UPDATE documents SET sii_next_at = now() + $1 WHERE id IN ( \
            SELECT id FROM documents WHERE status IN ('issued', 'submitted') AND sii_next_at <= now() \
            ORDER BY sii_next_at LIMIT 20 FOR UPDATE SKIP LOCKED) \
         RETURNING id, order_id, tipo_dte, folio, status, track_id, envelope, sii_attempts",
    )
    .bind(settings.lease)
    .fetch_all(pool)
    .await?;
    let handled = due.len();
    for doc in due {
        let boleta = TipoDte::from_code(doc.tipo_dte).is_some_and(TipoDte::is_boleta);
        if doc.status == "issued" {
            let envelope = doc.envelope.clone().unwrap_or_default();
            match client.submit(&envelope, boleta).await {
                Ok(track_id) => {
                    sqlx::query(
                        "UPDATE documents SET status = 'submitted', track_id = $2, sii_attempts = 0, \
                         sii_next_at = now() + $3, updated_at = now() WHERE id = $1",
                    )
                    .bind(doc.id)
                    .bind(&track_id)
                    .bind(settings.poll_interval)
                    .execute(pool)
                    .await?;
                    tracing::info!(document_id = %doc.id, %track_id, "sent to the SII");
                }
                Err(SiiError::Refused(detail)) => {
                    settle(pool, &doc, "rejected", &detail).await?;
                }
                Err(SiiError::Transport(detail)) => back_off(pool, &doc, settings, &detail).await?,
            }
        } else {
            match client.status(&doc.track_id, boleta).await {
                Ok(SiiStatus::Pending { estado }) => {
                    sqlx::query(
                        "UPDATE documents SET sii_status_detail = $2, sii_attempts = 0, sii_next_at = now() + $3, \
                         updated_at = now() WHERE id = $1",
                    )
                    .bind(doc.id)
                    .bind(&estado)
                    .bind(settings.poll_interval)
                    .execute(pool)
                    .await?;
                }
                Ok(SiiStatus::Accepted { detail }) => {
                    settle(pool, &doc, "accepted", &detail).await?
                }
                Ok(SiiStatus::AcceptedWithObjections { detail }) => {
                    settle(pool, &doc, "accepted_with_objections", &detail).await?
                }
                Ok(SiiStatus::Rejected { detail }) => {
                    settle(pool, &doc, "rejected", &detail).await?
                }
                Err(SiiError::Refused(detail)) | Err(SiiError::Transport(detail)) => {
                    back_off(pool, &doc, settings, &detail).await?
                }
            }
        }
    }
    Ok(handled)
}

/// Exponential back-off: 1, 2, 4 … poll intervals, at most `max_backoff`.
fn backoff(settings: &WorkerSettings, attempts: i32) -> Duration {
    let factor = 1u32 << attempts.clamp(0, 16);
    (settings.poll_interval * factor).min(settings.max_backoff)
}

async fn back_off(
    pool: &PgPool,
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
    .execute(pool)
    .await?;
    Ok(())
}

/// Stores a final status and publishes it, in one transaction.
async fn settle(pool: &PgPool, doc: &Due, status: &str, detail: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
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
        &mut tx,
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
    tx.commit().await?;
    metrics::counter!("dte_sii_final_total", "status" => status.to_string()).increment(1);
    if status == "rejected" {
        tracing::error!(document_id = %doc.id, track_id = %doc.track_id, detail, "the SII rejected a document");
    } else {
        tracing::info!(document_id = %doc.id, track_id = %doc.track_id, status, "the SII accepted a document");
    }
    Ok(())
}
