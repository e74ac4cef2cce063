//! The gRPC adapter: proto ↔ domain, and every error turned into a `Status` here.

use std::sync::Arc;

use chrono::Utc;
use platform::grpc::{Caller, internal, invalid_argument, too_many_requests};
use proto::iam::v1::{
    GrantRoleRequest, Jwks, ListUsersRequest, ListUsersResponse, LoginRequest, LogoutRequest,
    RefreshRequest, RegisterRequest, RevokeRoleRequest, TokenPair, User,
    iam_service_server::IamService,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    IamState,
    domain::{Email, Password, Role, hash_password, verify_password},
    store::{self, Inserted, Revoked, Rotation, UserRow},
};

/// The `IamService` implementation.
#[derive(Clone)]
pub struct IamGrpc {
    state: Arc<IamState>,
}

impl IamGrpc {
    /// Serves `state`.
    pub fn new(state: Arc<IamState>) -> Self {
        Self { state }
    }
}

const MAX_PAGE_SIZE: i32 = 100;
const DEFAULT_PAGE_SIZE: i32 = 20;

fn to_proto(user: UserRow) -> User {
    User {
        id: user.id.to_string(),
        email: user.email,
        roles: user.roles,
        created_at: Some(prost_types::Timestamp {
            seconds: user.created_at.timestamp(),
            nanos: user.created_at.timestamp_subsec_nanos() as i32,
        }),
    }
}

fn parse_user_id(raw: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(raw.trim()).map_err(|_| invalid_argument("id", "is not a valid user id"))
}

fn unauthenticated() -> Status {
    // The same answer for an unknown email and a wrong password: no account probing.
    Status::unauthenticated("invalid email or password")
}

impl IamGrpc {
    async fn existing_user(&self, id: Uuid) -> Result<UserRow, Status> {
        store::find_user(&self.state.pool, id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found("user not found"))
    }

    async fn token_pair(
        &self,
        user: Uuid,
        roles: &[String],
        family: Uuid,
    ) -> Result<TokenPair, Status> {
        let s = &self.state.settings;
        let now = Utc::now();
        let access = self
            .state
            .keys
            .issue_access_token(user, roles, now, s.access_token_ttl)
            .map_err(internal)?;
        let refresh = crate::new_refresh_token();
        store::insert_refresh_token(
            &self.state.pool,
            family,
            user,
            &refresh,
            now + s.refresh_token_ttl,
        )
        .await
        .map_err(internal)?;
        Ok(TokenPair {
            access_token: access,
            token_type: "Bearer".into(),
            expires_in: s.access_token_ttl.num_seconds(),
            refresh_token: refresh,
            refresh_expires_in: s.refresh_token_ttl.num_seconds(),
        })
    }
}

#[tonic::async_trait]
impl IamService for IamGrpc {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<User>, Status> {
        let req = request.into_inner();
        let email = Email::parse(&req.email).map_err(|e| invalid_argument("email", e))?;
        let password =
            Password::parse(&req.password).map_err(|e| invalid_argument("password", e))?;
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        match store::insert_user(
            &self.state.pool,
            email.as_str(),
            &hash,
            &[Role::Customer.as_str()],
        )
        .await
        .map_err(internal)?
        {
            Inserted::Created(user) => {
                tracing::info!(user = %user.id, "user registered");
                metrics::counter!("iam_registrations_total").increment(1);
                Ok(Response::new(to_proto(user)))
            }
            Inserted::EmailTaken => Err(Status::already_exists(
                "an account with this email already exists",
            )),
        }
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<TokenPair>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let email = Email::parse(&req.email).map_err(|e| invalid_argument("email", e))?;
        if req.password.is_empty() {
            return Err(invalid_argument("password", "is required"));
        }
        let address = caller.client_ip.as_deref();
        if let Some(wait) = self
            .state
            .throttle
            .blocked_for(email.as_str(), address)
            .await
        {
            metrics::counter!("iam_login_throttled_total").increment(1);
            return Err(too_many_requests(
                "too many failed sign-in attempts; try again later",
                wait,
            ));
        }
        let user = store::find_user_by_email(&self.state.pool, email.as_str())
            .await
            .map_err(internal)?;
        // Verify against a real hash even for unknown emails so timing does not reveal them.
        let hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.state.decoy_hash.clone());
        let password = req.password;
        let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .map_err(internal)?;
        let user = match (user, matches) {
            (Some(user), true) => user,
            _ => {
                self.state
                    .throttle
                    .record_failure(email.as_str(), address)
                    .await;
                metrics::counter!("iam_login_failures_total").increment(1);
                return Err(unauthenticated());
            }
        };
        self.state.throttle.record_success(email.as_str()).await;
        let pair = self
            .token_pair(user.id, &user.roles, Uuid::now_v7())
            .await?;
        tracing::info!(user = %user.id, "signed in");
        Ok(Response::new(pair))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<TokenPair>, Status> {
        let token = request.into_inner().refresh_token;
        if token.trim().is_empty() {
            return Err(invalid_argument("refresh_token", "is required"));
        }
        match store::spend_refresh_token(&self.state.pool, &token)
            .await
            .map_err(internal)?
        {
            Rotation::Rotated { family, user } => {
                // Roles are read afresh, so a grant or revoke shows in the next token.
                let user = store::find_user(&self.state.pool, user)
                    .await
                    .map_err(internal)?
                    .ok_or_else(|| Status::unauthenticated("account no longer exists"))?;
                Ok(Response::new(
                    self.token_pair(user.id, &user.roles, family).await?,
                ))
            }
            Rotation::Reused => {
                metrics::counter!("iam_refresh_token_reuse_total").increment(1);
                Err(Status::unauthenticated(
                    "refresh token already used: this session has been revoked, sign in again",
                ))
            }
            Rotation::Invalid => Err(Status::unauthenticated(
                "refresh token is invalid or expired",
            )),
        }
    }

