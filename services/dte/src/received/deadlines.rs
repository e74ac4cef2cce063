//! How many received documents are near the end of their 8 days, for the operators; and
//! when the SII received each factura still undecided, from which its 8 days count.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::sii::{SiiRegistry, registry::REGISTRY_TYPES};

use super::{DEADLINE_DAYS, deadline_sql};

/// Types a buyer receives, whose deadline gauge is exported from 0.
const RECEIVED_TYPES: [i32; 5] = [33, 34, 52, 56, 61];

/// Sets `dte_received_deadline_soon{tipo}`: valid documents still undecided whose 8 days
/// end within 2 days (act now, or they count as accepted).
pub async fn refresh_deadline_gauges(pool: &PgPool) -> anyhow::Result<()> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(concat!(
        "SELECT tipo_dte, count(*) FROM received_documents \
         WHERE valid AND decision = '' AND ",
        deadline_sql!("$1"),
        " > now() AND ",
        deadline_sql!("$1"),
        " <= now() + interval '2 days' GROUP BY tipo_dte"
    ))
    .bind(DEADLINE_DAYS as i32)
    .fetch_all(pool)
    .await?;
    for tipo in RECEIVED_TYPES
        .iter()
        .copied()
        .chain(rows.iter().map(|r| r.0))
    {
        let soon = rows.iter().find(|r| r.0 == tipo).map_or(0, |r| r.1);
        metrics::gauge!("dte_received_deadline_soon", "tipo" => tipo.to_string()).set(soon as f64);
    }
    Ok(())
}

/// Asks the SII's registry when it received each undecided factura whose date is not known
/// yet (a few per round), and keeps the date: the deadline moves to 8 days from it. How
/// many dates were learnt.
pub async fn learn_reception_dates(
    pool: &PgPool,
    registry: &dyn SiiRegistry,
) -> anyhow::Result<usize> {
    let rows: Vec<(Uuid, String, i32, i64)> = sqlx::query_as(concat!(
        "SELECT id, rut_emisor, tipo_dte, folio FROM received_documents \
         WHERE valid AND decision = '' AND sii_received_at IS NULL AND tipo_dte = ANY($2) \
           AND ",
        deadline_sql!("$1"),
        " > now() ORDER BY received_at LIMIT 50"
    ))
    .bind(DEADLINE_DAYS as i32)
    .bind(&REGISTRY_TYPES[..])
    .fetch_all(pool)
    .await?;
    let mut learnt = 0;
    for (id, rut_emisor, tipo, folio) in rows {
        let at: Option<DateTime<Utc>> = registry.reception_date(&rut_emisor, tipo, folio).await?;
        if let Some(at) = at {
            sqlx::query(
                "UPDATE received_documents SET sii_received_at = $2 \
                 WHERE id = $1 AND sii_received_at IS NULL",
            )
            .bind(id)
            .bind(at)
            .execute(pool)
            .await?;
            learnt += 1;
        }
    }
    Ok(learnt)
}

/// Keeps the deadline gauges and the SII's reception dates current (every `every`) until
/// `shutdown`.
pub async fn watch_deadlines(
    pool: PgPool,
    registry: Arc<dyn SiiRegistry>,
    every: std::time::Duration,
    shutdown: platform::CancellationToken,
) {
    loop {
        if let Err(e) = learn_reception_dates(&pool, registry.as_ref()).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "asking the SII when it received the suppliers' facturas failed"
            );
        }
        if let Err(e) = refresh_deadline_gauges(&pool).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "counting received documents near their deadline failed"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
