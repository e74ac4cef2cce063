//! Isolation for tests that talk to the real Postgres and Redis: every test gets a fresh
//! database and its own Redis key prefix, so tests run in parallel and never see each
//! other's data. `./dev test` drops databases left by interrupted runs.

use uuid::Uuid;

/// Prefix of every test database's name.
pub const TEST_DATABASE_PREFIX: &str = "orderflow_test_";

/// The server tests use: `TEST_DATABASE_URL`, else the local development default.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

/// Creates a fresh, empty database and returns its URL.
pub async fn fresh_database() -> anyhow::Result<String> {
    let server = server_url();
    let name = format!("{TEST_DATABASE_PREFIX}{}", Uuid::new_v4().simple());
    let (base, _) = server
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("TEST_DATABASE_URL has no database part"))?;
    let url = format!("{base}/{name}");
    crate::db::create_database_if_missing(&url).await?;
    Ok(url)
}

/// A Redis key prefix no other test uses.
pub fn unique_redis_prefix() -> String {
    format!("test:{}:", Uuid::new_v4().simple())
}

/// The Redis server tests use: `TEST_REDIS_URL`, else localhost.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// Every setting naming an address a role (or a simulator) listens on.
pub const ADDRESS_SETTINGS: &[&str] = &[
    "GATEWAY_ADDR",
    "IAM_GRPC_ADDR",
    "IAM_ADMIN_ADDR",
    "CATALOG_GRPC_ADDR",
    "CATALOG_ADMIN_ADDR",
    "ORDER_GRPC_ADDR",
    "ORDER_ADMIN_ADDR",
    "ORDER_PROJECTOR_ADMIN_ADDR",
    "PAYMENT_GRPC_ADDR",
    "PAYMENT_ADMIN_ADDR",
    "DTE_GRPC_ADDR",
    "DTE_ADMIN_ADDR",
    "SII_SIM_ADDR",
    "WEBPAY_SIM_ADDR",
];

/// Settings for one test: a fresh database, its own Redis key prefix, exchange and queue
/// names (queues expire once unused), and every listener on a free loopback port.
pub struct TestEnv {
    /// The variables, as a [`crate::config::Source`].
    pub vars: std::collections::HashMap<String, String>,
}

impl TestEnv {
    /// Builds an isolated environment (creates the database).
    pub async fn isolated() -> anyhow::Result<Self> {
        let tag = Uuid::new_v4().simple().to_string();
        let mut vars = std::collections::HashMap::new();
        vars.insert("DATABASE_URL".to_string(), fresh_database().await?);
        vars.insert("REDIS_URL".to_string(), redis_url());
        vars.insert("REDIS_KEY_PREFIX".to_string(), format!("test:{tag}:"));
        vars.insert("AMQP_URL".to_string(), amqp_url());
        vars.insert("AMQP_EXCHANGE".to_string(), format!("test.{tag}.events"));
        vars.insert("AMQP_QUEUE_PREFIX".to_string(), format!("test.{tag}."));
        vars.insert("AMQP_QUEUE_EXPIRES".to_string(), "60s".to_string());
        // Hundreds of short-lived quorum queues (a Raft group each) slow one shared broker
        // on two cores to seconds per message; the queue type's own behaviour is tested in
        // platform's amqp tests, which declare quorum queues.
        vars.insert("AMQP_QUEUE_TYPE".to_string(), "classic".to_string());
        vars.insert("RUST_LOG".to_string(), "warn".to_string());
        vars.insert(
            crate::identity::KEY_SETTING.to_string(),
            test_internal_key().pem().expose().to_string(),
        );
        for key in ADDRESS_SETTINGS {
            vars.insert(key.to_string(), "127.0.0.1:0".to_string());
        }
        // The SII simulator answers at once: follow a submission closely.
        vars.insert("DTE_SII_POLL_INTERVAL".to_string(), "100ms".to_string());
        Ok(Self { vars })
    }

