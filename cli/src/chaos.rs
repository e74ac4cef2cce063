//! The fault harness: every role of the suite as a process of its own, each reaching
//! Postgres, RabbitMQ and Redis through TCP proxies of its own, so that one role can be
//! killed (`SIGKILL`), stopped (`SIGTERM`, it drains) or cut off from one server while the
//! shared servers and the other roles carry on. [`run`] plays a scenario of such faults
//! under the load generator, probes idempotency while the gateway has no Redis, then reads
//! the invariant table ([`crate::invariants`]). `orderflow chaos` (and `bench/chaos`) runs
//! it at any size; `cli/tests/faults.rs` runs it small in CI.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use platform::testing::TcpProxy;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// The roles, in start order (the gateway last).
pub const ROLES: &[&str] = platform::telemetry::ALL_ROLES;

/// Gives every listener of the suite (`platform::testing::ADDRESS_SETTINGS`) a free
/// loopback port and points each role at the others' (and the SII simulator's), for the
/// roles run as separate processes on one machine.
pub fn wire_separate_roles(env: &mut HashMap<String, String>) {
    for key in platform::testing::ADDRESS_SETTINGS {
        env.insert(
            key.to_string(),
            platform::testing::free_listen_addr().to_string(),
        );
    }
    let url = |key: &str| format!("http://{}", env[key]);
    let sii = url("SII_SIM_ADDR");
    let wiring = [
        ("GATEWAY_IAM_URL", url("IAM_GRPC_ADDR")),
        ("GATEWAY_CATALOG_URL", url("CATALOG_GRPC_ADDR")),
        ("GATEWAY_ORDER_URL", url("ORDER_GRPC_ADDR")),
        ("GATEWAY_PAYMENT_URL", url("PAYMENT_GRPC_ADDR")),
        ("GATEWAY_DTE_URL", url("DTE_GRPC_ADDR")),
        ("ORDER_CATALOG_URL", url("CATALOG_GRPC_ADDR")),
        ("PAYMENT_ORDER_URL", url("ORDER_GRPC_ADDR")),
    ];
    let sii = dte::sii::client::SiiEndpoints::at(&sii).settings();
    for (k, v) in wiring.into_iter().chain(sii) {
        env.insert(k.to_string(), v);
    }
}

/// The setting of the address a role's readiness is read from (`/health/ready`).
pub fn admin_setting(role: &str) -> &'static str {
    match role {
        "iam" => "IAM_ADMIN_ADDR",
        "catalog" => "CATALOG_ADMIN_ADDR",
        "order" => "ORDER_ADMIN_ADDR",
        "order-projector" => "ORDER_PROJECTOR_ADMIN_ADDR",
        "payment" => "PAYMENT_ADMIN_ADDR",
        "dte" => "DTE_ADMIN_ADDR",
        _ => "GATEWAY_ADDR",
    }
}

/// A server the roles depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// Postgres (`DATABASE_URL`).
    Postgres,
    /// RabbitMQ (`AMQP_URL`).
    RabbitMq,
    /// Redis (`REDIS_URL`).
    Redis,
}

impl Server {
    const ALL: [Server; 3] = [Server::Postgres, Server::RabbitMq, Server::Redis];

    fn setting(self) -> &'static str {
        match self {
            Self::Postgres => "DATABASE_URL",
            Self::RabbitMq => "AMQP_URL",
            Self::Redis => "REDIS_URL",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Self::Postgres => 5432,
            Self::RabbitMq => 5672,
            Self::Redis => 6379,
        }
    }
}

/// One fault.
#[derive(Debug, Clone)]
pub enum Fault {
    /// `SIGKILL` the role, start it again after `down`.
    Kill { role: &'static str, down: Duration },
    /// `SIGTERM` the role, wait until it has drained and exited, start it again.
    Terminate { role: &'static str },
    /// Take `server` away from `roles` (open connections cut, new ones closed) for `down`.
    Cut {
        roles: Vec<&'static str>,
        server: Server,
        down: Duration,
    },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kill { role, down } => write!(f, "kill -9 {role}, {} ms down", down.as_millis()),
            Self::Terminate { role } => write!(f, "SIGTERM {role} (drain), restart"),
            Self::Cut {
                roles,
                server,
                down,
            } => write!(
                f,
                "{server:?} away from {} for {} ms",
                roles.join(" + "),
                down.as_millis()
            ),
        }
    }
}

