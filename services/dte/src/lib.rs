//! Electronic tax documents (DTE) for the SII.
//!
//! Owns the `dte` schema. CAFs (folio grants) are uploaded and checked; a paid order
//! (`order.paid`) gets its boleta (39/41) or factura (33/34), a refund (`payment.refunded`)
//! its nota de crédito (61). Each document takes the next folio of its type under a row
//! lock (gapless, in order, never reused, across replicas), is stamped with its TED (signed
//! with the CAF key), signed with the company certificate, wrapped in its envelope
//! (`EnvioBOLETA` / `EnvioDTE`) and kept exactly as built; `dte.issued` goes out through the
//! outbox in the same transaction. Without folios a document waits (`pending_folio`) and is
//! issued when a CAF arrives. Received documents can be verified ([`verify`]).
//!
//! Layout: [`domain`] (which document, totals, notas de crédito) → [`caf`] → [`xml`]
//! (ISO-8859-1, TED, signatures, documents, schemas) → [`store`] (SQL) → [`issuing`] →
//! [`events`] (consumes) and [`grpc`]; [`verify`] checks received files; this file wires.
#![forbid(unsafe_code)]

pub mod caf;
pub mod certificate;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod intake;
pub mod issuing;
pub mod mail;
pub mod pdf;
pub mod received;
pub mod sii;
pub mod store;
pub mod testing;
pub mod verify;
pub mod xml;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use chrono::NaiveDate;
use platform::{
    CancellationToken,
    admin::Readiness,
    amqp::{Broker, consumer::Subscription, outbox},
    chile::Rut,
    clock::Clock,
    config::{CommonSettings, ConfigError, Reader},
    grpc_server::GrpcServer,
};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::{domain::Issuer, issuing::Issuing, xml::signature::SigningIdentity};

/// The embedded migrations of the `dte` schema.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema the DTE service owns.
pub const SCHEMA: &str = "dte";

/// Opens the `dte` schema, migrated, with its outbox and inbox.
pub async fn open_database(database_url: &str) -> anyhow::Result<PgPool> {
    let pool = platform::db::open(database_url, SCHEMA, &MIGRATOR).await?;
    outbox::install(&pool).await?;
    Ok(pool)
}

/// Where the company's signing certificate comes from.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    /// `DTE_CERT_PKCS12` (+ `DTE_CERT_PASSWORD`).
    Pkcs12 { path: PathBuf, password: String },
    /// `DTE_CERT_PEM` + `DTE_KEY_PEM`.
    Pem { certificate: PathBuf, key: PathBuf },
    /// Neither: a self-signed development certificate, generated once and kept in the
    /// database (refused when `DTE_SII_ENVIRONMENT=production`).
    Development,
}

/// The DTE service's settings.
#[derive(Debug, Clone)]
pub struct DteSettings {
    /// `DTE_GRPC_ADDR`.
    pub grpc_addr: SocketAddr,
    /// `DTE_ADMIN_ADDR`: health and metrics.
    pub admin_addr: SocketAddr,
    /// The company: `DTE_RUT_EMISOR`, `DTE_RAZON_SOCIAL`, `DTE_GIRO`, `DTE_ACTECO`,
    /// `DTE_DIRECCION`, `DTE_COMUNA`, `DTE_CIUDAD`, `DTE_RUT_ENVIA`, `DTE_FCH_RESOL`,
    /// `DTE_NRO_RESOL`.
    pub issuer: Issuer,
    /// `DTE_SII_ENVIRONMENT`: `certification` (default) or `production`.
    pub sii_environment: String,
    /// The signing certificate.
    pub certificate: CertificateSource,
    /// Where the SII is: `DTE_SII_URL` (SOAP services and `DTEUpload`),
    /// `DTE_SII_BOLETA_URL` (the boleta API), `DTE_SII_BOLETA_UPLOAD_URL` (its upload),
    /// `DTE_SII_REGISTRY_URL` (the registry of acceptance and claims); by default the
    /// SII's own hosts for `DTE_SII_ENVIRONMENT`.
    pub sii: sii::client::SiiEndpoints,
    /// How submission paces itself: `DTE_SII_POLL_INTERVAL`, `DTE_SII_MAX_BACKOFF`.
    pub sii_worker: sii::worker::WorkerSettings,
    /// `DTE_SII_TIMEOUT`: the longest one SII call may take.
    pub sii_timeout: std::time::Duration,
    /// `DTE_FOLIOS_LOW`: below this many folios left of a type, the back-office warns
    /// (default 200: days of boletas for a small shop, while the SII takes a day or two).
    pub folios_low: i64,
    /// Mailing the answers to suppliers: `DTE_SMTP_URL` (unset: answers are only kept and
    /// downloadable), `DTE_EXCHANGE_EMAIL`, `DTE_SMTP_POLL_INTERVAL`, `DTE_SMTP_MAX_BACKOFF`.
    pub mail: Option<mail::MailSettings>,
    /// Reading the exchange mailbox: `DTE_INTAKE_IMAP_URL` (unset: envelopes come by the
    /// API and the CLI only), `DTE_INTAKE_IMAP_PASSWORD`, `DTE_INTAKE_IMAP_CA`,
    /// `DTE_INTAKE_POLL_INTERVAL`.
    pub intake: Option<intake::ImapSettings>,
}

