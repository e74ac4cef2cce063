//! The whole suite in-process (exactly what `orderflow all` runs), on port 0, against a
//! fresh database and a private Redis prefix, driven over HTTP like a real frontend.

use cli::suite::Suite;
use platform::CancellationToken;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestSuite {
    pub base: String,
    pub http: reqwest::Client,
    pub iam_pool: sqlx::PgPool,
    /// The payment service's pool (fault tests write what a crash leaves behind).
    pub payment_pool: sqlx::PgPool,
    /// Each service's gRPC address by its full name, for calls that skip the gateway.
    pub grpc_addrs: std::collections::HashMap<&'static str, std::net::SocketAddr>,
    /// The local Webpay (with `PAYMENT_PROVIDER=webpay`): its URL and fault switches.
    pub webpay_sim: Option<(String, payment::webpay_sim::SimFaults)>,
    /// The settings the suite runs with.
    pub env: std::collections::HashMap<String, String>,
    shutdown: CancellationToken,
}

impl Drop for TestSuite {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts an RFC 9457 problem with `status`.
    pub fn assert_problem(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.header("content-type"), "application/problem+json");
        assert_eq!(self.body["status"], status);
        assert!(
            self.body["title"].is_string() && self.body["type"].is_string(),
            "{}",
            self.body
        );
        self
    }
}

pub async fn spawn_suite() -> TestSuite {
    spawn_suite_with(&[]).await
}

/// Tracing as the binary installs it (spans with OpenTelemetry contexts, so trace
/// context propagates), with logs off so test output stays readable. Once per process.
fn telemetry() {
    static GUARD: std::sync::OnceLock<platform::telemetry::TelemetryGuard> =
        std::sync::OnceLock::new();
    GUARD.get_or_init(|| {
        let vars = std::collections::HashMap::from([("RUST_LOG", "off")]);
        let common =
            platform::config::CommonSettings::from_source(&platform::config::Reader::new(&vars))
                .expect("valid settings");
        platform::telemetry::init("e2e", &cli::version(), &common).expect("telemetry")
    });
}

pub async fn spawn_suite_with(overrides: &[(&str, &str)]) -> TestSuite {
    telemetry();
    let env = platform::testing::TestEnv::isolated()
        .await
        .expect("an isolated environment")
        // The card flow unless a test asks for Webpay (`orderflow all`'s default).
        .with(&[("SEED_DEMO_DATA", "false"), ("PAYMENT_PROVIDER", "sandbox")])
        .with(overrides);
    let shutdown = CancellationToken::new();
    let vars = env.vars.clone();
    let suite = Suite::start(&env.vars, shutdown.clone())
        .await
        .expect("the suite starts");
    let base = format!("http://{}", suite.gateway_addr);
    let iam_pool = suite.iam_pool.clone();
    let grpc_addrs = suite.grpc_addrs.clone();
    let payment_pool = suite.payment_pool.clone();
    let webpay_sim = suite.webpay_sim.clone();
    tokio::spawn(suite.wait());
    let this = TestSuite {
        base,
        http: reqwest::Client::new(),
        iam_pool,
        payment_pool,
        grpc_addrs,
        webpay_sim,
        env: vars,
        shutdown,
    };
    this.wait_until_ready().await;
    this
}

impl TestSuite {
    /// Tells the suite to stop (SIGTERM's effect): it drains.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    async fn wait_until_ready(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/health/ready", self.base))
                .send()
                .await
                && r.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the gateway did not become ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        read(req.send().await.expect("the gateway answers")).await
    }

    /// The gateway's Prometheus metrics, as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("the gateway answers")
            .text()
            .await
            .expect("a text body")
    }

    pub async fn raw(&self, req: reqwest::RequestBuilder) -> Reply {
        read(req.send().await.expect("the gateway answers")).await
    }

    pub async fn register(&self, email: &str) -> Reply {
        self.call(
            Method::POST,
            "/v1/auth/register",
            None,
            Some(json!({"email": email, "password": PASSWORD})),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await
    }

    /// Registers and signs in; returns the access token.
    pub async fn customer(&self, email: &str) -> String {
        assert_eq!(self.register(email).await.status, StatusCode::OK);
        self.login(email, PASSWORD).await.body["accessToken"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Creates an admin the way `orderflow iam create-admin` does and signs in.
    pub async fn admin(&self, email: &str) -> String {
        iam::create_admin(&self.iam_pool, email, PASSWORD)
            .await
            .unwrap();
        self.login(email, PASSWORD).await.body["accessToken"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

pub async fn read(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// Runs `rabbitmqctl` on the broker the tests use: the local one, else the one in the
/// development compose file's container.
pub fn rabbitmqctl(args: &[&str]) -> String {
    use std::process::Command;
    let local = Command::new("rabbitmqctl").args(args).output();
    let output = match local {
        Ok(out) => out,
        Err(_) => Command::new("docker")
            .args([
                "compose",
                "-f",
                "docker-compose.dev.yml",
                "exec",
                "-T",
                "rabbitmq",
                "rabbitmqctl",
            ])
            .args(args)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .output()
            .expect("rabbitmqctl, locally or in the compose container"),
    };
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A RabbitMQ virtual host of the test's own, so closing its connections touches no
/// other test. Deleted on drop.
pub struct TestVhost {
    pub name: String,
}

impl TestVhost {
    pub fn create() -> Self {
        let name = format!("orderflow-test-{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Self { name }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }

    /// The broker closes every connection in the vhost, as a restart would. Waits (up to
    /// 20 s) for there to be some, e.g. after a previous close; returns how many it closed.
    pub async fn close_connections(&self) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            // Off the runtime's threads: the suite under test runs on them.
            let name = self.name.clone();
            let out = tokio::task::spawn_blocking(move || {
                rabbitmqctl(&[
                    "close_all_connections",
                    "--vhost",
                    &name,
                    "test: broker-side close",
                ])
            })
            .await
            .unwrap();
            let closed: usize = out
                .split_whitespace()
                .skip_while(|w| *w != "Closed")
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected rabbitmqctl output: {out}"));
            if closed > 0 || std::time::Instant::now() > deadline {
                return closed;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}
