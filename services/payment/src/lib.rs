//! Payments.
//!
//! Owns the `payment` schema. A payment asks the order service for the amount due (a
//! client-sent amount is never trusted), claims the customer's idempotency key, records a
//! `pending` payment (at most one pending or captured per order, enforced by a unique
//! index, so concurrent attempts are refused before any charge), asks the card processor
//! ([`provider::PaymentProvider`]; the sandbox is built in), and settles the payment and
//! its outbox event (`payment.captured` / `payment.failed`) in one transaction. Refunds
//! (admin) never exceed what was captured and publish `payment.refunded`. A capture that
//! races the order's cancellation is refunded automatically ([`events`]).
//!
//! Layout: [`card`] (checks) → [`provider`] → [`ledger`] (SQL + outbox) → [`grpc`];
//! [`events`] consumes `order.cancelled`; this file wires and runs.
#![forbid(unsafe_code)]

pub mod card;
pub mod events;
pub mod grpc;
pub mod ledger;
pub mod provider;
pub mod reconciler;
pub mod webpay;
pub mod webpay_sim;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use platform::{
    CancellationToken,
    admin::Readiness,
    amqp::{Broker, consumer::Subscription, outbox},
    clock::Clock,
    config::{CommonSettings, ConfigError, Reader},
    grpc_server::GrpcServer,
};
use sqlx::PgPool;
use tokio::net::TcpListener;

/// The embedded migrations of the `payment` schema.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema the payment service owns.
pub const SCHEMA: &str = "payment";

/// Opens the `payment` schema, migrated, with its outbox and inbox.
pub async fn open_database(database_url: &str) -> anyhow::Result<PgPool> {
    let pool = platform::db::open(database_url, SCHEMA, &MIGRATOR).await?;
    outbox::install(&pool).await?;
    Ok(pool)
}

/// The payment service's settings.
#[derive(Debug, Clone)]
pub struct PaymentSettings {
    /// `PAYMENT_GRPC_ADDR`.
    pub grpc_addr: SocketAddr,
    /// `PAYMENT_ADMIN_ADDR`: health and metrics.
    pub admin_addr: SocketAddr,
    /// `PAYMENT_ORDER_URL`: the order service's gRPC URL.
    pub order_url: String,
    /// `PAYMENT_ORDER_TIMEOUT`: deadline of one order-service call.
    pub order_timeout: Duration,
    /// `PAYMENT_PROVIDER`: `sandbox` (the card flow, built in) or `webpay` (Webpay Plus,
    /// the redirect flow).
    pub provider: String,
    /// `PAYMENT_PROVIDER_TIMEOUT`: how long one charge may take, retries included.
    pub provider_timeout: Duration,
    /// `PAYMENT_SANDBOX_SLOW_DELAY`: how long the sandbox's slow card takes.
    pub sandbox_slow_delay: Duration,
    /// `PAYMENT_RECONCILE_AFTER`: a payment still `pending` this long is settled from what
    /// the processor says of it (longer than any charge may take; with Webpay, longer
    /// than Webpay's payment form waits for the shopper).
    pub reconcile_after: Duration,
    /// `PAYMENT_RECONCILE_INTERVAL`: how often pending payments are looked for.
    pub reconcile_interval: Duration,
    /// Webpay Plus, when it is the processor.
    pub webpay: WebpaySettings,
    /// `PUBLIC_BASE_URL`: where browsers reach the gateway (Webpay's return URL, the
    /// storefront's order page).
    pub public_base_url: String,
}

/// Webpay Plus's settings.
#[derive(Debug, Clone)]
pub struct WebpaySettings {
    /// `WEBPAY_ENVIRONMENT`: `integration` (Transbank's test environment, the default) or
    /// `production`.
    pub environment: String,
    /// `WEBPAY_URL`: scheme and host of the API; by default the environment's
    /// (`orderflow all` points it at its simulator unless it is set).
    pub url: String,
    /// `WEBPAY_COMMERCE_CODE`: the código de comercio (`Tbk-Api-Key-Id`).
    pub commerce_code: Option<String>,
    /// `WEBPAY_API_KEY_SECRET`: the `Tbk-Api-Key-Secret`.
    pub api_key_secret: Option<platform::config::Secret>,
    /// `WEBPAY_TIMEOUT`: deadline of one call to Webpay.
    pub request_timeout: Duration,
}

/// Transbank's published integration commerce codes all start so; production refuses them.
const INTEGRATION_COMMERCE_CODES: &str = "5970555555";