impl DteSettings {
    /// Reads the DTE service's settings. The defaults describe a development company.
    pub fn from_source(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let rut = |key: &str, default: &str| -> Result<Rut, ConfigError> {
            Rut::parse(&r.string(key, default)).map_err(|problem| ConfigError {
                key: key.into(),
                problem: format!("is not a valid RUT: {problem}"),
            })
        };
        let fch_resol_raw = r.string("DTE_FCH_RESOL", "2026-01-01");
        let fch_resol =
            NaiveDate::parse_from_str(&fch_resol_raw, "%Y-%m-%d").map_err(|_| ConfigError {
                key: "DTE_FCH_RESOL".into(),
                problem: format!("{fch_resol_raw:?} is not a date (YYYY-MM-DD)"),
            })?;
        let sii_environment = r.string("DTE_SII_ENVIRONMENT", "certification");
        if !matches!(sii_environment.as_str(), "certification" | "production") {
            return Err(ConfigError {
                key: "DTE_SII_ENVIRONMENT".into(),
                problem: format!("{sii_environment:?} is neither certification nor production"),
            });
        }
        let certificate = match (
            r.optional("DTE_CERT_PKCS12"),
            r.optional("DTE_CERT_PEM"),
            r.optional("DTE_KEY_PEM"),
        ) {
            (Some(path), None, None) => CertificateSource::Pkcs12 {
                path: path.into(),
                password: r.secret("DTE_CERT_PASSWORD", "").expose().to_string(),
            },
            (None, Some(certificate), Some(key)) => CertificateSource::Pem {
                certificate: certificate.into(),
                key: key.into(),
            },
            (None, None, None) if sii_environment == "production" => {
                return Err(ConfigError {
                    key: "DTE_CERT_PKCS12".into(),
                    problem: "production needs the company's certificate (DTE_CERT_PKCS12, or DTE_CERT_PEM and DTE_KEY_PEM)".into(),
                });
            }
            (None, None, None) => CertificateSource::Development,
            _ => {
                return Err(ConfigError {
                    key: "DTE_CERT_PEM".into(),
                    problem: "set either DTE_CERT_PKCS12, or both DTE_CERT_PEM and DTE_KEY_PEM"
                        .into(),
                });
            }
        };
        let (dte_host, boleta_host, boleta_upload_host, registry_host) =
            if sii_environment == "production" {
                (
                    "https://palena.sii.cl",
                    "https://api.sii.cl/recursos/v1",
                    "https://rahue.sii.cl/recursos/v1",
                    "https://ws1.sii.cl/WSREGISTRORECLAMODTE",
                )
            } else {
                (
                    "https://maullin.sii.cl",
                    "https://apicert.sii.cl/recursos/v1",
                    "https://pangal.sii.cl/recursos/v1",
                    "https://ws2.sii.cl/WSREGISTRORECLAMODTECERT",
                )
            };
        let url = |key: &str, default: &str| -> Result<String, ConfigError> {
            let value = r.string(key, default).trim_end_matches('/').to_string();
            if !(value.starts_with("http://") || value.starts_with("https://")) {
                return Err(ConfigError {
                    key: key.into(),
                    problem: format!("{value:?} is not an http(s) URL"),
                });
            }
            Ok(value)
        };
        let poll_interval =
            r.duration("DTE_SII_POLL_INTERVAL", std::time::Duration::from_secs(5))?;
        let sii = sii::client::SiiEndpoints {
            dte: url("DTE_SII_URL", dte_host)?,
            boleta: url("DTE_SII_BOLETA_URL", boleta_host)?,
            boleta_upload: url("DTE_SII_BOLETA_UPLOAD_URL", boleta_upload_host)?,
            registry: url("DTE_SII_REGISTRY_URL", registry_host)?,
        };
        Ok(Self {
            sii,
            sii_worker: sii::worker::WorkerSettings {
                poll_interval,
                max_backoff: r
                    .duration("DTE_SII_MAX_BACKOFF", std::time::Duration::from_secs(600))?,
                lease: std::time::Duration::from_secs(120),
                batch_window: r
                    .duration("DTE_SII_BATCH_WINDOW", std::time::Duration::from_secs(2))?,
                batch_size: {
                    let size: usize = r.parse(
                        "DTE_SII_BATCH_SIZE",
                        sii::worker::MAX_BOLETAS_PER_ENVELOPE,
                    )?;
                    if !(1..=sii::worker::MAX_BOLETAS_PER_ENVELOPE).contains(&size) {
                        return Err(ConfigError {
                            key: "DTE_SII_BATCH_SIZE".into(),
                            problem: format!(
                                "{size} is not between 1 and {} (the boletas an EnvioBOLETA holds)",
                                sii::worker::MAX_BOLETAS_PER_ENVELOPE
                            ),
                        });
                    }
                    size
                },
            },
            sii_timeout: r.duration("DTE_SII_TIMEOUT", std::time::Duration::from_secs(30))?,
            folios_low: r.parse("DTE_FOLIOS_LOW", 200)?,
            mail: match r.optional("DTE_SMTP_URL") {
                None => None,
                Some(_) => Some(mail::MailSettings {
                    smtp_url: r.secret("DTE_SMTP_URL", "").expose().to_string(),
                    from: r
                        .optional("DTE_EXCHANGE_EMAIL")
                        .ok_or_else(|| ConfigError {
                            key: "DTE_EXCHANGE_EMAIL".into(),
                            problem: "must be set with DTE_SMTP_URL: the company's exchange address the answers come from".into(),
                        })?,
                    poll_interval: r
                        .duration("DTE_SMTP_POLL_INTERVAL", std::time::Duration::from_secs(1))?,
                    max_backoff: r
                        .duration("DTE_SMTP_MAX_BACKOFF", std::time::Duration::from_secs(300))?,
                }),
            },
            intake: match r.optional("DTE_INTAKE_IMAP_URL") {
                None => None,
                Some(url) => Some(intake::ImapSettings {
                    url,
                    password: r.secret("DTE_INTAKE_IMAP_PASSWORD", "").expose().to_string(),
                    ca: r.optional("DTE_INTAKE_IMAP_CA").map(Into::into),
                    poll_interval: r
                        .duration("DTE_INTAKE_POLL_INTERVAL", std::time::Duration::from_secs(30))?,
                }),
            },
            grpc_addr: r.parse("DTE_GRPC_ADDR", SocketAddr::from(([0, 0, 0, 0], 50055)))?,
            admin_addr: r.parse("DTE_ADMIN_ADDR", SocketAddr::from(([0, 0, 0, 0], 9106)))?,
            issuer: Issuer {
                rut: rut("DTE_RUT_EMISOR", "76369187-K")?,
                razon_social: r.string("DTE_RAZON_SOCIAL", "Orderflow SpA"),
                giro: r.string("DTE_GIRO", "Venta al por menor por internet"),
                acteco: r.parse("DTE_ACTECO", 479100)?,
                address: r.string("DTE_DIRECCION", "Av. Providencia 1234"),
                comuna: r.string("DTE_COMUNA", "Providencia"),
                ciudad: r.string("DTE_CIUDAD", "Santiago"),
                rut_envia: rut("DTE_RUT_ENVIA", "12345678-5")?,
                fch_resol,
                nro_resol: r.parse("DTE_NRO_RESOL", 0)?,
            },
            sii_environment,
            certificate,
        })
    }
}

