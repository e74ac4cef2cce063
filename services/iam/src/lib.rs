//! IAM: users, roles, passwords and tokens.
//!
//! Owns the `iam` schema: users and their roles, refresh-token families, and (development
//! only) a generated signing key. Issues Ed25519-signed access JWTs and publishes the
//! JWKS the gateway verifies them with.
//!
//! Layout: [`domain`] (rules, no I/O) → [`keys`] (signing, JWKS) → [`store`] (SQL) →
//! [`throttle`] (Redis) → [`grpc`] (the adapter); this file wires them and runs.
#![forbid(unsafe_code)]

pub mod domain;
pub mod grpc;
pub mod keys;
pub mod store;
pub mod throttle;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use platform::{
    CancellationToken,
    admin::Readiness,
    config::{CommonSettings, ConfigError, Reader},
    grpc_server::GrpcServer,
    redis::RedisHandle,
};
use rand::RngCore;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::{
    domain::{Email, Password, Role},
    keys::{KeyRing, SigningKey},
    throttle::{LoginThrottle, ThrottleLimits},
};

/// The embedded migrations of the `iam` schema.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The Postgres schema IAM owns.
pub const SCHEMA: &str = "iam";

/// IAM's own settings.
#[derive(Debug, Clone)]
pub struct IamSettings {
    /// `IAM_GRPC_ADDR`: where the gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// `IAM_ADMIN_ADDR`: health and metrics.
    pub admin_addr: SocketAddr,
    /// `IAM_SIGNING_KEY_FILE`: Ed25519 PKCS#8 PEM that signs access tokens. Unset in
    /// development: a key is generated once and kept in the iam schema.
    pub signing_key_file: Option<PathBuf>,
    /// `IAM_RETIRED_KEY_FILES`: comma-separated PEMs no longer signing but still published,
    /// so tokens they signed keep working until they expire.
    pub retired_key_files: Vec<PathBuf>,
    /// `IAM_ACCESS_TOKEN_TTL`: access-token lifetime.
    pub access_token_ttl: chrono::Duration,
    /// `IAM_REFRESH_TOKEN_TTL`: refresh-token lifetime.
    pub refresh_token_ttl: chrono::Duration,
    /// `IAM_LOGIN_MAX_FAILURES_PER_EMAIL`, `IAM_LOGIN_MAX_FAILURES_PER_ADDRESS`,
    /// `IAM_LOGIN_THROTTLE_WINDOW`.
    pub throttle: ThrottleLimits,
}

impl IamSettings {
    /// Reads IAM's settings.
    pub fn from_source(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let chrono_of = |key: &str, default: Duration| -> Result<chrono::Duration, ConfigError> {
            let d = r.duration(key, default)?;
            chrono::Duration::from_std(d).map_err(|e| ConfigError {
                key: key.into(),
                problem: e.to_string(),
            })
        };
        Ok(Self {
            grpc_addr: r.parse("IAM_GRPC_ADDR", SocketAddr::from(([0, 0, 0, 0], 50051)))?,
            admin_addr: r.parse("IAM_ADMIN_ADDR", SocketAddr::from(([0, 0, 0, 0], 9101)))?,
            signing_key_file: r.optional("IAM_SIGNING_KEY_FILE").map(PathBuf::from),
            retired_key_files: r
                .optional("IAM_RETIRED_KEY_FILES")
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
            access_token_ttl: chrono_of("IAM_ACCESS_TOKEN_TTL", Duration::from_secs(15 * 60))?,
            refresh_token_ttl: chrono_of(
                "IAM_REFRESH_TOKEN_TTL",
                Duration::from_secs(30 * 24 * 3600),
            )?,
            throttle: ThrottleLimits {
                per_email: r.parse("IAM_LOGIN_MAX_FAILURES_PER_EMAIL", 5)?,
                per_address: r.parse("IAM_LOGIN_MAX_FAILURES_PER_ADDRESS", 20)?,
                window: r.duration("IAM_LOGIN_THROTTLE_WINDOW", Duration::from_secs(15 * 60))?,
            },
        })
    }
}

/// What the gRPC handlers share.
pub struct IamState {
    /// The iam schema.
    pub pool: PgPool,
    /// Signing and published keys.
    pub keys: KeyRing,
    /// Login failure counters.
    pub throttle: LoginThrottle,
    /// Settings in force.
    pub settings: IamSettings,
    /// A real argon2id hash of a random password: unknown emails are checked against it
    /// so that their timing matches a wrong password's.
    pub decoy_hash: String,
}

/// A new opaque refresh token: 256 random bits, base64url.
pub fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Opens IAM's schema (migrated) and returns its pool.
pub async fn open_database(common: &CommonSettings) -> anyhow::Result<PgPool> {
    platform::db::open(common.database_url_for(SCHEMA).expose(), SCHEMA, &MIGRATOR).await
}

