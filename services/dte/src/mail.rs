//! Mails each received envelope's signed answer (`RespuestaDTE`) to the supplier's exchange
//! address, from the company's (`DTE_EXCHANGE_EMAIL`), through `DTE_SMTP_URL`. The answer
//! is stored before it is mailed (`received`), so nothing is lost when the SMTP server or
//! this process is down: each is sent once it can be, retried with back-off, and marked
//! sent after the server took it.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Attachment, Mailbox, MultiPart, SinglePart, header::ContentType},
};
use platform::CancellationToken;
use sqlx::PgPool;
use uuid::Uuid;

/// How the mailer is set up.
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `DTE_SMTP_URL`: `smtp://host:port` (plain; `?tls=required` for STARTTLS) or
    /// `smtps://user:password@host`.
    pub smtp_url: String,
    /// `DTE_EXCHANGE_EMAIL`: the company's exchange address, the answers' sender.
    pub from: String,
    /// How often answers due are looked for.
    pub poll_interval: Duration,
    /// The longest wait between two attempts at one answer.
    pub max_backoff: Duration,
}

#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    cod_envio: i64,
    name: String,
    answer_to: String,
    answer_attempts: i32,
    respuesta: Vec<u8>,
}

/// The mailer of one DTE role.
pub struct Mailer {
    pool: PgPool,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    settings: MailSettings,
}

impl Mailer {
    /// A mailer for `settings`; fails when the URL or the sender cannot be used.
    pub fn new(pool: PgPool, settings: MailSettings) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&settings.smtp_url)
            .map_err(|e| anyhow::anyhow!("setting DTE_SMTP_URL: {e}"))?
            .timeout(Some(Duration::from_secs(30)))
            .build();
        let from = settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("setting DTE_EXCHANGE_EMAIL: {e}"))?;
        Ok(Self {
            pool,
            transport,
            from,
            settings,
        })
    }

    /// Sends answers until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            match self.send_due().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = format!("{e:#}"), "mailing answers failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.poll_interval) => {}
                () = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// One round: claims the answers due (a lease, so replicas never send one twice at
    /// once), mails each, records how it went. How many were tried.
    pub async fn send_due(&self) -> anyhow::Result<usize> {
        let due: Vec<Due> = sqlx::query_as(
            "UPDATE received_envelopes SET answer_next_at = now() + interval '5 minutes' \
             WHERE id IN (SELECT id FROM received_envelopes \
                WHERE answer_sent_at IS NULL AND answer_to <> '' AND respuesta IS NOT NULL \
                  AND answer_next_at <= now() \
                ORDER BY answer_next_at LIMIT 10 FOR UPDATE SKIP LOCKED) \
             RETURNING id, cod_envio, name, answer_to, answer_attempts, respuesta",
        )
        .fetch_all(&self.pool)
        .await?;
        for answer in &due {
            match self.send(answer).await {
                Ok(()) => {
                    sqlx::query(
                        "UPDATE received_envelopes SET answer_sent_at = now(), answer_error = '', \
                         answer_attempts = answer_attempts + 1 WHERE id = $1",
                    )
                    .bind(answer.id)
                    .execute(&self.pool)
                    .await?;
                    metrics::counter!("dte_answers_mailed_total", "outcome" => "sent").increment(1);
                    tracing::info!(envelope = %answer.id, to = %answer.answer_to, "answer mailed");
                }
                Err(e) => {
                    let wait = backoff(answer.answer_attempts, self.settings.max_backoff);
                    sqlx::query(
                        "UPDATE received_envelopes SET answer_attempts = answer_attempts + 1, \
                         answer_error = $2, answer_next_at = now() + $3 WHERE id = $1",
                    )
                    .bind(answer.id)
                    .bind(format!("{e:#}"))
                    .bind(wait)
                    .execute(&self.pool)
                    .await?;
                    metrics::counter!("dte_answers_mailed_total", "outcome" => "failed")
                        .increment(1);
                    tracing::warn!(envelope = %answer.id, to = %answer.answer_to, error = format!("{e:#}"), "mailing an answer failed; retrying");
                }
            }
        }
        Ok(due.len())
    }

    async fn send(&self, answer: &Due) -> anyhow::Result<()> {
        let to: Mailbox = answer
            .answer_to
            .parse()
            .map_err(|e| anyhow::anyhow!("{:?} is not an address: {e}", answer.answer_to))?;
        let text = format!(
            "Adjuntamos la respuesta de recepción (RespuestaDTE) del envío {} (código de envío {}).\n",
            answer.name, answer.cod_envio
        );
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(format!("Respuesta de recepción: {}", answer.name))
            .multipart(
                MultiPart::mixed()
                    .singlepart(SinglePart::plain(text))
                    .singlepart(
                        Attachment::new(format!("RespuestaDTE-{}.xml", answer.cod_envio)).body(
                            answer.respuesta.clone(),
                            ContentType::parse("application/xml; charset=ISO-8859-1")?,
                        ),
                    ),
            )?;
        self.transport.send(message).await?;
        Ok(())
    }
}

/// 1, 2, 4 … seconds, at most `max`.
fn backoff(attempts: i32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 16)).min(max)
}
