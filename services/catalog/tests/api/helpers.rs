//! `spawn_app()`: the catalog on port 0 in an isolated test environment.

use catalog::{CatalogApp, CatalogSettings};
use platform::{
    CancellationToken,
    config::{CommonSettings, Reader},
    testing::TestEnv,
};
use proto::catalog::v1::{
    CreateProductRequest, Product, catalog_service_client::CatalogServiceClient,
};
use sqlx::PgPool;
use tonic::transport::Channel;

pub struct TestApp {
    pub client: CatalogServiceClient<Channel>,
    pub pool: PgPool,
    pub exchange: String,
    pub queue: String,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let env = TestEnv::isolated()
        .await
        .unwrap()
        .with(&[("SEED_DEMO_DATA", "false")])
        .with(overrides);
    let r = Reader::new(&env.vars);
    let app = CatalogApp::build(
        &CommonSettings::from_source(&r).unwrap(),
        CatalogSettings::from_source(&r).unwrap(),
    )
    .await
    .unwrap();
    let addr = app.grpc_addr();
    let pool = app.pool().clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    TestApp {
        client: CatalogServiceClient::new(channel),
        pool,
        exchange: env.get("AMQP_EXCHANGE").to_string(),
        queue: format!("{}catalog", env.get("AMQP_QUEUE_PREFIX")),
        shutdown,
    }
}

pub fn as_admin<T>(message: T) -> tonic::Request<T> {
    platform::testing::as_caller(
        message,
        "orderflow.catalog.v1.CatalogService",
        &uuid::Uuid::now_v7().to_string(),
        "customer,admin",
    )
}

impl TestApp {
    pub async fn create(&self, sku: &str, name: &str, net_price: i64, on_hand: i64) -> Product {
        self.client
            .clone()
            .create_product(as_admin(CreateProductRequest {
                sku: sku.into(),
                name: name.into(),
                description: format!("{name}, descripción"),
                category: "Test".into(),
                net_price,
                exempt: false,
                on_hand,
            }))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn stock(&self, sku: &str) -> (i64, i64) {
        sqlx::query_as("SELECT on_hand, reserved FROM products WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}
