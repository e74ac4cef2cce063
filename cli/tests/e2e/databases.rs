//! Each service on a database of its own (`<SERVICE>_DATABASE_URL`), as when each lives on
//! its own server: the whole saga still runs, and no service's tables land elsewhere.

use reqwest::{Method, StatusCode};

use crate::{
    checkout::{APPROVE, card, order_reaches, pay, place},
    helpers::spawn_suite_with,
    orders::product,
};

#[tokio::test]
async fn the_saga_runs_with_every_service_on_its_own_database() {
    let mut urls = Vec::new();
    for _ in 0..5 {
        urls.push(platform::testing::fresh_database().await.unwrap());
    }
    let services = ["iam", "catalog", "order", "payment", "dte"];
    let keys: Vec<String> = services
        .iter()
        .map(|s| format!("{}_DATABASE_URL", s.to_uppercase()))
        .collect();
    let overrides: Vec<(&str, &str)> = keys
        .iter()
        .map(String::as_str)
        .zip(urls.iter().map(String::as_str))
        .collect();
    let s = spawn_suite_with(&overrides).await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "SEPARADO-1", 1000, 5).await;
    let ana = s.customer("ana@example.cl").await;
    let order = place(&s, &ana, "SEPARADO-1", 1).await;
    let id = order["id"].as_str().unwrap();
    let paid = pay(&s, &ana, id, "sep-1", card(APPROVE)).await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    order_reaches(&s, &ana, id, "invoiced").await;

    // Each service's schema is in its database, and in none of the others.
    for (i, url) in urls.iter().enumerate() {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let schemas: Vec<String> = sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE nspname = ANY($1) ORDER BY 1",
        )
        .bind(["iam", "catalog", "orders", "payment", "dte"])
        .fetch_all(&pool)
        .await
        .unwrap();
        let own = match services[i] {
            "order" => "orders",
            other => other,
        };
        assert_eq!(
            schemas,
            vec![own.to_string()],
            "database of {}",
            services[i]
        );
        pool.close().await;
    }
}

/// Readiness of one role's admin port: its status and the checks that failed.
async fn readiness(addr: std::net::SocketAddr) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}/health/ready"))
        .await
        .expect("the admin port answers");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

async fn until_readiness(addr: std::net::SocketAddr, status: u16) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (got, body) = readiness(addr).await;
        if got == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} stayed {got}: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_service_whose_database_blinks_is_unready_meanwhile_the_others_carry_on_and_nothing_is_lost()
 {
    // The DTE service on a database of its own, reached through a proxy the test takes
    // down, as when its server restarts or the network between them fails.
    let dte_database = platform::testing::fresh_database().await.unwrap();
    let proxy = platform::testing::TcpProxy::start("127.0.0.1:5432")
        .await
        .unwrap();
    let dte_url = dte_database.replace("127.0.0.1:5432", &proxy.addr().to_string());
    assert_ne!(
        dte_url, dte_database,
        "the test server is on 127.0.0.1:5432"
    );
    let dte_admin = platform::testing::free_listen_addr();
    let catalog_admin = platform::testing::free_listen_addr();
    let queue_prefix = format!("test.{}.", uuid::Uuid::new_v4().simple());
    let (dte_admin_s, catalog_admin_s) = (dte_admin.to_string(), catalog_admin.to_string());
    let s = spawn_suite_with(&[
        ("DTE_DATABASE_URL", &dte_url),
        ("DTE_ADMIN_ADDR", &dte_admin_s),
        ("CATALOG_ADMIN_ADDR", &catalog_admin_s),
        ("AMQP_QUEUE_PREFIX", &queue_prefix),
    ])
    .await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "PARPADEO-1", 1000, 5).await;
    let ana = s.customer("ana@example.cl").await;
    let before = place(&s, &ana, "PARPADEO-1", 1).await;
    let before = before["id"].as_str().unwrap().to_string();
    assert_eq!(
        pay(&s, &ana, &before, "blink-0", card(APPROVE))
            .await
            .status,
        StatusCode::OK
    );
    order_reaches(&s, &ana, &before, "invoiced").await;

    proxy.set_down(true);
    // The DTE service says it is unready, and why; the catalog is not touched.
    let body = until_readiness(dte_admin, 503).await;
    assert!(body.contains("dte.postgres"), "{body}");
    let (catalog_status, body) = readiness(catalog_admin).await;
    assert_eq!(catalog_status, 200, "{body}");
    // A call that needs DTE's database meanwhile is 503 (retry shortly), not a 500.
    let cafs = s
        .call(Method::GET, "/v1/dte/cafs", Some(&admin), None)
        .await;
    cafs.assert_problem(503);

    // Shoppers carry on: an order is placed and paid while DTE's database is away.
    let during = place(&s, &ana, "PARPADEO-1", 2).await;
    let during = during["id"].as_str().unwrap().to_string();
    let paid = pay(&s, &ana, &during, "blink-1", card(APPROVE)).await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    // DTE's consumer meets the outage on the order.paid more often than its attempts
    // allow (5), and keeps the message rather than dead-lettering it.
    let dte_queue = format!("{queue_prefix}dte");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let met = platform::testing::metric_sum(
            &s.metrics().await,
            "amqp_consumed_total",
            &[("outcome", "database_unavailable"), ("queue", &dte_queue)],
        );
        if met >= 7.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "DTE's consumer never met its database away ({met})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let order = order_reaches(&s, &ana, &during, "paid").await;
    assert_eq!(order["status"], "paid");

    // Back: DTE is ready again and the order paid meanwhile gets its boleta, once.
    proxy.set_down(false);
    until_readiness(dte_admin, 200).await;
    order_reaches(&s, &ana, &during, "invoiced").await;
    let pool = sqlx::PgPool::connect(&dte_database).await.unwrap();
    let documents: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dte.documents WHERE order_id = $1")
            .bind(&during)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        documents, 1,
        "one document for the order paid during the outage"
    );
    pool.close().await;
    let dead = s
        .call(Method::GET, "/v1/dead-letter-queues", Some(&admin), None)
        .await;
    assert_eq!(dead.status, StatusCode::OK, "{}", dead.body);
    for queue in dead.body["queues"].as_array().unwrap() {
        assert_eq!(
            queue["messages"].as_i64().unwrap_or(0),
            0,
            "nothing dead-lettered: {}",
            dead.body
        );
    }
}
