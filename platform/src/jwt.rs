//! Access tokens: the claims IAM signs and the gateway verifies, and verification against
//! a JWK set (Ed25519 keys, selected by `kid`).

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// The `iss` of every access token.
pub const ISSUER: &str = "orderflow-iam";
/// The `aud` of every access token.
pub const AUDIENCE: &str = "orderflow";

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Roles at the time of issue.
    pub roles: Vec<String>,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Always [`ISSUER`].
    pub iss: String,
    /// Always [`AUDIENCE`].
    pub aud: String,
}

/// Why a token was refused. The gateway answers 401 for all of them; the variants exist
/// for logs and metrics.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT, or no `kid`.
    #[error("malformed token")]
    Malformed,
    /// Signed by a key this verifier does not know.
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// Bad signature, wrong issuer or audience, wrong algorithm.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Public keys that verify access tokens, by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
}

impl KeySet {
    /// Builds a set from `(kid, x)` pairs, `x` being the base64url Ed25519 public key of
    /// an OKP JWK.
    pub fn from_okp_keys<'a>(
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, TokenError> {
        let mut out = HashMap::new();
        for (kid, x) in keys {
            let key = DecodingKey::from_ed_components(x)
                .map_err(|e| TokenError::Invalid(format!("bad JWK {kid}: {e}")))?;
            out.insert(kid.to_string(), key);
        }
        Ok(Self { keys: out })
    }

    /// Whether a key with this `kid` is known.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid` of a token, without verifying anything.
    pub fn kid_of(token: &str) -> Result<String, TokenError> {
        jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|h| h.kid)
            .ok_or(TokenError::Malformed)
    }

    /// Verifies signature, algorithm, issuer, audience and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let kid = Self::kid_of(token)?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        // Clocks across replicas drift a little; fifteen-minute tokens make 30s harmless.
        validation.leeway = 30;
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }
}
