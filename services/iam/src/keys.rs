//! Signing keys and access tokens: Ed25519 (EdDSA) JWTs with a `kid`, and the JWK set
//! that lets anyone verify them. Several keys can be published at once so a new key can
//! take over signing while tokens signed by the old one stay valid until they expire.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use platform::jwt::{AUDIENCE, Claims, ISSUER, KeySet};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// One Ed25519 key pair, named by its RFC 7638 thumbprint.
pub struct SigningKey {
    kid: String,
    public_x: String,
    encoding: EncodingKey,
    pkcs8_der: Vec<u8>,
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        Self::from_dalek(&key)
    }

    /// A key from its PKCS#8 DER encoding.
    pub fn from_pkcs8_der(der: &[u8]) -> anyhow::Result<Self> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .map_err(|e| anyhow::anyhow!("not an Ed25519 PKCS#8 key: {e}"))?;
        Ok(Self::from_dalek(&key))
    }

    /// A key from a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), e.g. from
    /// `openssl genpkey -algorithm ed25519`.
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| anyhow::anyhow!("not an Ed25519 PKCS#8 PEM key: {e}"))?;
        Ok(Self::from_dalek(&key))
    }

    fn from_dalek(key: &ed25519_dalek::SigningKey) -> Self {
        let der = key
            .to_pkcs8_der()
            .expect("an Ed25519 key always encodes")
            .as_bytes()
            .to_vec();
        let public_x = URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
        Self {
            kid: thumbprint(&public_x),
            encoding: EncodingKey::from_ed_der(&der),
            public_x,
            pkcs8_der: der,
        }
    }

    /// The key id: the JWK thumbprint, stable for the key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The PKCS#8 DER encoding (to keep a generated development key).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8_der
    }

    /// The public key as an OKP JWK.
    pub fn jwk(&self) -> proto::iam::v1::Jwk {
        proto::iam::v1::Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: self.public_x.clone(),
            kid: self.kid.clone(),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        }
    }
}

/// RFC 7638 JWK thumbprint of an Ed25519 public key (members in lexical order).
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The key that signs now, plus retired keys still published for verification.
pub struct KeyRing {
    current: SigningKey,
    retired: Vec<SigningKey>,
}

impl KeyRing {
    /// A ring that signs with `current` and still publishes `retired`.
    pub fn new(current: SigningKey, retired: Vec<SigningKey>) -> Self {
        let retired = retired
            .into_iter()
            .filter(|k| k.kid != current.kid)
            .collect();
        Self { current, retired }
    }

    /// The `kid` new tokens carry.
    pub fn current_kid(&self) -> &str {
        self.current.kid()
    }

    /// Every published key, current first.
    pub fn jwks(&self) -> proto::iam::v1::Jwks {
        proto::iam::v1::Jwks {
            keys: std::iter::once(&self.current)
                .chain(&self.retired)
                .map(SigningKey::jwk)
                .collect(),
        }
    }

    /// The verifier for every published key.
    pub fn key_set(&self) -> KeySet {
        let jwks = self.jwks();
        KeySet::from_okp_keys(jwks.keys.iter().map(|k| (k.kid.as_str(), k.x.as_str())))
            .expect("our own keys are valid")
    }

    /// Signs an access token for `user` with `roles`, valid for `ttl` from `now`.
    pub fn issue_access_token(
        &self,
        user: Uuid,
        roles: &[String],
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> anyhow::Result<String> {
        let claims = Claims {
            sub: user.to_string(),
            roles: roles.to_vec(),
            iat: now.timestamp(),
            exp: (now + ttl).timestamp(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.current.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.current.encoding)
            .map_err(|e| anyhow::anyhow!("signing a token: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::jwt::TokenError;

    fn ttl() -> chrono::Duration {
        chrono::Duration::minutes(15)
    }

    #[test]
    fn tokens_carry_the_expected_claims_and_kid() {
        let ring = KeyRing::new(SigningKey::generate(), vec![]);
        let user = Uuid::now_v7();
        let now = Utc::now();
        let token = ring
            .issue_access_token(user, &["customer".into()], now, ttl())
            .unwrap();
        assert_eq!(KeySet::kid_of(&token).unwrap(), ring.current_kid());
        let claims = ring.key_set().verify(&token).unwrap();
        assert_eq!(claims.sub, user.to_string());
        assert_eq!(claims.roles, vec!["customer".to_string()]);
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, AUDIENCE);
        assert_eq!(claims.exp - claims.iat, 15 * 60);
    }

    #[test]
    fn a_token_signed_by_a_retired_key_still_verifies_after_rotation() {
        let old = SigningKey::generate();
        let old_der = old.pkcs8_der().to_vec();
        let before = KeyRing::new(old, vec![]);
        let token = before
            .issue_access_token(Uuid::now_v7(), &[], Utc::now(), ttl())
            .unwrap();

        let after = KeyRing::new(
            SigningKey::generate(),
            vec![SigningKey::from_pkcs8_der(&old_der).unwrap()],
        );
        assert_ne!(after.current_kid(), before.current_kid());
        assert_eq!(after.jwks().keys.len(), 2);
        assert!(
            after.key_set().verify(&token).is_ok(),
            "old token must survive rotation"
        );

        // Once the old key is no longer published, its tokens are refused.
        let later = KeyRing::new(SigningKey::generate(), vec![]);
        assert!(matches!(
            later.key_set().verify(&token),
            Err(TokenError::UnknownKey(_))
        ));
    }

    #[test]
    fn expired_and_tampered_tokens_are_refused() {
        let ring = KeyRing::new(SigningKey::generate(), vec![]);
        let long_ago = Utc::now() - chrono::Duration::hours(2);
        let expired = ring
            .issue_access_token(Uuid::now_v7(), &[], long_ago, ttl())
            .unwrap();
        assert_eq!(ring.key_set().verify(&expired), Err(TokenError::Expired));

        let token = ring
            .issue_access_token(Uuid::now_v7(), &["customer".into()], Utc::now(), ttl())
            .unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let forged = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(&parts[1]).unwrap())
                .unwrap()
                .replace("customer", "admin"),
        );
        parts[1] = forged;
        assert!(matches!(
            ring.key_set().verify(&parts.join(".")),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint_and_survives_reencoding() {
        let key = SigningKey::generate();
        let again = SigningKey::from_pkcs8_der(key.pkcs8_der()).unwrap();
        assert_eq!(key.kid(), again.kid());
        // RFC 8037 appendix A.3 test vector.
        assert_eq!(
            thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