/// The default of `PAYMENT_RECONCILE_AFTER` for a processor: Webpay's form keeps a
/// shopper up to several minutes, so a pending Webpay payment is left alone for 15.
pub fn default_reconcile_after(provider: &str) -> Duration {
    if provider == "webpay" {
        Duration::from_secs(15 * 60)
    } else {
        Duration::from_secs(120)
    }
}

impl PaymentSettings {
    /// Reads the payment service's settings.
    pub fn from_source(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let provider = r.string("PAYMENT_PROVIDER", "sandbox");
        if provider != "sandbox" && provider != "webpay" {
            return Err(ConfigError {
                key: "PAYMENT_PROVIDER".into(),
                problem: format!("{provider:?} is not a known processor (sandbox or webpay)"),
            });
        }
        let provider_timeout = r.duration("PAYMENT_PROVIDER_TIMEOUT", Duration::from_secs(10))?;
        let reconcile_after = r.duration(
            "PAYMENT_RECONCILE_AFTER",
            default_reconcile_after(&provider),
        )?;
        if reconcile_after <= provider_timeout {
            return Err(ConfigError {
                key: "PAYMENT_RECONCILE_AFTER".into(),
                problem: format!(
                    "must be longer than PAYMENT_PROVIDER_TIMEOUT ({} ms): a charge still in flight must not be reconciled",
                    provider_timeout.as_millis()
                ),
            });
        }
        let environment = r.string("WEBPAY_ENVIRONMENT", "integration");
        let default_url = match environment.as_str() {
            "integration" => webpay::INTEGRATION_URL,
            "production" => webpay::PRODUCTION_URL,
            other => {
                return Err(ConfigError {
                    key: "WEBPAY_ENVIRONMENT".into(),
                    problem: format!("{other:?} is neither integration nor production"),
                });
            }
        };
        let webpay = WebpaySettings {
            url: r.string("WEBPAY_URL", default_url),
            commerce_code: r.optional("WEBPAY_COMMERCE_CODE"),
            api_key_secret: r
                .optional("WEBPAY_API_KEY_SECRET")
                .map(platform::config::Secret::new),
            request_timeout: r.duration("WEBPAY_TIMEOUT", Duration::from_secs(10))?,
            environment,
        };
        let public_base_url = r
            .string("PUBLIC_BASE_URL", "http://localhost:8080")
            .trim_end_matches('/')
            .to_string();
        if !public_base_url.starts_with("http://") && !public_base_url.starts_with("https://") {
            return Err(ConfigError {
                key: "PUBLIC_BASE_URL".into(),
                problem: "must be an http:// or https:// URL (where browsers reach the gateway)"
                    .into(),
            });
        }
        if provider == "webpay" && webpay.environment == "production" {
            webpay.production_ready(&public_base_url)?;
        }
        Ok(Self {
            reconcile_after,
            reconcile_interval: r
                .duration("PAYMENT_RECONCILE_INTERVAL", Duration::from_secs(30))?,
            grpc_addr: r.parse("PAYMENT_GRPC_ADDR", SocketAddr::from(([0, 0, 0, 0], 50054)))?,
            admin_addr: r.parse("PAYMENT_ADMIN_ADDR", SocketAddr::from(([0, 0, 0, 0], 9105)))?,
            order_url: r.string("PAYMENT_ORDER_URL", "http://127.0.0.1:50053"),
            order_timeout: r.duration("PAYMENT_ORDER_TIMEOUT", Duration::from_secs(3))?,
            provider,
            provider_timeout,
            sandbox_slow_delay: r
                .duration("PAYMENT_SANDBOX_SLOW_DELAY", Duration::from_secs(30))?,
            webpay,
            public_base_url,
        })
    }

    /// Webpay's return URL on the gateway.
    pub fn webpay_return_url(&self) -> String {
        format!("{}/v1/payments/webpay/return", self.public_base_url)
    }
}