    /// Overrides (or adds) settings.
    pub fn with(mut self, overrides: &[(&str, &str)]) -> Self {
        for (k, v) in overrides {
            self.vars.insert(k.to_string(), v.to_string());
        }
        self
    }

    /// One setting's value.
    pub fn get(&self, key: &str) -> &str {
        self.vars.get(key).map(String::as_str).unwrap_or_default()
    }
}

/// The RabbitMQ server tests use: `TEST_AMQP_URL`, else localhost.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The internal key of every [`TestEnv`] of this test process (generated at run time).
pub fn test_internal_key() -> std::sync::Arc<crate::identity::InternalKey> {
    static KEY: std::sync::LazyLock<std::sync::Arc<crate::identity::InternalKey>> =
        std::sync::LazyLock::new(|| std::sync::Arc::new(crate::identity::InternalKey::generate()));
    KEY.clone()
}

/// A gRPC request to `service` (its full name, e.g. `orderflow.order.v1.OrderService`)
/// on behalf of `user` holding `roles` (comma separated), as the gateway sends it after
/// checking the user's access token: with an internal token minted by the test key.
pub fn as_caller<T>(message: T, service: &str, user: &str, roles: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let caller = crate::grpc::Caller {
        user_id: Uuid::parse_str(user).ok(),
        roles: roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect(),
        ..Default::default()
    };
    crate::identity::Minter::new(test_internal_key(), crate::identity::GATEWAY).authorize(
        &mut request,
        service,
        &caller,
    );
    request
}

/// A gRPC request to `service` made by the backend role `role` on its own behalf.
pub fn as_service<T>(message: T, service: &str, role: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    crate::identity::Minter::new(test_internal_key(), role)
        .authorize_as_service(&mut request, service);
    request
}

/// A unique closed local port's URL (nothing listens there), for outage tests.
pub fn closed_port_url(scheme: &str) -> String {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    format!("{scheme}://{addr}/")
}

/// A loopback address free now, for a process the test starts that must listen on a known
/// port. It is drawn outside Linux's ephemeral range (32768–60999), so no `bind(…:0)` of a
/// test running alongside can take it between this check and the process's own bind; and
/// never the same port twice in one process (a suite's dozen listeners, drawn one after
/// the other before any binds, would otherwise now and then get two alike).
pub fn free_listen_addr() -> std::net::SocketAddr {
    use rand::Rng as _;
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = rand::thread_rng().gen_range(20_000..32_000);
        if !HANDED_OUT.lock().expect("not poisoned").insert(port) {
            continue;
        }
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().expect("a bound listener");
        }
    }
}

