//! A service's durable queue on the events exchange, with inbox de-duplication, bounded
//! retries with back-off and a dead-letter queue.
//!
//! Topology for a queue `Q` bound to the events exchange:
//! - `Q`: durable, bound by the subscribed routing keys.
//! - `Q.retry`: holds failed messages for their back-off (per-message TTL), then
//!   dead-letters them back into `Q` through the default exchange.
//! - `Q.dead`: messages that failed `max_attempts` times, or cannot be decoded, wait
//!   here for a person (`amqp_dead_lettered_total{queue}` counts them).

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use futures_lite::StreamExt as _;
use lapin::{
    BasicProperties, Channel,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use prost::Message as _;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::Broker;
use proto::events::v1::EventEnvelope;

/// The header counting a message's attempts (dead-letter tooling resets it on replay).
pub const ATTEMPT_HEADER: &str = "x-orderflow-attempt";
/// The header counting the times a message found its consumer's database unavailable.
const UNAVAILABLE_HEADER: &str = "x-orderflow-unavailable";

/// Handles one event inside the transaction that also records it in the inbox.
pub trait EventHandler: Send + Sync + 'static {
    /// Applies the event. An error rolls the transaction back and schedules a retry.
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a EventEnvelope,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

    /// Runs after the effect committed (not for duplicates): for work that must not see,
    /// or be seen before, the committed state, such as cache invalidation. Best effort:
    /// the message is already applied, so failures here are the handler's to log.
    fn after_commit<'a>(
        &'a self,
        _event: &'a EventEnvelope,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async {})
    }
}

/// What a consumer listens to and how hard it tries.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The queue, named after the consuming service (e.g. `catalog`).
    pub queue: String,
    /// The consuming role, which its spans are traced under (see `telemetry::ROLE`).
    pub role: String,
    /// Routing keys to bind (event types, or topic patterns like `order.*`).
    pub routing_keys: Vec<String>,
    /// Attempts before a message is dead-lettered.
    pub max_attempts: u32,
    /// Back-off before the second attempt; doubles each time after.
    pub first_backoff: Duration,
    /// Unacknowledged messages in flight.
    pub prefetch: u16,
    /// Let RabbitMQ delete the queues after this long unused (tests only).
    pub expires: Option<Duration>,
    /// Quorum queues (the default); classic ones when `AMQP_QUEUE_TYPE=classic`.
    pub quorum: bool,
}

impl Subscription {
    /// A subscription with the default bounds: 5 attempts, 500 ms doubling back-off.
    pub fn new(queue: &str, routing_keys: &[&str]) -> Self {
        Self {
            queue: queue.to_string(),
            role: queue.to_string(),
            routing_keys: routing_keys.iter().map(|k| k.to_string()).collect(),
            max_attempts: 5,
            first_backoff: Duration::from_millis(500),
            prefetch: 16,
            expires: None,
            quorum: true,
        }
    }

    /// The subscription of role `role` (e.g. `catalog`), whose queue is `role` after the
    /// deployment's queue prefix.
    pub fn for_role(prefix: &str, role: &str, routing_keys: &[&str]) -> Self {
        Self {
            role: role.to_string(),
            ..Self::new(&format!("{prefix}{role}"), routing_keys)
        }
    }

    pub fn retry_queue(&self) -> String {
        format!("{}.retry", self.queue)
    }

    /// The dead-letter queue's name.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.queue)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.first_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
    }
}

/// Consumes until `shutdown` fires, reconnecting after any broker failure. Each message
/// is acknowledged only after its effect committed (or it was parked), so nothing is lost.
pub async fn run(
    pool: PgPool,
    broker: Broker,
    subscription: Subscription,
    handler: Arc<dyn EventHandler>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Exported from the start (0), so the dead-letter alert and panel read a number.
    crate::admin::prometheus();
    metrics::counter!("amqp_dead_lettered_total", "queue" => subscription.queue.clone())
        .increment(0);
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match consume(&pool, &broker, &subscription, handler.as_ref(), &shutdown).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => {
                tracing::warn!(queue = %subscription.queue, error = format!("{e:#}"), retry_in = ?backoff, "consumer lost its channel");
                tokio::select! { _ = tokio::time::sleep(backoff) => {}, _ = shutdown.cancelled() => {} }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    Ok(())
}

/// Declares the queues and bindings (idempotent).
pub async fn declare_topology(
    channel: &Channel,
    broker: &Broker,
    sub: &Subscription,
) -> anyhow::Result<()> {
    broker.declare_exchange(channel).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let base_args = || {
        let mut args = FieldTable::default();
        // Replicated: a quorum queue survives the loss of a minority of the cluster's
        // nodes (on one node, as in development, it behaves as a durable queue).
        if sub.quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        if let Some(expires) = sub.expires {
            args.insert(
                "x-expires".into(),
                AMQPValue::LongLongInt(expires.as_millis() as i64),
            );
        }
        args
    };
    // A message redelivered past the limit (its consumer keeps dying on it, so it never
    // reaches the consumer's own attempt count) goes to the dead-letter queue instead of
    // looping.
    let mut work_args = base_args();
    if sub.quorum {
        work_args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(sub.max_attempts) * 2),
        );
        work_args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        work_args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(sub.dead_queue().as_str().into()),
        );
    }
    channel
        .queue_declare(sub.queue.as_str().into(), durable, work_args)
        .await
        .map_err(|e| classic_queue_hint(e, &sub.queue))?;
    for key in &sub.routing_keys {
        channel
            .queue_bind(
                sub.queue.as_str().into(),
                broker.exchange().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let mut retry_args = base_args();
    retry_args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    retry_args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(sub.queue.as_str().into()),
    );
    channel
        .queue_declare(sub.retry_queue().as_str().into(), durable, retry_args)
        .await
        .map_err(|e| classic_queue_hint(e, &sub.retry_queue()))?;
    // Declared last: once the dead-letter queue exists, the bindings above are in place.
    channel
        .queue_declare(sub.dead_queue().as_str().into(), durable, base_args())
        .await
        .map_err(|e| classic_queue_hint(e, &sub.dead_queue()))?;
    Ok(())
}

