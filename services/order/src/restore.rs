//! Restore drills: a backup is only as good as the last time it was restored.
//!
//! [`drill`] restores an event-store dump (`pg_dump --format=custom --schema=orders`, as the
//! chart's backup Job writes it) into a scratch database with `pg_restore` (all or nothing:
//! one transaction, stopping at the first error), checks it, rebuilds the read model there
//! with the projector's own code, compares the result with the source database, reports,
//! and drops the scratch database whatever happened.
//!
//! The checks:
//! - **archive**: the file is a pg_dump archive holding the `events` table's data;
//! - **restore**: `pg_restore` restored all of it (a truncated or damaged file fails here,
//!   with `pg_restore`'s reason, never as a half-restored success);
//! - **stream positions**: every stream's positions are exactly 1..n;
//! - **global order**: within every stream, the global order (`transaction_id`,
//!   `global_position`: how the relay and the projector read) agrees with the stream's, and
//!   every event id is unique;
//! - **no event newer than the dump**: no event was appended after the archive was made;
//! - **projections rebuilt**: the projector rebuilds the read model from the restored events
//!   (every event readable by this build, through its upcasters);
//! - **matches the source**: every restored stream is a prefix of the source's stream, event
//!   for event (the source may have moved on since, never rewritten), and the orders by
//!   status rebuilt from the dump equal those folded from the same events in the source.
//!
//! pg_restore is the only reader of pg_dump's custom format: it runs as a child process
//! (`PG_RESTORE`, default `pg_restore` on the PATH), its password in its environment.

use std::{collections::BTreeMap, fmt, path::PathBuf, str::FromStr as _};

use anyhow::Context as _;
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{ConnectOptions as _, Connection as _, PgPool, postgres::PgConnectOptions};
use uuid::Uuid;

use crate::{domain::Order, versions};

/// Events appended this long after the archive's timestamp count as newer than the dump
/// (pg_dump stamps the archive, in whole seconds, just before it takes its snapshot).
const NEWER_THAN_DUMP_SLACK_SECONDS: i64 = 60;
/// Streams compared with the source per round trip.
const COMPARE_BATCH: i64 = 500;
/// Offenders named per failed check.
const NAMED: usize = 5;

/// What to restore, where, and what to compare it with.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The dump file.
    pub dump: PathBuf,
    /// The database the dump was taken from (its `orders` schema is compared, never written).
    pub source_url: String,
    /// A database on the server where the scratch database is created (the connecting
    /// user needs CREATEDB).
    pub scratch_server_url: String,
    /// The scratch database's name (created, then dropped).
    pub scratch_database: String,
    /// The `pg_restore` program.
    pub pg_restore: PathBuf,
    /// Keep the scratch database afterwards (to look into a failure).
    pub keep: bool,
}

/// What [`DrillOptions::scratch_name`] names begin with.
const SCRATCH_PREFIX: &str = "orderflow_restore_drill_";
/// A scratch database of a drill this much older was left by one that died: it goes.
const ABANDONED_AFTER_HOURS: i64 = 24;

impl DrillOptions {
    /// A scratch database name no other drill uses (it carries its creation time).
    pub fn scratch_name() -> String {
        format!(
            "{SCRATCH_PREFIX}{}_{}",
            Utc::now().format("%Y%m%d%H%M%S"),
            &Uuid::new_v4().simple().to_string()[..8]
        )
    }
}

/// Drops the scratch databases that drills killed before their cleanup left behind (named
/// by [`DrillOptions::scratch_name`], made more than a day ago); returns their names.
async fn drop_abandoned(admin: &mut sqlx::PgConnection) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)")
            .bind(SCRATCH_PREFIX)
            .fetch_all(&mut *admin)
            .await?;
    let cutoff = Utc::now() - chrono::Duration::hours(ABANDONED_AFTER_HOURS);
    let mut dropped = Vec::new();
    for name in names {
        let made = name
            .strip_prefix(SCRATCH_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|stamp| NaiveDateTime::parse_from_str(stamp, "%Y%m%d%H%M%S").ok());
        if made.is_some_and(|made| made.and_utc() < cutoff) {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                platform::db::quote_ident(&name)
            )))
            .execute(&mut *admin)
            .await?;
            dropped.push(name);
        }
    }
    Ok(dropped)
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Its name, as the module docs list them.
    pub name: &'static str,
    /// Whether it held.
    pub ok: bool,
    /// What was found (counts, or the offenders).
    pub detail: String,
}

