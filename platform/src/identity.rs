//! Who calls a service, as a credential the service verifies itself.
//!
//! Every gRPC call between orderflow's roles carries an *internal token*: a JWT signed with
//! the deployment's internal key (Ed25519, `INTERNAL_TOKEN_KEY`), at most 60 seconds long,
//! whose `aud` is the one gRPC service it is meant for. It says which role made the call
//! (`svc`: `gateway`, `order`, …) and, when the call is made on a user's behalf, who that
//! user is (`sub`, `roles`) and the address the user called from (`cip`, for IAM's login
//! throttling). A service believes nothing else: plain headers are ignored.
//!
//! Why a token minted per hop rather than the user's own access token forwarded: one
//! verification path and one key for user calls, service calls and anonymous calls alike;
//! the client address travels signed even when nobody is signed in (a login); a token
//! taken from one service cannot be replayed against another (`aud`) or after a minute;
//! and a service verifies without asking IAM for keys, so it can start and serve while
//! IAM is down.
//!
//! Minting and verifying both cost an Ed25519 operation, so both are cached: a minter
//! reuses a token for the same audience and caller for half its life, and a verifier
//! remembers tokens it has already verified until they expire.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    config::{ConfigError, Secret},
    grpc::Caller,
};

/// The `iss` of every internal token.
pub const INTERNAL_ISSUER: &str = "orderflow-internal";
/// How long an internal token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// How long a minter reuses a token before minting a fresh one (half its life, so a
/// token always has at least 30 s left when sent).
const REUSE_FOR: Duration = Duration::from_secs(30);
/// Caches stop growing here (they are cleared and refill: a bound, not an LRU).
const CACHE_LIMIT: usize = 10_000;
/// The role name the gateway mints as.
pub const GATEWAY: &str = "gateway";

/// The setting holding the key.
pub const KEY_SETTING: &str = "INTERNAL_TOKEN_KEY";

/// Claims of an internal token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InternalClaims {
    iss: String,
    /// The gRPC service the token is for, e.g. `orderflow.catalog.v1.CatalogService`.
    aud: String,
    iat: u64,
    exp: u64,
    /// The role that minted the token (`gateway`, `order`, `payment`, …).
    svc: String,
    /// The user on whose behalf the call is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    /// That user's roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    /// The end client's address, as the gateway saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cip: Option<String>,
}

/// Why a call's credential was refused (always UNAUTHENTICATED to the caller; the
/// variants are for logs).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    /// The `authorization` metadata is not `Bearer <token>`.
    #[error("the authorization metadata is not a bearer token")]
    Malformed,
    /// Signed by another key (or not a JWT with a `kid`).
    #[error("the token is signed by an unknown key")]
    UnknownKey,
    /// Past its `exp`.
    #[error("the token has expired")]
    Expired,
    /// Bad signature, issuer, audience or claims.
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

/// The deployment's internal signing key (Ed25519). Every role holds it: it signs the
/// tokens a role sends and verifies the tokens it receives.
pub struct InternalKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    pem: Secret,
}

impl InternalKey {
    /// A fresh random key (`orderflow all`, tests, `orderflow internal-key`).
    pub fn generate() -> Self {
        Self::from_dalek(&ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// A key from a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, e.g. from
    /// `openssl genpkey -algorithm ed25519`). Escaped newlines (`\n`, as some
    /// environment files write them) are accepted.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let pem = pem.replace("\\n", "\n");
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim())
            .map_err(|e| format!("is not an Ed25519 PKCS#8 PEM private key ({e})"))?;
        Ok(Self::from_dalek(&key))
    }

    /// The key from `INTERNAL_TOKEN_KEY` (the PEM itself) or `INTERNAL_TOKEN_KEY_FILE` (a
    /// path to it); `None` when neither is set. A bad value names its setting.
    pub fn from_settings(r: &crate::config::Reader<'_>) -> Result<Option<Arc<Self>>, ConfigError> {
        let (setting, pem) = if let Some(pem) = r.optional(KEY_SETTING) {
            (KEY_SETTING, pem)
        } else if let Some(path) = r.optional("INTERNAL_TOKEN_KEY_FILE") {
            let pem = std::fs::read_to_string(&path).map_err(|e| ConfigError {
                key: "INTERNAL_TOKEN_KEY_FILE".into(),
                problem: format!("cannot be read ({path}): {e}"),
            })?;
            ("INTERNAL_TOKEN_KEY_FILE", pem)
        } else {
            return Ok(None);
        };
        Self::from_pem(&pem)
            .map(|k| Some(Arc::new(k)))
            .map_err(|problem| ConfigError {
                key: setting.into(),
                problem,
            })
    }