/// The faults of issue 24, spread over a run of `length`: a Postgres blink during
/// placements, the payment role killed among charges, the gateway without Redis (with the
/// idempotency probe), dte killed among documents, the order role without RabbitMQ, the
/// projector killed, the gateway and the catalog stopped and restarted, the order role
/// killed.
pub fn scenario(length: Duration) -> Vec<(Duration, Fault)> {
    let at = |share: f64| length.mul_f64(share);
    let blink = Duration::from_secs(3);
    vec![
        (
            at(0.10),
            Fault::Cut {
                roles: vec!["order", "catalog"],
                server: Server::Postgres,
                down: blink,
            },
        ),
        (
            at(0.25),
            Fault::Kill {
                role: "payment",
                down: Duration::from_secs(1),
            },
        ),
        (
            at(0.35),
            Fault::Cut {
                roles: vec!["gateway"],
                server: Server::Redis,
                down: blink,
            },
        ),
        (
            at(0.45),
            Fault::Kill {
                role: "dte",
                down: Duration::from_secs(1),
            },
        ),
        (
            at(0.55),
            Fault::Cut {
                roles: vec!["order"],
                server: Server::RabbitMq,
                down: blink,
            },
        ),
        (
            at(0.65),
            Fault::Kill {
                role: "order-projector",
                down: Duration::from_millis(500),
            },
        ),
        (at(0.72), Fault::Terminate { role: "gateway" }),
        (at(0.80), Fault::Terminate { role: "catalog" }),
        (
            at(0.88),
            Fault::Kill {
                role: "order",
                down: Duration::from_secs(1),
            },
        ),
    ]
}

/// Settings the harness gives every role unless the environment says otherwise: the
/// sweeper and the reconciler act within a short run.
const DEFAULTS: &[(&str, &str)] = &[
    ("ORDER_RESERVATION_GRACE", "30s"),
    ("ORDER_RESERVATION_SWEEP_INTERVAL", "2s"),
    ("PAYMENT_PROVIDER_TIMEOUT", "2s"),
    ("PAYMENT_RECONCILE_AFTER", "4s"),
    ("PAYMENT_RECONCILE_INTERVAL", "1s"),
    ("PAYMENT_PROVIDER", "sandbox"),
    ("DTE_SII_POLL_INTERVAL", "200ms"),
    ("SEED_DEMO_DATA", "false"),
    // The harness uploads its CAFs, whether the roles run apart or as `orderflow all`.
    ("DTE_DEVELOPMENT_CAFS", "false"),
    ("GATEWAY_RATE_LIMIT_AUTH", "100000/s"),
    ("GATEWAY_RATE_LIMIT_AUTH_BURST", "100000"),
    ("GATEWAY_RATE_LIMIT_API", "100000/s"),
    ("GATEWAY_RATE_LIMIT_API_BURST", "100000"),
    ("LOG_FORMAT", "json"),
    ("RUST_LOG", "warn"),
];

/// A role's process and what it runs with.
struct Role {
    name: &'static str,
    env: HashMap<String, String>,
    ready_url: String,
    child: Option<Child>,
    proxies: Vec<(Server, TcpProxy)>,
}

/// The suite as separate processes.
pub struct Cluster {
    exe: PathBuf,
    logs: PathBuf,
    names: Vec<&'static str>,
    roles: Vec<Mutex<Role>>,
    sii_sim: Child,
    /// The gateway's base URL.
    pub base: String,
    /// The admin the harness made (email, password).
    pub admin: (String, String),
    /// The shared settings (for the invariant check).
    pub env: HashMap<String, String>,
    http: reqwest::Client,
}

