//! Cache-aside in Redis for product reads: product-by-SKU and the first page of the
//! default listing, stored as encoded protobuf. Every change deletes the affected keys
//! after its transaction commits, so a read after a write never sees the old value.
//! Redis errors never fail a read: the service answers from Postgres (log + metric).

use std::time::Duration;

use platform::redis::RedisHandle;
use prost::Message;

/// The product cache.
#[derive(Clone)]
pub struct ProductCache {
    redis: RedisHandle,
    ttl: Duration,
}

const FIRST_PAGE: &str = "catalog:list:first-page";

impl ProductCache {
    /// A cache over `redis` whose entries live at most `ttl`.
    pub fn new(redis: RedisHandle, ttl: Duration) -> Self {
        Self { redis, ttl }
    }

    fn product_key(&self, sku: &str) -> String {
        self.redis.key(&format!("catalog:product:{sku}"))
    }

    async fn get<M: Message + Default>(&self, key: String) -> Option<M> {
        let mut conn = self.redis.conn().await.map_err(degraded).ok()?;
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(degraded)
            .ok()?;
        let hit = bytes.and_then(|b| M::decode(b.as_slice()).ok());
        metrics::counter!("catalog_cache_lookups_total", "outcome" => if hit.is_some() { "hit" } else { "miss" }).increment(1);
        hit
    }

    async fn put<M: Message>(&self, key: String, value: &M) {
        let Ok(mut conn) = self.redis.conn().await.map_err(degraded) else {
            return;
        };
        let result: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg(value.encode_to_vec())
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await;
        let _ = result.map_err(degraded);
    }

    /// A cached product.
    pub async fn product(&self, sku: &str) -> Option<proto::catalog::v1::Product> {
        self.get(self.product_key(sku)).await
    }

    /// Caches a product.
    pub async fn put_product(&self, product: &proto::catalog::v1::Product) {
        self.put(self.product_key(&product.sku), product).await
    }

    /// The cached first page of the default listing.
    pub async fn first_page(&self) -> Option<proto::catalog::v1::ListProductsResponse> {
        self.get(self.redis.key(FIRST_PAGE)).await
    }

    /// Caches the first page of the default listing.
    pub async fn put_first_page(&self, page: &proto::catalog::v1::ListProductsResponse) {
        self.put(self.redis.key(FIRST_PAGE), page).await
    }

    /// Forgets the given products and the first page. Call after the change committed.
    pub async fn invalidate(&self, skus: &[String]) {
        let Ok(mut conn) = self.redis.conn().await.map_err(degraded) else {
            return;
        };
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.redis.key(FIRST_PAGE));
        for sku in skus {
            cmd.arg(self.product_key(sku));
        }
        let result: redis::RedisResult<()> = cmd.query_async(&mut conn).await;
        let _ = result.map_err(degraded);
    }
}

fn degraded(e: redis::RedisError) {
    metrics::counter!("catalog_cache_unavailable_total").increment(1);
    tracing::warn!(error = %e, "Redis unavailable: serving from Postgres");
}
