//! The `orderflow` binary as an operator uses it.

use std::{
    io::Write,
    process::{Command, Stdio},
};

const BIN: &str = env!("CARGO_BIN_EXE_orderflow");

#[test]
fn a_malformed_setting_stops_start_up_naming_the_variable() {
    let out = Command::new(BIN)
        .arg("all")
        .env("LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("LOG_FORMAT"), "{stderr}");

    let out = Command::new(BIN)
        .arg("gateway")
        .env("GATEWAY_ADDR", "port eighty")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("GATEWAY_ADDR"));
}

#[tokio::test]
async fn create_admin_reads_the_password_from_stdin_and_the_admin_can_sign_in() {
    let database_url = platform::testing::fresh_database().await.unwrap();
    let mut child = Command::new(BIN)
        .args([
            "iam",
            "create-admin",
            "--email",
            "Root@Example.cl",
            "--password-stdin",
        ])
        .env("DATABASE_URL", &database_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long admin passphrase\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pool = platform::db::connect(&database_url, iam::SCHEMA, 2)
        .await
        .unwrap();
    let roles: Vec<String> = sqlx::query_scalar("SELECT r.role FROM user_roles r JOIN users u ON u.id = r.user_id WHERE u.email = 'root@example.cl' ORDER BY r.role")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(roles, vec!["admin".to_string(), "customer".to_string()]);
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        iam::domain::verify_password("a long admin passphrase", &hash),
        "the newline is not part of the password"
    );

    // A short password is refused with a clear message.
    let mut child = Command::new(BIN)
        .args([
            "iam",
            "create-admin",
            "--email",
            "other@example.cl",
            "--password-stdin",
        ])
        .env("DATABASE_URL", &database_url)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password must be at least 12 characters")
    );
}

// The probe is a child process calling the in-process server: the server needs a worker
// thread of its own while this test blocks on the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_zero_only_when_ready() {
    let s = helpers::spawn_suite().await;
    let ready = Command::new(BIN)
        .args(["healthcheck", "--url", &format!("{}/health/ready", s.base)])
        .output()
        .unwrap();
    assert!(
        ready.status.success(),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let down = Command::new(BIN)
        .args([
            "healthcheck",
            "--url",
            &format!("http://{closed}/health/ready"),
        ])
        .output()
        .unwrap();
    assert!(!down.status.success());
}