/// A queue declared with other arguments (a classic queue of an earlier version) cannot
/// become a quorum queue in place: say how to migrate it.
fn classic_queue_hint(e: lapin::Error, queue: &str) -> anyhow::Error {
    use lapin::{
        ErrorKind,
        protocol::{AMQPErrorKind, AMQPSoftError},
    };
    match e.kind() {
        ErrorKind::ProtocolError(amqp)
            if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) =>
        {
            anyhow::anyhow!(
                "queue {queue} exists with other arguments (a classic queue from an earlier version?): stop its consumers and run `orderflow queues migrate` ({e})"
            )
        }
        _ => e.into(),
    }
}

async fn consume(
    pool: &PgPool,
    broker: &Broker,
    sub: &Subscription,
    handler: &dyn EventHandler,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    // Confirm mode: moving a message to the retry or dead queue is confirmed by the
    // broker before the original is acknowledged.
    let channel = broker.confirm_channel().await?;
    declare_topology(&channel, broker, sub).await?;
    channel
        .basic_qos(sub.prefetch, BasicQosOptions::default())
        .await?;
    let mut deliveries = channel
        .basic_consume(
            sub.queue.as_str().into(),
            format!("{}-{}", sub.queue, uuid::Uuid::new_v4().simple()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Up to `prefetch` messages are handled at once, each in its own transaction and acked
    // on its own: one at a time, a consumer is bound by one Postgres round trip after
    // another. Order between messages was never promised (a retry already reorders);
    // handlers rely on de-duplication and on their aggregates' version checks instead.
    let limit = usize::from(sub.prefetch.max(1));
    let mut in_flight = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(done) = in_flight.next(), if !in_flight.is_empty() => done?,
            next = deliveries.next(), if in_flight.len() < limit => match next {
                Some(delivery) => in_flight.push(process(pool, &channel, sub, handler, delivery?)),
                None => anyhow::bail!("the broker closed the consumer"),
            },
            _ = shutdown.cancelled() => {
                // Drain: finish (and ack) what has started.
                while let Some(done) = in_flight.next().await {
                    done?;
                }
                return Ok(());
            }
        }
    }
}

fn header_string(props: &BasicProperties, key: &str) -> Option<String> {
    props
        .headers()
        .as_ref()?
        .inner()
        .get(key)
        .and_then(|v| match v {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
            _ => None,
        })
}

fn attempt_of(props: &BasicProperties) -> u32 {
    header_count(props, ATTEMPT_HEADER).unwrap_or(1)
}

/// A counting header's value, if the message carries it.
fn header_count(props: &BasicProperties, key: &str) -> Option<u32> {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(key))
        .and_then(|v| match v {
            AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
            _ => None,
        })
}

