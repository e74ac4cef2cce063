//! End to end through the gateway: the README's curl walkthrough and the edge's refusals.

mod catalog;
mod checkout;
mod contracts;
mod databases;
mod documents;
mod edge;
mod faults;
mod helpers;
mod idempotency;
mod invariants;
mod loadgen;
mod observability;
mod orders;
mod storefront;
mod webpay;
mod zero_trust;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use helpers::{PASSWORD, spawn_suite, spawn_suite_with};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn the_readme_walkthrough_register_login_me_refresh_logout() {
    let s = spawn_suite().await;
    let registered = s.register("Ana@Example.cl").await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.body);
    assert_eq!(registered.body["email"], "ana@example.cl");
    assert_eq!(registered.body["roles"], json!(["customer"]));

    let login = s.login("ana@example.cl", PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.body["tokenType"], "Bearer");
    assert_eq!(login.body["expiresIn"], 900);
    let access = login.body["accessToken"].as_str().unwrap();
    let refresh = login.body["refreshToken"].as_str().unwrap();

    let me = s.call(Method::GET, "/v1/me", Some(access), None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["id"], registered.body["id"]);

    let refreshed = s
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refreshToken": refresh})),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK);
    let new_access = refreshed.body["accessToken"].as_str().unwrap();
    let new_refresh = refreshed.body["refreshToken"].as_str().unwrap();
    assert_ne!(new_refresh, refresh);
    assert_eq!(
        s.call(Method::GET, "/v1/me", Some(new_access), None)
            .await
            .status,
        StatusCode::OK
    );

    // The spent refresh token is refused (and revokes the family).
    s.call(
        Method::POST,
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh})),
    )
    .await
    .assert_problem(401);

    let fresh = s.login("ana@example.cl", PASSWORD).await;
    let fresh_refresh = fresh.body["refreshToken"].as_str().unwrap();
    assert_eq!(
        s.call(
            Method::POST,
            "/v1/auth/logout",
            None,
            Some(json!({"refreshToken": fresh_refresh}))
        )
        .await
        .status,
        StatusCode::OK
    );
    s.call(
        Method::POST,
        "/v1/auth/refresh",
        None,
        Some(json!({"refreshToken": fresh_refresh})),
    )
    .await
    .assert_problem(401);
}

#[tokio::test]
async fn the_jwks_is_served_and_verifies_issued_tokens() {
    let s = spawn_suite().await;
    let token = s.customer("keys@example.cl").await;
    let jwks = s
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    assert_eq!(jwks.status, StatusCode::OK);
    let key = &jwks.body["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["alg"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    let set = platform::jwt::KeySet::from_okp_keys([(
        key["kid"].as_str().unwrap(),
        key["x"].as_str().unwrap(),
    )])
    .unwrap();
    assert!(set.verify(&token).is_ok());
}

#[tokio::test]
async fn a_tampered_token_is_401_problem_json_with_a_challenge() {
    let s = spawn_suite().await;
    let token = s.customer("tamper@example.cl").await;
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    parts[1] = URL_SAFE_NO_PAD.encode(claims.replace("\"customer\"", "\"admin\""));
    let reply = s
        .call(Method::GET, "/v1/users", Some(&parts.join(".")), None)
        .await;
    reply.assert_problem(401);
    assert!(
        reply.header("www-authenticate").starts_with("Bearer"),
        "{:?}",
        reply.headers
    );
    assert!(reply.header("www-authenticate").contains("invalid_token"));
    s.call(Method::GET, "/v1/me", Some("not-a-jwt"), None)
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let s = spawn_suite().await;
    s.customer("late@example.cl").await;
    // Sign with the suite's own key, two hours ago.
    let der: Vec<u8> = sqlx::query_scalar("SELECT private_key_der FROM signing_keys")
        .fetch_one(&s.iam_pool)
        .await
        .unwrap();
    let ring =
        iam::keys::KeyRing::new(iam::keys::SigningKey::from_pkcs8_der(&der).unwrap(), vec![]);
    let expired = ring
        .issue_access_token(
            uuid::Uuid::now_v7(),
            &["customer".into()],
            chrono_now_minus_hours(2),
            chrono::Duration::minutes(15),
        )
        .unwrap();
    let reply = s.call(Method::GET, "/v1/me", Some(&expired), None).await;
    reply.assert_problem(401);
    assert_eq!(reply.body["detail"], "the access token has expired");
}

fn chrono_now_minus_hours(h: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::hours(h)
}

