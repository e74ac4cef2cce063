//! The rate limiter against a real Redis, as several gateway replicas share it: each takes
//! a key's requests a share at a time, and together they never let a caller past the
//! quota.

use std::time::Duration;

use gateway::rate_limit::{Limiter, Quota, local_share};
use platform::{
    redis::RedisHandle,
    testing::{redis_url, unique_redis_prefix},
};

fn replica(prefix: &str, quota: Quota) -> Limiter {
    Limiter::new(
        RedisHandle::new(&redis_url(), prefix).unwrap(),
        quota,
        quota,
    )
}

#[tokio::test]
async fn replicas_take_shares_and_together_never_exceed_the_quota() {
    // 30 requests at once, then one a minute: a share of 3.
    let quota = Quota::parse_rate("1/m", 30).unwrap();
    assert_eq!(local_share(quota), 3);
    let prefix = unique_redis_prefix();
    let replicas = [replica(&prefix, quota), replica(&prefix, quota)];

    // The first check takes a share out of the shared budget: 30 - 3 left in Redis, and 2
    // in the replica's hand.
    let first = replicas[0].check("ratelimit:api:ip:1", quota).await;
    assert!(first.allowed);
    assert_eq!(first.remaining, 29);
    // The other replica sees the share gone and takes its own.
    let other = replicas[1].check("ratelimit:api:ip:1", quota).await;
    assert_eq!(other.remaining, 26, "{other:?}");

    // Hammered through both replicas, the caller gets the quota at most, and at most the
    // replicas' unspent shares less.
    let mut allowed = 2;
    for i in 0..100 {
        if replicas[i % 2]
            .check("ratelimit:api:ip:1", quota)
            .await
            .allowed
        {
            allowed += 1;
        }
    }
    assert!(allowed <= 30, "{allowed} allowed past a quota of 30");
    assert!(allowed >= 30 - 2 * (3 - 1), "only {allowed} of 30 allowed");
    let refused = replicas[0].check("ratelimit:api:ip:1", quota).await;
    assert!(!refused.allowed);
    assert!(refused.retry_after > Duration::ZERO);

    // Another caller has a budget of their own.
    assert!(replicas[1].check("ratelimit:api:ip:2", quota).await.allowed);
}

#[tokio::test]
async fn a_strict_quota_is_counted_request_by_request() {
    let quota = Quota::parse_rate("60/m", 3).unwrap();
    assert_eq!(local_share(quota), 1);
    let prefix = unique_redis_prefix();
    let (a, b) = (replica(&prefix, quota), replica(&prefix, quota));
    let remaining: Vec<u32> = [
        a.check("ratelimit:auth:ip:9", quota).await,
        b.check("ratelimit:auth:ip:9", quota).await,
        a.check("ratelimit:auth:ip:9", quota).await,
    ]
    .iter()
    .map(|d| d.remaining)
    .collect();
    assert_eq!(remaining, [2, 1, 0]);
    assert!(!b.check("ratelimit:auth:ip:9", quota).await.allowed);
}

#[tokio::test]
async fn an_unspent_share_is_given_back_once_it_expires() {
    let quota = Quota::parse_rate("1/m", 30).unwrap();
    let prefix = unique_redis_prefix();
    let a = replica(&prefix, quota);
    // Takes 3, spends 1.
    assert_eq!(a.check("ratelimit:api:user:7", quota).await.remaining, 29);
    // A second later the 2 unspent go back with the next take of 3: Redis holds 1 + 3
    // taken (26 left), 2 of them still in hand: 28. Kept, they would have been lost: 26.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let next = a.check("ratelimit:api:user:7", quota).await;
    assert!(next.allowed);
    assert_eq!(next.remaining, 28, "{next:?}");
    // Another replica takes its own 3 from the 26: 23 in Redis, 2 in its hand.
    let b = replica(&prefix, quota);
    assert_eq!(b.check("ratelimit:api:user:7", quota).await.remaining, 25);
}

#[tokio::test]
async fn a_callers_concurrent_requests_wait_for_one_share_instead_of_each_taking_one() {
    // A burst of 1000 (a share of 100) and 200 requests of one caller at once: two shares
    // are taken, not one per request (which would take 20,000 and refuse most of them).
    let quota = Quota::parse_rate("1/m", 1000).unwrap();
    let prefix = unique_redis_prefix();
    let a = std::sync::Arc::new(replica(&prefix, quota));
    let checks: Vec<_> = (0..200)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.check("ratelimit:api:user:8", quota).await })
        })
        .collect();
    for check in checks {
        assert!(check.await.unwrap().allowed);
    }
    let b = replica(&prefix, quota);
    assert_eq!(
        b.check("ratelimit:api:user:8", quota).await.remaining,
        1000 - 200 - 100 + 99
    );
}
