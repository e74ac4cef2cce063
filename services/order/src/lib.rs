//! Orders, event-sourced.
//!
//! Owns the `orders` schema. Layout:
//! - [`event_store`]: optimistic-concurrency appends, snapshots, and a global reader that
//!   never skips a late-committing event;
//! - [`domain`]: the aggregate's rules (events, states, legal transitions, totals,
//!   factura buyer validation), no I/O;
//! - [`commands`]: load → decide → append, retried on conflict;
//! - [`grpc`]: the API (places orders through the catalog's reservation);
//! - [`events`]: reactions to payment and DTE events; [`expiry`]: unpaid orders expire;
//! - [`relay`]: the event store is the outbox, published in order with confirms;
//! - [`projector`]: the singleton read-model projector and its rebuild;
//! - [`restore`]: restore drills of event-store dumps.
#![forbid(unsafe_code)]

pub mod commands;
pub mod domain;
pub mod event_store;
pub mod events;
pub mod expiry;
pub mod grpc;
pub mod projector;
pub mod relay;
pub mod restore;
pub mod sweeper;
pub mod versions;
pub mod watch;

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

/// The embedded migrations of the `orders` schema.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema the order service owns.
pub const SCHEMA: &str = "orders";

/// Opens the `orders` schema, migrated, with the inbox its consumer needs.
pub async fn open_database(database_url: &str) -> anyhow::Result<PgPool> {
    let pool = platform::db::open(database_url, SCHEMA, &MIGRATOR).await?;
    outbox::install(&pool).await?;
    Ok(pool)
}

/// The order service's own settings.
#[derive(Debug, Clone)]
pub struct OrderSettings {
    /// `ORDER_GRPC_ADDR`: where the gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// `ORDER_ADMIN_ADDR`: health and metrics.
    pub admin_addr: SocketAddr,
    /// `ORDER_CATALOG_URL`: the catalog's gRPC URL (reservations).
    pub catalog_url: String,
    /// `ORDER_CATALOG_TIMEOUT`: deadline of one catalog call (retried twice).
    pub catalog_timeout: Duration,
    /// `ORDER_PAYMENT_TIMEOUT`: how long an unpaid order keeps its stock.
    pub payment_timeout: Duration,
    /// `ORDER_EXPIRY_INTERVAL`: how often unpaid orders past their deadline are looked for.
    pub expiry_interval: Duration,
    /// `SNAPSHOT_INTERVAL`: snapshot an order every this many events.
    pub snapshot_interval: i64,
    /// `ORDER_MAX_PROJECTION_LAG`: readiness fails while the read model is further behind.
    pub max_projection_lag: i64,
    /// `ORDER_PROJECTOR_ADMIN_ADDR`: health and metrics of `orderflow order-projector`.
    pub projector_admin_addr: SocketAddr,
    /// `ORDER_RESERVATION_GRACE`: how old a held reservation must be before the sweeper
    /// checks that its order was recorded (at least the placement deadline, 30 s).
    pub reservation_grace: Duration,
    /// `ORDER_RESERVATION_SWEEP_INTERVAL`: how often the sweeper looks.
    pub reservation_sweep_interval: Duration,
    /// `ORDER_WATCH_MAX_WAIT`: the longest a `GetOrder` with `wait_for` waits.
    pub watch_max_wait: Duration,
    /// `ORDER_WATCH_PER_USER`: how many such waits a user may hold at once.
    pub watch_per_user: usize,
}

impl OrderSettings {
    /// Reads the order service's settings.
    pub fn from_source(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let snapshot_interval: i64 = r.parse("SNAPSHOT_INTERVAL", 100)?;
        if snapshot_interval < 1 {
            return Err(ConfigError {
                key: "SNAPSHOT_INTERVAL".into(),
                problem: "must be at least 1".into(),
            });
        }
        let reservation_grace = r.duration("ORDER_RESERVATION_GRACE", Duration::from_secs(120))?;
        if reservation_grace < sweeper::PLACE_DEADLINE {
            return Err(ConfigError {
                key: "ORDER_RESERVATION_GRACE".into(),
                problem: format!(
                    "must be at least {} s, the longest a placement may take",
                    sweeper::PLACE_DEADLINE.as_secs()
                ),
            });
        }
        Ok(Self {
            reservation_grace,
            reservation_sweep_interval: r
                .duration("ORDER_RESERVATION_SWEEP_INTERVAL", Duration::from_secs(60))?,
            watch_max_wait: r.duration("ORDER_WATCH_MAX_WAIT", Duration::from_secs(25))?,
            watch_per_user: r.parse("ORDER_WATCH_PER_USER", 4)?,
            grpc_addr: r.parse("ORDER_GRPC_ADDR", SocketAddr::from(([0, 0, 0, 0], 50053)))?,
            admin_addr: r.parse("ORDER_ADMIN_ADDR", SocketAddr::from(([0, 0, 0, 0], 9103)))?,
            catalog_url: r.string("ORDER_CATALOG_URL", "http://127.0.0.1:50052"),
            catalog_timeout: r.duration("ORDER_CATALOG_TIMEOUT", Duration::from_secs(3))?,
            payment_timeout: r.duration("ORDER_PAYMENT_TIMEOUT", Duration::from_secs(15 * 60))?,
            expiry_interval: r.duration("ORDER_EXPIRY_INTERVAL", Duration::from_secs(5))?,
            snapshot_interval,
            max_projection_lag: r.parse("ORDER_MAX_PROJECTION_LAG", 1000)?,
            projector_admin_addr: r.parse(
                "ORDER_PROJECTOR_ADMIN_ADDR",
                SocketAddr::from(([0, 0, 0, 0], 9104)),
            )?,
        })
    }
}

