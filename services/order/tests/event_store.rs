//! The event store against the real Postgres, each test in a fresh database.

use order::event_store::{self, AppendError, Checkpoint, NewEvent};
use serde_json::json;
use sqlx::PgPool;

async fn store() -> PgPool {
    let url = platform::testing::fresh_database().await.unwrap();
    order::open_database(&url).await.unwrap()
}

fn event(kind: &str, n: i64) -> NewEvent {
    NewEvent {
        event_type: kind.into(),
        data: json!({ "n": n }),
        metadata: json!({ "correlation_id": "c-1" }),
    }
}

/// Reads, from `from` in pages of 2, until `want` events have been seen (or, with
/// `want = 0`, what is visible now). Visibility waits for the oldest transaction in flight
/// on the whole server, which may be another test's: hence the deadline, not a sleep.
async fn read_until(
    pool: &PgPool,
    from: Checkpoint,
    want: usize,
) -> (Vec<(String, i64)>, Checkpoint) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut checkpoint = from;
    loop {
        let (more, next) = drain(pool, checkpoint).await;
        seen.extend(more);
        checkpoint = next;
        if seen.len() >= want {
            return (seen, checkpoint);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {want} events became visible: {seen:?}",
            seen.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Reads everything a global reader can see now, from `from`, in pages of 2.
async fn drain(pool: &PgPool, from: Checkpoint) -> (Vec<(String, i64)>, Checkpoint) {
    let mut conn = pool.acquire().await.unwrap();
    let mut seen = Vec::new();
    let mut checkpoint = from;
    loop {
        let page = event_store::read_all(&mut conn, checkpoint, 2)
            .await
            .unwrap();
        if page.is_empty() {
            return (seen, checkpoint);
        }
        for e in &page {
            seen.push((e.stream_id.clone(), e.stream_position));
            checkpoint = Checkpoint::after(e);
        }
    }
}

#[tokio::test]
async fn appends_build_streams_and_a_wrong_expected_version_is_a_conflict() {
    let pool = store().await;
    assert_eq!(
        event_store::append_committed(
            &pool,
            "order-1",
            0,
            &[event("OrderPlaced", 1), event("OrderPaid", 2)]
        )
        .await
        .unwrap(),
        2
    );
    assert_eq!(
        event_store::append_committed(&pool, "order-1", 2, &[event("OrderInvoiced", 3)])
            .await
            .unwrap(),
        3
    );
    let events = event_store::read_stream(&pool, "order-1", 0).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["OrderPlaced", "OrderPaid", "OrderInvoiced"]
    );
    assert_eq!(events[2].metadata["correlation_id"], "c-1");
    assert_eq!(
        event_store::read_stream(&pool, "order-1", 2)
            .await
            .unwrap()
            .len(),
        1
    );

    for stale in [0, 1, 2, 7] {
        match event_store::append_committed(&pool, "order-1", stale, &[event("OrderRefunded", 9)])
            .await
        {
            Err(AppendError::Conflict(c)) => assert_eq!((c.expected, c.actual), (stale, 3)),
            other => panic!("expected a conflict at {stale}, got {other:?}"),
        }
    }
    assert_eq!(
        event_store::read_stream(&pool, "order-1", 0)
            .await
            .unwrap()
            .len(),
        3,
        "nothing was written"
    );
}

#[tokio::test]
async fn of_two_concurrent_appends_at_the_same_version_exactly_one_applies() {
    let pool = store().await;
    event_store::append_committed(&pool, "order-race", 0, &[event("OrderPlaced", 1)])
        .await
        .unwrap();
    for round in 0..10 {
        let version = event_store::read_stream(&pool, "order-race", 0)
            .await
            .unwrap()
            .len() as i64;
        let attempts: Vec<_> = (0..2)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    event_store::append_committed(
                        &pool,
                        "order-race",
                        version,
                        &[event("Changed", i)],
                    )
                    .await
                })
            })
            .collect();
        let results: Vec<_> = futures::future::join_all(attempts)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let applied = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(applied, 1, "round {round}: {results:?}");
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(AppendError::Conflict(_))))
        );
    }
    let positions: Vec<i64> = event_store::read_stream(&pool, "order-race", 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_position)
        .collect();
    assert_eq!(
        positions,
        (1..=11).collect::<Vec<_>>(),
        "gapless, no duplicates"
    );
}