#[tokio::test]
async fn migrate_applies_the_iam_schema_and_is_repeatable() {
    let database_url = platform::testing::fresh_database().await.unwrap();
    for _ in 0..2 {
        let out = Command::new(BIN)
            .args(["migrate", "iam"])
            .env("DATABASE_URL", &database_url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(BIN)
        .args(["migrate", "nonsense"])
        .env("DATABASE_URL", &database_url)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn the_suite_stops_cleanly_when_asked_and_frees_its_port() {
    let env = platform::testing::TestEnv::isolated()
        .await
        .unwrap()
        .with(&[("SEED_DEMO_DATA", "false")]);
    let shutdown = platform::CancellationToken::new();
    let suite = cli::suite::Suite::start(&env.vars, shutdown).await.unwrap();
    let addr = suite.gateway_addr;
    tokio::time::timeout(std::time::Duration::from_secs(35), suite.stop())
        .await
        .expect("drains in time")
        .expect("stops without error");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens after shutdown"
    );
}

#[path = "support/shop.rs"]
mod shop;
use shop::{sign_in, wait_until_invoiced};

#[path = "e2e/helpers.rs"]
#[allow(dead_code)]
mod helpers;

#[tokio::test]
async fn the_order_read_model_can_be_rebuilt_from_the_command_line() {
    let database_url = platform::testing::fresh_database().await.unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("DATABASE_URL", &database_url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["migrate", "order"]).contains("order: migrations applied"));
    let rebuilt = run(&["order", "rebuild-projections"]);
    assert!(rebuilt.contains("0 events, 0 orders"), "{rebuilt}");
    // Twice: the swapped-in tables are a valid starting point for the next rebuild.
    assert!(run(&["order", "rebuild-projections"]).contains("0 events, 0 orders"));
}

#[tokio::test]
async fn the_restore_drill_exits_0_on_a_good_dump_and_1_on_a_bad_one() {
    let database_url = platform::testing::fresh_database().await.unwrap();
    let drill = |dump: &std::path::Path| {
        Command::new(BIN)
            .args(["order", "verify-restore", "--from"])
            .arg(dump)
            .env("ORDER_DATABASE_URL", &database_url)
            .output()
            .unwrap()
    };
    let migrated = Command::new(BIN)
        .args(["migrate", "order"])
        .env("DATABASE_URL", &database_url)
        .output()
        .unwrap();
    assert!(migrated.status.success());
    let dir = std::env::temp_dir().join(format!("orderflow-cli-drill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dump = dir.join("event-store.dump");
    let dumped = Command::new("pg_dump")
        .arg(format!("--dbname={database_url}"))
        .args(["--schema=orders", "--format=custom"])
        .arg(format!("--file={}", dump.display()))
        .status()
        .unwrap();
    assert!(dumped.success());

    let out = drill(&dump);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("restore drill passed: 0 events, 0 orders"),
        "{report}"
    );

    std::fs::write(&dump, b"PGDMP but not really").unwrap();
    let out = drill(&dump);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("FAIL archive:"), "{report}");
    assert!(report.contains("restore drill FAILED"), "{report}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_malformed_cors_origin_stops_start_up_naming_the_variable() {
    let out = Command::new(BIN)
        .arg("gateway")
        .env("GATEWAY_CORS_ORIGINS", "tienda.example.cl")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GATEWAY_CORS_ORIGINS"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The official SII sample beside the repository (`../shared/sii`, or
/// `ORDERFLOW_SII_REFERENCE`).
fn official_sample() -> std::path::PathBuf {
    let dir = std::env::var_os("ORDERFLOW_SII_REFERENCE").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/sii"),
        std::path::PathBuf::from,
    );
    dir.join("samples/F60T33-ejemplo-oficial-SII.xml")
}

#[test]
fn dte_verify_exits_0_only_when_every_check_holds() {
    let sample = official_sample();
    assert!(sample.is_file(), "no SII sample at {}", sample.display());
    let out = Command::new(BIN)
        .args(["dte", "verify"])
        .arg(&sample)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("EnvioDTE: valid"), "{report}");
    assert!(report.contains("ok   TED: FRMT verifies"), "{report}");

    // One peso more in the document: the report names what fails, and the exit code says so.
    let dir = std::env::temp_dir().join(format!("verify-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let tampered = dir.join("tampered.xml");
    let bytes = std::fs::read(&sample).unwrap();
    let text: String = bytes.iter().map(|&b| char::from(b)).collect();
    let changed = text.replacen(
        "<MntTotal>119000</MntTotal>",
        "<MntTotal>119001</MntTotal>",
        1,
    );
    assert_ne!(changed, text);
    std::fs::write(
        &tampered,
        changed.chars().map(|c| c as u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["dte", "verify"])
        .arg(&sample)
        .arg(&tampered)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("EnvioDTE: NOT VALID"), "{report}");
    assert!(report.contains("FAIL TED vs document: MNT"), "{report}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn dte_fake_caf_writes_a_caf_marked_as_not_from_the_sii() {
    let out = Command::new(BIN)
        .args([
            "dte", "fake-caf", "--type", "39", "--from", "1", "--to", "1000",
        ])
        .env("DTE_RUT_EMISOR", "97975000-5")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let caf = dte::caf::Caf::parse(&out.stdout).unwrap();
    assert_eq!(
        (caf.tipo.code(), caf.folio_from, caf.folio_to),
        (39, 1, 1000)
    );
    assert_eq!(caf.rut_emisor.to_string(), "97975000-5");
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT ISSUED BY THE SII"));
    let out = Command::new(BIN)
        .args(["dte", "fake-caf", "--type", "52"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--type 52"));
}

#[tokio::test]
async fn sii_sim_serves_the_sii_endpoints() {
    let addr = platform::testing::closed_port_url("http")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut child = Command::new(BIN)
        .arg("sii-sim")
        .env("SII_SIM_ADDR", &addr)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let seed = loop {
        if let Ok(r) = http
            .get(format!(
                "http://{addr}/recursos/v1/boleta.electronica.semilla"
            ))
            .send()
            .await
        {
            break r.text().await.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sii-sim never answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let soap = http
        .post(format!("http://{addr}/DTEWS/CrSeed.jws"))
        .header("soapaction", "")
        .body(dte::sii::protocol::soap_request("getSeed", &[]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seed.contains("<SEMILLA>") && seed.contains("<ESTADO>00</ESTADO>"),
        "{seed}"
    );
    let inner = dte::sii::protocol::soap_return(&soap, "getSeed").unwrap();
    assert_eq!(
        dte::sii::protocol::element_text(&inner, "SEMILLA")
            .unwrap()
            .len(),
        12
    );
}

#[tokio::test]
async fn loadgen_spawns_the_suite_drives_it_and_reports_what_it_used() {
    let env = platform::testing::TestEnv::isolated()
        .await
        .unwrap()
        .with(&[("SEED_DEMO_DATA", "false")]);
    let url = format!("http://{}/", free_addr());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["loadgen", "--spawn", "--url", &url])
            .args([
                "--users",
                "2",
                "--duration",
                "3s",
                "--mix",
                "checkout=1",
                "--json",
            ])
            .envs(&env.vars)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let suite = &summary["suite"];
    assert!(
        suite["start_to_ready_ms"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(suite["rss_idle_mib"].as_f64().unwrap() > 1.0, "{summary}");
    assert!(
        suite["rss_peak_mib"].as_f64().unwrap() >= suite["rss_idle_mib"].as_f64().unwrap(),
        "{summary}"
    );
    assert!(suite["cpu_seconds"].as_f64().unwrap() > 0.0, "{summary}");
    assert!(
        summary["checkouts"]["invoiced"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(
        stderr.contains("suite (orderflow all, spawned): ready in"),
        "{stderr}"
    );
}

/// A free loopback address (nothing listens there until a role binds it).
fn free_addr() -> String {
    platform::testing::free_listen_addr().to_string()
}

/// Whether a catalog reached through `endpoint` answers a product list.
async fn serves(endpoint: tonic::transport::Endpoint) -> bool {
    match endpoint.connect().await {
        Err(_) => false,
        Ok(channel) => {
            proto::catalog::v1::catalog_service_client::CatalogServiceClient::new(channel)
                .list_products(proto::catalog::v1::ListProductsRequest::default())
                .await
                .is_ok()
        }
    }
}

/// Creates the product `(sku, name, net price)` (3 in stock) as `admin`, registers and
/// signs in `email`, and places their order of one: (the buyer's token, the order id).
async fn placed_order(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    (sku, name, net_price): (&str, &str, i64),
    email: &str,
) -> (String, String) {
    let created = http
        .post(format!("{base}/v1/products"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"sku": sku, "name": name, "netPrice": net_price, "onHand": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200, "{}", created.text().await.unwrap());
    let registered = http
        .post(format!("{base}/v1/auth/register"))
        .json(&serde_json::json!({"email": email, "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let buyer = sign_in(http, base, email).await;
    let placed: serde_json::Value = http
        .post(format!("{base}/v1/orders"))
        .bearer_auth(&buyer)
        .json(&serde_json::json!({"lines": [{"sku": sku, "quantity": 1}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = placed["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{placed}"))
        .to_string();
    (buyer, id)
}

/// Child processes killed when the test ends, however it ends.
struct Roles(Vec<std::process::Child>);

impl Drop for Roles {
    fn drop(&mut self) {
        for child in &mut self.0 {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

#[tokio::test]
async fn separate_roles_over_mutual_tls_serve_a_whole_checkout() {
    let env = platform::testing::TestEnv::isolated()
        .await
        .unwrap()
        .with(&[("SEED_DEMO_DATA", "false")]);
    let dir = std::env::temp_dir().join(format!("mtls-{}", uuid::Uuid::new_v4()));
    let out = Command::new(BIN)
        .args(["dev-certs", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = |role: &str| {
        (
            dir.join(format!("{role}.pem")).display().to_string(),
            dir.join(format!("{role}-key.pem")).display().to_string(),
        )
    };
    let ca = dir.join("ca.pem").display().to_string();

    let database_url = env.get("DATABASE_URL").to_string();
    let migrated = Command::new(BIN)
        .args(["migrate", "all"])
        .env("DATABASE_URL", &database_url)
        .output()
        .unwrap();
    assert!(migrated.status.success());
    let grpc: std::collections::HashMap<&str, String> =
        ["iam", "catalog", "order", "payment", "dte"]
            .into_iter()
            .map(|r| (r, free_addr()))
            .collect();
    let admin: std::collections::HashMap<&str, String> = [
        "IAM",
        "CATALOG",
        "ORDER",
        "ORDER_PROJECTOR",
        "PAYMENT",
        "DTE",
    ]
    .into_iter()
    .map(|r| (r, free_addr()))
    .collect();
    let (gateway_addr, sii_addr) = (free_addr(), free_addr());
    let url = |role: &str| format!("https://{}", grpc[role]);
    let mut shared: Vec<(String, String)> = env
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    shared.extend([
        ("GRPC_TLS_CA_FILE".to_string(), ca.clone()),
        ("GATEWAY_ADDR".into(), gateway_addr.clone()),
        ("SII_SIM_ADDR".into(), sii_addr.clone()),
        ("DTE_SII_URL".into(), format!("http://{sii_addr}")),
        (
            "DTE_SII_BOLETA_URL".into(),
            format!("http://{sii_addr}/recursos/v1"),
        ),
        (
            "DTE_SII_BOLETA_UPLOAD_URL".into(),
            format!("http://{sii_addr}/recursos/v1"),
        ),
        ("ORDER_CATALOG_URL".into(), url("catalog")),
        ("PAYMENT_ORDER_URL".into(), url("order")),
    ]);
    for role in ["iam", "catalog", "order", "payment", "dte"] {
        shared.push((format!("GATEWAY_{}_URL", role.to_uppercase()), url(role)));
        shared.push((
            format!("{}_GRPC_ADDR", role.to_uppercase()),
            grpc[role].clone(),
        ));
    }
    for (role, addr) in &admin {
        shared.push((format!("{role}_ADMIN_ADDR"), addr.clone()));
    }
    let mut roles = Roles(Vec::new());
    let spawn = |args: &[&str], tls_role: Option<&str>| {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .envs(shared.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(role) = tls_role {
            let (c, k) = cert(role);
            command
                .env("GRPC_TLS_CERT_FILE", c)
                .env("GRPC_TLS_KEY_FILE", k);
        } else {
            command.env_remove("GRPC_TLS_CA_FILE");
        }
        command.spawn().unwrap()
    };
    roles.0.push(spawn(&["sii-sim"], None));
    for role in ["iam", "catalog", "order", "payment", "dte", "gateway"] {
        roles.0.push(spawn(&[role], Some(role)));
    }
    roles.0.push(spawn(&["order-projector"], Some("order")));

    let http = reqwest::Client::new();
    let base = format!("http://{gateway_addr}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // Every role ready (the gateway once IAM answered its JWKS fetch: a TLS handshake
    // that succeeded).
    let probes: Vec<String> = std::iter::once(format!("{base}/health/ready"))
        .chain(admin.values().map(|a| format!("http://{a}/health/ready")))
        .collect();
    for probe in probes {
        loop {
            if let Ok(r) = http.get(&probe).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{probe} never became ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let caf = Command::new(BIN)
        .args(["dte", "fake-caf", "--type", "39"])
        .output()
        .unwrap();
    let pools = platform::db::connect(&database_url, iam::SCHEMA, 2)
        .await
        .unwrap();
    iam::create_admin(
        &pools,
        "mtls-admin@example.cl",
        "correct horse battery staple",
    )
    .await
    .unwrap();
    let admin = sign_in(&http, &base, "mtls-admin@example.cl").await;
    let uploaded = http
        .post(format!("{base}/v1/dte/cafs"))
        .bearer_auth(&admin)
        .header("content-type", "application/xml")
        .body(caf.stdout)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 200, "{}", uploaded.text().await.unwrap());
    let (buyer, id) = placed_order(
        &http,
        &base,
        &admin,
        ("MTLS-1", "Té verde", 2000),
        "mtls-buyer@example.cl",
    )
    .await;
    let id = id.as_str();
    let paid = http
        .post(format!("{base}/v1/orders/{id}/payments"))
        .bearer_auth(&buyer)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&serde_json::json!({"card": {"number": "4242424242424242", "expMonth": 12, "expYear": 2040, "cvc": "123", "holder": "Ana"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200, "{}", paid.text().await.unwrap());
    wait_until_invoiced(&http, &base, &buyer, id).await;

    // The services' ports take no caller without a certificate from the CA: neither
    // plaintext nor TLS without a client certificate.
    let catalog = grpc["catalog"].clone();
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{catalog}")).unwrap();
    assert!(!serves(plain).await, "a plaintext client was served");
    let ca_pem = std::fs::read(&ca).unwrap();
    let anonymous_tls = tonic::transport::Endpoint::from_shared(format!("https://{catalog}"))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem)),
        )
        .unwrap();
    let refused_tls = !serves(anonymous_tls).await;
    assert!(refused_tls, "a TLS client without a certificate was served");
    drop(roles);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn dropping_dead_letters_needs_a_confirmation() {
    let out = Command::new(BIN)
        .args(["dead-letters", "drop", "--queue", "order", "--id", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `orderflow all` as a newcomer runs it: Webpay through the local simulator. A shopper
/// pays on Webpay's page and comes back to a paid, invoiced order, and the card number
/// appears nowhere in what the shop logged or stored.
#[tokio::test]
async fn orderflow_all_pays_through_webpay_and_never_sees_the_card() {
    let env = platform::testing::TestEnv::isolated()
        .await
        .unwrap()
        .with(&[("SEED_DEMO_DATA", "false")]);
    let gateway = free_addr();
    let base = format!("http://{gateway}");
    let log = std::env::temp_dir().join(format!("orderflow-all-{}.log", uuid::Uuid::new_v4()));
    let mut command = Command::new(BIN);
    command
        .arg("all")
        .envs(
            env.vars
                .iter()
                .filter(|(k, _)| k.as_str() != "PAYMENT_PROVIDER"),
        )
        .env_remove("PAYMENT_PROVIDER")
        .env("GATEWAY_ADDR", &gateway)
        .env("PUBLIC_BASE_URL", &base)
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .env("IAM_BOOTSTRAP_ADMIN_EMAIL", "webpay-admin@example.cl")
        .env(
            "IAM_BOOTSTRAP_ADMIN_PASSWORD",
            "correct horse battery staple",
        )
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null());
    let roles = Roles(vec![command.spawn().unwrap()]);

    let http = reqwest::Client::new();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/health/ready")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "orderflow all never became ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let admin = sign_in(&http, &base, "webpay-admin@example.cl").await;
    let (buyer, id) = placed_order(
        &http,
        &base,
        &admin,
        ("WEBPAY-1", "Café de grano", 8000),
        "webpay-buyer@example.cl",
    )
    .await;
    let id = id.as_str();

    let redirect: serde_json::Value = http
        .post(format!("{base}/v1/orders/{id}/payments"))
        .bearer_auth(&buyer)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(redirect["status"], "redirect", "{redirect}");
    let (url, webpay_token) = (
        redirect["url"].as_str().unwrap(),
        redirect["token"].as_str().unwrap(),
    );
    // The browser: to Webpay's page, the card typed there, back to the shop.
    let page = browser
        .post(url)
        .form(&[("token_ws", webpay_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let card = payment::webpay_sim::test_cards::VISA_APPROVED;
    let back = browser
        .post(url.replace("initTransaction", "pay"))
        .form(&[
            ("token_ws", webpay_token),
            ("card", card),
            ("action", "pay"),
        ])
        .send()
        .await
        .unwrap();
    let back = back.headers()["location"].to_str().unwrap().to_string();
    assert!(
        back.starts_with(&format!("{base}/v1/payments/webpay/return")),
        "{back}"
    );
    let shop = browser.get(&back).send().await.unwrap();
    assert_eq!(shop.status(), 303);
    assert_eq!(
        shop.headers()["location"].to_str().unwrap(),
        format!("{base}/pedidos/{id}?pago=aprobado")
    );
    wait_until_invoiced(&http, &base, &buyer, id).await;
    drop(roles);

    // What the shop logged: the requests it served, and no card number.
    let logged = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).ok();
    assert!(
        logged.contains("/v1/payments/webpay/return"),
        "the access log is there"
    );
    assert!(!logged.contains(card), "the card number was logged");
    // What it stored: every row of every payment table.
    let pool = platform::db::connect(env.get("DATABASE_URL"), payment::SCHEMA, 2)
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'payment'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut rows = 0;
    for table in tables {
        let stored: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT row_to_json(t)::text FROM payment.\"{table}\" t"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        rows += stored.len();
        assert!(
            stored.iter().all(|r| !r.contains(card)),
            "{table}: {stored:?}"
        );
    }
    assert!(rows > 0);
}
