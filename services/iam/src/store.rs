//! IAM's SQL, against its own schema.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

/// A user with roles, as stored.
#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    /// Primary key (UUIDv7: time-ordered, so it doubles as the page cursor).
    pub id: Uuid,
    /// Normalised email.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Sorted role names.
    pub roles: Vec<String>,
    /// Registration time.
    pub created_at: DateTime<Utc>,
}

const USER_COLUMNS: &str = "u.id, u.email, u.password_hash, u.created_at, \
    COALESCE(ARRAY(SELECT r.role FROM user_roles r WHERE r.user_id = u.id ORDER BY r.role), '{}') AS roles";

/// Outcome of inserting a user.
pub enum Inserted {
    /// Stored.
    Created(UserRow),
    /// The email is taken.
    EmailTaken,
}

/// Creates a user with `roles`, atomically.
pub async fn insert_user(
    pool: &PgPool,
    email: &str,
    password_hash: &str,
    roles: &[&str],
) -> anyhow::Result<Inserted> {
    let mut tx = pool.begin().await?;
    let id = Uuid::now_v7();
    let inserted = sqlx::query("INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3) ON CONFLICT (email) DO NOTHING")
        .bind(id)
        .bind(email)
        .bind(password_hash)
        .execute(&mut *tx)
        .await?;
    if inserted.rows_affected() == 0 {
        return Ok(Inserted::EmailTaken);
    }
    for role in roles {
        sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)")
            .bind(id)
            .bind(role)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Inserted::Created(
        find_user(pool, id).await?.expect("just inserted"),
    ))
}

/// A user by id.
pub async fn find_user(pool: &PgPool, id: Uuid) -> anyhow::Result<Option<UserRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// A user by normalised email.
pub async fn find_user_by_email(pool: &PgPool, email: &str) -> anyhow::Result<Option<UserRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users u WHERE u.email = $1"
    )))
    .bind(email)
    .fetch_optional(pool)
    .await?)
}

/// Up to `limit` users after the cursor `after`, oldest first.
pub async fn list_users(
    pool: &PgPool,
    after: Option<Uuid>,
    limit: i64,
) -> anyhow::Result<Vec<UserRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users u WHERE ($1::uuid IS NULL OR u.id > $1) ORDER BY u.id LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Grants `role` (no-op when held, or when the user does not exist).
pub async fn grant_role(pool: &PgPool, user: Uuid, role: &str) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO user_roles (user_id, role) SELECT id, $2 FROM users WHERE id = $1 ON CONFLICT DO NOTHING",
    )
    .bind(user)
    .bind(role)
    .execute(pool)
    .await?;
    Ok(())
}

/// Outcome of revoking a role.
pub enum Revoked {
    /// Done (or the user did not hold it).
    Done,
    /// Refused: it would leave the shop without any admin.
    LastAdmin,
}

/// Revokes `role`, refusing to remove the last admin. Serialised by locking the admin
/// rows so two concurrent revocations cannot both pass the check.
pub async fn revoke_role(pool: &PgPool, user: Uuid, role: &str) -> anyhow::Result<Revoked> {
    let mut tx = pool.begin().await?;
    if role == "admin" {
        let admins: Vec<Uuid> =
            sqlx::query_scalar("SELECT user_id FROM user_roles WHERE role = 'admin' FOR UPDATE")
                .fetch_all(&mut *tx)
                .await?;
        if admins == [user] {
            return Ok(Revoked::LastAdmin);
        }
    }
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = $2")
        .bind(user)
        .bind(role)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Revoked::Done)
}

/// SHA-256 of a refresh token: tokens are 256 random bits, so a fast hash suffices.
pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Stores a new refresh token of `family`.
pub async fn insert_refresh_token(
    pool: &PgPool,
    family: Uuid,
    user: Uuid,
    token: &str,
    expires_at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(Uuid::now_v7())
        .bind(family)
        .bind(user)
        .bind(hash_refresh_token(token))
        .bind(expires_at)
        .execute(pool)
        .await?;
    Ok(())
}

/// What presenting a refresh token led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live and is now spent: issue the next one in `family` for `user`.
    Rotated {
        /// The token's family.
        family: Uuid,
        /// Its owner.
        user: Uuid,
    },
    /// The token was already spent or revoked: its family has now been revoked.
    Reused,
    /// Unknown or expired.
    Invalid,
}

/// Spends a refresh token atomically: of two concurrent presentations only one rotates;
/// the other counts as reuse and revokes the family.
pub async fn spend_refresh_token(pool: &PgPool, token: &str) -> anyhow::Result<Rotation> {
    let hash = hash_refresh_token(token);
    let mut tx = pool.begin().await?;
    let spent: Option<(Uuid, Uuid)> = sqlx::query_as(
        "UPDATE refresh_tokens SET used_at = now() \
         WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now() \
         RETURNING family_id, user_id",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((family, user)) = spent {
        tx.commit().await?;
        return Ok(Rotation::Rotated { family, user });
    }
    let known: Option<(Uuid, bool)> = sqlx::query_as(
        "SELECT family_id, (used_at IS NOT NULL OR revoked_at IS NOT NULL) FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?;
    match known {
        Some((family, true)) => {
            revoke_family_in(&mut tx, family).await?;
            tx.commit().await?;
            tracing::warn!(%family, "a spent refresh token was presented again: family revoked");
            Ok(Rotation::Reused)
        }
        _ => Ok(Rotation::Invalid),
    }
}

async fn revoke_family_in(tx: &mut sqlx::PgConnection, family: Uuid) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family)
    .execute(tx)
    .await?;
    Ok(())
}

/// Revokes the family of `token` (logout). Unknown tokens are ignored.
pub async fn revoke_family_of(pool: &PgPool, token: &str) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() \
         WHERE revoked_at IS NULL AND family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
    )
    .bind(hash_refresh_token(token))
    .execute(pool)
    .await?;
    Ok(())
}

/// The development signing key, generating and keeping one on first use. An advisory lock
/// makes replicas starting together agree on a single key.
pub async fn development_signing_key(
    pool: &PgPool,
    generate: impl FnOnce() -> (String, Vec<u8>),
) -> anyhow::Result<Vec<u8>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('iam.signing_keys'))")
        .execute(&mut *tx)
        .await?;
    let existing: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT private_key_der FROM signing_keys ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let der = match existing {
        Some(der) => der,
        None => {
            let (kid, der) = generate();
            sqlx::query("INSERT INTO signing_keys (kid, private_key_der) VALUES ($1, $2)")
                .bind(kid)
                .bind(&der)
                .execute(&mut *tx)
                .await?;
            tracing::warn!(
                "no IAM_SIGNING_KEY_FILE configured: generated a development signing key and kept it in the iam schema; configure a key in production"
            );
            der
        }
    };
    tx.commit().await?;
    Ok(der)
}