impl WebpaySettings {
    /// Production takes real money: it needs the shop's own credentials over TLS and a
    /// return URL a shopper's browser can reach over HTTPS.
    fn production_ready(&self, public_base_url: &str) -> Result<(), ConfigError> {
        let fail = |key: &str, problem: &str| {
            Err(ConfigError {
                key: key.into(),
                problem: problem.into(),
            })
        };
        match &self.commerce_code {
            None => {
                return fail(
                    "WEBPAY_COMMERCE_CODE",
                    "is required in production: the shop's código de comercio from Transbank",
                );
            }
            Some(code) if code.starts_with(INTEGRATION_COMMERCE_CODES) => {
                return fail(
                    "WEBPAY_COMMERCE_CODE",
                    "is one of Transbank's integration (test) codes; production needs the shop's own",
                );
            }
            Some(_) => {}
        }
        if self.api_key_secret.is_none() {
            return fail(
                "WEBPAY_API_KEY_SECRET",
                "is required in production: the shop's secret key from Transbank",
            );
        }
        if !self.url.starts_with("https://") {
            return fail("WEBPAY_URL", "must be https:// in production");
        }
        if !public_base_url.starts_with("https://") {
            return fail(
                "PUBLIC_BASE_URL",
                "must be https:// in production (Webpay returns the shopper's browser there)",
            );
        }
        Ok(())
    }

    /// The client's configuration; the credentials are required.
    pub fn config(&self) -> Result<webpay::WebpayConfig, ConfigError> {
        let commerce_code = self.commerce_code.clone().ok_or_else(|| ConfigError {
            key: "WEBPAY_COMMERCE_CODE".into(),
            problem: "is required with PAYMENT_PROVIDER=webpay (Transbank's código de comercio)"
                .into(),
        })?;
        let api_key_secret = self.api_key_secret.clone().ok_or_else(|| ConfigError {
            key: "WEBPAY_API_KEY_SECRET".into(),
            problem: "is required with PAYMENT_PROVIDER=webpay (Transbank's Tbk-Api-Key-Secret)"
                .into(),
        })?;
        Ok(webpay::WebpayConfig {
            base_url: self.url.clone(),
            commerce_code,
            api_key_secret: api_key_secret.expose().to_string(),
            request_timeout: self.request_timeout,
        })
    }
}

/// The payment service, built and bound.
pub struct PaymentApp {
    state: Arc<grpc::PaymentState>,
    broker: Broker,
    subscription: Subscription,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    internal_key: Arc<platform::identity::InternalKey>,
    grpc_tls: Option<platform::tls::GrpcTls>,
    retention: platform::amqp::retention::Retention,
    reconcile_after: Duration,
    reconcile_interval: Duration,
}

