//! Typed settings from environment variables (12-factor).
//!
//! Parsing reads through [`Source`] so tests feed a `HashMap` instead of the process
//! environment. Every error names the variable, so a bad deployment says what to fix.

use std::{collections::HashMap, fmt, str::FromStr, time::Duration};

/// Where settings come from.
pub trait Source {
    /// The raw value of `key`, if set.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

impl Source for HashMap<&str, &str> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).map(|v| v.to_string())
    }
}

/// A setting that is missing or cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("setting {key} {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

/// A value that must never appear in logs or debug output (passwords in URLs, keys).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a sensitive value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself; call only where it is used, never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Reads typed settings from a [`Source`].
pub struct Reader<'a> {
    source: &'a dyn Source,
}

impl<'a> Reader<'a> {
    /// A reader over `source`.
    pub fn new(source: &'a dyn Source) -> Self {
        Self { source }
    }

    fn raw(&self, key: &str) -> Option<String> {
        self.source
            .get(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// A string, or `default` when unset.
    pub fn string(&self, key: &str, default: &str) -> String {
        self.raw(key).unwrap_or_else(|| default.to_string())
    }

    /// A string that must be set.
    pub fn required(&self, key: &str) -> Result<String, ConfigError> {
        self.raw(key).ok_or_else(|| ConfigError {
            key: key.into(),
            problem: "is required but not set".into(),
        })
    }

    /// A string, `None` when unset.
    pub fn optional(&self, key: &str) -> Option<String> {
        self.raw(key)
    }

    /// A sensitive string, or `default` when unset.
    pub fn secret(&self, key: &str, default: &str) -> Secret {
        Secret::new(self.string(key, default))
    }

    /// A parsed value, or `default` when unset.
    pub fn parse<T>(&self, key: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(self.parse_optional(key)?.unwrap_or(default))
    }

    /// A parsed value, `None` when unset.
    pub fn parse_optional<T>(&self, key: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(key) {
            None => Ok(None),
            Some(raw) => raw.parse().map(Some).map_err(|e| ConfigError {
                key: key.into(),
                problem: format!("is malformed ({raw:?}): {e}"),
            }),
        }
    }

    /// A duration written as whole seconds (`900`) or with a unit (`500ms`, `30s`, `15m`, `2h`, `30d`).
    pub fn duration(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some(raw) => parse_duration(&raw).ok_or_else(|| ConfigError {
                key: key.into(),
                problem: format!(
                    "is malformed ({raw:?}): expected e.g. 900, 30s, 15m, 2h, 30d, 500ms"
                ),
            }),
        }
    }
}

/// Binds the listener an address setting names; a failure names the setting
/// (`setting ORDER_GRPC_ADDR: cannot bind 0.0.0.0:50053: address in use`).
pub async fn bind(
    addr: std::net::SocketAddr,
    setting: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context as _;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("setting {setting}: cannot bind {addr}"))
}

/// Parses `900`, `30s`, `15m`, `2h`, `30d` or `500ms`.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        "h" => Some(Duration::from_secs(n * 3600)),
        "d" => Some(Duration::from_secs(n * 86_400)),
        _ => None,
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (development).
    Text,
    /// One JSON object per line (production).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" | "pretty" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("expected \"text\" or \"json\", got {other:?}")),
        }
    }
}

/// The services that own a database (`<SERVICE>_DATABASE_URL`).
pub const DATABASE_SERVICES: &[&str] = &["iam", "catalog", "order", "payment", "dte"];

fn postgres_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(())
    } else {
        Err(ConfigError {
            key: key.into(),
            problem: "is malformed: expected a postgres:// URL".into(),
        })
    }
}

