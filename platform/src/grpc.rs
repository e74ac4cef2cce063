//! gRPC conventions shared by every service: who is calling, errors with details, and
//! internal failures that are logged but never described to callers.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

/// Metadata key: the request id, for correlating logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The caller of an RPC, as the service's own [`crate::grpc_auth`] layer established it
/// from a verified internal token ([`crate::identity`]). Nothing else makes a caller: plain
/// headers such as `x-orderflow-user-id` are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The signed-in user on whose behalf the call is made, if any.
    pub user_id: Option<Uuid>,
    /// That user's roles (empty when anonymous).
    pub roles: Vec<String>,
    /// The end client's address, when the gateway vouched for it.
    pub client_ip: Option<String>,
    /// The role that made the call (`gateway`, `order`, …), when it sent a token.
    pub service: Option<String>,
}

impl Caller {
    /// The verified caller of `request` (anonymous when it carried no token).
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_default()
    }

    /// Whether the caller holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the call comes from one of orderflow's backend services (not the gateway,
    /// which speaks for outside clients).
    pub fn is_backend_service(&self) -> bool {
        self.service
            .as_deref()
            .is_some_and(|s| s != crate::identity::GATEWAY)
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

/// Metadata key: the client's `Idempotency-Key`, forwarded by the gateway.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The client's Idempotency-Key as the gateway forwarded it (trimmed), `None` when absent
/// or empty; one that is not visible ASCII or longer than 255 characters is
/// INVALID_ARGUMENT naming the header. Services that keep their own idempotency (payment,
/// placing an order) read it here, so both judge a key alike.
pub fn idempotency_key(md: &tonic::metadata::MetadataMap) -> Result<Option<String>, Status> {
    let Some(value) = md.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| invalid_argument("Idempotency-Key", "must be visible ASCII characters"))?
        .trim();
    if key.len() > 255 {
        return Err(invalid_argument(
            "Idempotency-Key",
            "must be at most 255 characters",
        ));
    }
    Ok((!key.is_empty()).then(|| key.to_string()))
}

/// An optional timestamp field as a time; INVALID_ARGUMENT naming `field` when it is out
/// of range (never silently read as absent).
pub fn time_field(
    field: &str,
    t: &Option<prost_types::Timestamp>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Status> {
    t.as_ref()
        .map(|t| {
            chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
                .ok_or_else(|| invalid_argument(field, "is out of range"))
        })
        .transpose()
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
/// callers never see internal detail. A database that could not be reached is not a
/// fault of the request: that is UNAVAILABLE, which callers retry (reads) or report as
/// 503 with Retry-After (writes, which clients repeat with their Idempotency-Key).
pub fn internal(error: impl Into<anyhow::Error>) -> Status {
    let error = error.into();
    if crate::db::is_unavailable(&error) {
        tracing::warn!(error = format!("{error:#}"), "database unavailable");
        return Status::unavailable("the database is unavailable; try again shortly");
    }
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
    fn a_database_out_of_reach_is_unavailable_and_any_other_failure_internal() {
        for unreachable in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
        ] {
            let status = internal(anyhow::Error::from(unreachable).context("loading an order"));
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        }
        let status = internal(sqlx::Error::RowNotFound);
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn anonymous_and_customer_callers_are_refused_admin_work() {
        let anon = Caller::of(&tonic::Request::new(()));
        assert_eq!(
            anon.require_admin().unwrap_err().code(),
            Code::Unauthenticated
        );
        let customer = Caller {
            user_id: Some(Uuid::now_v7()),
            roles: vec!["customer".into()],
            ..Caller::default()
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