/// The company the settings' defaults describe: development, tests and benchmarks.
pub fn development_issuer() -> Issuer {
    let defaults: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    DteSettings::from_source(&Reader::new(&defaults))
        .expect("the defaults are valid")
        .issuer
}

/// The signing identity the settings name; in development, the stored self-signed one
/// (generated on first use).
pub async fn signing_identity(
    pool: &PgPool,
    source: &CertificateSource,
    holder: &Rut,
) -> anyhow::Result<SigningIdentity> {
    match source {
        CertificateSource::Pkcs12 { path, password } => {
            let bytes = std::fs::read(path).with_context(|| {
                format!("setting DTE_CERT_PKCS12: cannot read {}", path.display())
            })?;
            SigningIdentity::from_pkcs12(&bytes, password).context("setting DTE_CERT_PKCS12")
        }
        CertificateSource::Pem { certificate, key } => {
            let cert = std::fs::read_to_string(certificate).with_context(|| {
                format!(
                    "setting DTE_CERT_PEM: cannot read {}",
                    certificate.display()
                )
            })?;
            let der = pem_to_der(&cert).context("setting DTE_CERT_PEM")?;
            let key = std::fs::read(key)
                .with_context(|| format!("setting DTE_KEY_PEM: cannot read {}", key.display()))?;
            SigningIdentity::from_pem(&key, der).context("setting DTE_KEY_PEM")
        }
        CertificateSource::Development => {
            tracing::warn!(
                "no DTE_CERT_PKCS12 / DTE_CERT_PEM: signing with a self-signed development certificate the SII will not accept"
            );
            let (key, der) = match store::dev_certificate(pool).await? {
                Some(kept) => kept,
                None => {
                    let holder = holder.to_string();
                    let (key, der) =
                        tokio::task::spawn_blocking(move || certificate::self_signed(&holder))
                            .await??;
                    store::keep_dev_certificate(pool, &key, &der).await?
                }
            };
            certificate::identity(&key, der)
        }
    }
}