/// Settings every role shares: where the infrastructure is and how to report.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    /// `DATABASE_URL`: the Postgres database; each service uses its own schema in it
    /// unless it has a database of its own (below).
    pub database_url: Secret,
    /// `IAM_DATABASE_URL`, `CATALOG_DATABASE_URL`, `ORDER_DATABASE_URL`,
    /// `PAYMENT_DATABASE_URL`, `DTE_DATABASE_URL`: a service's own database (each falls
    /// back to `DATABASE_URL`), so each can live on its own server.
    pub service_database_urls: HashMap<&'static str, Secret>,
    /// `AMQP_URL`: RabbitMQ.
    pub amqp_url: Secret,
    /// `AMQP_EXCHANGE`: the topic exchange events travel on.
    pub amqp_exchange: String,
    /// `AMQP_QUEUE_PREFIX`: prefixed to every queue a role declares (tests isolate with it).
    pub amqp_queue_prefix: String,
    /// `AMQP_QUEUE_EXPIRES`: when set, queues a role declares are deleted by RabbitMQ after
    /// being unused this long (tests; never in production).
    pub amqp_queue_expires: Option<Duration>,
    /// `AMQP_QUEUE_TYPE`: `quorum` (default: replicated) or `classic` (the end-to-end tests,
    /// which declare hundreds of short-lived queues on one shared broker).
    pub amqp_quorum_queues: bool,
    /// `REDIS_URL`: Redis.
    pub redis_url: Secret,
    /// `REDIS_KEY_PREFIX`: prefixed to every Redis key (tests isolate with it).
    pub redis_key_prefix: String,
    /// `LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
    /// `RUST_LOG`: the tracing filter.
    pub log_filter: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: OTLP/gRPC collector; export is off when unset.
    pub otlp_endpoint: Option<String>,
    /// `DEPLOYMENT_ENVIRONMENT`: where this runs (`development`, `staging`, `production`),
    /// the traces' `deployment.environment.name`.
    pub deployment_environment: String,
    /// `INTERNAL_TOKEN_KEY` (or `INTERNAL_TOKEN_KEY_FILE`): the key every role signs and
    /// verifies internal tokens with. `orderflow all` generates one when unset; separate
    /// role processes must share one.
    pub internal_key: Option<std::sync::Arc<crate::identity::InternalKey>>,
    /// `GRPC_TLS_CA_FILE`, `GRPC_TLS_CERT_FILE`, `GRPC_TLS_KEY_FILE`: mutual TLS between
    /// the roles, off when unset.
    pub grpc_tls: Option<crate::tls::GrpcTls>,
    /// `OUTBOX_RETENTION`, `INBOX_RETENTION`: how long published events and consumed
    /// message ids are kept.
    pub retention: crate::amqp::retention::Retention,
}

impl CommonSettings {
    /// Reads the shared settings; defaults point at localhost.
    pub fn from_source(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let otlp_endpoint = r.optional("OTEL_EXPORTER_OTLP_ENDPOINT");
        if let Some(ep) = &otlp_endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(ConfigError {
                key: "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                problem: format!("is malformed ({ep:?}): expected an http:// or https:// URL"),
            });
        }
        let database_url = r.secret(
            "DATABASE_URL",
            "postgres://postgres:postgres@127.0.0.1:5432/orderflow",
        );
        if !database_url.expose().starts_with("postgres://")
            && !database_url.expose().starts_with("postgresql://")
        {
            return Err(ConfigError {
                key: "DATABASE_URL".into(),
                problem: "is malformed: expected a postgres:// URL".into(),
            });
        }
        let mut service_database_urls = HashMap::new();
        for service in DATABASE_SERVICES {
            let key = format!("{}_DATABASE_URL", service.to_uppercase());
            if let Some(url) = r.optional(&key) {
                postgres_url(&key, &url)?;
                service_database_urls.insert(*service, Secret::new(url));
            }
        }
        Ok(Self {
            database_url,
            service_database_urls,
            amqp_url: r.secret("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            amqp_exchange: r.string("AMQP_EXCHANGE", "orderflow.events"),
            amqp_queue_prefix: r.string("AMQP_QUEUE_PREFIX", ""),
            amqp_queue_expires: match r.optional("AMQP_QUEUE_EXPIRES") {
                Some(_) => Some(r.duration("AMQP_QUEUE_EXPIRES", Duration::ZERO)?),
                None => None,
            },
            amqp_quorum_queues: match r.string("AMQP_QUEUE_TYPE", "quorum").as_str() {
                "quorum" => true,
                "classic" => false,
                other => {
                    return Err(ConfigError {
                        key: "AMQP_QUEUE_TYPE".into(),
                        problem: format!("{other:?} is neither quorum nor classic"),
                    });
                }
            },
            redis_url: r.secret("REDIS_URL", "redis://127.0.0.1:6379/"),
            redis_key_prefix: r.string("REDIS_KEY_PREFIX", "orderflow:"),
            log_format: r.parse("LOG_FORMAT", LogFormat::Text)?,
            log_filter: r.string("RUST_LOG", "info"),
            otlp_endpoint,
            deployment_environment: r.string("DEPLOYMENT_ENVIRONMENT", "development"),
            internal_key: crate::identity::InternalKey::from_settings(r)?,
            grpc_tls: crate::tls::GrpcTls::from_settings(r)?,
            retention: crate::amqp::retention::Retention::from_settings(r)?,
        })
    }

