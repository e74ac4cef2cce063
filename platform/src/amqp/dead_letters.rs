//! Handling what landed in a dead-letter queue (`<queue>.dead`): see what is there and
//! why, send it back to its work queue once the cause is fixed, or drop it for good.
//!
//! AMQP has no "peek": messages are taken with `basic.get` and not acknowledged; those not
//! acted on return to the queue when the channel closes. A replayed message starts over
//! (its attempt count reset) and is published, confirmed, to its work queue before its
//! dead copy is acknowledged, so nothing is lost; the consumer's inbox still applies it
//! once, even if it had been applied before.

use std::collections::BTreeMap;

use lapin::{
    BasicProperties, Channel,
    options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions},
    types::{AMQPValue, FieldTable, ShortString},
};
use prost::Message as _;
use proto::events::v1::EventEnvelope;

use super::Broker;

/// At most this many messages are looked at in one command.
const MAX: usize = 10_000;

/// A dead-lettered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The event's id (the envelope's), which replay and drop take.
    pub id: String,
    /// The event type, e.g. `payment.captured`.
    pub event_type: String,
    /// The aggregate it is about.
    pub aggregate_id: String,
    /// How many times the consumer tried it.
    pub attempts: i64,
    /// Why it was dead-lettered: the error the consumer logged.
    pub reason: String,
}

/// A dead-letter command that cannot be carried out (nothing was changed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeadLetterError {
    /// Ids asked for that are not in the queue.
    #[error("not in {queue}: {}", ids.join(", "))]
    Unknown {
        /// The dead-letter queue.
        queue: String,
        /// The missing ids.
        ids: Vec<String>,
    },
}

/// The dead-letter queue of a work queue.
pub fn dead_queue(work_queue: &str) -> String {
    format!("{work_queue}.dead")
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
}

fn describe(data: &[u8], properties: &BasicProperties) -> DeadLetter {
    let envelope = EventEnvelope::decode(data).unwrap_or_default();
    let reason = match header(properties, "x-orderflow-error") {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        _ => String::new(),
    };
    let attempts = match header(properties, super::consumer::ATTEMPT_HEADER) {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        _ => 0,
    };
    DeadLetter {
        id: if envelope.id.is_empty() {
            "(undecodable)".into()
        } else {
            envelope.id
        },
        event_type: envelope.r#type,
        aggregate_id: envelope.aggregate_id,
        attempts,
        reason,
    }
}

/// Takes up to `limit` messages from `queue` without acknowledging them.
async fn take(
    channel: &Channel,
    queue: &str,
    limit: usize,
) -> anyhow::Result<Vec<lapin::message::BasicGetMessage>> {
    let mut taken = Vec::new();
    while taken.len() < limit {
        match channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await?
        {
            Some(message) => taken.push(message),
            None => break,
        }
    }
    Ok(taken)
}

/// What is in `work_queue`'s dead-letter queue (at most `limit`), oldest first. Nothing
/// is removed.
pub async fn list(
    broker: &Broker,
    work_queue: &str,
    limit: usize,
) -> anyhow::Result<Vec<DeadLetter>> {
    let channel = broker.confirm_channel().await?;
    let taken = take(&channel, &dead_queue(work_queue), limit.min(MAX)).await?;
    let letters = taken
        .iter()
        .map(|m| describe(&m.delivery.data, &m.delivery.properties))
        .collect();
    // Unacknowledged: back in the queue.
    channel.close(200, "listed".into()).await?;
    Ok(letters)
}

/// How many messages wait in `work_queue`'s dead-letter queue; `None` when it was never
/// declared (its consumer has not run yet). Read with a passive declare: nothing moves.
pub async fn count(broker: &Broker, work_queue: &str) -> anyhow::Result<Option<u64>> {
    use lapin::{
        ErrorKind,
        options::QueueDeclareOptions,
        protocol::{AMQPErrorKind, AMQPSoftError},
    };
    // A failed passive declare closes its channel: one channel per question.
    let channel = broker.channel().await?;
    let declared = channel
        .queue_declare(
            dead_queue(work_queue).as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    match declared {
        Ok(queue) => {
            channel.close(200, "counted".into()).await?;
            Ok(Some(u64::from(queue.message_count())))
        }
        Err(e) => match e.kind() {
            ErrorKind::ProtocolError(amqp)
                if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) =>
            {
                Ok(None)
            }
            _ => Err(e.into()),
        },
    }
}

/// Sends the dead letters `ids` (all of them with `None`) back to `work_queue`, each
/// starting its attempts over; returns how many. Unknown ids are refused, naming them,
/// before anything moves.
pub async fn replay(
    broker: &Broker,
    work_queue: &str,
    ids: Option<&[String]>,
) -> anyhow::Result<usize> {
    act(broker, work_queue, ids, Action::Replay).await
}

/// Removes the dead letters `ids` for good; returns how many. Unknown ids are refused,
/// naming them, before anything is removed.
pub async fn drop_letters(
    broker: &Broker,
    work_queue: &str,
    ids: &[String],
) -> anyhow::Result<usize> {
    act(broker, work_queue, Some(ids), Action::Drop).await
}

#[derive(Clone, Copy)]
enum Action {
    Replay,
    Drop,
}

async fn act(
    broker: &Broker,
    work_queue: &str,
    ids: Option<&[String]>,
    action: Action,
) -> anyhow::Result<usize> {
    let channel = broker.confirm_channel().await?;
    let queue = dead_queue(work_queue);
    let taken = take(&channel, &queue, MAX).await?;
    let present: Vec<String> = taken
        .iter()
        .map(|m| describe(&m.delivery.data, &m.delivery.properties).id)
        .collect();
    if let Some(ids) = ids {
        let unknown: Vec<String> = ids
            .iter()
            .filter(|id| !present.contains(id))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            channel.close(200, "refused".into()).await?;
            return Err(DeadLetterError::Unknown {
                queue,
                ids: unknown,
            }
            .into());
        }
    }
    let mut done = 0;
    for (message, id) in taken.into_iter().zip(present) {
        if !ids.is_none_or(|ids| ids.contains(&id)) {
            continue;
        }
        if let Action::Replay = action {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    work_queue.into(),
                    BasicPublishOptions::default(),
                    &message.delivery.data,
                    restarted(&message.delivery.properties),
                )
                .await?;
            anyhow::ensure!(
                confirm.await?.is_ack(),
                "the broker did not confirm the replay of {id}"
            );
            metrics::counter!("amqp_dead_letters_replayed_total", "queue" => work_queue.to_string())
                .increment(1);
        }
        message
            .delivery
            .acker
            .ack(BasicAckOptions::default())
            .await?;
        done += 1;
    }
    // The others, unacknowledged, go back to the queue.
    channel.close(200, "done".into()).await?;
    Ok(done)
}

/// The properties of a replayed message: its attempts start over and the last error goes.
fn restarted(properties: &BasicProperties) -> BasicProperties {
    let mut headers: BTreeMap<ShortString, AMQPValue> = properties
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    headers.remove("x-orderflow-error");
    headers.remove(super::consumer::ATTEMPT_HEADER);
    properties.clone().with_headers(FieldTable::from(headers))
}
