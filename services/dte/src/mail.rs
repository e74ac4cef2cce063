//! Mails each signed answer to a supplier (`RespuestaDTE`, `EnvioRecibos`) to the supplier's
//! exchange address, from the company's (`DTE_EXCHANGE_EMAIL`), through `DTE_SMTP_URL`. An
//! answer is stored before it is mailed (`received`), so nothing is lost when the SMTP
//! server or this process is down: each is sent once it can be, retried with back-off, and
//! marked sent after the server took it.

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
    answer_no: i64,
    kind: String,
    /// The received file it answers.
    name: String,
    answer_to: String,
    attempts: i32,
    xml: Vec<u8>,
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
            "WITH due AS ( \
                UPDATE received_answers SET next_at = now() + interval '5 minutes' \
                WHERE id IN (SELECT id FROM received_answers \
                    WHERE sent_at IS NULL AND answer_to <> '' AND next_at <= now() \
                    ORDER BY next_at LIMIT 10 FOR UPDATE SKIP LOCKED) \
                RETURNING id, answer_no, kind, envelope_id, answer_to, attempts, xml) \
             SELECT due.id, due.answer_no, due.kind, e.name, due.answer_to, due.attempts, due.xml \
             FROM due JOIN received_envelopes e ON e.id = due.envelope_id ORDER BY due.answer_no",
        )
        .fetch_all(&self.pool)
        .await?;
        for answer in &due {
            match self.send(answer).await {
                Ok(()) => {
                    sqlx::query(
                        "UPDATE received_answers SET sent_at = now(), error = '', \
                         attempts = attempts + 1 WHERE id = $1",
                    )
                    .bind(answer.id)
                    .execute(&self.pool)
                    .await?;
                    metrics::counter!("dte_answers_mailed_total", "outcome" => "sent").increment(1);
                    tracing::info!(answer = %answer.id, kind = %answer.kind, to = %answer.answer_to, "answer mailed");
                }
                Err(e) => {
                    let wait = backoff(answer.attempts, self.settings.max_backoff);
                    sqlx::query(
                        "UPDATE received_answers SET attempts = attempts + 1, \
                         error = $2, next_at = now() + $3 WHERE id = $1",
                    )
                    .bind(answer.id)
                    .bind(format!("{e:#}"))
                    .bind(wait)
                    .execute(&self.pool)
                    .await?;
                    metrics::counter!("dte_answers_mailed_total", "outcome" => "failed")
                        .increment(1);
                    tracing::warn!(answer = %answer.id, to = %answer.answer_to, error = format!("{e:#}"), "mailing an answer failed; retrying");
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
        // What the supplier reads, in Spanish; the attachment is what counts.
        let (subject, text, file) = match answer.kind.as_str() {
            "recepcion" => (
                format!("Respuesta de recepción: {}", answer.name),
                format!(
                    "Adjuntamos la respuesta de recepción (RespuestaDTE) del envío {}.\n",
                    answer.name
                ),
                format!("RespuestaDTE-{}.xml", answer.answer_no),
            ),
            "resultado" => (
                format!("Resultado comercial de documentos de {}", answer.name),
                format!(
                    "Adjuntamos la aceptación o el reclamo (RespuestaDTE) de un documento del envío {}.\n",
                    answer.name
                ),
                format!("RespuestaDTE-{}.xml", answer.answer_no),
            ),
            _ => (
                format!(
                    "Acuse de recibo de mercaderías o servicios: {}",
                    answer.name
                ),
                format!(
                    "Adjuntamos el acuse de recibo (EnvioRecibos, Ley 19.983) de un documento del envío {}.\n",
                    answer.name
                ),
                format!("EnvioRecibos-{}.xml", answer.answer_no),
            ),
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .multipart(
                MultiPart::mixed()
                    .singlepart(SinglePart::plain(text))
                    .singlepart(Attachment::new(file).body(
                        answer.xml.clone(),
                        ContentType::parse("application/xml; charset=ISO-8859-1")?,
                    )),
            )?;
        self.transport.send(message).await?;
        Ok(())
    }
}

/// 1, 2, 4 … seconds, at most `max`.
fn backoff(attempts: i32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 16)).min(max)
}