/// A drill's report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// When pg_dump made the archive.
    pub archive_created: Option<DateTime<Utc>>,
    /// Events restored.
    pub events: i64,
    /// Streams (orders) restored.
    pub streams: i64,
    /// Orders by status, rebuilt from the dump.
    pub rebuilt_by_status: BTreeMap<String, i64>,
    /// Orders by status, folded from the same events in the source.
    pub source_by_status: BTreeMap<String, i64>,
    /// Every check, in order; a drill that could not go on stops at the failed one.
    pub checks: Vec<Check>,
    /// Said but not failing (e.g. a scratch server whose transaction counter is behind).
    pub warnings: Vec<String>,
}

impl Report {
    /// Whether every check held (and at least the restore ran).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    /// The check named `name`, if it ran.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    fn push(&mut self, name: &'static str, ok: bool, detail: impl Into<String>) -> bool {
        self.checks.push(Check {
            name,
            ok,
            detail: detail.into(),
        });
        ok
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(
                f,
                "{} {}: {}",
                if c.ok { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "WARN {w}")?;
        }
        write!(
            f,
            "restore drill {}: {} events, {} orders",
            if self.passed() { "passed" } else { "FAILED" },
            self.events,
            self.streams
        )
    }
}

/// Runs the drill. An `Err` is a drill that could not run (the scratch server or the source
/// unreachable); a dump that fails a check is an `Ok` report that did not pass.
pub async fn drill(options: &DrillOptions) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let toc = match list_archive(options).await {
        Ok(toc) => toc,
        Err(reason) => {
            report.push("archive", false, reason);
            return Ok(report);
        }
    };
    report.archive_created = toc.created;
    let archive_ok = match (&toc.events_schema, toc.created) {
        (Some(schema), Some(created)) if schema == crate::SCHEMA => report.push(
            "archive",
            true,
            format!("event store of schema {schema}, made {created}"),
        ),
        (Some(schema), _) if schema != crate::SCHEMA => report.push(
            "archive",
            false,
            format!(
                "the dump's event store is in schema {schema}, not {}",
                crate::SCHEMA
            ),
        ),
        (None, _) => report.push(
            "archive",
            false,
            format!(
                "the dump holds no data of the event store (no TABLE DATA {}.events)",
                crate::SCHEMA
            ),
        ),
        _ => report.push("archive", false, "the archive has no creation time"),
    };
    if !archive_ok {
        return Ok(report);
    }

    let server = PgConnectOptions::from_str(&options.scratch_server_url)
        .context("the scratch server's URL is malformed")?;
    let mut admin = server
        .connect()
        .await
        .context("cannot connect to the scratch server")?;
    for abandoned in drop_abandoned(&mut admin).await? {
        report.warnings.push(format!(
            "dropped {abandoned}, left by a drill that did not finish"
        ));
    }
    let name = platform::db::quote_ident(&options.scratch_database);
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .with_context(|| {
            format!(
                "cannot create the scratch database {}",
                options.scratch_database
            )
        })?;
    let scratch_url = with_database(&options.scratch_server_url, &options.scratch_database)?;
    let outcome = restore_and_check(options, &scratch_url, toc.created, &mut report).await;
    if options.keep {
        report.warnings.push(format!(
            "scratch database {} kept",
            options.scratch_database
        ));
    } else {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .with_context(|| {
            format!(
                "cannot drop the scratch database {}",
                options.scratch_database
            )
        })?;
    }
    admin.close().await.ok();
    outcome?;
    Ok(report)
}

