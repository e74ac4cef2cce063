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
    /// `PAYMENT_PROVIDER`: `sandbox` (the only built-in processor).
    pub provider: String,
    /// `PAYMENT_PROVIDER_TIMEOUT`: how long one charge may take, retries included.
    pub provider_timeout: Duration,
    /// `PAYMENT_SANDBOX_SLOW_DELAY`: how long the sandbox's slow card takes.
    pub sandbox_slow_delay: Duration,
    /// `PAYMENT_RECONCILE_AFTER`: a payment still `pending` this long is settled from what
    /// the processor says of it (longer than any charge may take).
    pub reconcile_after: Duration,
    /// `PAYMENT_RECONCILE_INTERVAL`: how often pending payments are looked for.
    pub reconcile_interval: Duration,
}

impl PaymentSettings {
    /// Reads the payment service's settings.
    pub fn from_source(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let provider = r.string("PAYMENT_PROVIDER", "sandbox");
        if provider != "sandbox" {
            return Err(ConfigError {
                key: "PAYMENT_PROVIDER".into(),
                problem: format!("{provider:?} is not a known processor (built in: sandbox)"),
            });
        }
        let provider_timeout = r.duration("PAYMENT_PROVIDER_TIMEOUT", Duration::from_secs(10))?;
        let reconcile_after = r.duration("PAYMENT_RECONCILE_AFTER", Duration::from_secs(120))?;
        if reconcile_after <= provider_timeout {
            return Err(ConfigError {
                key: "PAYMENT_RECONCILE_AFTER".into(),
                problem: format!(
                    "must be longer than PAYMENT_PROVIDER_TIMEOUT ({} ms): a charge still in flight must not be reconciled",
                    provider_timeout.as_millis()
                ),
            });
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
        let provider: Arc<dyn provider::PaymentProvider> = Arc::new(provider::SandboxProvider {
            slow_delay: settings.sandbox_slow_delay,
            records: Some(pool.clone()),
        });
        let broker = Broker::new(common.amqp_url.expose(), &common.amqp_exchange);
        let mut subscription = Subscription::new(
            &format!("{}payment", common.amqp_queue_prefix),
            events::SUBSCRIBED,
        );
        subscription.expires = common.amqp_queue_expires;
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
        let relay = tokio::spawn(outbox::OutboxRelay::new(pool, self.broker).run(shutdown.clone()));
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