#[tokio::test]
async fn a_token_with_an_unknown_kid_is_401() {
    let s = spawn_suite().await;
    let stranger = iam::keys::KeyRing::new(iam::keys::SigningKey::generate(), vec![]);
    let token = stranger
        .issue_access_token(
            uuid::Uuid::now_v7(),
            &["admin".into()],
            chrono::Utc::now(),
            chrono::Duration::minutes(15),
        )
        .unwrap();
    s.call(Method::GET, "/v1/users", Some(&token), None)
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn routes_enforce_their_declared_access() {
    let s = spawn_suite().await;
    s.call(Method::GET, "/v1/me", None, None)
        .await
        .assert_problem(401);
    let customer = s.customer("plain@example.cl").await;
    s.call(Method::GET, "/v1/users", Some(&customer), None)
        .await
        .assert_problem(403);

    let admin = s.admin("boss@example.cl").await;
    let users = s
        .call(Method::GET, "/v1/users?pageSize=10", Some(&admin), None)
        .await;
    assert_eq!(users.status, StatusCode::OK, "{}", users.body);
    assert_eq!(users.body["users"].as_array().unwrap().len(), 2);

    let target = users.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "plain@example.cl")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let granted = s
        .call(
            Method::POST,
            &format!("/v1/users/{target}/roles"),
            Some(&admin),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(granted.body["roles"], json!(["admin", "customer"]));
    let revoked = s
        .call(
            Method::DELETE,
            &format!("/v1/users/{target}/roles/admin"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(revoked.body["roles"], json!(["customer"]));
}

#[tokio::test]
async fn bad_input_is_400_problem_json_naming_the_problem() {
    let s = spawn_suite().await;
    let malformed = s
        .raw(
            s.http
                .post(format!("{}/v1/auth/login", s.base))
                .header("content-type", "application/json")
                .body("{\"email\": "),
        )
        .await;
    malformed.assert_problem(400);
    assert!(
        malformed.body["detail"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"),
        "{}",
        malformed.body
    );

    let short = s
        .call(
            Method::POST,
            "/v1/auth/register",
            None,
            Some(json!({"email": "a@example.cl", "password": "short"})),
        )
        .await;
    short.assert_problem(400);
    assert_eq!(short.body["errors"][0]["field"], "password");

    let wrong_type = s
        .call(
            Method::POST,
            "/v1/auth/register",
            None,
            Some(json!({"email": 42, "password": PASSWORD})),
        )
        .await;
    wrong_type.assert_problem(400);
    assert_eq!(wrong_type.body["errors"][0]["field"], "email");

    let admin = s.admin("boss@example.cl").await;
    let page = s
        .call(Method::GET, "/v1/users?pageSize=1000", Some(&admin), None)
        .await;
    page.assert_problem(400);
    assert_eq!(page.body["errors"][0]["field"], "pageSize");

    let dup = s.register("boss@example.cl").await;
    dup.assert_problem(409);

    let text = s
        .raw(
            s.http
                .post(format!("{}/v1/auth/login", s.base))
                .header("content-type", "text/plain")
                .body("hello"),
        )
        .await;
    text.assert_problem(415);
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let s = spawn_suite().await;
    let missing = s.call(Method::GET, "/v1/nowhere", None, None).await;
    missing.assert_problem(404);
    assert_eq!(missing.body["instance"], "/v1/nowhere");
    let wrong = s.call(Method::PUT, "/v1/auth/login", None, None).await;
    wrong.assert_problem(405);
    assert_eq!(wrong.header("allow"), "POST");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let s = spawn_suite().await;
    let generated = s.call(Method::GET, "/v1/nowhere", None, None).await;
    assert_eq!(
        generated.header("x-request-id").len(),
        36,
        "a UUID is generated"
    );
    let echoed = s
        .raw(
            s.http
                .get(format!("{}/health/live", s.base))
                .header("x-request-id", "abc-123"),
        )
        .await;
    assert_eq!(echoed.header("x-request-id"), "abc-123");
}

#[tokio::test]
async fn repeated_failed_logins_get_429_with_retry_after() {
    let s = spawn_suite_with(&[("IAM_LOGIN_MAX_FAILURES_PER_EMAIL", "2")]).await;
    s.register("locked@example.cl").await;
    for _ in 0..2 {
        s.login("locked@example.cl", "definitely wrong")
            .await
            .assert_problem(401);
    }
    let locked = s.login("locked@example.cl", PASSWORD).await;
    locked.assert_problem(429);
    let retry: u64 = locked
        .header("retry-after")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry >= 1);
}

#[tokio::test]
async fn health_and_metrics_are_served_by_the_gateway() {
    let s = spawn_suite().await;
    let live = s.call(Method::GET, "/health/live", None, None).await;
    assert_eq!(live.status, StatusCode::OK);
    let ready = s.call(Method::GET, "/health/ready", None, None).await;
    assert_eq!(ready.status, StatusCode::OK);
    for check in ["gateway.jwks", "iam.postgres", "iam.redis"] {
        assert_eq!(ready.body["checks"][check], "ok", "{}", ready.body);
    }
    s.register("metrics@example.cl").await;
    let text = &s.metrics().await;
    assert!(
        text.contains(
            "http_server_request_duration_seconds_count{http_request_method=\"POST\",http_response_status_code=\"200\",http_route=\"/v1/auth/register\"}"
        ),
        "{text}"
    );
}
