//! IAM rules as plain values: no I/O here.

use std::fmt;

/// A normalised (trimmed, lower-cased), syntactically valid email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Normalises and validates; the error says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let normalised = raw.trim().to_lowercase();
        if normalised.is_empty() {
            return Err("is required".into());
        }
        if normalised.len() > 254 {
            return Err("is longer than 254 characters".into());
        }
        if !email_address::EmailAddress::is_valid(&normalised) || !normalised.contains('.') {
            return Err("is not a valid email address".into());
        }
        Ok(Self(normalised))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fewest characters a password may have.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The most: argon2 cost grows with input, and nobody types more.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// A password that meets the policy. Never printed.
pub struct Password(String);

impl Password {
    /// Checks the policy: 12 to 256 characters (Unicode scalar values), not only spaces.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let chars = raw.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
        }
        if raw.trim().is_empty() {
            return Err("must not be only whitespace".into());
        }
        Ok(Self(raw.to_string()))
    }

    /// The password itself, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A role a user can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every registered user.
    Customer,
    /// Manages users, the catalog, refunds and tax documents.
    Admin,
}

impl Role {
    /// Parses `customer` or `admin`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "customer" => Ok(Self::Customer),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected \"customer\" or \"admin\""
            )),
        }
    }

    /// The stored and token spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }
}

/// Hashes with argon2id at the crate's recommended (OWASP) parameters, as a PHC string.
pub fn hash_password(password: &Password) -> anyhow::Result<String> {
    use argon2::{Argon2, password_hash::PasswordHasher};
    Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

/// Whether `candidate` matches the PHC `hash`. A malformed hash never matches.
pub fn verify_password(candidate: &str, hash: &str) -> bool {
    use argon2::{Argon2, PasswordHash, password_hash::PasswordVerifier};
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(candidate.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            Email::parse("  Ana.Perez@Example.CL ").unwrap().as_str(),
            "ana.perez@example.cl"
        );
    }

    #[test]
    fn bad_emails_are_refused() {
        for bad in [
            "",
            "   ",
            "ana",
            "ana@",
            "@example.cl",
            "ana perez@example.cl",
            "ana@localhost",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn passwords_need_twelve_characters() {
        assert!(Password::parse("elevenchars").is_err());
        assert!(Password::parse("twelve chars").is_ok());
        // Counted in characters, not bytes: 12 accented letters pass, 11 do not.
        assert!(Password::parse("ñññññññññññ").is_err());
        assert!(Password::parse("ññññññññññññ").is_ok());
        assert!(Password::parse("            ").is_err());
        assert!(Password::parse(&"x".repeat(257)).is_err());
    }

    #[test]
    fn password_debug_output_hides_the_value() {
        let p = Password::parse("correct horse battery").unwrap();
        assert_eq!(format!("{p:?}"), "Password(***)");
    }

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let p = Password::parse("correct horse battery").unwrap();
        let hash = hash_password(&p).unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse battery!", &hash));
        assert!(!verify_password("anything", "not a phc string"));
    }

    #[test]
    fn roles_parse() {
        assert_eq!(Role::parse("admin").unwrap(), Role::Admin);
        assert_eq!(Role::parse("customer").unwrap().as_str(), "customer");
        assert!(Role::parse("root").is_err());
    }
}
