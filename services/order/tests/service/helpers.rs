//! The order service with a real catalog behind it, in an isolated test environment
//! (fresh database, own exchange and queues), with a clock the test moves.

use std::time::Duration;

use catalog::{CatalogApp, CatalogSettings};
use futures::StreamExt as _;
use lapin::{
    Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use order::{OrderApp, OrderSettings};
use platform::{
    CancellationToken,
    amqp::Broker,
    clock::Clock,
    config::{CommonSettings, Reader},
    testing::TestEnv,
};
use prost::Message as _;
use proto::{
    catalog::v1::{CreateProductRequest, catalog_service_client::CatalogServiceClient},
    events::v1::EventEnvelope,
    order::v1::{
        Buyer, Order, OrderLineRequest, PlaceOrderRequest, order_service_client::OrderServiceClient,
    },
};
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;

pub struct TestOrders {
    pub orders: OrderServiceClient<Channel>,
    pub catalog: CatalogServiceClient<Channel>,
    pub pool: PgPool,
    pub catalog_pool: PgPool,
    pub clock: Clock,
    pub env: TestEnv,
    shutdown: CancellationToken,
}

impl Drop for TestOrders {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn customer() -> String {
    Uuid::now_v7().to_string()
}

pub async fn spawn() -> TestOrders {
    spawn_with(&[]).await
}

/// Catalog + order service (API, consumer, relay, expiry; no projector unless a test
/// starts one), `overrides` applied to the order service only.
pub async fn spawn_with(overrides: &[(&str, &str)]) -> TestOrders {
    let env = TestEnv::isolated().await.unwrap().with(&[
        ("SEED_DEMO_DATA", "false"),
        ("ORDER_EXPIRY_INTERVAL", "50ms"),
    ]);
    let r = Reader::new(&env.vars);
    let common = CommonSettings::from_source(&r).unwrap();
    let catalog_app = CatalogApp::build(&common, CatalogSettings::from_source(&r).unwrap())
        .await
        .unwrap();
    let catalog_addr = catalog_app.grpc_addr();
    let catalog_pool = catalog_app.pool().clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(catalog_app.run_until_stopped(shutdown.clone()));

    let catalog_url = format!("http://{catalog_addr}");
    let env = env
        .with(&[("ORDER_CATALOG_URL", catalog_url.as_str())])
        .with(overrides);
    let r = Reader::new(&env.vars);
    let clock = Clock::manual(chrono::Utc::now());
    let app = OrderApp::build(
        &CommonSettings::from_source(&r).unwrap(),
        OrderSettings::from_source(&r).unwrap(),
        clock.clone(),
    )
    .await
    .unwrap();
    let addr = app.grpc_addr();
    let pool = app.pool().clone();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    // Events published from here on reach both services.
    let prefix = env.get("AMQP_QUEUE_PREFIX");
    for service in ["catalog", "order"] {
        platform::testing::wait_for_queue(
            &platform::testing::amqp_url(),
            &format!("{prefix}{service}"),
        )
        .await
        .unwrap();
    }
    let channel = |addr: std::net::SocketAddr| async move {
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    TestOrders {
        orders: OrderServiceClient::new(channel(addr).await),
        catalog: CatalogServiceClient::new(channel(catalog_addr).await),
        pool,
        catalog_pool,
        clock,
        env,
        shutdown,
    }
}

pub fn line(sku: &str, quantity: i64) -> OrderLineRequest {
    OrderLineRequest {
        sku: sku.into(),
        quantity,
    }
}

pub fn factura_buyer() -> Buyer {
    Buyer {
        rut: "76.369.187-k".into(),
        razon_social: "Comercial Los Andes SpA".into(),
        giro: "Venta al por menor".into(),
        address: "Av. Providencia 1234".into(),
        comuna: "Providencia".into(),
        email: "compras@losandes.cl".into(),
    }
}

/// Polls `check` until it returns `Some`, for up to 20 s (event-driven work is
/// asynchronous; the global reader's horizon is the whole server's).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request to the order service on behalf of `user` holding `roles`, as the gateway
/// sends it.
pub fn as_caller<T>(message: T, user: &str, roles: &str) -> tonic::Request<T> {
    platform::testing::as_caller(message, "orderflow.order.v1.OrderService", user, roles)
}

impl TestOrders {
    pub async fn product(&self, sku: &str, net_price: i64, exempt: bool, on_hand: i64) {
        self.catalog
            .clone()
            .create_product(platform::testing::as_caller(
                CreateProductRequest {
                    sku: sku.into(),
                    name: format!("Producto {sku}"),
                    description: String::new(),
                    category: "Test".into(),
                    net_price,
                    exempt,
                    on_hand,
                },
                "orderflow.catalog.v1.CatalogService",
                &customer(),
                "customer,admin",
            ))
            .await
            .unwrap();
    }

    /// (on hand, reserved) in the catalog.
    pub async fn stock(&self, sku: &str) -> (i64, i64) {
        sqlx::query_as("SELECT on_hand, reserved FROM products WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.catalog_pool)
            .await
            .unwrap()
    }

    pub async fn place(&self, user: &str, lines: Vec<OrderLineRequest>) -> Order {
        self.place_request(
            user,
            PlaceOrderRequest {
                lines,
                ..Default::default()
            },
        )
        .await
        .unwrap()
    }

    pub async fn place_request(
        &self,
        user: &str,
        request: PlaceOrderRequest,
    ) -> Result<Order, tonic::Status> {
        self.orders
            .clone()
            .place_order(as_caller(request, user, "customer"))
            .await
            .map(|r| r.into_inner())
    }

    /// The order as the write model has it now.
    pub async fn load(&self, id: &str) -> order::domain::Order {
        let mut conn = self.pool.acquire().await.unwrap();
        order::commands::load(&mut conn, id).await.unwrap().unwrap()
    }

    pub async fn status(&self, id: &str) -> String {
        self.load(id).await.status.as_str().to_string()
    }

    pub fn broker(&self) -> Broker {
        // The broker itself, never a proxy a test may put in front of the service.
        Broker::new(
            &platform::testing::amqp_url(),
            self.env.get("AMQP_EXCHANGE"),
        )
    }

    /// Publishes an integration event as another service would; returns its envelope.
    pub async fn publish<M: prost::Name>(
        &self,
        event_type: &str,
        order_id: &str,
        payload: &M,
    ) -> EventEnvelope {
        let envelope = EventEnvelope {
            id: Uuid::now_v7().to_string(),
            r#type: event_type.into(),
            occurred_at: None,
            aggregate_id: order_id.into(),
            correlation_id: order_id.into(),
            causation_id: String::new(),
            payload: Some(prost_types::Any::from_msg(payload).unwrap()),
        };
        self.publish_envelope(&envelope).await;
        envelope
    }

    /// Publishes `envelope` as it is (a redelivery, when it was sent before).
    pub async fn publish_envelope(&self, envelope: &EventEnvelope) {
        let channel = self.broker().confirm_channel().await.unwrap();
        let bytes = envelope.encode_to_vec();
        let headers = Default::default();
        platform::amqp::publish_confirmed(
            &channel,
            self.env.get("AMQP_EXCHANGE"),
            None,
            [platform::amqp::Outgoing {
                id: &envelope.id,
                event_type: &envelope.r#type,
                envelope: &bytes,
                headers: &headers,
            }],
        )
        .await
        .unwrap();
    }

    /// A queue of this test's own bound to `pattern`, to watch what the service publishes.
    pub async fn watch(&self, pattern: &str) -> Watcher {
        let conn = Connection::connect(
            &platform::testing::amqp_url(),
            ConnectionProperties::default(),
        )
        .await
        .unwrap();
        let channel = conn.create_channel().await.unwrap();
        self.broker().declare_exchange(&channel).await.unwrap();
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.name().as_str().into(),
                self.env.get("AMQP_EXCHANGE").into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let consumer = channel
            .basic_consume(
                queue.name().as_str().into(),
                "watcher".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Watcher {
            _conn: conn,
            consumer,
        }
    }
}

pub struct Watcher {
    _conn: Connection,
    consumer: lapin::Consumer,
}

impl Watcher {
    /// The next envelope, within 20 s.
    pub async fn next(&mut self) -> EventEnvelope {
        let delivery = tokio::time::timeout(Duration::from_secs(20), self.consumer.next())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .unwrap();
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        EventEnvelope::decode(delivery.data.as_slice()).unwrap()
    }
}
