//! `orderflow all`: every role in one process, each on its own port, still talking real
//! gRPC between them. The end-to-end tests start exactly this.

use std::net::SocketAddr;

use anyhow::Context as _;
use catalog::{CatalogApp, CatalogSettings};
use dte::{DteApp, DteSettings};
use gateway::{Gateway, GatewaySettings};
use iam::{IamApp, IamSettings};
use order::{OrderApp, OrderSettings, ProjectorApp};
use payment::{PaymentApp, PaymentSettings};
use platform::{
    CancellationToken,
    config::{CommonSettings, Reader, Source},
};
use tokio::task::JoinHandle;

/// A running suite.
pub struct Suite {
    /// Where the REST gateway listens.
    pub gateway_addr: SocketAddr,
    /// Where IAM's gRPC API listens.
    pub iam_addr: SocketAddr,
    /// Where the catalog's gRPC API listens (benchmarks compare it with the gateway).
    pub catalog_addr: SocketAddr,
    /// Every service's gRPC address, by the service's full name
    /// (`orderflow.catalog.v1.CatalogService`).
    pub grpc_addrs: std::collections::HashMap<&'static str, SocketAddr>,
    /// IAM's pool (tests inspect and seed through it).
    pub iam_pool: sqlx::PgPool,
    /// The catalog's pool.
    pub catalog_pool: sqlx::PgPool,
    /// The order service's pool.
    pub order_pool: sqlx::PgPool,
    /// The payment service's pool.
    pub payment_pool: sqlx::PgPool,
    /// The DTE service's pool.
    pub dte_pool: sqlx::PgPool,
    /// The local Webpay, when the suite started one: its URL and its fault switches.
    pub webpay_sim: Option<(String, payment::webpay_sim::SimFaults)>,
    shutdown: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

/// In `orderflow all`, a service's listener whose setting `key` is not set listens on
/// `127.0.0.1` (its default port kept) instead of every interface.
pub fn loopback_unless_set(r: &Reader<'_>, key: &str, addr: &mut SocketAddr) {
    if r.optional(key).is_none() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
}

/// `http://127.0.0.1:port` for a listener bound to any interface.
fn loopback_url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    format!("http://{host}:{}", addr.port())
}

