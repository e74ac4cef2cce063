//! An append-only event store in Postgres.
//!
//! - Appends carry the stream version the caller decided on; a concurrent append to the
//!   same stream makes the `(stream_id, stream_position)` key collide and the append is
//!   reported as a [`Conflict`], never merged.
//! - Global readers ([`read_all`]) never skip an event whose transaction commits after a
//!   higher `global_position` became visible. Each event records its transaction id; a
//!   reader only returns events of transactions older than the oldest one still in
//!   flight (`pg_snapshot_xmin`), whose outcome is therefore final, in
//!   `(transaction_id, global_position)` order, and resumes after a [`Checkpoint`] of
//!   both. Appends stay concurrent (no global lock); a stream's events keep their order
//!   because an append's first write is its event insert, so a later append of the same
//!   stream always has a later transaction id. (The version pre-check reads before the
//!   insert but assigns no transaction id: reads do not.)
//! - The horizon is the whole Postgres server's: a long transaction anywhere on it
//!   (another database too) holds global readers back. They lag, never skip; the
//!   projection-lag metric and readiness make such a stall visible.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// e.g. `OrderPlaced`.
    pub event_type: String,
    /// The event's body.
    pub data: Value,
    /// Causation and correlation ids, acting user, trace context.
    pub metadata: Value,
}

/// A stored event.
#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct RecordedEvent {
    /// Stable id (the published envelope's id).
    pub event_id: Uuid,
    /// Position in the whole store (assigned at insert).
    pub global_position: i64,
    /// The writing transaction (as a number).
    pub transaction_id: i64,
    /// The stream (aggregate) id.
    pub stream_id: String,
    /// 1-based position within the stream.
    pub stream_position: i64,
    /// Event type.
    pub event_type: String,
    /// Body.
    pub data: Value,
    /// Metadata.
    pub metadata: Value,
    /// When it was appended.
    pub created_at: DateTime<Utc>,
}

/// The stream had moved on: someone else appended first.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("stream {stream_id} is at version {actual}, not the expected {expected}")]
pub struct Conflict {
    /// The stream.
    pub stream_id: String,
    /// The version the caller built on.
    pub expected: i64,
    /// The version found.
    pub actual: i64,
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Optimistic concurrency conflict: reload and decide again, or report it.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

const EVENT_COLUMNS: &str = "event_id, global_position, transaction_id::text::bigint AS transaction_id, stream_id, stream_position, event_type, data, metadata, created_at";

/// The current version of a stream (0 when it has no events).
pub async fn stream_version(conn: &mut PgConnection, stream_id: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(max(stream_position), 0) FROM events WHERE stream_id = $1",
    )
    .bind(stream_id)
    .fetch_one(conn)
    .await?)
}

/// Appends `events` to `stream_id` at `expected_version` (0 for a new stream) inside the
/// caller's transaction. Returns the new version. On conflict nothing is written (the
/// caller's transaction must then be rolled back).
pub async fn append(
    conn: &mut PgConnection,
    stream_id: &str,
    expected_version: i64,
    events: &[NewEvent],
) -> Result<i64, AppendError> {
    let conflict = |actual| {
        AppendError::Conflict(Conflict {
            stream_id: stream_id.to_string(),
            expected: expected_version,
            actual,
        })
    };
    // Seen already behind or ahead: refuse before writing. A concurrent append that lands
    // after this check collides on (stream_id, stream_position) below.
    let actual = stream_version(conn, stream_id).await?;
    if actual != expected_version {
        return Err(conflict(actual));
    }
    let mut version = expected_version;
    for event in events {
        version += 1;
        let inserted = sqlx::query("INSERT INTO events (stream_id, stream_position, event_type, data, metadata) VALUES ($1, $2, $3, $4, $5)")
            .bind(stream_id)
            .bind(version)
            .bind(&event.event_type)
            .bind(&event.data)
            .bind(&event.metadata)
            .execute(&mut *conn)
            .await;
        match inserted {
            Ok(_) => {}
            // The racing append's version is not visible to this transaction: -1 = unknown.
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505") => {
                return Err(conflict(-1));
            }
            Err(e) => return Err(AppendError::Other(e.into())),
        }
    }
    Ok(version)
}

/// Appends in a transaction of its own, reporting the real version on conflict.
pub async fn append_committed(
    pool: &PgPool,
    stream_id: &str,
    expected_version: i64,
    events: &[NewEvent],
) -> Result<i64, AppendError> {
    let mut tx = pool.begin().await.map_err(anyhow::Error::from)?;
    match append(&mut tx, stream_id, expected_version, events).await {
        Ok(version) => {
            tx.commit().await.map_err(anyhow::Error::from)?;
            Ok(version)
        }
        Err(AppendError::Conflict(mut conflict)) => {
            tx.rollback().await.map_err(anyhow::Error::from)?;
            let mut conn = pool.acquire().await.map_err(anyhow::Error::from)?;
            conflict.actual = stream_version(&mut conn, stream_id).await?;
            Err(AppendError::Conflict(conflict))
        }
        Err(e) => Err(e),
    }
}

/// A stream's events after `after_position`, in order.
pub async fn read_stream(
    db: impl PgExecutor<'_>,
    stream_id: &str,
    after_position: i64,
) -> anyhow::Result<Vec<RecordedEvent>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND stream_position > $2 ORDER BY stream_position"
    )))
    .bind(stream_id)
    .bind(after_position)
    .fetch_all(db)
    .await?)
}