/// Readiness of the `orders` schema: Postgres answers and the read model is at most
/// `max_lag` events behind the store. Also exports the lag and the relay's backlog.
pub fn readiness(pool: &PgPool, max_lag: i64) -> Readiness {
    let pool = pool.clone();
    Readiness::new().with_check("order.projection", move || {
        let pool = pool.clone();
        async move {
            let lag = event_store::lag(&pool, projector::CHECKPOINT)
                .await
                .map_err(|e| format!("{e:#}"))?;
            let backlog = event_store::lag(&pool, relay::CHECKPOINT)
                .await
                .map_err(|e| format!("{e:#}"))?;
            metrics::gauge!("order_projection_lag").set(lag as f64);
            metrics::gauge!("order_outbox_backlog").set(backlog as f64);
            if lag > max_lag {
                Err(format!(
                    "the read model is {lag} events behind (more than {max_lag})"
                ))
            } else {
                Ok(())
            }
        }
    })
}

/// Samples the lag metrics every few seconds (readiness probes also refresh them).
async fn sample_lag(pool: PgPool, shutdown: CancellationToken) -> anyhow::Result<()> {
    while !shutdown.is_cancelled() {
        for (name, gauge) in [
            (projector::CHECKPOINT, "order_projection_lag"),
            (relay::CHECKPOINT, "order_outbox_backlog"),
        ] {
            match event_store::lag(&pool, name).await {
                Ok(lag) => metrics::gauge!(gauge).set(lag as f64),
                Err(e) => tracing::debug!(error = format!("{e:#}"), "cannot sample {gauge}"),
            }
        }
        tokio::select! { _ = tokio::time::sleep(Duration::from_secs(5)) => {}, _ = shutdown.cancelled() => {} }
    }
    Ok(())
}

/// The order service (API, reactions, expiry, relay), built and bound.
pub struct OrderApp {
    state: Arc<grpc::OrderState>,
    settings: OrderSettings,
    broker: Broker,
    subscription: Subscription,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    internal_key: Arc<platform::identity::InternalKey>,
    grpc_tls: Option<platform::tls::GrpcTls>,
    retention: platform::amqp::retention::Retention,
}

