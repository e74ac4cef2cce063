//! Cache-aside in Redis for product reads: product-by-SKU and the first page of the
//! default listing, stored as encoded protobuf. Every change deletes the affected keys
//! after its transaction commits, so a read after a write never sees the old value.
//! Redis errors never fail a read: the service answers from Postgres (log + metric).
//!
//! A miss hands out the cache's generation ([`Miss`]); every invalidation bumps it before
//! deleting, and a value read from Postgres is stored only if the generation is still the
//! one of its miss (one Lua script, atomic). So a read that saw the database before a
//! change committed, and would store the old value after the change's delete, stores
//! nothing instead of leaving it cached until the TTL.

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

/// A cache miss: the generation it saw (`None` when Redis did not answer), which a value
/// read afterwards from Postgres must still match to be stored.
#[derive(Debug)]
pub struct Miss(Option<String>);

impl ProductCache {
    /// A cache over `redis` whose entries live at most `ttl`.
    pub fn new(redis: RedisHandle, ttl: Duration) -> Self {
        Self { redis, ttl }
    }

    fn product_key(&self, sku: &str) -> String {
        self.redis.key(&format!("catalog:product:{sku}"))
    }

    fn generation_key(&self) -> String {
        self.redis.key("catalog:generation")
    }

    /// The cached value, or the generation to store a fresh one under.
    async fn get<M: Message + Default>(&self, key: String) -> Result<M, Miss> {
        let Ok(mut conn) = self.redis.conn().await.map_err(degraded) else {
            return Err(Miss(None));
        };
        let read: redis::RedisResult<(Option<Vec<u8>>, Option<String>)> = redis::cmd("MGET")
            .arg(&key)
            .arg(self.generation_key())
            .query_async(&mut conn)
            .await;
        let Ok((bytes, generation)) = read.map_err(degraded) else {
            return Err(Miss(None));
        };
        let hit = bytes.and_then(|b| M::decode(b.as_slice()).ok());
        metrics::counter!("catalog_cache_lookups_total", "outcome" => if hit.is_some() { "hit" } else { "miss" }).increment(1);
        hit.ok_or(Miss(Some(generation.unwrap_or_else(|| "0".into()))))
    }

    async fn put<M: Message>(&self, key: String, value: &M, miss: Miss) {
        // Redis was down at the miss: nothing to compare with, nothing stored.
        let Miss(Some(generation)) = miss else {
            return;
        };
        let Ok(mut conn) = self.redis.conn().await.map_err(degraded) else {
            return;
        };
        static PUT_IF_CURRENT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let script = PUT_IF_CURRENT.get_or_init(|| {
            redis::Script::new(
                "if (redis.call('GET', KEYS[2]) or '0') == ARGV[2] then \
                   redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3]) return 1 end return 0",
            )
        });
        let result: redis::RedisResult<i32> = script
            .key(&key)
            .key(self.generation_key())
            .arg(value.encode_to_vec())
            .arg(generation)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        if let Ok(0) = result {
            metrics::counter!("catalog_cache_stale_puts_skipped_total").increment(1);
        }
        let _ = result.map_err(degraded);
    }

    /// A cached product, or the [`Miss`] to store the database's answer with.
    pub async fn product(&self, sku: &str) -> Result<proto::catalog::v1::Product, Miss> {
        self.get(self.product_key(sku)).await
    }

    /// Caches a product read after `miss`.
    pub async fn put_product(&self, product: &proto::catalog::v1::Product, miss: Miss) {
        self.put(self.product_key(&product.sku), product, miss)
            .await
    }

    /// The cached first page of the default listing, or the [`Miss`].
    pub async fn first_page(&self) -> Result<proto::catalog::v1::ListProductsResponse, Miss> {
        self.get(self.redis.key(FIRST_PAGE)).await
    }

    /// Caches the first page of the default listing read after `miss`.
    pub async fn put_first_page(
        &self,
        page: &proto::catalog::v1::ListProductsResponse,
        miss: Miss,
    ) {
        self.put(self.redis.key(FIRST_PAGE), page, miss).await
    }

    /// Forgets the given products and the first page. Call after the change committed.
    pub async fn invalidate(&self, skus: &[String]) {
        let Ok(mut conn) = self.redis.conn().await.map_err(degraded) else {
            return;
        };
        // The generation first: a read that missed before it can no longer store.
        let mut del = redis::cmd("DEL");
        del.arg(self.redis.key(FIRST_PAGE));
        for sku in skus {
            del.arg(self.product_key(sku));
        }
        let result: redis::RedisResult<()> = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(self.generation_key())
            .ignore()
            .add_command(del)
            .ignore()
            .query_async(&mut conn)
            .await;
        let _ = result.map_err(degraded);
    }
}

fn degraded(e: redis::RedisError) {
    metrics::counter!("catalog_cache_unavailable_total").increment(1);
    tracing::warn!(error = %e, "Redis unavailable: serving from Postgres");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(sku: &str, available: i64) -> proto::catalog::v1::Product {
        proto::catalog::v1::Product {
            sku: sku.into(),
            available,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_value_read_before_a_change_is_not_stored_after_its_invalidation() {
        let redis = RedisHandle::new(
            &platform::testing::redis_url(),
            &platform::testing::unique_redis_prefix(),
        )
        .unwrap();
        let cache = ProductCache::new(redis, Duration::from_secs(60));
        // A read misses and goes to Postgres (stock as it was: 9 available)...
        let miss = cache.product("A").await.unwrap_err();
        // ...meanwhile the change commits and invalidates...
        cache.invalidate(&["A".to_string()]).await;
        // ...and the read's old value arrives late: not stored.
        cache.put_product(&product("A", 9), miss).await;
        let miss = cache
            .product("A")
            .await
            .expect_err("the stale value was cached");
        // A read after the change stores its value.
        cache.put_product(&product("A", 10), miss).await;
        assert_eq!(cache.product("A").await.unwrap().available, 10);
    }
}
