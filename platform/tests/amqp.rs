//! The outbox, relay and consumer against the real RabbitMQ and Postgres. Each test has
//! its own database, exchange and queues.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use platform::amqp::{
    Broker,
    consumer::{self, EventHandler, Subscription},
    outbox::{self, NewEvent, OutboxRelay},
};
use prost::Message as _;
use proto::events::v1::{EventEnvelope, OrderCancelled};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

struct Fixture {
    pool: PgPool,
    broker: Broker,
    subscription: Subscription,
    shutdown: CancellationToken,
}

impl Fixture {
    async fn new() -> Self {
        let url = platform::testing::fresh_database().await.unwrap();
        // A schema named for the test: the outbox gauge is labelled by schema, and the
        // tests of this binary share one metrics recorder.
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let pool = platform::db::connect(&url, &format!("svc_{tag}"), 5)
            .await
            .unwrap();
        outbox::install(&pool).await.unwrap();
        sqlx::query(
            "CREATE TABLE effects (seq serial, event_id text NOT NULL, reason text NOT NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let broker = Broker::new(&amqp_url(), &format!("test.{tag}.events"));
        let mut subscription = Subscription::new(&format!("test.{tag}.svc"), &["order.cancelled"]);
        subscription.first_backoff = Duration::from_millis(20);
        subscription.max_attempts = 3;
        // One message at a time: the tests rely on the queue's order.
        subscription.prefetch = 1;
        Self {
            pool,
            broker,
            subscription,
            shutdown: CancellationToken::new(),
        }
    }

    fn start_consumer(&self, handler: Arc<Recorder>) {
        tokio::spawn(consumer::run(
            self.pool.clone(),
            self.broker.clone(),
            self.subscription.clone(),
            handler,
            self.shutdown.clone(),
        ));
    }

    fn start_relay(&self) {
        tokio::spawn(
            OutboxRelay::new(self.pool.clone(), self.broker.clone()).run(self.shutdown.clone()),
        );
    }

    async fn enqueue(&self, order: &str, commit: bool) {
        let mut tx = self.pool.begin().await.unwrap();
        let payload = OrderCancelled {
            order_id: order.into(),
            reason: "customer".into(),
        };
        outbox::enqueue(
            &mut tx,
            NewEvent {
                event_type: "order.cancelled",
                aggregate_id: order,
                payload: &payload,
                correlation_id: Some(order),
                causation_id: None,
            },
        )
        .await
        .unwrap();
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
    }

    /// Effects in the order they were applied.
    async fn effects(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT reason FROM effects ORDER BY seq")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    async fn wait_for_effect(&self, reason: &str) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let effects = self.effects().await;
            if effects.iter().any(|e| e == reason) {
                return effects;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{reason} never applied; have {effects:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn declare(&self) {
        let ch = self.broker.channel().await.unwrap();
        consumer::declare_topology(&ch, &self.broker, &self.subscription)
            .await
            .unwrap();
    }

    async fn cleanup(self) {
        self.shutdown.cancel();
        if let Ok(ch) = self.broker.channel().await {
            for q in [
                self.subscription.queue.clone(),
                format!("{}.retry", self.subscription.queue),
                self.subscription.dead_queue(),
            ] {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            let _ = ch
                .exchange_delete(
                    self.broker.exchange().into(),
                    ExchangeDeleteOptions::default(),
                )
                .await;
        }
    }
}

/// Records each event as `order:reason`; can be told to fail.
#[derive(Default)]
struct Recorder {
    calls: AtomicU32,
    failures_left: AtomicU32,
}

impl EventHandler for Recorder {
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a EventEnvelope,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let payload: OrderCancelled = event.payload.as_ref().unwrap().to_msg()?;
            // Written before failing, to prove that a failure rolls the effect back.
            sqlx::query("INSERT INTO effects (event_id, reason) VALUES ($1, $2)")
                .bind(&event.id)
                .bind(format!("{}:{}", payload.order_id, payload.reason))
                .execute(&mut *tx)
                .await?;
            if self.failures_left.load(Ordering::SeqCst) > 0 {
                self.failures_left.fetch_sub(1, Ordering::SeqCst);
                anyhow::bail!("simulated failure");
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn committed_events_are_delivered_in_order_and_rolled_back_ones_never_leave() {
    let f = Fixture::new().await;
    f.enqueue("o-1", true).await;
    f.enqueue("o-rolled-back", false).await;
    f.enqueue("o-2", true).await;
    f.start_consumer(Arc::new(Recorder::default()));
    f.declare().await;
    f.start_relay();
    assert_eq!(
        f.wait_for_effect("o-2:customer").await,
        vec!["o-1:customer", "o-2:customer"]
    );
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&f.pool)
            .await
            .unwrap();
    assert_eq!(unpublished, 0);
    f.cleanup().await;
}

#[tokio::test]
async fn a_redelivered_message_changes_nothing() {
    let f = Fixture::new().await;
    f.declare().await;
    f.start_consumer(Arc::new(Recorder::default()));
    let envelope = |order: &str| EventEnvelope {
        id: uuid::Uuid::now_v7().to_string(),
        r#type: "order.cancelled".into(),
        payload: Some(
            prost_types::Any::from_msg(&OrderCancelled {
                order_id: order.into(),
                reason: "payment_failed".into(),
            })
            .unwrap(),
        ),
        ..Default::default()
    };
    let duplicate = envelope("o-dup").encode_to_vec();
    let sentinel = envelope("o-sentinel").encode_to_vec();
    let ch = f.broker.confirm_channel().await.unwrap();
    for body in [&duplicate, &duplicate, &duplicate, &sentinel] {
        ch.basic_publish(
            f.broker.exchange().into(),
            "order.cancelled".into(),
            BasicPublishOptions::default(),
            body,
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // The queue is ordered: once the sentinel is applied, every duplicate was handled.
    assert_eq!(
        f.wait_for_effect("o-sentinel:payment_failed").await,
        vec!["o-dup:payment_failed", "o-sentinel:payment_failed"]
    );
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&f.pool)
        .await
        .unwrap();
    assert_eq!(inbox, 2);
    f.cleanup().await;
}

#[tokio::test]
async fn a_failed_attempt_is_rolled_back_and_retried() {
    let f = Fixture::new().await;
    let recorder = Arc::new(Recorder {
        failures_left: AtomicU32::new(2),
        ..Default::default()
    });
    f.start_consumer(recorder.clone());
    f.declare().await;
    f.enqueue("o-flaky", true).await;
    f.start_relay();
    assert_eq!(
        f.wait_for_effect("o-flaky:customer").await,
        vec!["o-flaky:customer"],
        "failed attempts left nothing behind"
    );
    assert_eq!(
        recorder.calls.load(Ordering::SeqCst),
        3,
        "two failures, then success"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn a_message_that_keeps_failing_is_dead_lettered_after_the_bound() {
    let f = Fixture::new().await;
    let recorder = Arc::new(Recorder {
        failures_left: AtomicU32::new(u32::MAX),
        ..Default::default()
    });
    f.start_consumer(recorder.clone());
    f.declare().await;
    f.enqueue("o-poison", true).await;
    f.start_relay();
    let ch = f.broker.channel().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let parked = loop {
        if let Some(msg) = ch
            .basic_get(
                f.subscription.dead_queue().as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            break msg;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing was dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let envelope = EventEnvelope::decode(parked.delivery.data.as_slice()).unwrap();
    assert_eq!(envelope.aggregate_id, "o-poison");
    assert_eq!(
        recorder.calls.load(Ordering::SeqCst),
        f.subscription.max_attempts
    );
    assert!(
        f.effects().await.is_empty(),
        "failed attempts left no effect"
    );
    f.cleanup().await;
}

/// How many times the consumer of `queue` found its database unavailable (its metric).
fn unavailable_count(queue: &str) -> u64 {
    platform::testing::metric_sum(
        &platform::admin::prometheus().render(),
        "amqp_consumed_total",
        &[("outcome", "database_unavailable"), ("queue", queue)],
    ) as u64
}

#[tokio::test]
async fn a_consumer_whose_database_is_away_waits_for_it_without_using_up_attempts() {
    let f = Fixture::new().await;
    platform::admin::prometheus();
    // The consumer reaches Postgres through a proxy that the test takes down; a short
    // acquire timeout makes each try fail fast.
    let proxy = platform::testing::TcpProxy::start("127.0.0.1:5432")
        .await
        .unwrap();
    let url = f.pool.connect_options().as_ref().clone();
    let through_proxy = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy_with(url.host("127.0.0.1").port(proxy.addr().port()));
    let recorder = Arc::new(Recorder::default());
    tokio::spawn(consumer::run(
        through_proxy,
        f.broker.clone(),
        f.subscription.clone(),
        recorder.clone(),
        f.shutdown.clone(),
    ));
    f.declare().await;
    proxy.set_down(true);
    f.enqueue("o-patient", true).await;
    f.start_relay();

    // Tried more often than its attempts allow, while the database is away...
    let queue = f.subscription.queue.clone();
    let ch = f.broker.channel().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while unavailable_count(&queue) < u64::from(f.subscription.max_attempts) + 2 {
        let dead = ch
            .basic_get(
                f.subscription.dead_queue().as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .unwrap();
        assert!(
            dead.is_none(),
            "dead-lettered during an outage, which is not the message's fault"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the consumer never met its database away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 0);

    // ...and applied once it is back.
    proxy.set_down(false);
    assert_eq!(
        f.wait_for_effect("o-patient:customer").await,
        vec!["o-patient:customer"]
    );
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 1);
    f.cleanup().await;
}

#[tokio::test]
async fn the_outbox_backlog_gauge_says_what_is_left_once_a_batch_is_out() {
    let f = Fixture::new().await;
    platform::admin::prometheus();
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(&f.pool)
        .await
        .unwrap();
    let backlog = || {
        platform::testing::metric_sum(
            &platform::admin::prometheus().render(),
            "outbox_backlog",
            &[("schema", &schema)],
        )
    };
    for i in 0..3 {
        f.enqueue(&format!("o-gauge-{i}"), true).await;
    }
    f.declare().await;
    let mut relay = OutboxRelay::new(f.pool.clone(), f.broker.clone());
    relay.batch_size = 2;
    let mut channel = None;
    // Two of three out: one left, as the table says.
    assert_eq!(relay.publish_batch(&mut channel).await.unwrap(), 2);
    assert_eq!(backlog(), 1.0);
    assert_eq!(relay.publish_batch(&mut channel).await.unwrap(), 1);
    assert_eq!(backlog(), 0.0);
    f.cleanup().await;
}

#[tokio::test]
async fn events_wait_in_the_outbox_while_rabbitmq_is_unreachable() {
    let f = Fixture::new().await;
    for i in 0..5 {
        f.enqueue(&format!("o-{i}"), true).await;
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let unreachable = Broker::new(
        &format!("amqp://guest:guest@{closed}/%2f"),
        f.broker.exchange(),
    );
    assert!(
        OutboxRelay::new(f.pool.clone(), unreachable)
            .publish_batch(&mut None)
            .await
            .is_err()
    );
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&f.pool)
            .await
            .unwrap();
    assert_eq!(
        unpublished, 5,
        "nothing is marked sent that was not confirmed"
    );

    f.start_consumer(Arc::new(Recorder::default()));
    f.declare().await;
    f.start_relay();
    let effects = f.wait_for_effect("o-4:customer").await;
    assert_eq!(
        effects,
        (0..5)
            .map(|i| format!("o-{i}:customer"))
            .collect::<Vec<_>>(),
        "all delivered, in order"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn published_outbox_rows_and_inbox_records_go_after_their_retention_never_before() {
    let url = platform::testing::fresh_database().await.unwrap();
    let pool = platform::db::connect(&url, "svc", 5).await.unwrap();
    outbox::install(&pool).await.unwrap();
    // The clock moved: 2 500 rows published eight days ago (more than one batch), one
    // published now, and one never published though a month old.
    sqlx::query(
        "INSERT INTO outbox (id, event_type, aggregate_id, envelope, created_at, published_at) \
         SELECT gen_random_uuid(), 'order.placed', 'o', '\\x00', now() - interval '8 days', \
                now() - interval '8 days' FROM generate_series(1, 2500)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO outbox (id, event_type, aggregate_id, envelope, created_at, published_at) VALUES \
         (gen_random_uuid(), 'order.placed', 'recent', '\\x00', now(), now()), \
         (gen_random_uuid(), 'order.placed', 'waiting', '\\x00', now() - interval '30 days', NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO inbox (message_id, consumer, received_at) VALUES \
         ('old', 'svc', now() - interval '31 days'), ('young', 'svc', now() - interval '29 days')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let retention = platform::amqp::retention::Retention::default();
    assert_eq!(retention.purge_once(&pool).await.unwrap(), (2500, 1));
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT aggregate_id FROM outbox ORDER BY aggregate_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(kept, vec!["recent".to_string(), "waiting".to_string()]);
    let remembered: Vec<String> = sqlx::query_scalar("SELECT message_id FROM inbox")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(remembered, vec!["young".to_string()]);
    assert_eq!(retention.purge_once(&pool).await.unwrap(), (0, 0));
}

#[tokio::test]
async fn a_dead_letter_is_listed_with_its_reason_and_replayed_once_the_fix_is_in() {
    use platform::amqp::dead_letters;
    let f = Fixture::new().await;
    // Fails until "the fix is deployed" (the failures run out), far beyond the bound.
    let recorder = Arc::new(Recorder {
        failures_left: AtomicU32::new(u32::MAX),
        ..Default::default()
    });
    f.start_consumer(recorder.clone());
    f.declare().await;
    f.enqueue("o-poison", true).await;
    f.start_relay();
    let queue = f.subscription.queue.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let listed = dead_letters::list(&f.broker, &queue, 100).await.unwrap();
        if !listed.is_empty() {
            break listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing was dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(listed.len(), 1);
    let letter = &listed[0];
    assert_eq!(letter.event_type, "order.cancelled");
    assert_eq!(letter.aggregate_id, "o-poison");
    assert_eq!(letter.attempts, i64::from(f.subscription.max_attempts));
    assert!(letter.reason.contains("simulated failure"), "{letter:?}");
    // Listing took nothing away; the count (the back-office's dashboard) says so too.
    assert_eq!(
        dead_letters::list(&f.broker, &queue, 100).await.unwrap(),
        listed
    );
    // (A quorum queue takes back what a closed channel held within moments.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while dead_letters::count(&f.broker, &queue).await.unwrap() != Some(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead letter was not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        dead_letters::count(&f.broker, &format!("{queue}-never-declared"))
            .await
            .unwrap(),
        None
    );

    // An id that is not there is refused by name, and nothing moves.
    let err = dead_letters::replay(&f.broker, &queue, Some(&["no-such-id".to_string()]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-id"), "{err}");
    assert_eq!(
        dead_letters::list(&f.broker, &queue, 100)
            .await
            .unwrap()
            .len(),
        1
    );

    // The fix is deployed: the replayed message is applied, once, and the queue is empty.
    recorder.failures_left.store(0, Ordering::SeqCst);
    let replayed = dead_letters::replay(&f.broker, &queue, Some(std::slice::from_ref(&letter.id)))
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    assert_eq!(
        f.wait_for_effect("o-poison:customer").await,
        vec!["o-poison:customer"]
    );
    assert!(
        dead_letters::list(&f.broker, &queue, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        dead_letters::count(&f.broker, &queue).await.unwrap(),
        Some(0)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        f.effects().await,
        vec!["o-poison:customer"],
        "applied exactly once"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn an_idle_relay_is_woken_by_the_commit_not_by_polling() {
    let f = Fixture::new().await;
    f.start_consumer(Arc::new(Recorder::default()));
    f.declare().await;
    // A safety poll of an hour: only the commit's notification can wake it in time.
    let mut relay = OutboxRelay::new(f.pool.clone(), f.broker.clone());
    relay.idle_interval = Duration::from_secs(3600);
    tokio::spawn(relay.run(f.shutdown.clone()));
    // Let it find the outbox empty and go to sleep.
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.enqueue("o-woken", true).await;
    // Within the helper's 20 s, so by the notification, not the hourly poll.
    assert_eq!(
        f.wait_for_effect("o-woken:customer").await,
        vec!["o-woken:customer"]
    );
    f.cleanup().await;
}

/// Messages ready in `queue` (a quorum queue counts returned messages within moments).
async fn ready(broker: &Broker, queue: &str, want: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let channel = broker.channel().await.unwrap();
        let declared = channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
        if declared.message_count() == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue} holds {} messages, not {want}",
            declared.message_count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn put(broker: &Broker, queue: &str, body: &[u8], properties: lapin::BasicProperties) {
    let channel = broker.confirm_channel().await.unwrap();
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_message_its_consumer_keeps_dying_on_goes_to_the_dead_letter_queue() {
    let f = Fixture::new().await;
    f.declare().await;
    let queue = f.subscription.queue.clone();
    put(
        &f.broker,
        &queue,
        b"poison",
        lapin::BasicProperties::default(),
    )
    .await;
    // A consumer that dies on it: each time it is handed back (requeued), counted.
    let channel = f.broker.channel().await.unwrap();
    let mut deliveries = 0;
    while let Some(m) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
    {
        deliveries += 1;
        m.delivery
            .acker
            .reject(lapin::options::BasicRejectOptions { requeue: true })
            .await
            .unwrap();
        assert!(deliveries < 100, "it loops for ever");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(deliveries > 1, "{deliveries}");
    ready(&f.broker, &f.subscription.dead_queue(), 1).await;
    f.cleanup().await;
}

#[tokio::test]
async fn classic_queues_of_an_earlier_version_become_quorum_queues_with_their_messages() {
    use lapin::{
        options::{QueueBindOptions, QueueDeclareOptions},
        types::{AMQPValue, FieldTable},
    };
    use platform::amqp::migrate::{self, Migrated};
    let f = Fixture::new().await;
    let sub = &f.subscription;
    // The topology as an earlier version declared it: classic queues.
    let channel = f.broker.channel().await.unwrap();
    f.broker.declare_exchange(&channel).await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let mut retry_args = FieldTable::default();
    retry_args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    retry_args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(sub.queue.as_str().into()),
    );
    for (queue, args) in [
        (sub.queue.clone(), FieldTable::default()),
        (sub.retry_queue(), retry_args),
        (sub.dead_queue(), FieldTable::default()),
    ] {
        channel
            .queue_declare(queue.as_str().into(), durable, args)
            .await
            .unwrap();
    }
    channel
        .queue_bind(
            sub.queue.as_str().into(),
            f.broker.exchange().into(),
            "order.cancelled".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let plain = lapin::BasicProperties::default;
    put(&f.broker, &sub.queue, b"one", plain()).await;
    put(&f.broker, &sub.queue, b"two", plain()).await;
    put(
        &f.broker,
        &sub.retry_queue(),
        b"retrying",
        plain().with_expiration("600000".into()),
    )
    .await;
    put(&f.broker, &sub.dead_queue(), b"dead", plain()).await;

    // The new version refuses to start on them, saying what to do.
    let refused = consumer::declare_topology(&f.broker.channel().await.unwrap(), &f.broker, sub)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("orderflow queues migrate"),
        "{refused}"
    );

    let outcome = migrate::to_quorum(&f.broker, sub).await.unwrap();
    assert_eq!(
        outcome,
        vec![
            (sub.retry_queue(), Migrated::Moved(1)),
            (sub.queue.clone(), Migrated::Moved(3)),
            (sub.dead_queue(), Migrated::Moved(1)),
        ]
    );
    // Now quorum: the consumer's own declaration is accepted, and a second run changes
    // nothing.
    consumer::declare_topology(&f.broker.channel().await.unwrap(), &f.broker, sub)
        .await
        .unwrap();
    let again = migrate::to_quorum(&f.broker, sub).await.unwrap();
    assert!(
        again.iter().all(|(_, m)| *m == Migrated::AlreadyQuorum),
        "{again:?}"
    );
    // Every message is where it belongs (the retry due now), and the bindings hold.
    ready(&f.broker, &sub.queue, 3).await;
    ready(&f.broker, &sub.dead_queue(), 1).await;
    let confirm = f.broker.confirm_channel().await.unwrap();
    confirm
        .basic_publish(
            f.broker.exchange().into(),
            "order.cancelled".into(),
            BasicPublishOptions::default(),
            b"after",
            plain(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    ready(&f.broker, &sub.queue, 4).await;
    f.cleanup().await;
}

#[tokio::test]
async fn a_migration_cut_off_after_moving_messages_out_is_finished_by_the_next_run() {
    use lapin::{
        options::{QueueBindOptions, QueueDeclareOptions},
        types::{AMQPValue, FieldTable},
    };
    use platform::amqp::migrate::{self, Migrated};
    let f = Fixture::new().await;
    let sub = &f.subscription;
    // As an interrupted run leaves it: the classic work and dead queues already deleted,
    // their messages in the holding queues, the work queue's holding queue bound.
    let channel = f.broker.channel().await.unwrap();
    f.broker.declare_exchange(&channel).await.unwrap();
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let work_holding = format!("{}.migrating", sub.queue);
    let dead_holding = format!("{}.migrating", sub.dead_queue());
    for holding in [&work_holding, &dead_holding] {
        channel
            .queue_declare(
                holding.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                quorum.clone(),
            )
            .await
            .unwrap();
    }
    channel
        .queue_bind(
            work_holding.as_str().into(),
            f.broker.exchange().into(),
            "order.cancelled".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let plain = lapin::BasicProperties::default;
    put(&f.broker, &work_holding, b"one", plain()).await;
    put(&f.broker, &work_holding, b"two", plain()).await;
    put(&f.broker, &dead_holding, b"dead", plain()).await;

    let outcome = migrate::to_quorum(&f.broker, sub).await.unwrap();
    assert!(
        outcome.contains(&(sub.queue.clone(), Migrated::Moved(2))),
        "{outcome:?}"
    );
    assert!(
        outcome.contains(&(sub.dead_queue(), Migrated::Moved(1))),
        "{outcome:?}"
    );
    ready(&f.broker, &sub.queue, 2).await;
    ready(&f.broker, &sub.dead_queue(), 1).await;
    for holding in [&work_holding, &dead_holding] {
        let gone = f
            .broker
            .channel()
            .await
            .unwrap()
            .queue_declare(
                holding.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        assert!(gone.is_err(), "{holding} is left behind");
    }
    // What is published now reaches the quorum work queue.
    let confirm = f.broker.confirm_channel().await.unwrap();
    confirm
        .basic_publish(
            f.broker.exchange().into(),
            "order.cancelled".into(),
            BasicPublishOptions::default(),
            b"after",
            plain(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    ready(&f.broker, &sub.queue, 3).await;
    for holding in [work_holding, dead_holding] {
        let _ = f
            .broker
            .channel()
            .await
            .unwrap()
            .queue_delete(holding.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    f.cleanup().await;
}
