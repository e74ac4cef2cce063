//! A shopper over the REST API, for the tests that run the binary as processes (the
//! binary's own tests and the image's): sign in, wait for an order's invoice.

/// Signs `email` in (password `correct horse battery staple`) and returns the access token.
pub async fn sign_in(http: &reqwest::Client, base: &str, email: &str) -> String {
    let login: serde_json::Value = http
        .post(format!("{base}/v1/auth/login"))
        .json(&serde_json::json!({"email": email, "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["accessToken"]
        .as_str()
        .expect("signed in")
        .to_string()
}

/// Polls the order until it is `invoiced` (30 s at most); returns it.
pub async fn wait_until_invoiced(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let order: serde_json::Value = http
            .get(format!("{base}/v1/orders/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if order["status"] == "invoiced" {
            return order;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never invoiced: {order}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
