//! Catalog: products, stock and reservations.
//!
//! Owns the `catalog` schema: products (SKU, name, description, category, net price in
//! CLP, exempt flag, stock on hand and reserved), and reservations per order. Product
//! reads are cached in Redis; reservations are all-or-nothing guarded updates that never
//! oversell; `order.paid` / `order.cancelled` events settle them.
//!
//! Layout: [`domain`] (rules) → [`store`] (SQL) → [`cache`] (Redis) → [`grpc`] (adapter)
//! and [`events`] (consumer); [`seed`] is the demo catalog; this file wires and runs.
#![forbid(unsafe_code)]

pub mod cache;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod seed;
pub mod store;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use platform::{
    CancellationToken,
    admin::Readiness,
    amqp::{Broker, consumer::Subscription, outbox},
    config::{CommonSettings, ConfigError, Reader},
    grpc_server::GrpcServer,
    redis::RedisHandle,
};
use sqlx::PgPool;
use tokio::net::TcpListener;

/// The embedded migrations of the `catalog` schema.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema the catalog owns.
pub const SCHEMA: &str = "catalog";

/// The catalog's own settings.
#[derive(Debug, Clone)]
pub struct CatalogSettings {
    /// `CATALOG_GRPC_ADDR`: where the gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// `CATALOG_ADMIN_ADDR`: health and metrics.
    pub admin_addr: SocketAddr,
    /// `CATALOG_CACHE_TTL`: how long a cached product or first page may live.
    pub cache_ttl: Duration,
    /// `SEED_DEMO_DATA`: load the demo catalog when the catalog is empty at start.
    pub seed_demo_data: bool,
}

impl CatalogSettings {
    /// Reads the catalog's settings.
    pub fn from_source(r: &Reader<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            grpc_addr: r.parse("CATALOG_GRPC_ADDR", SocketAddr::from(([0, 0, 0, 0], 50052)))?,
            admin_addr: r.parse("CATALOG_ADMIN_ADDR", SocketAddr::from(([0, 0, 0, 0], 9102)))?,
            cache_ttl: r.duration("CATALOG_CACHE_TTL", Duration::from_secs(60))?,
            seed_demo_data: r.parse("SEED_DEMO_DATA", true)?,
        })
    }
}

/// What the handlers share.
pub struct CatalogState {
    /// The catalog schema.
    pub pool: PgPool,
    /// Product cache.
    pub cache: cache::ProductCache,
}

/// Opens the catalog schema, migrated, with the inbox table the consumer needs.
pub async fn open_database(common: &CommonSettings) -> anyhow::Result<PgPool> {
    let pool =
        platform::db::open(common.database_url_for(SCHEMA).expose(), SCHEMA, &MIGRATOR).await?;
    outbox::install(&pool).await?;
    Ok(pool)
}

/// The catalog, built and bound.
pub struct CatalogApp {
    state: Arc<CatalogState>,
    broker: Broker,
    subscription: Subscription,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    internal_key: Arc<platform::identity::InternalKey>,
    grpc_tls: Option<platform::tls::GrpcTls>,
    retention: platform::amqp::retention::Retention,
}

impl CatalogApp {
    /// Connects, migrates, seeds an empty catalog when asked, and binds.
    pub async fn build(common: &CommonSettings, settings: CatalogSettings) -> anyhow::Result<Self> {
        let internal_key = common.internal_key()?;
        let pool = open_database(common).await?;
        if settings.seed_demo_data && store::is_empty(&pool).await? {
            let added = seed::seed_demo(&pool).await?;
            tracing::info!(
                added,
                "empty catalog: loaded the demo products (SEED_DEMO_DATA=false to skip)"
            );
        }
        let redis = RedisHandle::new(common.redis_url.expose(), &common.redis_key_prefix)?;
        let cache = cache::ProductCache::new(redis, settings.cache_ttl);
        let broker = Broker::new(common.amqp_url.expose(), &common.amqp_exchange);
        let mut subscription =
            Subscription::for_role(&common.amqp_queue_prefix, "catalog", events::SUBSCRIBED);
        subscription.expires = common.amqp_queue_expires;
        subscription.quorum = common.amqp_quorum_queues;
        let grpc_listener = platform::config::bind(settings.grpc_addr, "CATALOG_GRPC_ADDR").await?;
        let admin_listener =
            platform::config::bind(settings.admin_addr, "CATALOG_ADMIN_ADDR").await?;
        Ok(Self {
            state: Arc::new(CatalogState { pool, cache }),
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

    /// The pool, for tests and tooling.
    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    /// Readiness: Postgres answers. (Redis is optional: reads fall back to Postgres.)
    pub fn readiness(&self) -> Readiness {
        let pool = self.state.pool.clone();
        Readiness::new().with_postgres("catalog.postgres", pool)
    }

    /// Serves gRPC and admin, and consumes order events, until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // Stops by itself on shutdown.
        tokio::spawn(
            self.retention
                .run(self.state.pool.clone(), shutdown.clone()),
        );
        let readiness = self.readiness();
        let settler = Arc::new(events::ReservationSettler {
            pool: self.state.pool.clone(),
            cache: self.state.cache.clone(),
        });
        let consumer = tokio::spawn(platform::amqp::consumer::run(
            self.state.pool.clone(),
            self.broker,
            self.subscription,
            settler,
            shutdown.clone(),
        ));
        let server = GrpcServer {
            readiness,
            grpc: self.grpc_listener,
            admin: self.admin_listener,
            key: self.internal_key,
            tls: self.grpc_tls,
        };
        let service = proto::catalog::v1::catalog_service_server::CatalogServiceServer::new(
            grpc::CatalogGrpc::new(self.state),
        );
        server
            .serve(service, shutdown)
            .await
            .context("catalog gRPC server")?;
        consumer.await?
    }
}
