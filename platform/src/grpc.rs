//! gRPC conventions shared by every service: who is calling, errors with details, and
//! internal failures that are logged but never described to callers.

use std::time::Duration;

use tonic::{Code, Status, metadata::MetadataMap};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

/// Metadata key: the verified user id, set by the gateway after checking the JWT.
pub const USER_ID_HEADER: &str = "x-orderflow-user-id";
/// Metadata key: the verified user's roles, comma separated.
pub const ROLES_HEADER: &str = "x-orderflow-roles";
/// Metadata key: the client's address as the gateway saw it (for throttling).
pub const CLIENT_IP_HEADER: &str = "x-orderflow-client-ip";
/// Metadata key: the request id, for correlating logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The caller of an RPC as established by the gateway. Services inside the mesh trust
/// these headers: the gateway strips them from public requests and sets them only after
/// verifying a token, and the mesh's AuthorizationPolicy admits only the expected callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The signed-in user, if any.
    pub user_id: Option<Uuid>,
    /// That user's roles (empty when anonymous).
    pub roles: Vec<String>,
    /// The client address, when known.
    pub client_ip: Option<String>,
}

impl Caller {
    /// Reads the caller from request metadata.
    pub fn from_metadata(md: &MetadataMap) -> Self {
        let text = |k: &str| {
            md.get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        Self {
            user_id: text(USER_ID_HEADER).and_then(|s| Uuid::parse_str(s).ok()),
            roles: text(ROLES_HEADER)
                .map(|s| {
                    s.split(',')
                        .map(|r| r.trim().to_string())
                        .filter(|r| !r.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            client_ip: text(CLIENT_IP_HEADER).map(str::to_string),
        }
    }

    /// Writes the caller into outgoing metadata (the gateway, and service-to-service calls
    /// made on a user's behalf).
    pub fn write_to(&self, md: &mut MetadataMap) {
        if let Some(id) = self.user_id
            && let Ok(v) = id.to_string().parse()
        {
            md.insert(USER_ID_HEADER, v);
        }
        if !self.roles.is_empty()
            && let Ok(v) = self.roles.join(",").parse()
        {
            md.insert(ROLES_HEADER, v);
        }
        if let Some(ip) = &self.client_ip
            && let Ok(v) = ip.parse()
        {
            md.insert(CLIENT_IP_HEADER, v);
        }
    }

    /// Whether the caller holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// The signed-in user, or Unauthenticated.
    pub fn require_user(&self) -> Result<Uuid, Status> {
        self.user_id
            .ok_or_else(|| Status::unauthenticated("sign in first"))
    }

    /// The signed-in user holding `admin`, or Unauthenticated / PermissionDenied.
    pub fn require_admin(&self) -> Result<Uuid, Status> {
        let id = self.require_user()?;
        if self.has_role("admin") {
            Ok(id)
        } else {
            Err(Status::permission_denied("this needs the admin role"))
        }
    }
}

/// INVALID_ARGUMENT naming the offending field in a `google.rpc.BadRequest` detail (the
/// gateway turns it into a 400 problem+json that names the field).
pub fn invalid_argument(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {description}"),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// FAILED_PRECONDITION naming the field whose value cannot be acted on.
pub fn failed_precondition(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    Status::with_error_details(
        Code::FailedPrecondition,
        format!("{field}: {description}"),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// `google.rpc.ErrorInfo` reason that the gateway answers with 422 Unprocessable Content.
pub const UNPROCESSABLE_REASON: &str = "UNPROCESSABLE_CONTENT";

/// A well-formed request that cannot be processed as sent (e.g. an idempotency key
/// reused for a different request): FAILED_PRECONDITION naming the field, marked so the
/// gateway answers 422.
pub fn unprocessable(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    let mut details = ErrorDetails::with_bad_request_violation(field, description.clone());
    details.set_error_info(
        UNPROCESSABLE_REASON,
        "orderflow",
        std::collections::HashMap::new(),
    );
    Status::with_error_details(
        Code::FailedPrecondition,
        format!("{field}: {description}"),
        details,
    )
}

/// RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` (the gateway sends `Retry-After`).
pub fn too_many_requests(message: impl Into<String>, retry_after: Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

/// Logs an unexpected failure with its whole cause chain and returns a bare INTERNAL:
/// callers never see internal detail.
pub fn internal(error: impl Into<anyhow::Error>) -> Status {
    let error = error.into();
    tracing::error!(error = format!("{error:#}"), "internal error");
    Status::internal("internal error")
}

/// The standard `grpc.health.v1` service's status is reported by each service through
/// `tonic-health`; this names the overall (empty) service used by load balancers.
pub const OVERALL_HEALTH_SERVICE: &str = "";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_round_trips_through_metadata() {
        let caller = Caller {
            user_id: Some(Uuid::now_v7()),
            roles: vec!["customer".into(), "admin".into()],
            client_ip: Some("10.0.0.7".into()),
        };
        let mut md = MetadataMap::new();
        caller.write_to(&mut md);
        assert_eq!(Caller::from_metadata(&md), caller);
        assert!(caller.require_admin().is_ok());
    }

    #[test]
    fn anonymous_and_customer_callers_are_refused_admin_work() {
        let anon = Caller::from_metadata(&MetadataMap::new());
        assert_eq!(
            anon.require_admin().unwrap_err().code(),
            Code::Unauthenticated
        );
        let customer = Caller {
            user_id: Some(Uuid::now_v7()),
            roles: vec!["customer".into()],
            client_ip: None,
        };
        assert_eq!(
            customer.require_admin().unwrap_err().code(),
            Code::PermissionDenied
        );
    }

    #[test]
    fn invalid_argument_carries_the_field() {
        let status = invalid_argument("password", "must be at least 12 characters");
        let details = status.get_error_details();
        let violation = &details.bad_request().unwrap().field_violations[0];
        assert_eq!(violation.field, "password");
        assert_eq!(status.code(), Code::InvalidArgument);
    }
}
