//! RabbitMQ, the way DESIGN.md's messaging rules want it.
//!
//! - [`Broker`]: one connection per role, re-established on demand after a failure.
//! - [`outbox`]: events are written to an `outbox` table in the same transaction as the
//!   state change; a relay publishes them in order with publisher confirms and only then
//!   marks them sent, so a crash or an outage never loses one (it may send one twice).
//! - [`consumer`]: each service's durable queue; the message id is recorded in an `inbox`
//!   table in the same transaction as the handler's effect, so redelivery changes nothing;
//!   failures are retried with back-off and, past a bound, parked in a dead-letter queue.
//!
//! - [`dead_letters`]: list, replay and drop what landed in a dead-letter queue.
//! - [`migrate`]: classic queues of an earlier version become quorum queues.
//! - [`retention`]: published outbox rows and inbox records are deleted after their
//!   retention, in small batches.
//!
//! Messages are `orderflow.events.v1.EventEnvelope` protobufs on one durable topic
//! exchange (default `orderflow.events`); the routing key is the event type; W3C
//! `traceparent` travels in the AMQP headers.

pub mod consumer;
pub mod dead_letters;
pub mod migrate;
pub mod outbox;
pub mod retention;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use tokio::sync::Mutex;
use tracing::Instrument as _;

/// The services that consume events: each one's work queue is `AMQP_QUEUE_PREFIX` + its
/// name (e.g. `dte`), with `<queue>.retry` and `<queue>.dead` beside it.
pub const SERVICE_QUEUES: &[&str] = &["catalog", "order", "payment", "dte"];

/// A RabbitMQ connection shared by a role's publishers and consumers.
#[derive(Clone)]
pub struct Broker {
    url: String,
    exchange: String,
    connection: Arc<Mutex<Option<Connection>>>,
}

impl Broker {
    /// A broker for `url`, publishing to the topic exchange `exchange`. Nothing connects
    /// until first use, so a role can start while RabbitMQ is still coming up.
    pub fn new(url: &str, exchange: &str) -> Self {
        Self {
            url: url.to_string(),
            exchange: exchange.to_string(),
            connection: Arc::default(),
        }
    }

    /// The events exchange.
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// A fresh channel, reconnecting first when the connection is gone.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let mut guard = self.connection.lock().await;
        if let Some(conn) = guard.as_ref()
            && conn.status().connected()
            && let Ok(channel) = conn.create_channel().await
        {
            return Ok(channel);
        }
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect(&self.url, ConnectionProperties::default()),
        )
        .await
        .context("connecting to RabbitMQ timed out")?
        .with_context(|| {
            format!(
                "cannot connect to RabbitMQ at {}",
                crate::db::redact(&self.url)
            )
        })?;
        let channel = conn.create_channel().await?;
        *guard = Some(conn);
        tracing::info!("connected to RabbitMQ");
        Ok(channel)
    }

    /// A channel in publisher-confirm mode, with the exchange declared.
    pub async fn confirm_channel(&self) -> anyhow::Result<Channel> {
        let channel = self.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        self.declare_exchange(&channel).await?;
        Ok(channel)
    }

    /// Declares the durable topic exchange (idempotent).
    pub async fn declare_exchange(&self, channel: &Channel) -> anyhow::Result<()> {
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring exchange {}", self.exchange))
    }

    /// Whether the connection is up (readiness).
    pub async fn is_connected(&self) -> bool {
        self.connection
            .lock()
            .await
            .as_ref()
            .is_some_and(|c| c.status().connected())
    }
}

/// `traceparent`/`tracestate` of the current span, as a string map for AMQP headers (and
/// for event metadata that travels to them later).
pub fn current_trace_headers() -> std::collections::BTreeMap<String, String> {
    let mut headers = http::HeaderMap::new();
    crate::telemetry::inject_context(&mut headers);
    headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_string(), v.to_string()))
        })
        .collect()
}

/// A message ready for the events exchange.
pub struct Outgoing<'a> {
    /// The envelope id (consumers de-duplicate on it).
    pub id: &'a str,
    /// Routing key.
    pub event_type: &'a str,
    /// The encoded `EventEnvelope`.
    pub envelope: &'a [u8],
    /// AMQP headers (trace context).
    pub headers: &'a std::collections::BTreeMap<String, String>,
}

/// Publishes `messages` in order on a confirm-mode `channel` and waits until RabbitMQ has
/// confirmed every one; an error means some may not have been taken (send them again).
/// `role` is the publishing role its spans are traced under.
pub async fn publish_confirmed<'a>(
    channel: &Channel,
    exchange: &str,
    role: Option<&str>,
    messages: impl IntoIterator<Item = Outgoing<'a>>,
) -> anyhow::Result<usize> {
    let mut confirms = Vec::new();
    for message in messages {
        // A PRODUCER span per event, as the messaging conventions name it (`send
        // <exchange>`): the child of the span that wrote the event (its context travelled
        // with the row), and the parent of the consumers' spans (its own context goes in
        // the message's headers instead).
        let span = tracing::info_span!(
            "amqp.publish",
            otel.name = %format!("send {exchange}"),
            otel.kind = "producer",
            orderflow.role = role,
            messaging.system = "rabbitmq",
            messaging.operation.name = "send",
            messaging.destination.name = %exchange,
            messaging.rabbitmq.destination.routing_key = %message.event_type,
            messaging.message.id = %message.id,
        );
        crate::telemetry::adopt_stored_parent(&span, message.headers);
        let mut trace = http::HeaderMap::new();
        span.in_scope(|| crate::telemetry::inject_context(&mut trace));
        let mut headers = FieldTable::default();
        for (k, v) in message.headers {
            if !trace.contains_key(k.as_str()) {
                headers.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
            }
        }
        for (k, v) in &trace {
            if let Ok(v) = v.to_str() {
                headers.insert(k.as_str().into(), AMQPValue::LongString(v.into()));
            }
        }
        let properties = BasicProperties::default()
            .with_message_id(message.id.into())
            .with_type(message.event_type.into())
            .with_content_type("application/x-protobuf".into())
            .with_delivery_mode(2)
            .with_headers(headers);
        let confirm = channel
            .basic_publish(
                exchange.into(),
                message.event_type.into(),
                BasicPublishOptions::default(),
                message.envelope,
                properties,
            )
            .instrument(span)
            .await?;
        confirms.push(confirm);
    }
    let published = confirms.len();
    for confirm in confirms {
        anyhow::ensure!(confirm.await?.is_ack(), "RabbitMQ refused a message (nack)");
    }
    Ok(published)
}
