//! Restore drills on real dumps: `pg_dump --format=custom --schema=orders` of a store with
//! orders in several states (as the chart's backup Job takes it), restored by
//! `order::restore::drill` with the real `pg_restore`, checked, rebuilt and compared with a
//! source that moved on after the dump. Bad dumps (not a dump, truncated, an event store
//! with a gap, a stream the source does not hold) fail the drill naming the reason, and no scratch database is left behind.

use std::path::{Path, PathBuf};

use order::{
    event_store::{self, NewEvent},
    restore::{DrillOptions, Report, drill},
};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// The fixture's events by type, as templates (`tests/fixtures/order-events-v1.json`).
fn template(event_type: &str) -> Value {
    let fixture: Vec<Value> =
        serde_json::from_str(include_str!("fixtures/order-events-v1.json")).unwrap();
    fixture
        .into_iter()
        .map(|e| e["data"].clone())
        .find(|d| d["type"] == event_type)
        .unwrap()
}

async fn append(pool: &PgPool, stream: &str, expected: i64, types: &[&str]) {
    let mut conn = pool.acquire().await.unwrap();
    let events: Vec<NewEvent> = types
        .iter()
        .map(|t| NewEvent {
            event_type: t.to_string(),
            data: template(t),
            metadata: json!({}),
        })
        .collect();
    event_store::append(&mut conn, stream, expected, &events)
        .await
        .unwrap();
}

fn order_id() -> String {
    Uuid::now_v7().to_string()
}

/// A store with 3 unpaid, 2 paid and 1 cancelled order (returns the unpaid ones' ids).
async fn source_with_orders() -> (String, PgPool, Vec<String>) {
    let url = platform::testing::fresh_database().await.unwrap();
    let pool = order::open_database(&url).await.unwrap();
    let mut unpaid = Vec::new();
    for _ in 0..3 {
        let id = order_id();
        append(&pool, &id, 0, &["OrderPlaced"]).await;
        unpaid.push(id);
    }
    for _ in 0..2 {
        append(&pool, &order_id(), 0, &["OrderPlaced", "OrderPaid"]).await;
    }
    append(&pool, &order_id(), 0, &["OrderPlaced", "OrderCancelled"]).await;
    order::projector::rebuild(&pool).await.unwrap();
    (url, pool, unpaid)
}

fn pg_dump(url: &str, file: &Path) {
    let status = std::process::Command::new("pg_dump")
        .arg(format!("--dbname={url}"))
        .args(["--schema=orders", "--format=custom"])
        .arg(format!("--file={}", file.display()))
        .status()
        .expect("pg_dump (Debian's postgresql-client) runs");
    assert!(status.success(), "pg_dump failed");
}

fn work_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orderflow-drill-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn options(source_url: &str, dump: &Path) -> DrillOptions {
    DrillOptions {
        dump: dump.to_path_buf(),
        source_url: source_url.to_string(),
        scratch_server_url: platform::testing::server_url(),
        // Named as test databases are, so `./dev test` drops any an interrupted run left.
        scratch_database: format!(
            "{}drill_{}",
            platform::testing::TEST_DATABASE_PREFIX,
            Uuid::new_v4().simple()
        ),
        pg_restore: "pg_restore".into(),
        keep: false,
    }
}

async fn database_exists(name: &str) -> bool {
    let server = PgPool::connect(&platform::testing::server_url())
        .await
        .unwrap();
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&server)
        .await
        .unwrap();
    server.close().await;
    found.is_some()
}

fn failed<'a>(report: &'a Report, name: &str) -> &'a str {
    let check = report
        .check(name)
        .unwrap_or_else(|| panic!("no {name} check in\n{report}"));
    assert!(!check.ok, "{name} should fail:\n{report}");
    assert!(!report.passed());
    &check.detail
}