fn pem_to_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    anyhow::ensure!(!body.is_empty(), "no CERTIFICATE block");
    Ok(base64::engine::general_purpose::STANDARD.decode(body)?)
}

/// Folios in a development CAF: enough for load tests (the SII grants far fewer at once).
pub const DEVELOPMENT_FOLIOS: i64 = 100_000;

/// Development only: a fake CAF of folios 1..=[`DEVELOPMENT_FOLIOS`] for every type with no
/// CAF yet, so the suite issues documents out of the box. Returns the types loaded.
pub async fn load_development_cafs(pool: &PgPool, issuer: &Issuer) -> anyhow::Result<Vec<i32>> {
    let stored: Vec<i32> = store::list_cafs(pool)
        .await?
        .into_iter()
        .map(|c| c.tipo_dte)
        .collect();
    let today = chrono::Utc::now().date_naive();
    let mut loaded = Vec::new();
    for tipo in domain::TipoDte::ALL {
        if stored.contains(&tipo.code()) {
            continue;
        }
        let rut = issuer.rut;
        let name = issuer.razon_social.clone();
        let xml = tokio::task::spawn_blocking(move || {
            caf::fake(tipo, 1, DEVELOPMENT_FOLIOS, &rut, &name, today)
        })
        .await??;
        let mut tx = pool.begin().await?;
        let inserted = store::insert_caf(
            &mut tx,
            uuid::Uuid::now_v7(),
            tipo,
            1,
            DEVELOPMENT_FOLIOS,
            today,
            xml.as_bytes(),
        )
        .await?;
        tx.commit().await?;
        if inserted.is_ok() {
            loaded.push(tipo.code());
        }
    }
    if !loaded.is_empty() {
        tracing::warn!(types = ?loaded, "loaded development CAFs (NOT issued by the SII) for types with none");
    }
    Ok(loaded)
}

/// The DTE service, built and bound.
pub struct DteApp {
    issuing: Arc<Issuing>,
    sii: Arc<dyn sii::SiiClient>,
    registry: Arc<dyn sii::SiiRegistry>,
    sii_worker: sii::worker::WorkerSettings,
    broker: Broker,
    subscription: Subscription,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    internal_key: Arc<platform::identity::InternalKey>,
    grpc_tls: Option<platform::tls::GrpcTls>,
    retention: platform::amqp::retention::Retention,
    folios_low: i64,
    mailer: Option<mail::Mailer>,
    intake: Option<intake::Intake>,
}

