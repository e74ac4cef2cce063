//! The edge's response hygiene: security headers, compression, CORS from configuration.

use reqwest::{Method, StatusCode};

use crate::helpers::spawn_suite_with;

#[tokio::test]
async fn responses_carry_security_headers_and_are_compressed_when_asked() {
    let s = spawn_suite_with(&[("SEED_DEMO_DATA", "true")]).await;
    let listing = s
        .raw(
            s.http
                .get(format!("{}/v1/products?pageSize=50", s.base))
                .header("accept-encoding", "gzip"),
        )
        .await;
    assert_eq!(listing.status, StatusCode::OK);
    assert_eq!(listing.header("content-encoding"), "gzip");
    let plain = s
        .call(Method::GET, "/v1/products?pageSize=50", None, None)
        .await;
    assert_eq!(
        plain.header("content-encoding"),
        "",
        "only when the client asks"
    );
    assert_eq!(plain.body["products"].as_array().unwrap().len(), 50);
    let missing = s.call(Method::GET, "/v1/nowhere", None, None).await;
    missing.assert_problem(404);
    for reply in [&plain, &missing] {
        assert_eq!(reply.header("x-content-type-options"), "nosniff");
        assert_eq!(reply.header("x-frame-options"), "DENY");
        assert_eq!(reply.header("referrer-policy"), "no-referrer");
        assert!(
            reply
                .header("content-security-policy")
                .contains("default-src 'none'")
        );
    }
}

#[tokio::test]
async fn only_configured_origins_get_cors_headers() {
    let s = spawn_suite_with(&[("GATEWAY_CORS_ORIGINS", "https://tienda.example.cl")]).await;
    let preflight = s
        .raw(
            s.http
                .request(Method::OPTIONS, format!("{}/v1/orders", s.base))
                .header("origin", "https://tienda.example.cl")
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization, content-type, idempotency-key",
                ),
        )
        .await;
    assert!(preflight.status.is_success(), "{}", preflight.status);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        "https://tienda.example.cl"
    );
    assert!(
        preflight
            .header("access-control-allow-methods")
            .contains("POST")
    );
    assert!(
        preflight
            .header("access-control-allow-headers")
            .contains("idempotency-key")
    );

    let allowed = s
        .raw(
            s.http
                .get(format!("{}/v1/products", s.base))
                .header("origin", "https://tienda.example.cl"),
        )
        .await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        "https://tienda.example.cl"
    );
    let other = s
        .raw(
            s.http
                .get(format!("{}/v1/products", s.base))
                .header("origin", "https://otro.example.com"),
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(
        other.header("access-control-allow-origin"),
        "",
        "a browser will refuse it"
    );
}

async fn products(s: &crate::helpers::TestSuite, token: Option<&str>) -> crate::helpers::Reply {
    s.call(Method::GET, "/v1/products?pageSize=1", token, None)
        .await
}

#[tokio::test]
async fn the_rate_limit_refuses_beyond_the_burst_per_caller_and_recovers() {
    let s = spawn_suite_with(&[
        ("GATEWAY_RATE_LIMIT_API", "2/s"),
        ("GATEWAY_RATE_LIMIT_API_BURST", "3"),
    ])
    .await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let ok = products(&s, None).await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
        assert_eq!(ok.header("ratelimit-policy"), r#""api";q=3;w=1"#);
        remaining.push(ok.header("ratelimit").to_string());
    }
    assert!(remaining[0].starts_with(r#""api";r=2;"#), "{remaining:?}");
    assert!(remaining[2].starts_with(r#""api";r=0;"#), "{remaining:?}");
    let refused = products(&s, None).await;
    refused.assert_problem(429);
    assert_eq!(refused.header("retry-after"), "1");
    assert!(refused.header("ratelimit").starts_with(r#""api";r=0;"#));

    // A signed-in user spends a budget of their own (auth routes have theirs too).
    let token = s.customer("ana@example.cl").await;
    assert_eq!(products(&s, Some(&token)).await.status, StatusCode::OK);
    // Probes are never limited.
    let ready = s.call(Method::GET, "/health/ready", None, None).await;
    assert_eq!(ready.status, StatusCode::OK);

    // Once the refill interval has passed, the address may call again.
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(products(&s, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn with_redis_unreachable_the_gateway_keeps_serving_and_limiting_in_process() {
    let s = spawn_suite_with(&[
        ("REDIS_URL", &platform::testing::closed_port_url("redis")),
        ("GATEWAY_RATE_LIMIT_API", "1/m"),
        ("GATEWAY_RATE_LIMIT_API_BURST", "2"),
    ])
    .await;
    assert_eq!(products(&s, None).await.status, StatusCode::OK);
    assert_eq!(products(&s, None).await.status, StatusCode::OK);
    let refused = products(&s, None).await;
    refused.assert_problem(429);
    let metrics = s.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_rate_limit_local_checks_total ")),
        "the fallback is counted"
    );
}

#[tokio::test]
async fn the_gateway_serves_its_openapi_document_and_a_docs_page() {
    let s = crate::helpers::spawn_suite().await;
    let doc = s.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.header("content-type"), "application/json");
    assert_eq!(doc.body["openapi"], "3.1.0");
    assert!(doc.body["paths"]["/v1/orders/{order_id}/payments"]["post"].is_object());

    let page = s.raw(s.http.get(format!("{}/docs", s.base))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    // Its own policy: inline styles, nothing fetched.
    assert!(
        page.header("content-security-policy")
            .contains("style-src 'unsafe-inline'")
    );
    let html = page.body.as_str().unwrap();
    assert!(html.contains("<code>/v1/orders/{order_id}/payments</code>"));
    assert!(!html.contains("<script"));

    s.call(Method::POST, "/openapi.json", None, None)
        .await
        .assert_problem(405);
}

#[tokio::test]
async fn an_oversized_body_is_413_problem_json_with_or_without_an_idempotency_key() {
    let s = crate::helpers::spawn_suite_with(&[("GATEWAY_MAX_BODY_BYTES", "1024")]).await;
    let token = s.customer("ana@example.cl").await;
    // Too big to be an order (the key makes the idempotency layer read it; without one the
    // router does).
    let big = serde_json::json!({"lines": [{"sku": "X".repeat(2000), "quantity": 1}]});
    for key in [None, Some("big-1")] {
        let mut req = s
            .http
            .post(format!("{}/v1/orders", s.base))
            .bearer_auth(&token)
            .json(&big);
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        let reply = s.raw(req).await;
        reply.assert_problem(413);
        assert!(
            reply.body["detail"].as_str().unwrap().contains("1024"),
            "{}",
            reply.body
        );
    }
}