/// A TCP forwarder in front of a real server, for outage tests: [`TcpProxy::sever`] cuts
/// every open connection at once (as a network failure or a broker restart would) while
/// new connections keep working.
pub struct TcpProxy {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding a free loopback port to `target` (`host:port`).
    pub async fn start(target: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let sender = generation.clone();
        let target = target.to_string();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let is_down = down.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if is_down.load(std::sync::atomic::Ordering::SeqCst) {
                    // The server is away: the connection closes before a byte is read.
                    drop(inbound);
                    continue;
                }
                let mut severed = sender.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = severed.changed() => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            accepted,
            down,
            generation,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Connections accepted so far (a reconnect shows as one more).
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Closes every connection open now.
    pub fn sever(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Takes the server away (every open connection cut, every new one closed at once)
    /// or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            self.sever();
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.sever();
        self.task.abort();
    }
}

/// Waits (up to 20 s) until the consumer of `queue` has declared its topology. The
/// dead-letter queue is declared last, after the bindings: once it exists, events
/// published to the exchange reach `queue`.
pub async fn wait_for_queue(amqp_url: &str, queue: &str) -> anyhow::Result<()> {
    let broker = crate::amqp::Broker::new(amqp_url, "unused");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        // A failed passive declare closes its channel: probe on a fresh one each time.
        let probe = broker.channel().await?;
        let declared = probe
            .queue_declare(
                format!("{queue}.dead").as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await;
        if declared.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "nothing declared the queue {queue} within 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A Python virtualenv with `packages` (pinned requirement strings) for tests that check
/// our output with third-party validators from PyPI, created once under `dir` and reused.
/// It is built under a file lock, in a private directory renamed into place, so concurrent
/// test processes never see half of one. The interpreter is the first of `PYTHON`, `python3.13`,
/// `python3.12`, `python3`, pyenv's versions that is at least 3.`min_minor`. Returns the
/// venv's `python`.
pub fn python_venv(dir: &std::path::Path, min_minor: u32, packages: &[&str]) -> std::path::PathBuf {
    use std::process::Command;
    // One installer at a time across processes (nextest runs each test in its own): the
    // others wait and then find the marker. Released when `lock` is dropped.
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).expect("the venv's parent is writable");
    }
    let lock = std::fs::File::create(dir.with_extension("lock")).expect("the lock file opens");
    lock.lock().expect("the venv lock");
    let python = dir.join("bin/python");
    let marker = dir.join("installed.txt");
    let wanted = packages.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        return python;
    }
    // pyenv's interpreters too, for when its shims are not on PATH.
    let mut pyenv: Vec<String> = std::env::var("HOME")
        .ok()
        .and_then(|home| std::fs::read_dir(format!("{home}/.pyenv/versions")).ok())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/python3").display().to_string())
        .collect();
    pyenv.sort();
    pyenv.reverse();
    let candidates: Vec<String> = std::env::var("PYTHON")
        .into_iter()
        .chain(["python3.13", "python3.12", "python3"].map(String::from))
        .chain(pyenv)
        .collect();
    let check = format!("import sys; sys.exit(0 if sys.version_info >= (3, {min_minor}) else 1)");
    let interpreter = candidates
        .iter()
        .find(|c| {
            Command::new(c)
                .args(["-c", &check])
                .status()
                .is_ok_and(|s| s.success())
        })
        .unwrap_or_else(|| {
            panic!("these checks need Python ≥ 3.{min_minor} (tried {candidates:?}; set PYTHON)")
        });
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let status = Command::new(interpreter)
        .args(["-m", "venv"])
        .arg(&tmp)
        .status()
        .expect("python runs");
    assert!(status.success(), "{interpreter} -m venv failed");
    let status = Command::new(tmp.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(packages)
        .status()
        .expect("pip runs");
    assert!(status.success(), "pip install {packages:?} failed");
    std::fs::write(tmp.join("installed.txt"), &wanted).expect("the venv is writable");
    let _ = std::fs::remove_dir_all(dir);
    if std::fs::rename(&tmp, dir).is_err() {
        // Another process got there first.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    python
}

/// npm packages (pinned `name@version` strings) for tests that run third-party tools from
/// the npm registry, installed once under `dir` (under a file lock shared by processes)
/// and reused. Returns `dir/node_modules/.bin`.
pub fn npm_tools(dir: &std::path::Path, packages: &[&str]) -> std::path::PathBuf {
    use std::process::Command;
    std::fs::create_dir_all(dir).expect("the tools' directory is writable");
    let lock = std::fs::File::create(dir.with_extension("lock")).expect("the lock file opens");
    lock.lock().expect("the npm tools lock");
    let bin = dir.join("node_modules/.bin");
    let marker = dir.join("installed.txt");
    let wanted = packages.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        return bin;
    }
    let status = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(dir)
        .args(packages)
        .status()
        .expect("npm runs (./dev test installs Node.js and npm)");
    assert!(status.success(), "npm install {packages:?} failed");
    std::fs::write(&marker, &wanted).expect("the tools' directory is writable");
    bin
}

/// The sum of a metric's series in a Prometheus text scrape, over those carrying every
/// `labels` pair (0 when none does).
pub fn metric_sum(rendered: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    rendered
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