/// Several whole streams in one statement, each in order (grouped by stream).
pub async fn read_streams(
    db: impl PgExecutor<'_>,
    stream_ids: &[String],
) -> anyhow::Result<Vec<RecordedEvent>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ANY($1) ORDER BY stream_id, stream_position"
    )))
    .bind(stream_ids)
    .fetch_all(db)
    .await?)
}

/// Where a global reader (projector, relay) is: the last event it handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint {
    /// Transaction id of the last event read (0 before the first).
    pub transaction_id: i64,
    /// Its global position.
    pub global_position: i64,
}

impl Checkpoint {
    /// The checkpoint just after `event`.
    pub fn after(event: &RecordedEvent) -> Self {
        Self {
            transaction_id: event.transaction_id,
            global_position: event.global_position,
        }
    }
}

/// Up to `limit` events after `checkpoint` whose transactions can no longer change
/// (older than every transaction in flight), in `(transaction_id, global_position)`
/// order. An event still being written is not skipped: it is returned once its
/// transaction has committed, before anything that follows it.
pub async fn read_all(
    conn: &mut PgConnection,
    checkpoint: Checkpoint,
    limit: i64,
) -> anyhow::Result<Vec<RecordedEvent>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM events \
         WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY transaction_id, global_position LIMIT $3"
    )))
    .bind(checkpoint.transaction_id.to_string())
    .bind(checkpoint.global_position)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// One event of a stream as a reader rebuilds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StreamEvent {
    /// 1-based position within the stream.
    pub stream_position: i64,
    /// Body.
    pub data: Value,
    /// When it was appended.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct StreamRow {
    is_snapshot: bool,
    stream_position: i64,
    data: Value,
    created_at: DateTime<Utc>,
}

/// A stream to rebuild its state: its latest snapshot (version and state), if any, and the
/// events after it, in order. One statement: one round trip and one consistent view (an
/// aggregate is loaded for every command and every read of an order, so this is hot).
pub async fn load_stream(
    db: impl PgExecutor<'_>,
    stream_id: &str,
) -> anyhow::Result<(Option<(i64, Value)>, Vec<StreamEvent>)> {
    let rows: Vec<StreamRow> = sqlx::query_as(
        "SELECT true AS is_snapshot, stream_position, data, created_at FROM snapshots WHERE stream_id = $1 \
         UNION ALL \
         SELECT false, stream_position, data, created_at FROM events WHERE stream_id = $1 \
           AND stream_position > COALESCE((SELECT stream_position FROM snapshots WHERE stream_id = $1), 0) \
         ORDER BY is_snapshot DESC, stream_position",
    )
    .bind(stream_id)
    .fetch_all(db)
    .await?;
    let mut snapshot = None;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        if row.is_snapshot {
            snapshot = Some((row.stream_position, row.data));
        } else {
            events.push(StreamEvent {
                stream_position: row.stream_position,
                data: row.data,
                created_at: row.created_at,
            });
        }
    }
    Ok((snapshot, events))
}

/// A stream's latest snapshot: its version and state.
pub async fn load_snapshot(
    db: impl PgExecutor<'_>,
    stream_id: &str,
) -> anyhow::Result<Option<(i64, Value)>> {
    Ok(
        sqlx::query_as("SELECT stream_position, data FROM snapshots WHERE stream_id = $1")
            .bind(stream_id)
            .fetch_optional(db)
            .await?,
    )
}

/// Keeps `state` as the stream's snapshot at `version` (an older snapshot never
/// replaces a newer one).
pub async fn save_snapshot(
    conn: &mut PgConnection,
    stream_id: &str,
    version: i64,
    state: &Value,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO snapshots (stream_id, stream_position, data) VALUES ($1, $2, $3) \
         ON CONFLICT (stream_id) DO UPDATE SET stream_position = EXCLUDED.stream_position, data = EXCLUDED.data, created_at = now() \
         WHERE snapshots.stream_position < EXCLUDED.stream_position",
    )
    .bind(stream_id)
    .bind(version)
    .bind(state)
    .execute(conn)
    .await?;
    Ok(())
}

/// A global reader's checkpoint (`projector`, `relay`); `lock` holds its row until the
/// transaction ends, so two readers of one name never move it at once.
pub async fn load_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    lock: bool,
) -> anyhow::Result<Checkpoint> {
    let sql = if lock {
        "SELECT transaction_id::text::bigint, global_position FROM checkpoints WHERE name = $1 FOR UPDATE"
    } else {
        "SELECT transaction_id::text::bigint, global_position FROM checkpoints WHERE name = $1"
    };
    let (transaction_id, global_position): (i64, i64) = sqlx::query_as(sql)
        .bind(name)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no checkpoint named {name}"))?;
    Ok(Checkpoint {
        transaction_id,
        global_position,
    })
}

/// Moves a checkpoint (inside the reader's transaction).
pub async fn save_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    checkpoint: Checkpoint,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE checkpoints SET transaction_id = $2::text::xid8, global_position = $3, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(checkpoint.transaction_id.to_string())
    .bind(checkpoint.global_position)
    .execute(conn)
    .await?;
    Ok(())
}

/// How many events are written but not yet past the reader `name`'s checkpoint (counting
/// stops at 1 000 000: beyond that the number only says "far behind").
pub async fn lag(db: impl PgExecutor<'_>, name: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM events \
           WHERE (transaction_id, global_position) > (SELECT transaction_id, global_position FROM checkpoints WHERE name = $1) \
           LIMIT 1000000) behind",
    )
    .bind(name)
    .fetch_one(db)
    .await?)
}
