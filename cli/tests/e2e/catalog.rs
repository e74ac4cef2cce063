//! The catalog through the gateway: browsing, searching, admin changes seen at once,
//! and bad input answered with problem+json naming the field.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{spawn_suite, spawn_suite_with};

#[tokio::test]
async fn anyone_can_browse_and_search_the_demo_catalog() {
    let s = spawn_suite_with(&[("SEED_DEMO_DATA", "true")]).await;
    let first = s
        .call(Method::GET, "/v1/products?pageSize=10", None, None)
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["products"].as_array().unwrap().len(), 10);
    assert!(!first.body["nextPageToken"].as_str().unwrap().is_empty());

    let found = s.call(Method::GET, "/v1/products?q=cafe", None, None).await;
    let names: Vec<&str> = found.body["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"Café de grano tostado 250 g"), "{names:?}");

    let product = s
        .call(Method::GET, "/v1/products/CAFE-GRANO-250", None, None)
        .await;
    assert_eq!(product.status, StatusCode::OK);
    let p = &product.body;
    assert_eq!(
        (
            p["netPrice"].as_i64(),
            p["iva"].as_i64(),
            p["grossPrice"].as_i64()
        ),
        (Some(5033), Some(956), Some(5989))
    );
    assert_eq!(p["available"], p["onHand"]);
    for field in ["sku", "name", "description", "category", "exempt", "active"] {
        assert!(!p[field].is_null(), "{field} missing: {p}");
    }

    let exempt = s
        .call(Method::GET, "/v1/products/CURSO-COCINA", None, None)
        .await;
    assert_eq!(
        (
            exempt.body["iva"].as_i64(),
            exempt.body["grossPrice"].as_i64()
        ),
        (Some(0), Some(25000))
    );
}

#[tokio::test]
async fn an_admin_change_is_visible_immediately_through_the_cache() {
    let s = spawn_suite().await;
    let admin = s.admin("boss@example.cl").await;
    let created = s
        .call(Method::POST, "/v1/products", Some(&admin), Some(json!({"sku": "MANJAR-1K", "name": "Manjar 1 kg", "netPrice": 3352, "onHand": 10, "category": "Despensa"})))
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    // Warm the cache, then change through the gateway and read back.
    assert_eq!(
        s.call(Method::GET, "/v1/products/MANJAR-1K", None, None)
            .await
            .body["netPrice"],
        3352
    );
    assert_eq!(
        s.call(Method::GET, "/v1/products", None, None).await.body["products"][0]["netPrice"],
        3352
    );
    let patched = s
        .call(
            Method::PATCH,
            "/v1/products/MANJAR-1K",
            Some(&admin),
            Some(json!({"netPrice": 3500})),
        )
        .await;
    assert_eq!(patched.body["netPrice"], 3500);
    assert_eq!(
        patched.body["name"], "Manjar 1 kg",
        "a partial update keeps other fields"
    );
    assert_eq!(
        s.call(Method::GET, "/v1/products/MANJAR-1K", None, None)
            .await
            .body["netPrice"],
        3500
    );
    assert_eq!(
        s.call(Method::GET, "/v1/products", None, None).await.body["products"][0]["netPrice"],
        3500
    );

    let stock = s
        .call(
            Method::PUT,
            "/v1/products/MANJAR-1K/stock",
            Some(&admin),
            Some(json!({"onHand": 42})),
        )
        .await;
    assert_eq!(stock.body["onHand"], 42);
    assert_eq!(
        s.call(Method::GET, "/v1/products/MANJAR-1K", None, None)
            .await
            .body["available"],
        42
    );

    let gone = s
        .call(Method::DELETE, "/v1/products/MANJAR-1K", Some(&admin), None)
        .await;
    assert_eq!(gone.body["active"], false);
    assert_eq!(
        s.call(Method::GET, "/v1/products", None, None).await.body["products"],
        json!([]),
        "inactive products are not listed"
    );
}

#[tokio::test]
async fn catalog_changes_need_the_admin_role() {
    let s = spawn_suite().await;
    let body = json!({"sku": "X-1", "name": "x", "netPrice": 10});
    s.call(Method::POST, "/v1/products", None, Some(body.clone()))
        .await
        .assert_problem(401);
    let customer = s.customer("shopper@example.cl").await;
    s.call(Method::POST, "/v1/products", Some(&customer), Some(body))
        .await
        .assert_problem(403);
}

#[tokio::test]
async fn bad_catalog_input_is_400_naming_the_field() {
    let s = spawn_suite().await;
    let admin = s.admin("boss@example.cl").await;
    for (body, field) in [
        (
            json!({"sku": "OK-1", "name": "  ", "netPrice": 100}),
            "name",
        ),
        (
            json!({"sku": "OK-1", "name": "Algo", "netPrice": -5}),
            "netPrice",
        ),
        (
            json!({"sku": "OK-1", "name": "Algo", "netPrice": 0}),
            "netPrice",
        ),
        (
            json!({"sku": "bad sku", "name": "Algo", "netPrice": 100}),
            "sku",
        ),
        (
            json!({"sku": "OK-1", "name": "Algo", "netPrice": 100, "onHand": -1}),
            "onHand",
        ),
    ] {
        let reply = s
            .call(
                Method::POST,
                "/v1/products",
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        reply.assert_problem(400);
        assert_eq!(
            reply.body["errors"][0]["field"], field,
            "{body}: {}",
            reply.body
        );
    }
    let big = s
        .call(Method::GET, "/v1/products?pageSize=1000", None, None)
        .await;
    big.assert_problem(400);
    assert_eq!(big.body["errors"][0]["field"], "pageSize");
    let sort = s
        .call(Method::GET, "/v1/products?orderBy=rating", None, None)
        .await;
    sort.assert_problem(400);
    assert_eq!(sort.body["errors"][0]["field"], "orderBy");

    let ok = s
        .call(
            Method::POST,
            "/v1/products",
            Some(&admin),
            Some(json!({"sku": "OK-1", "name": "Algo", "netPrice": 100})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    s.call(
        Method::POST,
        "/v1/products",
        Some(&admin),
        Some(json!({"sku": "OK-1", "name": "Otro", "netPrice": 200})),
    )
    .await
    .assert_problem(409);
    s.call(Method::GET, "/v1/products/NOPE-404", None, None)
        .await
        .assert_problem(404);
    s.call(
        Method::PATCH,
        "/v1/products/NOPE-404",
        Some(&admin),
        Some(json!({"name": "x"})),
    )
    .await
    .assert_problem(404);
}

#[tokio::test]
async fn product_reads_keep_working_through_the_gateway_when_redis_is_unreachable() {
    let url = platform::testing::closed_port_url("redis");
    let s = spawn_suite_with(&[("SEED_DEMO_DATA", "true"), ("REDIS_URL", url.as_str())]).await;
    for _ in 0..2 {
        assert_eq!(
            s.call(Method::GET, "/v1/products/PISCO-35-750", None, None)
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            s.call(Method::GET, "/v1/products?q=pisco", None, None)
                .await
                .status,
            StatusCode::OK
        );
    }
}