    /// The error for a role started on its own without a key.
    pub fn missing() -> ConfigError {
        ConfigError {
            key: KEY_SETTING.into(),
            problem: "is required when roles run as separate processes (every role of a \
                      deployment shares it); `orderflow internal-key` prints a new one"
                .into(),
        }
    }

    fn from_dalek(key: &ed25519_dalek::SigningKey) -> Self {
        let der = key.to_pkcs8_der().expect("an Ed25519 key always encodes");
        let pem = key
            .to_pkcs8_pem(Default::default())
            .expect("an Ed25519 key always encodes")
            .to_string();
        let public = key.verifying_key().to_bytes();
        Self {
            kid: URL_SAFE_NO_PAD.encode(&Sha256::digest(public)[..12]),
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            decoding: DecodingKey::from_ed_der(&public),
            pem: Secret::new(pem),
        }
    }

    /// The key as PKCS#8 PEM, to hand to other roles (never log it).
    pub fn pem(&self) -> &Secret {
        &self.pem
    }

    /// The key id: a fingerprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

impl std::fmt::Debug for InternalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalKey")
            .field("kid", &self.kid)
            .finish()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

type MintKey = (String, Option<Uuid>, Vec<String>, Option<String>);

/// Mints the tokens one role sends.
#[derive(Clone)]
pub struct Minter {
    key: Arc<InternalKey>,
    service: String,
    cache: Arc<Mutex<HashMap<MintKey, (String, Instant)>>>,
}

impl Minter {
    /// A minter for the role `service` (`gateway`, `order`, …).
    pub fn new(key: Arc<InternalKey>, service: &str) -> Self {
        Self {
            key,
            service: service.to_string(),
            cache: Arc::default(),
        }
    }

    /// A token for a call to `audience` (a gRPC service's full name) on behalf of
    /// `caller` (its user, roles and address; an anonymous caller for the role's own
    /// calls).
    pub fn token(&self, audience: &str, caller: &Caller) -> String {
        let key = (
            audience.to_string(),
            caller.user_id,
            caller.roles.clone(),
            caller.client_ip.clone(),
        );
        {
            let cache = self.cache.lock().expect("mint cache lock");
            if let Some((token, minted)) = cache.get(&key)
                && minted.elapsed() < REUSE_FOR
            {
                return token.clone();
            }
        }
        let token = self.token_at(audience, caller, unix_now());
        let mut cache = self.cache.lock().expect("mint cache lock");
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, (token.clone(), Instant::now()));
        token
    }

    /// A fresh token as if minted at `issued_at` (Unix seconds), never cached: what
    /// [`Minter::token`] mints, for a given moment (tests of expiry use a past one).
    pub fn token_at(&self, audience: &str, caller: &Caller, issued_at: u64) -> String {
        let claims = InternalClaims {
            iss: INTERNAL_ISSUER.into(),
            aud: audience.into(),
            iat: issued_at,
            exp: issued_at + TOKEN_LIFETIME.as_secs(),
            svc: self.service.clone(),
            sub: caller.user_id.map(|u| u.to_string()),
            roles: caller.roles.clone(),
            cip: caller.client_ip.clone(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key.encoding)
            .expect("EdDSA signing with a valid key cannot fail")
    }

    /// Puts a token for `audience` on `caller`'s behalf into `request`'s metadata.
    pub fn authorize<T>(&self, request: &mut tonic::Request<T>, audience: &str, caller: &Caller) {
        let value = format!("Bearer {}", self.token(audience, caller));
        request.metadata_mut().insert(
            "authorization",
            value.parse().expect("a JWT is valid metadata"),
        );
    }

    /// Puts a token for the role's own call (no user) into `request`'s metadata.
    pub fn authorize_as_service<T>(&self, request: &mut tonic::Request<T>, audience: &str) {
        self.authorize(request, audience, &Caller::default());
    }
}

/// Verifies the tokens sent to one gRPC service.
#[derive(Clone)]
pub struct Verifier {
    key: Arc<InternalKey>,
    audience: String,
    cache: Arc<RwLock<HashMap<String, (Caller, u64)>>>,
}

impl Verifier {
    /// A verifier for tokens meant for `audience` (the service's full gRPC name).
    pub fn new(key: Arc<InternalKey>, audience: &str) -> Self {
        Self {
            key,
            audience: audience.to_string(),
            cache: Arc::default(),
        }
    }