impl DteApp {
    /// Connects, migrates, loads the signing identity and binds.
    pub async fn build(
        common: &CommonSettings,
        settings: DteSettings,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let internal_key = common.internal_key()?;
        let pool = open_database(common.database_url_for(SCHEMA).expose()).await?;
        let identity =
            signing_identity(&pool, &settings.certificate, &settings.issuer.rut_envia).await?;
        let sii = sii::client::HttpSiiClient::new(
            settings.sii.clone(),
            identity.clone(),
            settings.issuer.rut,
            settings.issuer.rut_envia,
            settings.sii_timeout,
        )
        .context("the SII client")?;
        let broker = Broker::new(common.amqp_url.expose(), &common.amqp_exchange);
        let mut subscription =
            Subscription::for_role(&common.amqp_queue_prefix, "dte", events::SUBSCRIBED);
        subscription.expires = common.amqp_queue_expires;
        subscription.quorum = common.amqp_quorum_queues;
        let mailer = settings
            .mail
            .clone()
            .map(|m| mail::Mailer::new(pool.clone(), m))
            .transpose()?;
        let intake = settings
            .intake
            .clone()
            .map(|i| {
                intake::Intake::new(pool.clone(), settings.issuer.clone(), identity.clone(), i)
            })
            .transpose()?;
        let grpc_listener = platform::config::bind(settings.grpc_addr, "DTE_GRPC_ADDR").await?;
        let admin_listener = platform::config::bind(settings.admin_addr, "DTE_ADMIN_ADDR").await?;
        let sii = Arc::new(sii);
        Ok(Self {
            registry: sii.clone(),
            sii,
            sii_worker: settings.sii_worker,
            issuing: Arc::new(Issuing::new(pool, settings.issuer, identity, clock)),
            broker,
            subscription,
            grpc_listener,
            admin_listener,
            internal_key,
            grpc_tls: common.grpc_tls.clone(),
            retention: common.retention,
            folios_low: settings.folios_low,
            mailer,
            intake,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The pool, for tests and tooling.
    pub fn pool(&self) -> &PgPool {
        &self.issuing.pool
    }

    /// The company the documents are issued by.
    pub fn issuer(&self) -> &Issuer {
        &self.issuing.issuer
    }

    /// Readiness: Postgres answers.
    pub fn readiness(&self) -> Readiness {
        let pool = self.issuing.pool.clone();
        Readiness::new().with_postgres("dte.postgres", pool)
    }

    /// Serves gRPC and admin, consumes `order.paid` / `payment.refunded`, issues documents
    /// left waiting, sends documents to the SII and follows them, and relays the outbox,
    /// until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let pool = self.issuing.pool.clone();
        // Stops by itself on shutdown.
        tokio::spawn(self.retention.run(pool.clone(), shutdown.clone()));
        let issuer = tokio::spawn(
            self.issuing
                .clone()
                .run_issuer(self.sii_worker.poll_interval, shutdown.clone()),
        );
        let readiness = self.readiness();
        let consumer = tokio::spawn(platform::amqp::consumer::run(
            pool.clone(),
            self.broker.clone(),
            self.subscription,
            Arc::new(events::DocumentHandler {
                issuing: self.issuing.clone(),
            }),
            shutdown.clone(),
        ));
        let submission = tokio::spawn(sii::worker::run(
            self.issuing.clone(),
            self.sii,
            self.sii_worker,
            shutdown.clone(),
        ));
        let relay = tokio::spawn(
            outbox::OutboxRelay::for_role("dte", pool, self.broker).run(shutdown.clone()),
        );
        // Stops by itself on shutdown.
        if let Some(mailer) = self.mailer {
            tokio::spawn(mailer.run(shutdown.clone()));
        }
        if let Some(intake) = self.intake {
            tokio::spawn(intake.run(shutdown.clone()));
        }
        tokio::spawn(received::watch_deadlines(
            self.issuing.pool.clone(),
            self.registry.clone(),
            std::time::Duration::from_secs(60),
            shutdown.clone(),
        ));
        let server = GrpcServer {
            readiness,
            grpc: self.grpc_listener,
            admin: self.admin_listener,
            key: self.internal_key,
            tls: self.grpc_tls,
        };
        let service = proto::dte::v1::dte_service_server::DteServiceServer::new(
            grpc::DteGrpc::new(self.issuing, self.folios_low, self.registry),
        );
        server
            .serve(service, shutdown)
            .await
            .context("DTE gRPC server")?;
        consumer.await??;
        issuer.await??;
        submission.await??;
        relay.await?
    }
}
