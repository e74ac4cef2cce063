//! `spawn_app()`: the catalog on port 0 with a fresh database, its own Redis prefix, its
//! own exchange and queue names.

use std::collections::HashMap;

use catalog::{CatalogApp, CatalogSettings};
use platform::{
    CancellationToken,
    config::{CommonSettings, Reader},
    grpc::{ROLES_HEADER, USER_ID_HEADER},
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

pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let database_url = platform::testing::fresh_database().await.unwrap();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("test:{tag}:");
    let exchange = format!("test.{tag}.events");
    let queue_prefix = format!("test.{tag}.");
    let redis_url = platform::testing::redis_url();
    let mut env: HashMap<&str, &str> = HashMap::from([
        ("DATABASE_URL", database_url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("AMQP_EXCHANGE", exchange.as_str()),
        ("AMQP_QUEUE_PREFIX", queue_prefix.as_str()),
        ("CATALOG_GRPC_ADDR", "127.0.0.1:0"),
        ("CATALOG_ADMIN_ADDR", "127.0.0.1:0"),
        ("SEED_DEMO_DATA", "false"),
        ("AMQP_QUEUE_EXPIRES", "60s"),
    ]);
    env.extend(extra.iter().copied());
    let r = Reader::new(&env);
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
        exchange,
        queue: format!("{queue_prefix}catalog"),
        shutdown,
    }
}

pub fn as_admin<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        USER_ID_HEADER,
        uuid::Uuid::now_v7().to_string().parse().unwrap(),
    );
    request
        .metadata_mut()
        .insert(ROLES_HEADER, "customer,admin".parse().unwrap());
    request
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
