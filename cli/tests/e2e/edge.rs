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