impl OrderApp {
    /// Connects, migrates and binds. `clock` is the system clock outside tests.
    pub async fn build(
        common: &CommonSettings,
        settings: OrderSettings,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let internal_key = common.internal_key()?;
        let pool = open_database(common.database_url_for("order").expose()).await?;
        let catalog = platform::tls::endpoint(
            &settings.catalog_url,
            "ORDER_CATALOG_URL",
            common.grpc_tls.as_ref(),
        )?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
        let broker = Broker::new(common.amqp_url.expose(), &common.amqp_exchange);
        let mut subscription =
            Subscription::for_role(&common.amqp_queue_prefix, "order", events::SUBSCRIBED);
        subscription.expires = common.amqp_queue_expires;
        subscription.quorum = common.amqp_quorum_queues;
        let grpc_listener = platform::config::bind(settings.grpc_addr, "ORDER_GRPC_ADDR").await?;
        let admin_listener =
            platform::config::bind(settings.admin_addr, "ORDER_ADMIN_ADDR").await?;
        let state = Arc::new(grpc::OrderState {
            pool,
            catalog: proto::catalog::v1::catalog_service_client::CatalogServiceClient::new(catalog),
            catalog_timeout: settings.catalog_timeout,
            payment_timeout: settings.payment_timeout,
            snapshot_interval: settings.snapshot_interval,
            clock,
            minter: platform::identity::Minter::new(internal_key.clone(), "order"),
            changes: watch::Changes::new(settings.watch_max_wait, settings.watch_per_user),
            broker: broker.clone(),
            work_queues: platform::amqp::SERVICE_QUEUES
                .iter()
                .map(|name| format!("{}{name}", common.amqp_queue_prefix))
                .collect(),
        });
        Ok(Self {
            state,
            settings,
            broker,
            subscription,
            grpc_listener,
            admin_listener,
            internal_key,
            grpc_tls: common.grpc_tls.clone(),
            retention: common.retention,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The pool, for tests and tooling.
    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    /// Readiness: Postgres answers and the read model is not too far behind.
    pub fn readiness(&self) -> Readiness {
        readiness(&self.state.pool, self.settings.max_projection_lag)
    }

    /// Serves gRPC and admin, consumes payment and DTE events, expires unpaid orders and
    /// relays the event store to RabbitMQ, until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let pool = self.state.pool.clone();
        let reactor = Arc::new(events::OrderReactor {
            snapshot_interval: self.settings.snapshot_interval,
            clock: self.state.clock.clone(),
        });
        let workers = [
            tokio::spawn(platform::amqp::consumer::run(
                pool.clone(),
                self.broker.clone(),
                self.subscription,
                reactor,
                shutdown.clone(),
            )),
            tokio::spawn(relay::Relay::new(pool.clone(), self.broker).run(shutdown.clone())),
            tokio::spawn(
                expiry::Expirer {
                    pool: pool.clone(),
                    clock: self.state.clock.clone(),
                    snapshot_interval: self.settings.snapshot_interval,
                    interval: self.settings.expiry_interval,
                }
                .run(shutdown.clone()),
            ),
            tokio::spawn(sample_lag(pool.clone(), shutdown.clone())),
            tokio::spawn(self.retention.run(pool.clone(), shutdown.clone())),
            tokio::spawn({
                let (changes, pool, shutdown) =
                    (self.state.changes.clone(), pool.clone(), shutdown.clone());
                async move {
                    changes.listen(pool, shutdown).await;
                    Ok(())
                }
            }),
            tokio::spawn(
                sweeper::ReservationSweeper {
                    pool: pool.clone(),
                    catalog: self.state.catalog.clone(),
                    minter: self.state.minter.clone(),
                    grace: self.settings.reservation_grace,
                    interval: self.settings.reservation_sweep_interval,
                    timeout: self.settings.catalog_timeout,
                }
                .run(shutdown.clone()),
            ),
        ];
        let server = GrpcServer {
            readiness: readiness(&pool, self.settings.max_projection_lag),
            grpc: self.grpc_listener,
            admin: self.admin_listener,
            key: self.internal_key,
            tls: self.grpc_tls,
        };
        let service = proto::order::v1::order_service_server::OrderServiceServer::new(
            grpc::OrderGrpc::new(self.state),
        );
        server
            .serve(service, shutdown)
            .await
            .context("order gRPC server")?;
        for worker in workers {
            worker.await??;
        }
        Ok(())
    }
}

/// `orderflow order-projector`: the read-model projector (one active per database) with
/// its own admin endpoint.
pub struct ProjectorApp {
    projector: projector::Projector,
    pool: PgPool,
    admin_listener: TcpListener,
}

impl ProjectorApp {
    /// Connects, migrates and binds the admin port.
    pub async fn build(common: &CommonSettings, settings: &OrderSettings) -> anyhow::Result<Self> {
        let pool = open_database(common.database_url_for("order").expose()).await?;
        Ok(Self {
            projector: projector::Projector::new(pool.clone()),
            pool,
            admin_listener: platform::config::bind(
                settings.projector_admin_addr,
                "ORDER_PROJECTOR_ADMIN_ADDR",
            )
            .await?,
        })
    }

    /// Projects (or stands by) and serves health until `shutdown`. Ready when Postgres
    /// answers: a standby is healthy, it is waiting its turn.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let pool = self.pool.clone();
        let readiness = Readiness::new().with_postgres("order-projector.postgres", pool);
        let admin = tokio::spawn(platform::admin::serve(
            self.admin_listener,
            readiness,
            shutdown.clone(),
        ));
        self.projector.run(shutdown).await?;
        admin.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_grace_shorter_than_a_placement_is_refused_naming_it() {
        let src: std::collections::HashMap<&str, &str> =
            [("ORDER_RESERVATION_GRACE", "10s")].into_iter().collect();
        let err = OrderSettings::from_source(&Reader::new(&src)).unwrap_err();
        assert_eq!(err.key, "ORDER_RESERVATION_GRACE");
        let src: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        let settings = OrderSettings::from_source(&Reader::new(&src)).unwrap();
        assert_eq!(settings.reservation_grace, Duration::from_secs(120));
    }
}