async fn load_keys(settings: &IamSettings, pool: &PgPool) -> anyhow::Result<KeyRing> {
    let read = |path: &PathBuf, key: &str| -> anyhow::Result<SigningKey> {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("setting {key}: cannot read {}", path.display()))?;
        SigningKey::from_pem(&pem).with_context(|| format!("setting {key}: {}", path.display()))
    };
    let current = match &settings.signing_key_file {
        Some(path) => read(path, "IAM_SIGNING_KEY_FILE")?,
        None => {
            let der = store::development_signing_key(pool, || {
                let key = SigningKey::generate();
                (key.kid().to_string(), key.pkcs8_der().to_vec())
            })
            .await?;
            SigningKey::from_pkcs8_der(&der)?
        }
    };
    let retired = settings
        .retired_key_files
        .iter()
        .map(|p| read(p, "IAM_RETIRED_KEY_FILES"))
        .collect::<anyhow::Result<_>>()?;
    Ok(KeyRing::new(current, retired))
}

/// IAM, built and bound, ready to run.
pub struct IamApp {
    state: Arc<IamState>,
    redis: RedisHandle,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    internal_key: Arc<platform::identity::InternalKey>,
    grpc_tls: Option<platform::tls::GrpcTls>,
}

impl IamApp {
    /// Connects to Postgres (migrating) and Redis, loads keys and binds both ports
    /// (port 0 picks a free one: tests read the real ports back).
    pub async fn build(common: &CommonSettings, settings: IamSettings) -> anyhow::Result<Self> {
        let internal_key = common.internal_key()?;
        let pool = open_database(common).await?;
        let keys = load_keys(&settings, &pool).await?;
        let redis = RedisHandle::new(common.redis_url.expose(), &common.redis_key_prefix)?;
        let throttle = LoginThrottle::new(redis.clone(), settings.throttle.clone());
        let decoy_hash = tokio::task::spawn_blocking(|| {
            domain::hash_password(
                &Password::parse(&new_refresh_token()).expect("43 characters pass the policy"),
            )
        })
        .await??;
        let grpc_listener = platform::config::bind(settings.grpc_addr, "IAM_GRPC_ADDR").await?;
        let admin_listener = platform::config::bind(settings.admin_addr, "IAM_ADMIN_ADDR").await?;
        let state = Arc::new(IamState {
            pool,
            keys,
            throttle,
            settings,
            decoy_hash,
        });
        Ok(Self {
            state,
            redis,
            grpc_listener,
            admin_listener,
            internal_key,
            grpc_tls: common.grpc_tls.clone(),
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The pool, for tests and tooling.
    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    /// Readiness: Postgres and Redis answer.
    pub fn readiness(&self) -> Readiness {
        let pool = self.state.pool.clone();
        let redis = self.redis.clone();
        Readiness::new()
            .with_postgres("iam.postgres", pool)
            .with_optional_check("iam.redis", move || {
                let redis = redis.clone();
                async move { redis.ping().await }
            })
    }

    /// Serves gRPC (with health and reflection) and the admin endpoint until `shutdown`
    /// fires, then drains in-flight calls.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let server = GrpcServer {
            readiness: self.readiness(),
            grpc: self.grpc_listener,
            admin: self.admin_listener,
            key: self.internal_key,
            tls: self.grpc_tls,
        };
        let service = proto::iam::v1::iam_service_server::IamServiceServer::new(
            grpc::IamGrpc::new(self.state),
        );
        server
            .serve(service, shutdown)
            .await
            .context("iam gRPC server")
    }
}

/// Creates the first admin, or grants `admin` to an existing account with that email
/// (its password is then left unchanged). Returns the user id.
pub async fn create_admin(
    pool: &PgPool,
    email: &str,
    password: &str,
) -> anyhow::Result<uuid::Uuid> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("email {e}"))?;
    if let Some(existing) = store::find_user_by_email(pool, email.as_str()).await? {
        store::grant_role(pool, existing.id, Role::Admin.as_str()).await?;
        return Ok(existing.id);
    }
    let password = Password::parse(password).map_err(|e| anyhow::anyhow!("password {e}"))?;
    let hash = tokio::task::spawn_blocking(move || domain::hash_password(&password)).await??;
    match store::insert_user(
        pool,
        email.as_str(),
        &hash,
        &[Role::Customer.as_str(), Role::Admin.as_str()],
    )
    .await?
    {
        store::Inserted::Created(user) => Ok(user.id),
        store::Inserted::EmailTaken => {
            // Registered concurrently: promote it instead.
            let user = store::find_user_by_email(pool, email.as_str())
                .await?
                .context("user vanished")?;
            store::grant_role(pool, user.id, Role::Admin.as_str()).await?;
            Ok(user.id)
        }
    }
}