async fn restore_and_check(
    options: &DrillOptions,
    scratch_url: &str,
    created: Option<DateTime<Utc>>,
    report: &mut Report,
) -> anyhow::Result<()> {
    if let Err(reason) = pg_restore(options, scratch_url).await {
        report.push("restore", false, reason);
        return Ok(());
    }
    // Brought to this build's schema, as starting this version on the restored database
    // would.
    let scratch = platform::db::connect(scratch_url, crate::SCHEMA, 2).await?;
    if let Err(e) = platform::db::migrate(&scratch, &crate::MIGRATOR, crate::SCHEMA).await {
        report.push(
            "restore",
            false,
            format!("the restored schema does not migrate to this version: {e:#}"),
        );
        scratch.close().await;
        return Ok(());
    }
    let result = check_restored(options, &scratch, created, report).await;
    scratch.close().await;
    result
}

async fn check_restored(
    options: &DrillOptions,
    scratch: &PgPool,
    created: Option<DateTime<Utc>>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (events, streams): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT stream_id) FROM events")
            .fetch_one(scratch)
            .await?;
    report.events = events;
    report.streams = streams;
    report.push(
        "restore",
        true,
        format!("{events} events of {streams} orders restored"),
    );

    let gaps: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT stream_id, min(stream_position), max(stream_position), count(*) FROM events \
         GROUP BY stream_id HAVING min(stream_position) <> 1 OR max(stream_position) <> count(*) \
         ORDER BY stream_id",
    )
    .fetch_all(scratch)
    .await?;
    report.push(
        "stream positions",
        gaps.is_empty(),
        if gaps.is_empty() {
            format!("every stream of {streams} is 1..n")
        } else {
            format!(
                "{} streams are not 1..n: {}",
                gaps.len(),
                named(gaps.iter().map(|(s, min, max, n)| {
                    format!("{s} has {n} events at positions {min}..{max}")
                }))
            )
        },
    );

    let disorder: Vec<(String, i64)> = sqlx::query_as(
        "SELECT stream_id, stream_position FROM ( \
           SELECT stream_id, stream_position, lag(stream_position) OVER \
             (PARTITION BY stream_id ORDER BY transaction_id, global_position) AS previous \
           FROM events) e \
         WHERE previous IS NOT NULL AND previous <> stream_position - 1 \
         ORDER BY stream_id, stream_position LIMIT 100",
    )
    .fetch_all(scratch)
    .await?;
    let duplicate_ids: i64 =
        sqlx::query_scalar("SELECT count(*) - count(DISTINCT event_id) FROM events")
            .fetch_one(scratch)
            .await?;
    let mut problems = Vec::new();
    if !disorder.is_empty() {
        problems.push(format!(
            "read globally, streams go out of order at {}",
            named(disorder.iter().map(|(s, p)| format!("{s} position {p}")))
        ));
    }
    if duplicate_ids > 0 {
        problems.push(format!("{duplicate_ids} event ids appear twice"));
    }
    report.push(
        "global order",
        problems.is_empty(),
        if problems.is_empty() {
            "the global order keeps every stream's order; event ids unique".to_string()
        } else {
            problems.join("; ")
        },
    );

    let created = created.context("the archive has no creation time")?;
    let limit = created + chrono::Duration::seconds(NEWER_THAN_DUMP_SLACK_SECONDS);
    let newer: Vec<(String, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT stream_id, stream_position, created_at FROM events WHERE created_at > $1 \
         ORDER BY created_at LIMIT 100",
    )
    .bind(limit)
    .fetch_all(scratch)
    .await?;
    report.push(
        "no event newer than the dump",
        newer.is_empty(),
        if newer.is_empty() {
            format!("every event was appended before {created}")
        } else {
            format!(
                "events appended after the dump was made ({created}): {}",
                named(
                    newer
                        .iter()
                        .map(|(s, p, at)| format!("{s} position {p} at {at}"))
                )
            )
        },
    );

    let newest_xid: Option<i64> =
        sqlx::query_scalar("SELECT max(transaction_id)::text::bigint FROM events")
            .fetch_one(scratch)
            .await?;
    let current_xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(scratch)
        .await?;
    if newest_xid.is_some_and(|newest| newest >= current_xid) {
        report.warnings.push(format!(
            "the scratch server's transaction counter ({current_xid}) is behind the dump's newest \
             transaction id ({}): events appended on this server after a restore would sort before \
             the restored ones, and the relay and the projector would pass over them; restore onto \
             a server that has run at least as many transactions, or advance its counter first",
            newest_xid.unwrap_or_default()
        ));
    }

    match crate::projector::rebuild(scratch).await {
        Ok(rebuilt) => {
            report.push(
                "projections rebuilt",
                rebuilt.events as i64 == events,
                format!(
                    "{} of {events} events projected into {} orders",
                    rebuilt.events, rebuilt.orders
                ),
            );
        }
        Err(e) => {
            report.push("projections rebuilt", false, format!("{e:#}"));
            return Ok(());
        }
    }
    report.rebuilt_by_status = sqlx::query_as::<_, (String, i64)>(
        "SELECT status, count(*) FROM order_summaries GROUP BY status",
    )
    .fetch_all(scratch)
    .await?
    .into_iter()
    .collect();

    let source = platform::db::connect_existing(&options.source_url, crate::SCHEMA, 2)
        .await
        .context("cannot connect to the source database")?;
    let compared = compare_with_source(scratch, &source, report).await;
    source.close().await;
    let mismatches = compared?;
    let counts_agree = report.rebuilt_by_status == report.source_by_status;
    let mut problems = Vec::new();
    if !mismatches.is_empty() {
        problems.push(format!(
            "{} restored streams differ from the source's: {}",
            mismatches.len(),
            named(mismatches.iter().cloned())
        ));
    }
    if !counts_agree {
        problems.push(format!(
            "orders by status rebuilt from the dump {:?}, folded in the source {:?}",
            report.rebuilt_by_status, report.source_by_status
        ));
    }
    report.push(
        "matches the source",
        problems.is_empty(),
        if problems.is_empty() {
            format!(
                "every stream is the source's, event for event; orders by status {:?}",
                report.rebuilt_by_status
            )
        } else {
            problems.join("; ")
        },
    );
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Compared {
    stream_id: String,
    stream_position: i64,
    event_id: Uuid,
}