    /// The database of `service` (`iam`, `catalog`, `order`, `payment`, `dte`): its own
    /// `<SERVICE>_DATABASE_URL`, else `DATABASE_URL`.
    pub fn database_url_for(&self, service: &str) -> &Secret {
        self.service_database_urls
            .get(service)
            .unwrap_or(&self.database_url)
    }

    /// Every distinct database the services use (to create them when missing).
    pub fn all_database_urls(&self) -> Vec<&Secret> {
        let mut urls = vec![&self.database_url];
        for url in self.service_database_urls.values() {
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        urls
    }

    /// The internal key, or the error naming `INTERNAL_TOKEN_KEY` when none is set.
    pub fn internal_key(
        &self,
    ) -> Result<std::sync::Arc<crate::identity::InternalKey>, ConfigError> {
        self.internal_key
            .clone()
            .ok_or_else(crate::identity::InternalKey::missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_in_use_is_refused_naming_the_setting() {
        let taken = bind("127.0.0.1:0".parse().unwrap(), "FIRST_ADDR")
            .await
            .unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr, "SECOND_ADDR").await.unwrap_err();
        assert!(
            format!("{err:#}").starts_with(&format!("setting SECOND_ADDR: cannot bind {addr}: ")),
            "{err:#}"
        );
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn defaults_point_at_localhost() {
        let src = map(&[]);
        let s = CommonSettings::from_source(&Reader::new(&src)).unwrap();
        assert!(s.database_url.expose().contains("127.0.0.1:5432"));
        assert!(s.redis_url.expose().contains("127.0.0.1:6379"));
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.otlp_endpoint, None);
    }

    #[test]
    fn a_malformed_setting_is_named_in_the_error() {
        let src = map(&[("LOG_FORMAT", "yaml")]);
        let err = CommonSettings::from_source(&Reader::new(&src)).unwrap_err();
        assert_eq!(err.key, "LOG_FORMAT");
        assert!(err.to_string().contains("LOG_FORMAT"), "{err}");

        let src = map(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]);
        let err = CommonSettings::from_source(&Reader::new(&src)).unwrap_err();
        assert_eq!(err.key, "OTEL_EXPORTER_OTLP_ENDPOINT");

        let src = map(&[("PORT", "eighty")]);
        let err = Reader::new(&src).parse::<u16>("PORT", 80).unwrap_err();
        assert_eq!(err.key, "PORT");
        assert!(err.problem.contains("eighty"));
    }

    #[test]
    fn each_service_may_have_its_own_database_falling_back_to_database_url() {
        let src = map(&[
            ("DATABASE_URL", "postgres://db/shared"),
            ("ORDER_DATABASE_URL", "postgres://orders-server/orders"),
        ]);
        let s = CommonSettings::from_source(&Reader::new(&src)).unwrap();
        assert_eq!(
            s.database_url_for("order").expose(),
            "postgres://orders-server/orders"
        );
        assert_eq!(
            s.database_url_for("catalog").expose(),
            "postgres://db/shared"
        );
        assert_eq!(s.all_database_urls().len(), 2);
        let src = map(&[("PAYMENT_DATABASE_URL", "mysql://payments")]);
        let err = CommonSettings::from_source(&Reader::new(&src)).unwrap_err();
        assert_eq!(err.key, "PAYMENT_DATABASE_URL");
    }

    #[test]
    fn a_missing_required_setting_is_named_in_the_error() {
        let src = map(&[]);
        let err = Reader::new(&src).required("IAM_ADMIN_EMAIL").unwrap_err();
        assert_eq!(
            err.to_string(),
            "setting IAM_ADMIN_EMAIL is required but not set"
        );
    }

    #[test]
    fn durations_accept_units() {
        let src = map(&[
            ("A", "15m"),
            ("B", "900"),
            ("C", "250ms"),
            ("D", "soon"),
            ("F", "30d"),
        ]);
        let r = Reader::new(&src);
        assert_eq!(
            r.duration("A", Duration::ZERO).unwrap(),
            Duration::from_secs(900)
        );
        assert_eq!(
            r.duration("B", Duration::ZERO).unwrap(),
            Duration::from_secs(900)
        );
        assert_eq!(
            r.duration("C", Duration::ZERO).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(r.duration("D", Duration::ZERO).unwrap_err().key, "D");
        assert_eq!(
            r.duration("E", Duration::from_secs(7)).unwrap(),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
