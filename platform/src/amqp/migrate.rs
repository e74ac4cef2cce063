//! Moving a service's queues from classic to quorum queues (`orderflow queues migrate`).
//!
//! RabbitMQ cannot change a queue's type in place: a classic queue must be deleted and
//! declared anew. Done with the service's consumers stopped, for each of its queues (work,
//! retry, dead) that is still classic: its messages move, confirmed, to a holding quorum
//! queue (`<queue>.migrating`), which is bound like the work queue so nothing published
//! meanwhile is lost; the classic queue is deleted; the quorum topology is declared as the
//! consumer declares it; the held messages move back, and the holding queues go. A queue
//! that is already quorum, or absent, is left alone, so running it twice changes nothing;
//! a run that was interrupted is finished by the next (a holding queue left behind is
//! drained into the quorum queue).

use lapin::{
    BasicProperties, Channel, ErrorKind,
    options::{
        BasicAckOptions, BasicGetOptions, BasicPublishOptions, QueueBindOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::{AMQPValue, FieldTable},
};

use super::{Broker, consumer::Subscription};

/// What a migration did to one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migrated {
    /// It was classic: now quorum, with this many messages carried over.
    Moved(u64),
    /// Already a quorum queue.
    AlreadyQuorum,
    /// Not declared yet (its consumer will declare it as quorum).
    Absent,
}

/// The arguments an earlier version declared `queue` with: classic, no queue type.
fn classic_args(sub: &Subscription, queue: &str) -> FieldTable {
    let mut args = FieldTable::default();
    if let Some(expires) = sub.expires {
        args.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(expires.as_millis() as i64),
        );
    }
    if queue == sub.retry_queue() {
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(sub.queue.as_str().into()),
        );
    }
    args
}

/// The queue's current kind, asked without changing it: RabbitMQ accepts a declaration
/// only when it is equivalent to the queue's, so declaring it as the earlier version did
/// succeeds exactly while it is still that classic queue.
async fn kind_of(broker: &Broker, sub: &Subscription, queue: &str) -> anyhow::Result<Migrated> {
    // A failed declare closes its channel: one channel per question.
    if !exists(broker, queue).await? {
        return Ok(Migrated::Absent);
    }
    let as_before = broker
        .channel()
        .await?
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            classic_args(sub, queue),
        )
        .await;
    match as_before {
        Ok(_) => Ok(Migrated::Moved(0)),
        Err(e) if is(&e, AMQPSoftError::PRECONDITIONFAILED) => Ok(Migrated::AlreadyQuorum),
        Err(e) => Err(e.into()),
    }
}

/// Whether `queue` is declared (a passive declare, on a channel of its own).
async fn exists(broker: &Broker, queue: &str) -> anyhow::Result<bool> {
    let passive = broker
        .channel()
        .await?
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    match passive {
        Ok(_) => Ok(true),
        Err(e) if is(&e, AMQPSoftError::NOTFOUND) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn is(e: &lapin::Error, soft: AMQPSoftError) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(amqp) if *amqp.kind() == AMQPErrorKind::Soft(soft))
}

/// Moves every message of `from` to `to`, each published (confirmed) before it is
/// acknowledged; returns how many. `due_now` drops a message's expiration (a retry's
/// delay), which in a queue without a dead-letter route would discard it.
async fn move_all(channel: &Channel, from: &str, to: &str, due_now: bool) -> anyhow::Result<u64> {
    let mut moved = 0;
    while let Some(message) = channel
        .basic_get(from.into(), BasicGetOptions { no_ack: false })
        .await?
    {
        let mut properties: BasicProperties = message.delivery.properties.clone();
        if due_now {
            properties = BasicProperties::default()
                .with_headers(properties.headers().clone().unwrap_or_default())
                .with_message_id(properties.message_id().clone().unwrap_or_default())
                .with_delivery_mode(2);
        }
        let confirm = channel
            .basic_publish(
                "".into(),
                to.into(),
                BasicPublishOptions::default(),
                &message.delivery.data,
                properties,
            )
            .await?;
        anyhow::ensure!(
            confirm.await?.is_ack(),
            "the broker did not confirm a message moved to {to}"
        );
        message
            .delivery
            .acker
            .ack(BasicAckOptions::default())
            .await?;
        moved += 1;
    }
    Ok(moved)
}