async fn process(
    pool: &PgPool,
    channel: &Channel,
    sub: &Subscription,
    handler: &dyn EventHandler,
    delivery: lapin::message::Delivery,
) -> anyhow::Result<()> {
    // A CONSUMER span as the messaging conventions name it (`process <queue>`), continuing
    // the trace of the request whose transaction wrote the event.
    let span = tracing::info_span!(
        "amqp.consume",
        otel.name = %format!("process {}", sub.queue),
        otel.kind = "consumer",
        orderflow.role = %sub.role,
        messaging.system = "rabbitmq",
        messaging.operation.name = "process",
        messaging.destination.name = %sub.queue,
        messaging.rabbitmq.destination.routing_key = %delivery.routing_key.as_str(),
        messaging.message.id = tracing::field::Empty,
    );
    let mut trace = http::HeaderMap::new();
    for key in ["traceparent", "tracestate"] {
        if let Some(v) = header_string(&delivery.properties, key).and_then(|v| v.parse().ok()) {
            trace.insert(key, v);
        }
    }
    crate::telemetry::adopt_remote_parent(&span, &trace);
    async {
        let envelope = match EventEnvelope::decode(delivery.data.as_slice()) {
            Ok(envelope) if !envelope.id.is_empty() => envelope,
            _ => {
                tracing::error!("undecodable message: dead-lettering it");
                return park(channel, sub, &delivery, 1, "undecodable envelope").await;
            }
        };
        tracing::Span::current().record("messaging.message.id", envelope.id.as_str());
        let attempt = attempt_of(&delivery.properties);
        match apply(pool, sub, handler, &envelope).await {
            Ok(applied) => {
                metrics::counter!("amqp_consumed_total", "queue" => sub.queue.clone(), "outcome" => if applied { "applied" } else { "duplicate" }).increment(1);
                delivery.acker.ack(BasicAckOptions::default()).await?;
                Ok(())
            }
            // The service's own database is away (a restart, a failover, the network):
            // not the message's fault, so it waits its back-off again without using up an
            // attempt, for as long as the outage lasts, instead of reaching `.dead`.
            // Its wait grows as the attempts' back-off does, up to the longest of those,
            // so a long outage does not spin every held message through the broker.
            Err(e) if crate::db::is_unavailable(&e) => {
                let found_away = header_count(&delivery.properties, UNAVAILABLE_HEADER).unwrap_or(0) + 1;
                let wait = sub.backoff(found_away).min(sub.backoff(sub.max_attempts));
                metrics::counter!("amqp_consumed_total", "queue" => sub.queue.clone(), "outcome" => "database_unavailable").increment(1);
                tracing::warn!(id = %envelope.id, attempt, retry_in = ?wait, error = format!("{e:#}"), "database unavailable: will retry without counting an attempt");
                let mut properties = delivery.properties.clone().with_expiration(wait.as_millis().to_string().into());
                properties = with_header(properties, UNAVAILABLE_HEADER, AMQPValue::LongLongInt(i64::from(found_away)));
                republish(channel, &sub.retry_queue(), &delivery, properties).await
            }
            Err(e) if attempt >= sub.max_attempts => {
                tracing::error!(id = %envelope.id, attempt, error = format!("{e:#}"), "giving up on the message: dead-lettering it");
                park(channel, sub, &delivery, attempt, &format!("{e:#}")).await
            }
            Err(e) => {
                let wait = sub.backoff(attempt);
                tracing::warn!(id = %envelope.id, attempt, retry_in = ?wait, error = format!("{e:#}"), "handler failed: will retry");
                let mut properties = delivery.properties.clone().with_expiration(wait.as_millis().to_string().into());
                properties = with_header(properties, ATTEMPT_HEADER, AMQPValue::LongLongInt(i64::from(attempt) + 1));
                republish(channel, &sub.retry_queue(), &delivery, properties).await
            }
        }
    }
    .instrument(span)
    .await
}

/// Records the message in the inbox and applies it, in one transaction. `Ok(false)` when
/// it had been applied before.
async fn apply(
    pool: &PgPool,
    sub: &Subscription,
    handler: &dyn EventHandler,
    envelope: &EventEnvelope,
) -> anyhow::Result<bool> {
    let mut tx = pool.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO inbox (message_id, consumer) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(&envelope.id)
    .bind(&sub.queue)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        return Ok(false);
    }
    handler.handle(&mut tx, envelope).await?;
    tx.commit().await?;
    handler.after_commit(envelope).await;
    Ok(true)
}

fn with_header(properties: BasicProperties, key: &str, value: AMQPValue) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(key.into(), value);
    properties.with_headers(headers)
}

async fn park(
    channel: &Channel,
    sub: &Subscription,
    delivery: &lapin::message::Delivery,
    attempt: u32,
    reason: &str,
) -> anyhow::Result<()> {
    metrics::counter!("amqp_dead_lettered_total", "queue" => sub.queue.clone()).increment(1);
    let mut properties = with_header(
        delivery.properties.clone(),
        "x-orderflow-error",
        AMQPValue::LongString(reason.chars().take(1000).collect::<String>().into()),
    );
    properties = with_header(
        properties,
        ATTEMPT_HEADER,
        AMQPValue::LongLongInt(i64::from(attempt)),
    );
    republish(channel, &sub.dead_queue(), delivery, properties).await
}

/// Moves a delivery to `queue` (confirmed), then acknowledges the original; when moving
/// fails the original is returned to its queue, never dropped.
async fn republish(
    channel: &Channel,
    queue: &str,
    delivery: &lapin::message::Delivery,
    properties: BasicProperties,
) -> anyhow::Result<()> {
    let moved = async {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await?;
        anyhow::ensure!(
            confirm.await?.is_ack(),
            "RabbitMQ refused the moved message (nack)"
        );
        anyhow::Ok(())
    }
    .await;
    match moved {
        Ok(()) => {
            delivery.acker.ack(BasicAckOptions::default()).await?;
            Ok(())
        }
        Err(e) => {
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await?;
            Err(e)
        }
    }
}
