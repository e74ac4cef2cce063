//! Postgres access: a pool confined to the service's own schema, and its migrations.

use std::str::FromStr;

use anyhow::Context as _;
use sqlx::{
    ConnectOptions, Connection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio_util::sync::CancellationToken;

/// Opens a pool whose connections see only `schema` (its `search_path`), creating the
/// schema when missing. Each service owns one schema and never reads another's.
pub async fn connect(url: &str, schema: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let base = PgConnectOptions::from_str(url).context("DATABASE_URL is malformed")?;
    let mut conn = base
        .connect()
        .await
        .with_context(|| format!("cannot connect to Postgres at {}", redact(url)))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_ident(schema)
    )))
    .execute(&mut conn)
    .await
    .or_else(|e| {
        if is_duplicate(&e) {
            Ok(Default::default())
        } else {
            Err(e)
        }
    })
    .with_context(|| format!("cannot create schema {schema}"))?;
    conn.close().await.ok();
    connect_existing(url, schema, max_connections).await
}

/// Opens a pool whose connections see only `schema`, which must exist: nothing is created
/// (for reading another database, e.g. the source of a restore drill).
pub async fn connect_existing(
    url: &str,
    schema: &str,
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .context("DATABASE_URL is malformed")?
        .options([("search_path", schema)]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open a pool on {}", redact(url)))
}

/// Applies `migrator` to the pool's schema. sqlx serialises concurrent runs with an
/// advisory lock, so replicas starting together are safe.
pub async fn migrate(pool: &PgPool, migrator: &Migrator, service: &str) -> anyhow::Result<()> {
    migrator
        .run(pool)
        .await
        .with_context(|| format!("migrating the {service} schema"))
}

/// Opens a service's schema and brings it up to date: [`connect`] then [`migrate`].
pub async fn open(url: &str, schema: &str, migrator: &Migrator) -> anyhow::Result<PgPool> {
    let pool = connect(url, schema, 10).await?;
    migrate(&pool, migrator, schema).await?;
    Ok(pool)
}

/// Creates the database named in `url` when it does not exist yet (development and tests:
/// trust auth makes this cheap). Connects to the `postgres` maintenance database to do it.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let target = PgConnectOptions::from_str(url).context("DATABASE_URL is malformed")?;
    let name = target.get_database().unwrap_or("postgres").to_string();
    let mut conn = target
        .clone()
        .database("postgres")
        .connect()
        .await
        .with_context(|| format!("cannot connect to Postgres at {}", redact(url)))?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        let created = sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {}",
            quote_ident(&name)
        )))
        .execute(&mut conn)
        .await;
        // Another process may have created it between the check and now.
        if let Err(e) = created
            && !is_duplicate(&e)
        {
            return Err(e).with_context(|| format!("cannot create database {name}"));
        }
    }
    conn.close().await.ok();
    Ok(())
}

/// Whether `error` (anywhere in its chain) says the database could not be reached or is
/// going away, as opposed to refusing what was asked: no connection within the pool's
/// timeout, an I/O or TLS failure, SQLSTATE class 08 (connection exception), 57P01–57P03
/// (shutting down, starting up) or 53300 (too many connections).
pub fn is_unavailable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .is_some_and(|e| match e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_) => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    code.starts_with("08")
                        || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
                }),
                _ => false,
            })
    })
}

fn is_duplicate(e: &sqlx::Error) -> bool {
    // 42P04 duplicate_database, 42P06 duplicate_schema, 23505 unique_violation (catalog race).
    matches!(
        e.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("42P04" | "42P06" | "23505")
    )
}

/// Double-quotes an identifier for the few statements that cannot take parameters.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Sleeping until a table of the pool's schema gained rows, instead of polling it: a
/// statement trigger on the table runs `pg_notify('orderflow_<table>_<schema>', '')`
/// (delivered when the writing transaction commits), and a worker that found nothing to do
/// waits here for that notice or, should one be lost, a slow safety poll.
pub struct Wakeup {
    pool: PgPool,
    channel: String,
    listener: Option<sqlx::postgres::PgListener>,
}

impl Wakeup {
    /// Listens for `table`'s notices in the pool's schema. When listening fails the
    /// worker polls at the safety interval, and listening is tried again after each wait.
    pub async fn for_table(pool: &PgPool, table: &str) -> Self {
        let mut this = Self {
            pool: pool.clone(),
            channel: table.to_string(),
            listener: None,
        };
        this.listen().await;
        this
    }

    async fn listen(&mut self) {
        let attempt = async {
            let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
                .fetch_one(&self.pool)
                .await?;
            let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
            listener
                .listen(&format!("orderflow_{}_{schema}", self.channel))
                .await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match attempt.await {
            Ok(listener) => self.listener = Some(listener),
            Err(e) => {
                tracing::warn!(table = %self.channel, error = %e, "cannot listen for notifications; polling")
            }
        }
    }

    /// Waits for a notice, at most `safety`, or until `shutdown`.
    pub async fn wait(&mut self, safety: std::time::Duration, shutdown: &CancellationToken) {
        match &mut self.listener {
            Some(listener) => {
                tokio::select! {
                    notified = listener.recv() => if let Err(e) = notified {
                        tracing::warn!(table = %self.channel, error = %e, "lost notifications; polling");
                        self.listener = None;
                    },
                    _ = tokio::time::sleep(safety) => {},
                    _ = shutdown.cancelled() => {},
                }
            }
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(safety) => {},
                    _ = shutdown.cancelled() => {},
                }
                if !shutdown.is_cancelled() {
                    self.listen().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("postgres://postgres:secret@db:5432/x"),
            "postgres://postgres:***@db:5432/x"
        );
        assert_eq!(redact("postgres://db:5432/x"), "postgres://db:5432/x");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("iam"), "\"iam\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