#[tokio::test]
async fn a_dump_restores_checks_and_rebuilds_to_the_sources_orders_though_the_source_moved_on() {
    let (url, pool, unpaid) = source_with_orders().await;
    let dir = work_dir();
    let dump = dir.join("event-store.dump");
    pg_dump(&url, &dump);

    // After the backup, the shop goes on: an unpaid order is paid, a new one placed.
    append(&pool, &unpaid[0], 1, &["OrderPaid"]).await;
    append(&pool, &order_id(), 0, &["OrderPlaced"]).await;

    let options = options(&url, &dump);
    let report = drill(&options).await.unwrap();
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.events, 9);
    assert_eq!(report.streams, 6);
    let expected: std::collections::BTreeMap<String, i64> = [
        ("cancelled".to_string(), 1),
        ("paid".to_string(), 2),
        ("pending_payment".to_string(), 3),
    ]
    .into_iter()
    .collect();
    assert_eq!(report.rebuilt_by_status, expected, "{report}");
    assert_eq!(report.source_by_status, expected, "{report}");
    let names: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "archive",
            "restore",
            "stream positions",
            "global order",
            "no event newer than the dump",
            "projections rebuilt",
            "matches the source",
        ]
    );
    assert!(
        !database_exists(&options.scratch_database).await,
        "the scratch database is dropped"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_scratch_database_left_by_a_drill_that_died_goes_with_the_next_drill() {
    let (url, _pool, _) = source_with_orders().await;
    // Named as a drill names its scratch database, made long ago; and one made now, which
    // may be another drill's at work.
    let suffix = &Uuid::new_v4().simple().to_string()[..8];
    let abandoned = format!("orderflow_restore_drill_20200101000000_{suffix}");
    let current = DrillOptions::scratch_name();
    let server = PgPool::connect(&platform::testing::server_url())
        .await
        .unwrap();
    for name in [&abandoned, &current] {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&server)
            .await
            .unwrap();
    }
    let dir = work_dir();
    let dump = dir.join("event-store.dump");
    pg_dump(&url, &dump);
    let report = drill(&options(&url, &dump)).await.unwrap();
    assert!(report.passed(), "{report}");
    assert!(!database_exists(&abandoned).await, "{report}");
    assert!(
        report.warnings.iter().any(|w| w.contains(&abandoned)),
        "{report}"
    );
    assert!(
        database_exists(&current).await,
        "a drill at work is left alone"
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{current}\"")))
        .execute(&server)
        .await
        .unwrap();
    server.close().await;
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_file_that_is_no_dump_or_a_truncated_dump_fails_with_the_reason_and_leaves_nothing() {
    let (url, _pool, _) = source_with_orders().await;
    let dir = work_dir();

    let not_a_dump = dir.join("notes.txt");
    std::fs::write(
        &not_a_dump,
        "these are not the backups you are looking for\n",
    )
    .unwrap();
    let report = drill(&options(&url, &not_a_dump)).await.unwrap();
    let detail = failed(&report, "archive");
    assert!(
        detail.contains("is not a readable pg_dump archive"),
        "{detail}"
    );
    assert_eq!(report.checks.len(), 1, "nothing restored:\n{report}");

    let dump = dir.join("event-store.dump");
    pg_dump(&url, &dump);
    let bytes = std::fs::read(&dump).unwrap();
    let truncated = dir.join("truncated.dump");
    std::fs::write(&truncated, &bytes[..bytes.len() - 64]).unwrap();
    let options = options(&url, &truncated);
    let report = drill(&options).await.unwrap();
    let detail = failed(&report, "restore");
    assert!(
        detail.contains("pg_restore failed, nothing was restored"),
        "{detail}"
    );
    assert!(
        !report
            .checks
            .iter()
            .any(|c| c.name == "projections rebuilt"),
        "never a half-restored success:\n{report}"
    );
    assert!(!database_exists(&options.scratch_database).await);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_dump_with_a_gap_or_that_the_source_no_longer_holds_fails_naming_the_stream() {
    let (url, pool, _) = source_with_orders().await;
    let broken = order_id();
    append(
        &pool,
        &broken,
        0,
        &["OrderPlaced", "OrderPaid", "OrderInvoiced"],
    )
    .await;
    // Damage no code path of ours does: an event deleted from the middle of a stream.
    sqlx::query("DELETE FROM events WHERE stream_id = $1 AND stream_position = 2")
        .bind(&broken)
        .execute(&pool)
        .await
        .unwrap();
    let dir = work_dir();
    let dump = dir.join("event-store.dump");
    pg_dump(&url, &dump);
    // And the source loses an order after the dump: the dump no longer matches it.
    let lost = order_id();
    append(&pool, &lost, 0, &["OrderPlaced"]).await;
    let dump_with_lost = dir.join("before-loss.dump");
    pg_dump(&url, &dump_with_lost);
    sqlx::query("DELETE FROM events WHERE stream_id = $1")
        .bind(&lost)
        .execute(&pool)
        .await
        .unwrap();

    let report = drill(&options(&url, &dump)).await.unwrap();
    let detail = failed(&report, "stream positions");
    assert!(
        detail.contains(&format!("{broken} has 2 events at positions 1..3")),
        "{detail}"
    );
    let report = drill(&options(&url, &dump_with_lost)).await.unwrap();
    let detail = failed(&report, "matches the source");
    assert!(
        detail.contains(&format!("{lost} is not in the source")),
        "{detail}"
    );
    std::fs::remove_dir_all(dir).ok();
}
