//! Each service on a database of its own (`<SERVICE>_DATABASE_URL`), as when each lives on
//! its own server: the whole saga still runs, and no service's tables land elsewhere.

use reqwest::StatusCode;

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