#[derive(sqlx::FromRow)]
struct SourceEvent {
    stream_id: String,
    stream_position: i64,
    event_id: Uuid,
    data: serde_json::Value,
}

/// Walks the restored streams in batches; for each, the source's first n events must be
/// the restored ones (same ids, same positions), and they are folded into the source's
/// orders by status. Returns the streams that differ.
async fn compare_with_source(
    scratch: &PgPool,
    source: &PgPool,
    report: &mut Report,
) -> anyhow::Result<Vec<String>> {
    let mut mismatches = Vec::new();
    let mut after = String::new();
    loop {
        // The next batch of whole streams, in one statement.
        let restored: Vec<Compared> = sqlx::query_as(
            "SELECT stream_id, stream_position, event_id FROM events WHERE stream_id IN ( \
               SELECT DISTINCT stream_id FROM events WHERE stream_id > $1 ORDER BY stream_id LIMIT $2) \
             ORDER BY stream_id, stream_position",
        )
        .bind(&after)
        .bind(COMPARE_BATCH)
        .fetch_all(scratch)
        .await?;
        let Some(last) = restored.last() else { break };
        after = last.stream_id.clone();
        let mut ids: Vec<String> = restored.iter().map(|e| e.stream_id.clone()).collect();
        ids.dedup();
        let mut expected: BTreeMap<&str, Vec<(i64, Uuid)>> = BTreeMap::new();
        for e in &restored {
            expected
                .entry(e.stream_id.as_str())
                .or_default()
                .push((e.stream_position, e.event_id));
        }
        let in_source: Vec<SourceEvent> = sqlx::query_as(
            "SELECT stream_id, stream_position, event_id, data FROM events WHERE stream_id = ANY($1) \
             ORDER BY stream_id, stream_position",
        )
        .bind(&ids)
        .fetch_all(source)
        .await
        .context("reading the source's event store")?;
        let mut by_stream: BTreeMap<&str, Vec<&SourceEvent>> = BTreeMap::new();
        for e in &in_source {
            by_stream.entry(e.stream_id.as_str()).or_default().push(e);
        }
        for (stream, wanted) in &expected {
            let got = by_stream.get(stream).map(Vec::as_slice).unwrap_or_default();
            let prefix = &got[..got.len().min(wanted.len())];
            let same = prefix.len() == wanted.len()
                && prefix
                    .iter()
                    .zip(wanted)
                    .all(|(s, (position, id))| s.stream_position == *position && s.event_id == *id);
            if !same {
                mismatches.push(if got.is_empty() {
                    format!("{stream} is not in the source")
                } else {
                    format!(
                        "{stream} ({} events restored, {} in the source, differing)",
                        wanted.len(),
                        got.len()
                    )
                });
                continue;
            }
            let events = prefix
                .iter()
                .map(|e| versions::decode(e.data.clone()))
                .collect::<anyhow::Result<Vec<_>>>()
                .with_context(|| format!("reading the source's {stream}"))?;
            if let Some(order) = Order::from_events(stream, &events) {
                *report
                    .source_by_status
                    .entry(order.status.as_str().to_string())
                    .or_default() += 1;
            }
        }
    }
    Ok(mismatches)
}

