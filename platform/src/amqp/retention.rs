//! What the outbox and the inbox keep, and for how long.
//!
//! A published outbox row is kept `OUTBOX_RETENTION` (default 7 days: long enough to look
//! at or re-send what went out last week), an inbox record `INBOX_RETENTION` (default 30
//! days). The inbox must outlive the outbox: while a published row still exists it can be
//! sent again, and the consumer must still remember it then to apply it once; a setting
//! that breaks this is refused at start, naming both. Unpublished outbox rows are never
//! deleted. Rows go in small batches (each its own short statement, no long locks), once
//! an hour and at start.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Reader};

/// Rows deleted per statement.
const BATCH: i64 = 1000;

/// How long published outbox rows and inbox records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `OUTBOX_RETENTION`: how long a published outbox row is kept.
    pub outbox: Duration,
    /// `INBOX_RETENTION`: how long a consumed message's id is remembered.
    pub inbox: Duration,
    /// How often to delete what is past retention.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            outbox: Duration::from_secs(7 * 86_400),
            inbox: Duration::from_secs(30 * 86_400),
            interval: Duration::from_secs(3600),
        }
    }
}

impl Retention {
    /// Reads `OUTBOX_RETENTION` and `INBOX_RETENTION`; refuses an inbox that would forget a
    /// message while its outbox row could still be sent again.
    pub fn from_settings(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let outbox = r.duration("OUTBOX_RETENTION", defaults.outbox)?;
        let inbox = r.duration("INBOX_RETENTION", defaults.inbox)?;
        if inbox <= outbox {
            return Err(ConfigError {
                key: "INBOX_RETENTION".into(),
                problem: format!(
                    "({} s) must be longer than OUTBOX_RETENTION ({} s): a consumer must \
                     remember a message as long as it can be sent again",
                    inbox.as_secs(),
                    outbox.as_secs()
                ),
            });
        }
        Ok(Self {
            outbox,
            inbox,
            interval: defaults.interval,
        })
    }

    /// Deletes, in batches, published outbox rows and inbox records past retention in the
    /// pool's schema; returns (outbox rows, inbox records) deleted.
    pub async fn purge_once(&self, pool: &PgPool) -> anyhow::Result<(u64, u64)> {
        let outbox = purge(
            pool,
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox \
             WHERE published_at < now() - $1 ORDER BY seq LIMIT $2)",
            self.outbox,
        )
        .await?;
        let inbox = purge(
            pool,
            "DELETE FROM inbox WHERE (consumer, message_id) IN (SELECT consumer, message_id \
             FROM inbox WHERE received_at < now() - $1 LIMIT $2)",
            self.inbox,
        )
        .await?;
        metrics::counter!("outbox_rows_deleted_total").increment(outbox);
        metrics::counter!("inbox_rows_deleted_total").increment(inbox);
        Ok((outbox, inbox))
    }

    /// Purges at start and every interval until `shutdown`; failures are logged and
    /// retried next time.
    pub async fn run(self, pool: PgPool, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            match self.purge_once(&pool).await {
                Ok((0, 0)) => {}
                Ok((outbox, inbox)) => {
                    tracing::info!(outbox, inbox, "deleted rows past retention")
                }
                Err(e) => tracing::warn!(error = format!("{e:#}"), "retention purge failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

async fn purge(
    pool: &PgPool,
    statement: &'static str,
    older_than: Duration,
) -> anyhow::Result<u64> {
    let mut deleted = 0;
    loop {
        let n = sqlx::query(statement)
            .bind(older_than)
            .bind(BATCH)
            .execute(pool)
            .await?
            .rows_affected();
        deleted += n;
        if n < BATCH as u64 {
            return Ok(deleted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inbox_shorter_than_the_outbox_is_refused_naming_both() {
        let src: std::collections::HashMap<&str, &str> =
            [("OUTBOX_RETENTION", "30d"), ("INBOX_RETENTION", "7d")]
                .into_iter()
                .collect();
        let err = Retention::from_settings(&Reader::new(&src)).unwrap_err();
        assert_eq!(err.key, "INBOX_RETENTION");
        assert!(err.problem.contains("OUTBOX_RETENTION"), "{}", err.problem);
        let src: std::collections::HashMap<&str, &str> =
            [("OUTBOX_RETENTION", "a week")].into_iter().collect();
        assert_eq!(
            Retention::from_settings(&Reader::new(&src))
                .unwrap_err()
                .key,
            "OUTBOX_RETENTION"
        );
        let none: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        assert_eq!(
            Retention::from_settings(&Reader::new(&none)).unwrap(),
            Retention::default()
        );
    }
}
