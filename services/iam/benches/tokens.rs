//! Access-token costs: verification is on the gateway's path for every authenticated
//! request; issuing happens on every login and refresh.

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use iam::keys::{KeyRing, SigningKey};
use uuid::Uuid;

fn tokens(c: &mut Criterion) {
    // Two published keys, as during a rotation.
    let ring = KeyRing::new(SigningKey::generate(), vec![SigningKey::generate()]);
    let keys = ring.key_set();
    let roles = vec!["customer".to_string(), "admin".to_string()];
    let token = ring
        .issue_access_token(
            Uuid::now_v7(),
            &roles,
            Utc::now(),
            chrono::Duration::minutes(15),
        )
        .unwrap();

    c.bench_function("access_token_verify", |b| {
        b.iter(|| keys.verify(&token).unwrap())
    });
    c.bench_function("access_token_issue", |b| {
        b.iter(|| {
            ring.issue_access_token(
                Uuid::now_v7(),
                &roles,
                Utc::now(),
                chrono::Duration::minutes(15),
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, tokens);
criterion_main!(benches);