struct Toc {
    created: Option<DateTime<Utc>>,
    events_schema: Option<String>,
}

/// `pg_restore --list`: is it an archive, when was it made, does it hold the events' data.
async fn list_archive(options: &DrillOptions) -> Result<Toc, String> {
    let output = tokio::process::Command::new(&options.pg_restore)
        .arg("--list")
        .arg(&options.dump)
        // The archive's time is printed in pg_restore's time zone.
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", options.pg_restore.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} is not a readable pg_dump archive: {}",
            options.dump.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let listing = String::from_utf8_lossy(&output.stdout);
    let created = listing.lines().find_map(|line| {
        let stamp = line
            .trim_start_matches(';')
            .trim()
            .strip_prefix("Archive created at ")?;
        let stamp = stamp.trim().trim_end_matches("UTC").trim();
        NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S")
            .ok()
            .map(|t| t.and_utc())
    });
    // "3380; 0 16423 TABLE DATA orders events postgres"
    let events_schema = listing.lines().find_map(|line| {
        let (_, rest) = line.split_once(" TABLE DATA ")?;
        let mut words = rest.split_whitespace();
        let schema = words.next()?;
        (words.next()? == "events").then(|| schema.to_string())
    });
    Ok(Toc {
        created,
        events_schema,
    })
}

/// Restores the whole dump into the scratch database, or nothing.
async fn pg_restore(options: &DrillOptions, scratch_url: &str) -> Result<(), String> {
    let mut url = url::Url::parse(scratch_url).map_err(|e| format!("scratch URL: {e}"))?;
    let password = url.password().map(str::to_string);
    url.set_password(None).ok();
    let mut command = tokio::process::Command::new(&options.pg_restore);
    command
        .arg(format!("--dbname={url}"))
        .args([
            "--exit-on-error",
            "--single-transaction",
            "--no-owner",
            "--no-privileges",
        ])
        .arg(&options.dump)
        .env("LC_ALL", "C");
    if let Some(password) = password {
        let decoded = percent_encoding::percent_decode_str(&password).decode_utf8_lossy();
        command.env("PGPASSWORD", decoded.as_ref());
    }
    let output = command
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", options.pg_restore.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "pg_restore failed, nothing was restored: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `url` with its database replaced.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let mut parsed = url::Url::parse(url).context("the scratch server's URL is malformed")?;
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.to_string())
}

fn named(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    let more = items.len().saturating_sub(NAMED);
    let mut text = items.into_iter().take(NAMED).collect::<Vec<_>>().join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}
