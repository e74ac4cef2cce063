//! How many received documents are near the end of their 8 days, for the operators.

use sqlx::PgPool;

use super::DEADLINE_DAYS;

/// Types a buyer receives, whose deadline gauge is exported from 0.
const RECEIVED_TYPES: [i32; 5] = [33, 34, 52, 56, 61];

/// Sets `dte_received_deadline_soon{tipo}`: valid documents still undecided whose 8 days
/// end within 2 days (act now, or they count as accepted).
pub async fn refresh_deadline_gauges(pool: &PgPool) -> anyhow::Result<()> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT tipo_dte, count(*) FROM received_documents \
         WHERE valid AND decision = '' \
           AND received_at + make_interval(days => $1) > now() \
           AND received_at + make_interval(days => $1) <= now() + interval '2 days' \
         GROUP BY tipo_dte",
    )
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

/// Keeps the deadline gauges current (every `every`) until `shutdown`.
pub async fn watch_deadlines(
    pool: PgPool,
    every: std::time::Duration,
    shutdown: platform::CancellationToken,
) {
    loop {
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
