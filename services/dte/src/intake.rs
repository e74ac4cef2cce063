//! The exchange mailbox: suppliers mail their envelopes to the company's DTE address. This
//! poller reads it over IMAPS (`DTE_INTAKE_IMAP_URL`), receives each XML attachment of each
//! unseen message (`received::receive`, which stores it with its checks and answers), and
//! marks the message seen only after that, so a message whose envelope was not stored is
//! read again on the next round; and since the same file is received once, a message read
//! twice (the process died between storing and marking) is not stored twice.

use std::{path::PathBuf, sync::Arc, time::Duration};

use futures::TryStreamExt as _;
use mail_parser::MimeHeaders as _;
use platform::CancellationToken;
use sqlx::PgPool;
use tokio_rustls::{
    TlsConnector,
    rustls::{self, RootCertStore},
};

use crate::{
    received::{self, ReceiveError},
    xml::signature::SigningIdentity,
};

/// How the mailbox is read.
#[derive(Debug, Clone)]
pub struct ImapSettings {
    /// `DTE_INTAKE_IMAP_URL`: `imaps://user@host[:993][/mailbox]` (the mailbox defaults to
    /// INBOX).
    pub url: String,
    /// `DTE_INTAKE_IMAP_PASSWORD`.
    pub password: String,
    /// `DTE_INTAKE_IMAP_CA`: a PEM file of extra certificate authorities to trust (a
    /// company's own mail server); the public roots are always trusted.
    pub ca: Option<PathBuf>,
    /// `DTE_INTAKE_POLL_INTERVAL`: how often the mailbox is read.
    pub poll_interval: Duration,
}

/// Where the mailbox is, parsed from the URL.
#[derive(Debug, Clone)]
struct Mailbox {
    host: String,
    port: u16,
    user: String,
    folder: String,
}

fn parse_url(url: &str) -> anyhow::Result<Mailbox> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| anyhow::anyhow!("setting DTE_INTAKE_IMAP_URL: {e}"))?;
    anyhow::ensure!(
        parsed.scheme() == "imaps",
        "setting DTE_INTAKE_IMAP_URL: must be imaps:// (the mailbox is read over TLS only)"
    );
    let host = parsed
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("setting DTE_INTAKE_IMAP_URL: no host"))?
        .to_string();
    let user = percent_decode(parsed.username());
    anyhow::ensure!(
        !user.is_empty(),
        "setting DTE_INTAKE_IMAP_URL: no user (imaps://user@host)"
    );
    let folder = match parsed.path().trim_start_matches('/') {
        "" => "INBOX".to_string(),
        folder => percent_decode(folder),
    };
    Ok(Mailbox {
        host,
        port: parsed.port().unwrap_or(993),
        user,
        folder,
    })
}

/// A URL's user or path part decoded (`dte%40example.cl` → `dte@example.cl`).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The mailbox poller of one DTE role.
pub struct Intake {
    pool: PgPool,
    company: crate::domain::Issuer,
    identity: SigningIdentity,
    mailbox: Mailbox,
    settings: ImapSettings,
    tls: TlsConnector,
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    /// Unseen messages read.
    pub messages: usize,
    /// XML attachments received (stored now, or found stored before).
    pub received: usize,
    /// XML attachments that were not a DTE envelope at all (nothing stored).
    pub refused: usize,
}