    async fn logout(&self, request: Request<LogoutRequest>) -> Result<Response<()>, Status> {
        let token = request.into_inner().refresh_token;
        if token.trim().is_empty() {
            return Err(invalid_argument("refresh_token", "is required"));
        }
        store::revoke_family_of(&self.state.pool, &token)
            .await
            .map_err(internal)?;
        Ok(Response::new(()))
    }

    async fn get_me(&self, request: Request<()>) -> Result<Response<User>, Status> {
        let id = Caller::of(&request).require_user()?;
        let user = store::find_user(&self.state.pool, id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found("account not found"))?;
        Ok(Response::new(to_proto(user)))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        Caller::of(&request).require_admin()?;
        let req = request.into_inner();
        let size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => {
                return Err(invalid_argument(
                    "page_size",
                    format!("must be between 1 and {MAX_PAGE_SIZE}"),
                ));
            }
        };
        let after =
            match req.page_token.trim() {
                "" => None,
                t => Some(Uuid::parse_str(t).map_err(|_| {
                    invalid_argument("page_token", "is not a token this API issued")
                })?),
            };
        let mut rows = store::list_users(&self.state.pool, after, i64::from(size) + 1)
            .await
            .map_err(internal)?;
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last().map(|u| u.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListUsersResponse {
            users: rows.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn grant_role(
        &self,
        request: Request<GrantRoleRequest>,
    ) -> Result<Response<User>, Status> {
        let admin = Caller::of(&request).require_admin()?;
        let req = request.into_inner();
        let id = parse_user_id(&req.id)?;
        let role = Role::parse(&req.role).map_err(|e| invalid_argument("role", e))?;
        store::grant_role(&self.state.pool, id, role.as_str())
            .await
            .map_err(internal)?;
        // Granting to an unknown id changes nothing; reading the user back says so.
        let user = self.existing_user(id).await?;
        tracing::info!(%admin, user = %id, role = role.as_str(), "role granted");
        Ok(Response::new(to_proto(user)))
    }

    async fn revoke_role(
        &self,
        request: Request<RevokeRoleRequest>,
    ) -> Result<Response<User>, Status> {
        let admin = Caller::of(&request).require_admin()?;
        let req = request.into_inner();
        let id = parse_user_id(&req.id)?;
        let role = Role::parse(&req.role).map_err(|e| invalid_argument("role", e))?;
        if let Revoked::LastAdmin = store::revoke_role(&self.state.pool, id, role.as_str())
            .await
            .map_err(internal)?
        {
            return Err(platform::grpc::failed_precondition(
                "role",
                "cannot revoke the last admin",
            ));
        }
        // Revoking from an unknown id changes nothing; reading the user back says so.
        let user = self.existing_user(id).await?;
        tracing::info!(%admin, user = %id, role = role.as_str(), "role revoked");
        Ok(Response::new(to_proto(user)))
    }

    async fn get_jwks(&self, _request: Request<()>) -> Result<Response<Jwks>, Status> {
        Ok(Response::new(self.state.keys.jwks()))
    }
}