impl PaymentApp {
    /// Connects, migrates and binds.
    pub async fn build(
        common: &CommonSettings,
        settings: PaymentSettings,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let internal_key = common.internal_key()?;
        let pool = open_database(common.database_url_for(SCHEMA).expose()).await?;
        let orders = platform::tls::endpoint(
            &settings.order_url,
            "PAYMENT_ORDER_URL",
            common.grpc_tls.as_ref(),
        )?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
        let provider: Arc<dyn provider::PaymentProvider> = if settings.provider == "webpay" {
            let config = settings.webpay.config().map_err(anyhow::Error::new)?;
            Arc::new(webpay::WebpayPlus::new(config)?)
        } else {
            Arc::new(provider::SandboxProvider {
                slow_delay: settings.sandbox_slow_delay,
                records: Some(pool.clone()),
            })
        };
        let broker = Broker::new(common.amqp_url.expose(), &common.amqp_exchange);
        let mut subscription =
            Subscription::for_role(&common.amqp_queue_prefix, "payment", events::SUBSCRIBED);
        subscription.expires = common.amqp_queue_expires;
        subscription.quorum = common.amqp_quorum_queues;
        let grpc_listener = platform::config::bind(settings.grpc_addr, "PAYMENT_GRPC_ADDR").await?;
        let admin_listener =
            platform::config::bind(settings.admin_addr, "PAYMENT_ADMIN_ADDR").await?;
        Ok(Self {
            state: Arc::new(grpc::PaymentState {
                pool,
                provider,
                orders: proto::order::v1::order_service_client::OrderServiceClient::new(orders),
                order_timeout: settings.order_timeout,
                provider_timeout: settings.provider_timeout,
                clock,
                minter: platform::identity::Minter::new(internal_key.clone(), "payment"),
                public_base_url: settings.public_base_url.clone(),
                webpay_return_url: settings.webpay_return_url(),
            }),
            internal_key,
            grpc_tls: common.grpc_tls.clone(),
            retention: common.retention,
            reconcile_after: settings.reconcile_after,
            reconcile_interval: settings.reconcile_interval,
            broker,
            subscription,
            grpc_listener,
            admin_listener,
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
        &self.state.pool
    }

    /// Readiness: Postgres answers.
    pub fn readiness(&self) -> Readiness {
        let pool = self.state.pool.clone();
        Readiness::new().with_postgres("payment.postgres", pool)
    }

    /// Serves gRPC and admin, relays the outbox and consumes `order.cancelled`, until
    /// `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let pool = self.state.pool.clone();
        let readiness = self.readiness();
        let consumer = tokio::spawn(platform::amqp::consumer::run(
            pool.clone(),
            self.broker.clone(),
            self.subscription,
            Arc::new(events::CancellationHandler {
                provider: self.state.provider.clone(),
            }),
            shutdown.clone(),
        ));
        // Stops by itself on shutdown.
        tokio::spawn(self.retention.run(pool.clone(), shutdown.clone()));
        let reconciler = tokio::spawn(
            reconciler::Reconciler {
                pool: pool.clone(),
                provider: self.state.provider.clone(),
                after: self.reconcile_after,
                interval: self.reconcile_interval,
            }
            .run(shutdown.clone()),
        );
        let relay = tokio::spawn(
            outbox::OutboxRelay::for_role("payment", pool, self.broker).run(shutdown.clone()),
        );
        let server = GrpcServer {
            readiness,
            grpc: self.grpc_listener,
            admin: self.admin_listener,
            key: self.internal_key,
            tls: self.grpc_tls,
        };
        let service = proto::payment::v1::payment_service_server::PaymentServiceServer::new(
            grpc::PaymentGrpc::new(self.state),
        );
        server
            .serve(service, shutdown)
            .await
            .context("payment gRPC server")?;
        consumer.await??;
        reconciler.await??;
        relay.await?
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<PaymentSettings, ConfigError> {
        let vars: HashMap<&str, &str> = vars.iter().copied().collect();
        PaymentSettings::from_source(&Reader::new(&vars))
    }

    fn refused_key(vars: &[(&str, &str)]) -> String {
        settings(vars).expect_err("refused").key
    }

    #[test]
    fn production_webpay_refuses_to_start_without_the_shops_own_credentials() {
        let production = [
            ("PAYMENT_PROVIDER", "webpay"),
            ("WEBPAY_ENVIRONMENT", "production"),
            ("PUBLIC_BASE_URL", "https://tienda.example.cl"),
        ];
        assert_eq!(refused_key(&production), "WEBPAY_COMMERCE_CODE");
        let mut with_test_code = production.to_vec();
        with_test_code.push(("WEBPAY_COMMERCE_CODE", "597055555532"));
        assert_eq!(refused_key(&with_test_code), "WEBPAY_COMMERCE_CODE");
        let mut without_secret = production.to_vec();
        without_secret.push(("WEBPAY_COMMERCE_CODE", "597012345678"));
        assert_eq!(refused_key(&without_secret), "WEBPAY_API_KEY_SECRET");
        let mut complete = without_secret.clone();
        complete.push(("WEBPAY_API_KEY_SECRET", "from-the-secret-store"));
        let ok = settings(&complete).unwrap();
        assert_eq!(ok.webpay.url, webpay::PRODUCTION_URL);
        assert_eq!(ok.reconcile_after, Duration::from_secs(15 * 60));
        let mut plain_http = complete.clone();
        plain_http.retain(|(k, _)| *k != "PUBLIC_BASE_URL");
        plain_http.push(("PUBLIC_BASE_URL", "http://tienda.example.cl"));
        assert_eq!(refused_key(&plain_http), "PUBLIC_BASE_URL");
    }

    #[test]
    fn an_unknown_processor_or_environment_is_named() {
        assert_eq!(
            refused_key(&[("PAYMENT_PROVIDER", "stripe")]),
            "PAYMENT_PROVIDER"
        );
        assert_eq!(
            refused_key(&[("WEBPAY_ENVIRONMENT", "staging")]),
            "WEBPAY_ENVIRONMENT"
        );
        // Integration without credentials starts reading settings, and the build names
        // the missing one.
        let integration = settings(&[("PAYMENT_PROVIDER", "webpay")]).unwrap();
        assert_eq!(integration.webpay.url, webpay::INTEGRATION_URL);
        assert_eq!(
            integration.webpay.config().unwrap_err().key,
            "WEBPAY_COMMERCE_CODE"
        );
        assert_eq!(
            integration.webpay_return_url(),
            "http://localhost:8080/v1/payments/webpay/return"
        );
    }
}