/// Deletes a classic queue just emptied (refused, so nothing is lost, if a message
/// arrived meanwhile: the migration then stops and can be run again).
async fn delete_emptied_classic(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    channel
        .queue_delete(
            queue.into(),
            QueueDeleteOptions {
                if_empty: true,
                ..QueueDeleteOptions::default()
            },
        )
        .await?;
    Ok(())
}

/// Migrates `sub`'s queues to quorum queues (see the module); what became of each.
pub async fn to_quorum(
    broker: &Broker,
    sub: &Subscription,
) -> anyhow::Result<Vec<(String, Migrated)>> {
    let queues = [sub.queue.clone(), sub.retry_queue(), sub.dead_queue()];
    let channel = broker.confirm_channel().await?;
    broker.declare_exchange(&channel).await?;
    let mut outcome = Vec::new();
    let mut held = Vec::new();
    // Where the work queue's messages wait meanwhile (its holding queue, once made).
    let mut work_target = sub.queue.clone();
    for queue in &queues {
        let kind = kind_of(broker, sub, queue).await?;
        let holding = format!("{queue}.migrating");
        if kind != Migrated::Moved(0) {
            if *queue != sub.retry_queue() && exists(broker, &holding).await? {
                // A run interrupted after it moved this queue's messages out: they wait in
                // the holding queue and go back below, to the quorum queue declared there.
                if *queue == sub.queue {
                    work_target = holding.clone();
                }
                held.push((queue.clone(), holding));
            } else {
                outcome.push((queue.clone(), kind));
            }
            continue;
        }
        if *queue == sub.retry_queue() {
            // Retries are due back on the work queue anyway: they go there now (a little
            // early) rather than wait out a delay nothing would route them back from.
            let moved = move_all(&channel, queue, &work_target, true).await?;
            delete_emptied_classic(&channel, queue).await?;
            outcome.push((queue.clone(), Migrated::Moved(moved)));
            continue;
        }
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        channel
            .queue_declare(
                holding.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await?;
        if *queue == sub.queue {
            work_target = holding.clone();
            // What is published while the work queue is away waits here.
            for key in &sub.routing_keys {
                channel
                    .queue_bind(
                        holding.as_str().into(),
                        broker.exchange().into(),
                        key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
        move_all(&channel, queue, &holding, false).await?;
        delete_emptied_classic(&channel, queue).await?;
        held.push((queue.clone(), holding));
    }
    if outcome.iter().any(|(_, m)| matches!(m, Migrated::Moved(_))) || !held.is_empty() {
        channel.close(200, "moved out".into()).await?;
        // A fresh channel: one that touched the classic queue keeps treating the name as
        // classic (RabbitMQ 3.10 then fails the publish with an internal error).
        let channel = broker.confirm_channel().await?;
        super::consumer::declare_topology(&channel, broker, sub).await?;
        for (queue, holding) in held {
            // Unbound first, so nothing new lands in the holding queue after it is drained.
            if queue == sub.queue {
                for key in &sub.routing_keys {
                    channel
                        .queue_unbind(
                            holding.as_str().into(),
                            broker.exchange().into(),
                            key.as_str().into(),
                            FieldTable::default(),
                        )
                        .await?;
                }
            }
            let moved = move_all(&channel, &holding, &queue, false).await?;
            // Quorum queues refuse `if-empty` deletes: checked first, then deleted.
            let left = channel
                .queue_declare(
                    holding.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?
                .message_count();
            anyhow::ensure!(
                left == 0,
                "{holding} still holds {left} messages: run the migration again"
            );
            channel
                .queue_delete(holding.as_str().into(), QueueDeleteOptions::default())
                .await?;
            tracing::info!(queue, moved, "classic queue migrated to a quorum queue");
            outcome.push((queue, Migrated::Moved(moved)));
        }
        channel.close(200, "migrated".into()).await?;
    } else {
        channel.close(200, "nothing to migrate".into()).await?;
    }
    Ok(outcome)
}