fn through(url: &str, server: Server, proxy: std::net::SocketAddr) -> anyhow::Result<String> {
    let mut parsed =
        reqwest::Url::parse(url).with_context(|| format!("{} is not a URL", server.setting()))?;
    parsed
        .set_host(Some(&proxy.ip().to_string()))
        .map_err(|e| anyhow::anyhow!("{}: {e}", server.setting()))?;
    parsed
        .set_port(Some(proxy.port()))
        .map_err(|()| anyhow::anyhow!("{} cannot take a port", server.setting()))?;
    Ok(parsed.to_string())
}

fn target(url: &str, server: Server) -> anyhow::Result<String> {
    let parsed =
        reqwest::Url::parse(url).with_context(|| format!("{} is not a URL", server.setting()))?;
    Ok(format!(
        "{}:{}",
        parsed.host_str().unwrap_or("127.0.0.1"),
        parsed.port().unwrap_or(server.default_port())
    ))
}

impl Cluster {
    /// Migrates, makes an admin, starts the SII simulator and every role (each with its own
    /// proxies), uploads development CAFs, and waits until all are ready. `env` holds the
    /// shared settings (DATABASE_URL, AMQP_URL, REDIS_URL, each defaulting as the roles'
    /// do; INTERNAL_TOKEN_KEY; the names); the
    /// listeners get free loopback ports. Per-service databases are not supported here.
    pub async fn start(
        exe: &Path,
        env: HashMap<String, String>,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_roles(exe, env, logs, ROLES).await
    }

    /// [`Cluster::start`] with the given roles as processes: [`ROLES`], or `["all"]` for
    /// the whole suite in one process (`orderflow all`).
    pub async fn start_roles(
        exe: &Path,
        env: HashMap<String, String>,
        logs: &Path,
        names: &[&'static str],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(logs)?;
        let mut env = env;
        for (k, v) in DEFAULTS {
            env.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
        // The servers as the roles would find them (each setting's default when unset),
        // written out: the proxies stand in front of them.
        let common =
            platform::config::CommonSettings::from_source(&platform::config::Reader::new(&env))?;
        for (server, url) in [
            (Server::Postgres, &common.database_url),
            (Server::RabbitMq, &common.amqp_url),
            (Server::Redis, &common.redis_url),
        ] {
            env.insert(server.setting().to_string(), url.expose().to_string());
        }
        anyhow::ensure!(
            env.contains_key(platform::identity::KEY_SETTING),
            "{} must be set (orderflow internal-key makes one)",
            platform::identity::KEY_SETTING
        );
        wire_separate_roles(&mut env);
        let base = format!("http://{}", env["GATEWAY_ADDR"]);

        let status = Command::new(exe)
            .args(["migrate", "all"])
            .envs(&env)
            .stdout(Stdio::null())
            .status()
            .context("running orderflow migrate all")?;
        anyhow::ensure!(status.success(), "orderflow migrate all failed ({status})");
        let admin = (
            "chaos-admin@example.cl".to_string(),
            format!("chaos-{}-password", uuid::Uuid::new_v4().simple()),
        );
        let iam_pool = platform::db::connect_existing(&env["DATABASE_URL"], iam::SCHEMA, 1).await?;
        iam::create_admin(&iam_pool, &admin.0, &admin.1).await?;
        iam_pool.close().await;

        let sii_sim = spawn(exe, "sii-sim", &env, logs)?;
        let mut roles = Vec::new();
        for &name in names {
            let mut role_env = env.clone();
            let mut proxies = Vec::new();
            for server in Server::ALL {
                let proxy = TcpProxy::start(&target(&env[server.setting()], server)?).await?;
                role_env.insert(
                    server.setting().to_string(),
                    through(&env[server.setting()], server, proxy.addr())?,
                );
                proxies.push((server, proxy));
            }
            let ready_url = format!("http://{}/health/ready", env[admin_setting(name)]);
            let mut role = Role {
                name,
                env: role_env,
                ready_url,
                child: None,
                proxies,
            };
            role.child = Some(spawn(exe, name, &role.env, logs)?);
            roles.push(role);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let cluster = Self {
            exe: exe.to_path_buf(),
            logs: logs.to_path_buf(),
            base,
            names: names.to_vec(),
            roles: roles.into_iter().map(Mutex::new).collect(),
            sii_sim,
            admin,
            env,
            http,
        };
        for role in &cluster.roles {
            let mut role = role.lock().await;
            cluster.until_ready(&mut role).await?;
        }
        cluster.upload_cafs().await?;
        Ok(cluster)
    }

    fn role(&self, name: &str) -> anyhow::Result<&Mutex<Role>> {
        let i = self
            .names
            .iter()
            .position(|r| *r == name)
            .with_context(|| format!("no role {name}"))?;
        Ok(&self.roles[i])
    }

    async fn until_ready(&self, role: &mut Role) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = role.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!(
                    "{} exited ({status}) before it was ready:\n{}",
                    role.name,
                    self.log(role.name)
                );
            }
            if self
                .http
                .get(&role.ready_url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} not ready after 60 s:\n{}",
                role.name,
                self.log(role.name)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where a role's log is written (stdout and stderr).
    pub fn log_path(&self, role: &str) -> PathBuf {
        self.logs.join(format!("{role}.log"))
    }

    /// The tail of a role's log.
    pub fn log(&self, role: &str) -> String {
        let log =
            std::fs::read_to_string(self.logs.join(format!("{role}.log"))).unwrap_or_default();
        let skip = log.chars().count().saturating_sub(3000);
        log.chars().skip(skip).collect()
    }

    async fn sign_in(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!("{}/v1/auth/login", self.base))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "login: {}", r.status());
        let body: Value = r.json().await?;
        Ok(body["accessToken"].as_str().unwrap_or_default().to_string())
    }