impl Intake {
    /// A poller for `settings`; fails when the URL or the CA cannot be used.
    pub fn new(
        pool: PgPool,
        company: crate::domain::Issuer,
        identity: SigningIdentity,
        settings: ImapSettings,
    ) -> anyhow::Result<Self> {
        let mailbox = parse_url(&settings.url)?;
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &settings.ca {
            use rustls_pki_types::{CertificateDer, pem::PemObject as _};
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| anyhow::anyhow!("setting DTE_INTAKE_IMAP_CA: {e}"))?
            {
                let cert = cert.map_err(|e| anyhow::anyhow!("setting DTE_INTAKE_IMAP_CA: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("setting DTE_INTAKE_IMAP_CA: {e}"))?;
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            pool,
            company,
            identity,
            mailbox,
            settings,
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Reads the mailbox until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            if let Err(e) = self.poll(true).await {
                metrics::counter!("dte_intake_failures_total").increment(1);
                tracing::warn!(
                    error = format!("{e:#}"),
                    "reading the exchange mailbox failed"
                );
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.poll_interval) => {}
                () = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// One round: every unseen message's XML attachments received, then the message marked
    /// seen (unless `mark_seen` is false: what a process that dies just after storing
    /// leaves behind).
    pub async fn poll(&self, mark_seen: bool) -> anyhow::Result<Round> {
        let m = &self.mailbox;
        let tcp = tokio::net::TcpStream::connect((m.host.as_str(), m.port)).await?;
        let server = rustls_pki_types::ServerName::try_from(m.host.clone())?;
        let tls = self.tls.connect(server, tcp).await?;
        let mut client = async_imap::Client::new(tls);
        client
            .read_response()
            .await?
            .ok_or_else(|| anyhow::anyhow!("the IMAP server closed before its greeting"))?;
        let mut session = client
            .login(&m.user, &self.settings.password)
            .await
            .map_err(|(e, _)| anyhow::anyhow!("IMAP login as {}: {e}", m.user))?;
        session.select(&m.folder).await?;
        // A message larger than any envelope is not downloaded (it would be held in memory);
        // it stays unseen for a person to look at.
        let query = format!("UNSEEN SMALLER {}", received::MAX_FILE_BYTES * 2);
        let mut uids: Vec<u32> = session.uid_search(&query).await?.into_iter().collect();
        uids.sort_unstable();
        let receiver = received::Receiver {
            rut: &self.company.rut,
            identity: &self.identity,
            signer: &self.company.rut_envia,
        };
        let mut round = Round::default();
        for uid in uids {
            let fetched: Vec<async_imap::types::Fetch> = session
                .uid_fetch(uid.to_string(), "BODY.PEEK[]")
                .await?
                .try_collect()
                .await?;
            let Some(raw) = fetched.iter().find_map(|f| f.body()) else {
                continue;
            };
            round.messages += 1;
            let Some(message) = mail_parser::MessageParser::default().parse(raw) else {
                tracing::warn!(uid, "an unreadable message in the exchange mailbox");
                continue;
            };
            let message_id = message.message_id().unwrap_or_default().to_string();
            let from = message
                .reply_to()
                .or_else(|| message.from())
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap_or_default()
                .to_string();
            for part in message.attachments() {
                let name = part.attachment_name().unwrap_or_default().to_string();
                let xml = name.to_ascii_lowercase().ends_with(".xml")
                    || part
                        .content_type()
                        .is_some_and(|t| t.subtype().is_some_and(|s| s.contains("xml")));
                if !xml {
                    continue;
                }
                let source = format!("imap:{message_id}");
                match received::receive(
                    &self.pool,
                    receiver,
                    &source,
                    &name,
                    &from,
                    as_sent(&message, part),
                )
                .await
                {
                    Ok(receipt) => {
                        round.received += 1;
                        tracing::info!(uid, envelope = %receipt.envelope.id, repeated = receipt.repeated, "received an envelope by mail");
                    }
                    Err(ReceiveError::Invalid(problem)) => {
                        round.refused += 1;
                        tracing::warn!(uid, attachment = %name, problem, "a mailed XML that is not a DTE envelope");
                    }
                    // Not stored: the message stays unseen and is read again.
                    Err(ReceiveError::Store(e)) => return Err(e),
                }
            }
            if mark_seen {
                let _: Vec<_> = session
                    .uid_store(uid.to_string(), "+FLAGS (\\Seen)")
                    .await?
                    .try_collect()
                    .await?;
            }
        }
        session.logout().await.ok();
        Ok(round)
    }
}

/// An attachment's bytes as the supplier's software wrote them: only the transfer encoding
/// (base64, quoted-printable) undone. mail-parser hands a `text/xml` part over as text
/// decoded from its charset, but the signatures cover the characters the XML's own
/// declaration names, so the file must reach verification untouched.
fn as_sent(message: &mail_parser::Message<'_>, part: &mail_parser::MessagePart<'_>) -> Vec<u8> {
    use mail_parser::{
        Encoding,
        decoders::{base64::base64_decode, quoted_printable::quoted_printable_decode},
    };
    let raw = message
        .raw_message()
        .get(part.offset_body as usize..part.offset_end as usize)
        .unwrap_or_default();
    let decoded = match part.encoding {
        Encoding::Base64 => base64_decode(raw),
        Encoding::QuotedPrintable => quoted_printable_decode(raw),
        Encoding::None => Some(raw.to_vec()),
    };
    decoded.unwrap_or_else(|| part.contents().to_vec())
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn the_mailbox_url_names_user_host_port_and_folder() {
        let m = parse_url("imaps://dte%40example.cl@mail.example.cl/Intercambio").unwrap();
        assert_eq!(
            (m.user.as_str(), m.host.as_str(), m.port, m.folder.as_str()),
            ("dte@example.cl", "mail.example.cl", 993, "Intercambio")
        );
        let m = parse_url("imaps://dte@127.0.0.1:10993").unwrap();
        assert_eq!((m.port, m.folder.as_str()), (10993, "INBOX"));
        for bad in ["imap://dte@host", "imaps://host", "not a url"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