    /// The caller a token vouches for.
    pub fn verify(&self, token: &str) -> Result<Caller, CredentialError> {
        let now = unix_now();
        if let Some((caller, exp)) = self.cache.read().expect("verify cache lock").get(token) {
            return if now < *exp {
                Ok(caller.clone())
            } else {
                Err(CredentialError::Expired)
            };
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| CredentialError::Invalid(e.to_string()))?;
        if header.kid.as_deref() != Some(self.key.kid.as_str()) {
            return Err(CredentialError::UnknownKey);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[INTERNAL_ISSUER]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
        // Roles run on machines whose clocks differ by a little; a minute-long token
        // makes five seconds harmless.
        validation.leeway = 5;
        let claims = jsonwebtoken::decode::<InternalClaims>(token, &self.key.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => CredentialError::Expired,
                _ => CredentialError::Invalid(e.to_string()),
            })?
            .claims;
        if claims.exp > claims.iat + TOKEN_LIFETIME.as_secs() {
            return Err(CredentialError::Invalid("lives longer than allowed".into()));
        }
        let user_id = match &claims.sub {
            Some(sub) => Some(
                Uuid::parse_str(sub)
                    .map_err(|_| CredentialError::Invalid("sub is not a user id".into()))?,
            ),
            None => None,
        };
        let caller = Caller {
            user_id,
            roles: claims.roles,
            client_ip: claims.cip,
            service: Some(claims.svc),
        };
        let mut cache = self.cache.write().expect("verify cache lock");
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(token.to_string(), (caller.clone(), claims.exp));
        Ok(caller)
    }
}

/// The bearer token in gRPC metadata, if any.
pub fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, CredentialError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| CredentialError::Malformed)?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(CredentialError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUD: &str = "orderflow.catalog.v1.CatalogService";

    fn user() -> Caller {
        Caller {
            user_id: Some(Uuid::now_v7()),
            roles: vec!["customer".into()],
            client_ip: Some("203.0.113.9".into()),
            service: None,
        }
    }

    #[test]
    fn a_minted_token_verifies_as_the_user_and_the_minting_role() {
        let key = Arc::new(InternalKey::generate());
        let token = Minter::new(key.clone(), GATEWAY).token(AUD, &user());
        let caller = Verifier::new(key, AUD).verify(&token).unwrap();
        assert_eq!(caller.service.as_deref(), Some(GATEWAY));
        assert_eq!(caller.roles, vec!["customer".to_string()]);
        assert_eq!(caller.client_ip.as_deref(), Some("203.0.113.9"));
    }

    #[test]
    fn a_token_for_another_service_or_from_another_key_is_refused() {
        let key = Arc::new(InternalKey::generate());
        let minter = Minter::new(key.clone(), GATEWAY);
        let token = minter.token("orderflow.iam.v1.IamService", &user());
        assert!(matches!(
            Verifier::new(key, AUD).verify(&token),
            Err(CredentialError::Invalid(_))
        ));
        let other = Arc::new(InternalKey::generate());
        let token = Minter::new(other, GATEWAY).token(AUD, &user());
        let key = Arc::new(InternalKey::generate());
        assert_eq!(
            Verifier::new(key, AUD).verify(&token),
            Err(CredentialError::UnknownKey)
        );
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let key = Arc::new(InternalKey::generate());
        let token = Minter::new(key.clone(), GATEWAY).token(AUD, &user());
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        claims["roles"] = serde_json::json!(["admin"]);
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        assert!(matches!(
            Verifier::new(key, AUD).verify(&parts.join(".")),
            Err(CredentialError::Invalid(_))
        ));
    }

    #[test]
    fn the_key_round_trips_through_pem_and_a_bad_one_names_its_setting() {
        let key = InternalKey::generate();
        let again = InternalKey::from_pem(key.pem().expose()).unwrap();
        assert_eq!(again.kid(), key.kid());
        let escaped = key.pem().expose().replace('\n', "\\n");
        assert_eq!(InternalKey::from_pem(&escaped).unwrap().kid(), key.kid());

        let src: HashMap<&str, &str> = [(KEY_SETTING, "not a key")].into_iter().collect();
        let err = InternalKey::from_settings(&crate::config::Reader::new(&src))
            .err()
            .unwrap();
        assert_eq!(err.key, KEY_SETTING);
    }
}