impl Suite {
    /// Creates the database if missing, migrates, and starts every role. Stops when
    /// `shutdown` fires.
    pub async fn start(source: &dyn Source, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let r = Reader::new(source);
        let mut common = CommonSettings::from_source(&r)?;
        let mut iam_settings = IamSettings::from_source(&r)?;
        let mut catalog_settings = CatalogSettings::from_source(&r)?;
        let mut order_settings = OrderSettings::from_source(&r)?;
        let mut payment_settings = PaymentSettings::from_source(&r)?;
        let mut dte_settings = DteSettings::from_source(&r)?;
        let mut gateway_settings = GatewaySettings::from_source(&r)?;

        // The roles of one process share one internal key; without a configured one, a
        // fresh key for this run (nothing outside the process needs it).
        if common.internal_key.is_none() {
            common.internal_key = Some(std::sync::Arc::new(
                platform::identity::InternalKey::generate(),
            ));
        }
        gateway_settings.internal_key = common.internal_key.clone();

        // Only the gateway faces the network: the services' gRPC and admin ports listen
        // on loopback unless their setting says otherwise.
        let loopback = loopback_unless_set;
        loopback(&r, "IAM_GRPC_ADDR", &mut iam_settings.grpc_addr);
        loopback(&r, "IAM_ADMIN_ADDR", &mut iam_settings.admin_addr);
        loopback(&r, "CATALOG_GRPC_ADDR", &mut catalog_settings.grpc_addr);
        loopback(&r, "CATALOG_ADMIN_ADDR", &mut catalog_settings.admin_addr);
        loopback(&r, "ORDER_GRPC_ADDR", &mut order_settings.grpc_addr);
        loopback(&r, "ORDER_ADMIN_ADDR", &mut order_settings.admin_addr);
        loopback(
            &r,
            "ORDER_PROJECTOR_ADMIN_ADDR",
            &mut order_settings.projector_admin_addr,
        );
        loopback(&r, "PAYMENT_GRPC_ADDR", &mut payment_settings.grpc_addr);
        loopback(&r, "PAYMENT_ADMIN_ADDR", &mut payment_settings.admin_addr);
        loopback(&r, "DTE_GRPC_ADDR", &mut dte_settings.grpc_addr);
        loopback(&r, "DTE_ADMIN_ADDR", &mut dte_settings.admin_addr);

        for url in common.all_database_urls() {
            platform::db::create_database_if_missing(url.expose()).await?;
        }
        let iam = IamApp::build(&common, iam_settings)
            .await
            .context("starting iam")?;
        if let (Some(email), Some(password)) = (
            r.optional("IAM_BOOTSTRAP_ADMIN_EMAIL"),
            r.optional("IAM_BOOTSTRAP_ADMIN_PASSWORD"),
        ) {
            iam::create_admin(iam.pool(), &email, &password)
                .await
                .context("setting IAM_BOOTSTRAP_ADMIN_EMAIL")?;
            tracing::info!(%email, "bootstrap admin ensured");
        }
        let iam_addr = iam.grpc_addr();
        if r.optional("GATEWAY_IAM_URL").is_none() {
            gateway_settings
                .upstreams
                .insert("iam".into(), loopback_url(iam_addr));
        }
        let catalog = CatalogApp::build(&common, catalog_settings)
            .await
            .context("starting the catalog")?;
        if r.optional("GATEWAY_CATALOG_URL").is_none() {
            gateway_settings
                .upstreams
                .insert("catalog".into(), loopback_url(catalog.grpc_addr()));
        }
        if r.optional("ORDER_CATALOG_URL").is_none() {
            order_settings.catalog_url = loopback_url(catalog.grpc_addr());
        }
        let projector = ProjectorApp::build(&common, &order_settings)
            .await
            .context("starting the order projector")?;
        let order = OrderApp::build(&common, order_settings, platform::clock::Clock::system())
            .await
            .context("starting the order service")?;
        if r.optional("GATEWAY_ORDER_URL").is_none() {
            gateway_settings
                .upstreams
                .insert("order".into(), loopback_url(order.grpc_addr()));
        }
        if r.optional("PAYMENT_ORDER_URL").is_none() {
            payment_settings.order_url = loopback_url(order.grpc_addr());
        }
        // What a newcomer sees is what a Chilean shopper sees: Webpay, unless
        // PAYMENT_PROVIDER says otherwise; and unless a real Webpay is configured, the
        // local simulator, with credentials made up for this run.
        if r.optional("PAYMENT_PROVIDER").is_none() {
            payment_settings.provider = "webpay".into();
            if r.optional("PAYMENT_RECONCILE_AFTER").is_none() {
                payment_settings.reconcile_after = payment::default_reconcile_after("webpay");
            }
        }
        let webpay_simulator = if payment_settings.provider == "webpay"
            && r.optional("WEBPAY_URL").is_none()
            && payment_settings.webpay.environment != "production"
        {
            let webpay = &mut payment_settings.webpay;
            let commerce_code = webpay
                .commerce_code
                .get_or_insert_with(|| "597000000001".into())
                .clone();
            let api_key_secret = webpay
                .api_key_secret
                .get_or_insert_with(|| {
                    platform::config::Secret::new(uuid::Uuid::new_v4().simple().to_string())
                })
                .expose()
                .to_string();
            let simulator = payment::webpay_sim::WebpaySimulator::bind(
                r.parse("WEBPAY_SIM_ADDR", SocketAddr::from(([127, 0, 0, 1], 8091)))?,
                payment::webpay_sim::SimConfig {
                    commerce_code,
                    api_key_secret,
                    form_timeout: r.duration(
                        "WEBPAY_SIM_FORM_TIMEOUT",
                        payment::webpay_sim::DEFAULT_FORM_TIMEOUT,
                    )?,
                },
            )
            .await?;
            webpay.url = simulator.url();
            Some(simulator)
        } else {
            None
        };
        let payment =
            PaymentApp::build(&common, payment_settings, platform::clock::Clock::system())
                .await
                .context("starting the payment service")?;
        if r.optional("GATEWAY_PAYMENT_URL").is_none() {
            gateway_settings
                .upstreams
                .insert("payment".into(), loopback_url(payment.grpc_addr()));
        }
        // Unless a real SII is configured, documents go to the local simulator.
        let sii_simulator = if r.optional("DTE_SII_URL").is_none() {
            let simulator = dte::sii::sim::SiiSimulator::bind(
                r.parse("SII_SIM_ADDR", SocketAddr::from(([127, 0, 0, 1], 8090)))?,
            )
            .await?;
            let url = simulator.url();
            dte_settings.sii = dte::sii::client::SiiEndpoints::at(&url);
            Some(simulator)
        } else {
            None
        };
        let dte = DteApp::build(&common, dte_settings, platform::clock::Clock::system())
            .await
            .context("starting the DTE service")?;
        // Out of the box the suite issues documents: development CAFs (NOT from the SII)
        // for every type that has none, unless DTE_DEVELOPMENT_CAFS=false.
        if r.parse("DTE_DEVELOPMENT_CAFS", true)? {
            dte::load_development_cafs(dte.pool(), dte.issuer())
                .await
                .context("loading development CAFs")?;
        }
        if r.optional("GATEWAY_DTE_URL").is_none() {
            gateway_settings
                .upstreams
                .insert("dte".into(), loopback_url(dte.grpc_addr()));
        }
        let grpc_addrs = std::collections::HashMap::from([
            ("orderflow.iam.v1.IamService", iam.grpc_addr()),
            ("orderflow.catalog.v1.CatalogService", catalog.grpc_addr()),
            ("orderflow.order.v1.OrderService", order.grpc_addr()),
            ("orderflow.payment.v1.PaymentService", payment.grpc_addr()),
            ("orderflow.dte.v1.DteService", dte.grpc_addr()),
        ]);
        let dte_pool = dte.pool().clone();
        let catalog_pool = catalog.pool().clone();
        let catalog_addr = catalog.grpc_addr();
        let iam_pool = iam.pool().clone();
        let order_pool = order.pool().clone();
        let payment_pool = payment.pool().clone();
        let gateway = Gateway::build(gateway_settings)
            .await
            .context("starting the gateway")?
            .with_readiness(iam.readiness())
            .with_readiness(catalog.readiness())
            .with_readiness(order.readiness())
            .with_readiness(payment.readiness())
            .with_readiness(dte.readiness());
        let gateway_addr = gateway.local_addr();

        let mut tasks = vec![
            ("iam", tokio::spawn(iam.run_until_stopped(shutdown.clone()))),
            (
                "catalog",
                tokio::spawn(catalog.run_until_stopped(shutdown.clone())),
            ),
            (
                "order",
                tokio::spawn(order.run_until_stopped(shutdown.clone())),
            ),
            (
                "payment",
                tokio::spawn(payment.run_until_stopped(shutdown.clone())),
            ),
            ("dte", tokio::spawn(dte.run_until_stopped(shutdown.clone()))),
            (
                "order-projector",
                tokio::spawn(projector.run_until_stopped(shutdown.clone())),
            ),
            (
                "gateway",
                tokio::spawn(gateway.run_until_stopped(shutdown.clone())),
            ),
        ];
        let webpay_sim = webpay_simulator
            .as_ref()
            .map(|sim| (sim.url(), sim.faults()));
        if let Some(simulator) = webpay_simulator {
            tasks.push((
                "webpay-sim",
                tokio::spawn(simulator.run_until_stopped(shutdown.clone())),
            ));
        }
        if let Some(simulator) = sii_simulator {
            tasks.push((
                "sii-sim",
                tokio::spawn(simulator.run_until_stopped(shutdown.clone())),
            ));
        }
        Ok(Self {
            gateway_addr,
            iam_addr,
            iam_pool,
            catalog_pool,
            catalog_addr,
            grpc_addrs,
            order_pool,
            payment_pool,
            dte_pool,
            webpay_sim,
            shutdown,
            tasks,
        })
    }