#[tokio::test]
async fn a_reader_never_skips_an_append_that_commits_after_a_later_one() {
    let pool = store().await;
    event_store::append_committed(&pool, "before", 0, &[event("OrderPlaced", 0)])
        .await
        .unwrap();
    let (seen, checkpoint) = read_until(&pool, Checkpoint::default(), 1).await;
    assert_eq!(seen, vec![("before".to_string(), 1)]);

    // A takes the lower global position and holds its transaction open...
    let mut slow = pool.begin().await.unwrap();
    event_store::append(&mut slow, "slow", 0, &[event("OrderPlaced", 1)])
        .await
        .unwrap();
    // ...while B takes a higher one and commits.
    event_store::append_committed(&pool, "fast", 0, &[event("OrderPlaced", 2)])
        .await
        .unwrap();
    let positions: Vec<i64> =
        sqlx::query_scalar("SELECT global_position FROM events ORDER BY global_position")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(positions.len(), 2, "B is visible, A is not yet");

    // The reader waits for A rather than passing over it.
    let (seen_meanwhile, checkpoint) = drain(&pool, checkpoint).await;
    assert!(
        seen_meanwhile.is_empty(),
        "nothing past the oldest open transaction: {seen_meanwhile:?}"
    );

    slow.commit().await.unwrap();
    let (seen_after, _) = read_until(&pool, checkpoint, 2).await;
    assert_eq!(
        seen_after,
        vec![("slow".to_string(), 1), ("fast".to_string(), 1)],
        "both, A first"
    );
}

#[tokio::test]
async fn a_rolled_back_append_leaves_a_hole_the_reader_steps_over() {
    let pool = store().await;
    let mut aborted = pool.begin().await.unwrap();
    event_store::append(&mut aborted, "ghost", 0, &[event("OrderPlaced", 1)])
        .await
        .unwrap();
    event_store::append_committed(&pool, "real", 0, &[event("OrderPlaced", 2)])
        .await
        .unwrap();
    aborted.rollback().await.unwrap();
    let (seen, _) = read_until(&pool, Checkpoint::default(), 1).await;
    assert_eq!(seen, vec![("real".to_string(), 1)]);
}

#[tokio::test]
async fn every_event_of_many_concurrent_writers_is_read_exactly_once_in_stream_order() {
    let pool = store().await;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for n in 0..25 {
                    event_store::append_committed(
                        &pool,
                        &format!("stream-{w}"),
                        n,
                        &[event("Changed", n)],
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    // Read while they write: whatever is read must stay a consistent prefix.
    let mut all = Vec::new();
    let mut checkpoint = Checkpoint::default();
    for _ in 0..5 {
        let (seen, next) = drain(&pool, checkpoint).await;
        all.extend(seen);
        checkpoint = next;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    futures::future::join_all(writers).await;
    let (rest, _) = read_until(&pool, checkpoint, 200usize.saturating_sub(all.len())).await;
    all.extend(rest);
    assert_eq!(all.len(), 200, "each event once");
    for w in 0..8 {
        let stream: Vec<i64> = all
            .iter()
            .filter(|(s, _)| *s == format!("stream-{w}"))
            .map(|(_, p)| *p)
            .collect();
        assert_eq!(stream, (1..=25).collect::<Vec<_>>(), "stream-{w} in order");
    }
}

#[tokio::test]
async fn the_newest_snapshot_is_kept() {
    let pool = store().await;
    let mut conn = pool.acquire().await.unwrap();
    event_store::save_snapshot(&mut conn, "order-s", 100, &json!({"status": "paid"}))
        .await
        .unwrap();
    event_store::save_snapshot(&mut conn, "order-s", 50, &json!({"status": "stale"}))
        .await
        .unwrap();
    assert_eq!(
        event_store::load_snapshot(&pool, "order-s").await.unwrap(),
        Some((100, json!({"status": "paid"})))
    );
    event_store::save_snapshot(&mut conn, "order-s", 200, &json!({"status": "invoiced"}))
        .await
        .unwrap();
    assert_eq!(
        event_store::load_snapshot(&pool, "order-s")
            .await
            .unwrap()
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        event_store::load_snapshot(&pool, "nope").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn a_stream_loads_as_its_snapshot_and_the_events_after_it_in_one_read() {
    let pool = store().await;
    let events: Vec<NewEvent> = (1..=5).map(|n| event("OrderUpdated", n)).collect();
    event_store::append_committed(&pool, "order-l", 0, &events)
        .await
        .unwrap();
    // Another stream's events are not mixed in.
    event_store::append_committed(&pool, "order-other", 0, &events[..2])
        .await
        .unwrap();
    let (snapshot, all) = event_store::load_stream(&pool, "order-l").await.unwrap();
    assert_eq!(snapshot, None);
    let positions: Vec<i64> = all.iter().map(|e| e.stream_position).collect();
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    assert_eq!(all[4].data, json!({ "n": 5 }));

    let mut conn = pool.acquire().await.unwrap();
    event_store::save_snapshot(&mut conn, "order-l", 3, &json!({"status": "paid"}))
        .await
        .unwrap();
    let (snapshot, after) = event_store::load_stream(&pool, "order-l").await.unwrap();
    assert_eq!(snapshot, Some((3, json!({"status": "paid"}))));
    let positions: Vec<i64> = after.iter().map(|e| e.stream_position).collect();
    assert_eq!(positions, [4, 5], "only the events after the snapshot");

    let (snapshot, none) = event_store::load_stream(&pool, "nope").await.unwrap();
    assert!(snapshot.is_none() && none.is_empty());
}