    async fn upload_cafs(&self) -> anyhow::Result<()> {
        let token = self.sign_in(&self.admin.0, &self.admin.1).await?;
        let settings = dte::DteSettings::from_source(&platform::config::Reader::new(&self.env))?;
        for tipo in [33, 39, 61] {
            let tipo = dte::domain::TipoDte::from_code(tipo).context("a TipoDTE")?;
            let xml = dte::caf::fake(
                tipo,
                1,
                1_000_000,
                &settings.issuer.rut,
                &settings.issuer.razon_social,
                chrono::Utc::now().date_naive(),
            )?;
            let r = self
                .http
                .post(format!("{}/v1/dte/cafs", self.base))
                .bearer_auth(&token)
                .header("content-type", "application/xml")
                .body(xml)
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "uploading a CAF: {}", r.status());
        }
        Ok(())
    }

    /// Applies one fault and waits until the role it touched is ready again; returns how
    /// long that took from the fault's end (the role's downtime beyond the fault itself).
    pub async fn apply(&self, fault: &Fault) -> anyhow::Result<Duration> {
        match fault {
            Fault::Kill { role, down } => {
                let mut role = self.role(role)?.lock().await;
                if let Some(mut child) = role.child.take() {
                    child.kill()?;
                    child.wait()?;
                }
                tokio::time::sleep(*down).await;
                self.restart(&mut role).await
            }
            Fault::Terminate { role } => {
                let mut role = self.role(role)?.lock().await;
                if let Some(mut child) = role.child.take() {
                    let status = Command::new("kill")
                        .args(["-TERM", &child.id().to_string()])
                        .status()?;
                    anyhow::ensure!(status.success(), "kill -TERM failed");
                    let deadline = Instant::now() + Duration::from_secs(45);
                    while child.try_wait()?.is_none() {
                        anyhow::ensure!(
                            Instant::now() < deadline,
                            "{} did not exit within 45 s of SIGTERM",
                            role.name
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                self.restart(&mut role).await
            }
            Fault::Cut {
                roles,
                server,
                down,
            } => {
                for name in roles {
                    let role = self.role(name)?.lock().await;
                    set_down(&role, *server, true);
                }
                tokio::time::sleep(*down).await;
                for name in roles {
                    let role = self.role(name)?.lock().await;
                    set_down(&role, *server, false);
                }
                let back = Instant::now();
                for name in roles {
                    let mut role = self.role(name)?.lock().await;
                    self.until_ready(&mut role).await?;
                }
                Ok(back.elapsed())
            }
        }
    }

    async fn restart(&self, role: &mut Role) -> anyhow::Result<Duration> {
        let started = Instant::now();
        role.child = Some(spawn(&self.exe, role.name, &role.env, &self.logs)?);
        self.until_ready(role).await?;
        Ok(started.elapsed())
    }

    /// Takes `server` away from one role or gives it back (no waiting).
    pub async fn set_down(&self, role: &str, server: Server, down: bool) -> anyhow::Result<()> {
        set_down(&*self.role(role)?.lock().await, server, down);
        Ok(())
    }

    /// Stops every role (SIGTERM, each drains); the simulator goes with the cluster.
    pub async fn stop(&self) {
        for role in self.roles.iter().rev() {
            let mut role = role.lock().await;
            if let Some(mut child) = role.child.take() {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let deadline = Instant::now() + Duration::from_secs(30);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for role in &self.roles {
            if let Ok(mut role) = role.try_lock()
                && let Some(mut child) = role.child.take()
            {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = self.sii_sim.kill();
        let _ = self.sii_sim.wait();
    }
}

fn set_down(role: &Role, server: Server, down: bool) {
    for (s, proxy) in &role.proxies {
        if *s == server {
            proxy.set_down(down);
        }
    }
}

fn spawn(
    exe: &Path,
    role: &str,
    env: &HashMap<String, String>,
    logs: &Path,
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{role}.log")))?;
    Command::new(exe)
        .arg(role)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {role}"))
}

/// What a run saw.
pub struct Outcome {
    /// Each fault: when it started (from the load's start), what it was, and how long the
    /// role took to be ready again after it.
    pub faults: Vec<(Duration, String, Result<Duration, String>)>,
    /// The load generator's summary (JSON).
    pub load: Value,
    /// The same `POST /v1/orders` with one Idempotency-Key sent twice while the gateway
    /// had no Redis: the order ids it answered (the same one twice when idempotent).
    pub idempotency_probe: Option<(String, String)>,
    /// The order whose charge was in flight when the payment role was killed, and what
    /// its payment became (captured or failed; never left pending).
    pub interrupted_charge: Option<(String, String)>,
    /// The invariant table once the suite was quiet.
    pub invariants: crate::invariants::Report,
}

impl Outcome {
    /// Requests the suite answered 500 during the load: a fault of a server or a role is
    /// a 503 (try again), a 500 is a bug.
    pub fn internal_errors(&self) -> u64 {
        self.load["operations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|op| op["errors"]["500"].as_u64())
            .sum()
    }

    /// Every fault recovered from, no 500, the probe answered one order, every invariant
    /// held.
    pub fn passed(&self) -> bool {
        self.faults.iter().all(|f| f.2.is_ok())
            && self.internal_errors() == 0
            && self
                .idempotency_probe
                .as_ref()
                .is_none_or(|(a, b)| a == b && !a.is_empty())
            && self
                .interrupted_charge
                .as_ref()
                .is_none_or(|(_, status)| status == "captured" || status == "failed")
            && self.invariants.passed()
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "passed": self.passed(),
            "faults": self.faults.iter().map(|(at, fault, back)| json!({
                "atMs": at.as_millis() as u64,
                "fault": fault,
                "readyAgainMs": back.as_ref().ok().map(|d| d.as_millis() as u64),
                "error": back.as_ref().err(),
            })).collect::<Vec<_>>(),
            "load": self.load,
            "internalErrors": self.internal_errors(),
            "idempotencyProbe": self.idempotency_probe.as_ref().map(|(a, b)| json!([a, b])),
            "interruptedCharge": self.interrupted_charge.as_ref().map(|(order, status)| json!({"order": order, "payment": status})),
            "invariants": self.invariants.to_json(),
        })
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "faults:")?;
        for (at, fault, back) in &self.faults {
            match back {
                Ok(d) => writeln!(
                    f,
                    "  t={:>6.1}s  {fault}: ready again {} ms after",
                    at.as_secs_f64(),
                    d.as_millis()
                )?,
                Err(e) => writeln!(f, "  t={:>6.1}s  {fault}: FAILED {e}", at.as_secs_f64())?,
            }
        }
        let c = &self.load["checkouts"];
        writeln!(
            f,
            "load: {} operations answered, {} failed; checkouts paid {}, invoiced {}, late {}, never invoiced {}, unfinished {}",
            self.load["total"]["ok"],
            self.load["total"]["errors"],
            c["paid"],
            c["invoiced"],
            c["late"],
            c["not_invoiced"],
            c["unfinished"]
        )?;
        writeln!(
            f,
            "answered 500 (a bug, where 503 was due): {}",
            self.internal_errors()
        )?;
        match &self.idempotency_probe {
            Some((a, b)) if a == b => {
                writeln!(f, "idempotency without Redis: one order ({a}) for one key")?
            }
            Some((a, b)) => writeln!(
                f,
                "idempotency without Redis: FAILED, two orders {a} and {b}"
            )?,
            None => writeln!(f, "idempotency without Redis: not probed")?,
        }
        match &self.interrupted_charge {
            Some((order, status)) => writeln!(
                f,
                "a charge in flight when payment was killed ({order}): its payment {status}"
            )?,
            None => writeln!(f, "a charge in flight when payment was killed: not probed")?,
        }
        writeln!(f, "invariants:")?;
        write!(f, "{}", self.invariants)
    }
}

/// How a run goes.
pub struct RunOptions {
    /// Shoppers.
    pub users: usize,
    /// How long the load (and the scenario spread over it) lasts.
    pub duration: Duration,
    /// How long the suite may take to settle before the invariants must hold.
    pub patience: Duration,
}

/// Plays [`scenario`] under the load generator (mostly checkouts), then checks.
pub async fn run(cluster: Arc<Cluster>, options: &RunOptions) -> anyhow::Result<Outcome> {
    let probe = Prober::new(&cluster).await?;
    let load_options = crate::loadgen::Options {
        url: cluster.base.clone(),
        users: options.users,
        rate: None,
        duration: options.duration,
        requests: None,
        think: Duration::from_millis(50),
        mix: crate::loadgen::parse_mix("browse=10,checkout=80,read=10")
            .map_err(anyhow::Error::msg)?,
        admin_email: Some(cluster.admin.0.clone()),
        admin_password: Some(cluster.admin.1.clone()),
        invoice_window: options.patience,
        max_error_ratio: 1.0,
        json: true,
        report: None,
        spawn: false,
    };
    let load = tokio::spawn(crate::loadgen::run(load_options));
    let started = Instant::now();
    let mut faults = Vec::new();
    let mut idempotency_probe = None;
    let mut interrupted = None;
    for (at, fault) in scenario(options.duration) {
        if let Some(wait) = at.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let began = started.elapsed();
        if let Fault::Kill {
            role: "payment", ..
        } = &fault
        {
            interrupted = Some(probe.charge_in_flight(&cluster).await?);
        }
        let applied = if let Fault::Cut {
            server: Server::Redis,
            roles,
            ..
        } = &fault
            && roles.contains(&"gateway")
        {
            // The probe runs while the gateway has no Redis.
            let cluster2 = cluster.clone();
            let fault2 = fault.clone();
            let apply = tokio::spawn(async move { cluster2.apply(&fault2).await });
            tokio::time::sleep(Duration::from_millis(500)).await;
            idempotency_probe = Some(probe.twice(&cluster).await?);
            apply.await?
        } else {
            cluster.apply(&fault).await
        };
        tracing::info!(%fault, "fault applied");
        faults.push((
            began,
            fault.to_string(),
            applied.map_err(|e| format!("{e:#}")),
        ));
    }
    let load = load.await??.json;
    let stores = crate::invariants::Stores::open(&platform::config::CommonSettings::from_source(
        &platform::config::Reader::new(&cluster.env),
    )?)
    .await?;
    let invariants = crate::invariants::check_until(&stores, options.patience).await;
    stores.close().await;
    let interrupted_charge = match interrupted {
        Some(order) => {
            let status = probe.payment_status(&order).await?.unwrap_or_default();
            Some((order, status))
        }
        None => None,
    };
    probe.payments.close().await;
    Ok(Outcome {
        faults,
        load,
        idempotency_probe,
        interrupted_charge,
        invariants: invariants?,
    })
}

/// A customer and a product of its own: to send one order twice while the gateway has no
/// Redis, and to have a charge in flight when the payment role is killed.
struct Prober {
    token: String,
    sku: String,
    payments: sqlx::PgPool,
}

impl Prober {
    async fn new(cluster: &Cluster) -> anyhow::Result<Self> {
        let email = "chaos-probe@example.cl";
        let password = "chaos-probe-password";
        let r = cluster
            .http
            .post(format!("{}/v1/auth/register", cluster.base))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "registering the probe: {}",
            r.status()
        );
        let token = cluster.sign_in(email, password).await?;
        let admin = cluster.sign_in(&cluster.admin.0, &cluster.admin.1).await?;
        let sku = "CHAOS-PROBE".to_string();
        let r = cluster
            .http
            .post(format!("{}/v1/products", cluster.base))
            .bearer_auth(&admin)
            .json(&json!({"sku": sku, "name": "Sonda", "netPrice": 1000, "onHand": 1000}))
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "creating the probe's product: {}",
            r.status()
        );
        let payments =
            platform::db::connect_existing(&cluster.env["DATABASE_URL"], payment::SCHEMA, 1)
                .await?;
        Ok(Self {
            token,
            sku,
            payments,
        })
    }

    /// Places an order (retried while the suite answers 5xx); its id.
    async fn place(&self, cluster: &Cluster, key: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = cluster
                .http
                .post(format!("{}/v1/orders", cluster.base))
                .bearer_auth(&self.token)
                .header("idempotency-key", key)
                .json(&json!({"lines": [{"sku": self.sku, "quantity": 1}]}))
                .send()
                .await;
            if let Ok(r) = r {
                let status = r.status();
                let body: Value = r.json().await.unwrap_or_default();
                if status.is_success() {
                    return Ok(body["id"].as_str().unwrap_or_default().to_string());
                }
                anyhow::ensure!(
                    status.is_server_error() && Instant::now() < deadline,
                    "the probe's order was refused: {status} {body}"
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the probe's order never answered"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Pays a new order with the sandbox's slow card and returns once the payment role has
    /// recorded it `pending` and is asking the processor: killed now, it dies mid-charge.
    async fn charge_in_flight(&self, cluster: &Cluster) -> anyhow::Result<String> {
        let order = self
            .place(cluster, &uuid::Uuid::new_v4().to_string())
            .await?;
        let request = cluster
            .http
            .post(format!("{}/v1/orders/{order}/payments", cluster.base))
            .bearer_auth(&self.token)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&json!({"card": {
                "number": payment::provider::test_cards::SLOW,
                "expMonth": 12, "expYear": 2030, "cvc": "123", "holder": "Sonda Lenta",
            }}))
            .send();
        // Its answer is the connection cut by the kill.
        tokio::spawn(request);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.payment_status(&order).await?.as_deref() != Some("pending") {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the slow charge never reached the processor"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(order)
    }

    /// The status of an order's latest payment.
    async fn payment_status(&self, order: &str) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT status FROM payments WHERE order_id = $1 ORDER BY created_at DESC LIMIT 1",
        )
        .bind(order)
        .fetch_optional(&self.payments)
        .await?)
    }

    /// The same order, with the same key, twice; the two order ids.
    async fn twice(&self, cluster: &Cluster) -> anyhow::Result<(String, String)> {
        let key = uuid::Uuid::new_v4().to_string();
        let first = self.place(cluster, &key).await?;
        let second = self.place(cluster, &key).await?;
        Ok((first, second))
    }
}