    /// Runs until shutdown; if any role fails, stops the others and reports it.
    pub async fn wait(self) -> anyhow::Result<()> {
        let mut first_error = None;
        let (names, handles): (Vec<_>, Vec<_>) = self.tasks.into_iter().unzip();
        let mut pending: Vec<_> = handles
            .into_iter()
            .zip(names)
            .map(|(h, n)| Box::pin(async move { (n, h.await) }))
            .collect();
        while !pending.is_empty() {
            let ((name, result), _, rest) = futures::future::select_all(pending).await;
            pending = rest;
            let outcome = match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.context(format!("{name} stopped"))),
                Err(e) => Err(anyhow::anyhow!("{name} panicked: {e}")),
            };
            if let Err(e) = outcome {
                tracing::error!(error = format!("{e:#}"), "role failed: stopping the suite");
                self.shutdown.cancel();
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops every role and waits for them to drain.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orderflow_all_puts_the_services_on_loopback_unless_told_otherwise() {
        let empty: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        let r = Reader::new(&empty);
        // Each service's own default (what a container needs)...
        let catalog = CatalogSettings::from_source(&r).unwrap();
        assert!(catalog.grpc_addr.ip().is_unspecified());
        // ...becomes loopback in `all`, on the same port.
        let mut addr = catalog.grpc_addr;
        loopback_unless_set(&r, "CATALOG_GRPC_ADDR", &mut addr);
        assert_eq!(addr, "127.0.0.1:50052".parse().unwrap());
        // An explicit setting is kept as given.
        let set: std::collections::HashMap<&str, &str> = [("CATALOG_GRPC_ADDR", "0.0.0.0:50052")]
            .into_iter()
            .collect();
        let r = Reader::new(&set);
        let mut addr = CatalogSettings::from_source(&r).unwrap().grpc_addr;
        loopback_unless_set(&r, "CATALOG_GRPC_ADDR", &mut addr);
        assert!(addr.ip().is_unspecified());
    }
}
