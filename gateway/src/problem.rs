//! Errors as RFC 9457 problem details: the one table that maps gRPC status codes to HTTP.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

/// The HTTP status for a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        // An upstream that cancelled the call (one draining on SIGTERM cancels what it
        // has not answered) did not fail the request: the client tries again.
        Code::Unavailable | Code::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A problem response under construction.
pub struct Problem {
    status: StatusCode,
    detail: Option<String>,
    errors: Vec<Value>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem with `status` and a human-readable `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: Some(detail.into()),
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Names an offending field (JSON spelling) and what is wrong with it.
    pub fn field(mut self, field: &str, detail: impl Into<String>) -> Self {
        self.errors
            .push(json!({ "field": field, "detail": detail.into() }));
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// The problem for a gRPC status from upstream. Details of 5xx answers are never
    /// passed on; field violations and retry delays are.
    pub fn from_status(status: &tonic::Status) -> Self {
        Self::from_status_of(status, None)
    }

    /// As [`Problem::from_status`], naming violated fields as the JSON of `input` (the
    /// RPC's request message) spells them, custom `json_name`s included.
    pub fn from_status_of(
        status: &tonic::Status,
        input: Option<&prost_reflect::MessageDescriptor>,
    ) -> Self {
        let mut http = http_status(status.code());
        if status.code() == Code::FailedPrecondition
            && status
                .get_error_details()
                .error_info()
                .is_some_and(|i| i.reason == platform::grpc::UNPROCESSABLE_REASON)
        {
            http = StatusCode::UNPROCESSABLE_ENTITY;
        }
        let mut problem = if http.is_server_error() {
            let detail = match status.code() {
                Code::Unavailable | Code::Cancelled => {
                    "the service is temporarily unavailable; try again shortly"
                }
                Code::DeadlineExceeded => "the service did not answer in time",
                Code::Unimplemented => "not implemented",
                _ => "internal error",
            };
            Self::new(http, detail)
        } else {
            Self::new(http, status.message())
        };
        if !http.is_server_error() {
            let details = status.get_error_details();
            if let Some(bad) = details.bad_request() {
                for v in &bad.field_violations {
                    let name = match input {
                        Some(input) => json_name_in(input, &v.field),
                        None => json_name(&v.field),
                    };
                    problem = problem.field(&name, v.description.clone());
                }
            }
            if let Some(retry) = details.retry_info().and_then(|r| r.retry_delay) {
                problem = problem.header(header::RETRY_AFTER, &retry.as_secs().max(1).to_string());
            }
        }
        if http == StatusCode::UNAUTHORIZED {
            problem = problem.header(header::WWW_AUTHENTICATE, r#"Bearer realm="orderflow""#);
        }
        if http == StatusCode::SERVICE_UNAVAILABLE {
            problem = problem.header(header::RETRY_AFTER, "1");
        }
        problem
    }

    /// The response, with `instance` set to the request path.
    pub fn into_response(self, instance: &str) -> Response<Full<Bytes>> {
        let mut body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "instance": instance,
        });
        if let Some(detail) = self.detail {
            body["detail"] = Value::String(detail);
        }
        if !self.errors.is_empty() {
            body["errors"] = Value::Array(self.errors);
        }
        let mut response = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/problem+json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("static response parts are valid");
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

/// A dotted field path of `message` in its JSON spelling: each known field by its
/// descriptor's `json_name`, anything else (a header named as a field) by [`json_name`].
pub fn json_name_in(message: &prost_reflect::MessageDescriptor, field: &str) -> String {
    let mut current = Some(message.clone());
    field
        .split('.')
        .map(|part| {
            let found = current.as_ref().and_then(|m| m.get_field_by_name(part));
            current = found.as_ref().and_then(|f| match f.kind() {
                prost_reflect::Kind::Message(m) => Some(m),
                _ => None,
            });
            found.map_or_else(|| json_name(part), |f| f.json_name().to_string())
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// `card.exp_month` → `card.expMonth`: services name proto fields, callers see JSON names.
pub fn json_name(field: &str) -> String {
    field
        .split('.')
        .map(|part| {
            let mut out = String::with_capacity(part.len());
            let mut upper = false;
            for c in part.chars() {
                if c == '_' {
                    upper = true;
                } else if upper {
                    out.extend(c.to_uppercase());
                    upper = false;
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn every_code_maps_as_documented() {
        for (code, status) in [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::OutOfRange, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::Cancelled, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
        ] {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
    }

    async fn body_of(resp: Response<Full<Bytes>>) -> Value {
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
    }

    #[tokio::test]
    async fn field_violations_and_retry_delays_pass_through() {
        let status = platform::grpc::invalid_argument("page_size", "must be between 1 and 100");
        let resp = Problem::from_status(&status).into_response("/v1/users");
        assert_eq!(resp.status(), 400);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = body_of(resp).await;
        assert_eq!(body["errors"][0]["field"], "pageSize");
        assert_eq!(body["instance"], "/v1/users");

        let status =
            platform::grpc::too_many_requests("slow down", std::time::Duration::from_secs(42));
        let resp = Problem::from_status(&status).into_response("/v1/auth/login");
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "42");
    }

    #[tokio::test]
    async fn internal_detail_never_leaks() {
        let status = tonic::Status::internal("relation \"users\" does not exist");
        let resp = Problem::from_status(&status).into_response("/v1/me");
        assert_eq!(resp.status(), 500);
        let body = body_of(resp).await;
        assert_eq!(body["detail"], "internal error");
    }

    #[test]
    fn an_unprocessable_request_is_422_naming_the_field() {
        let problem = Problem::from_status(&platform::grpc::unprocessable(
            "Idempotency-Key",
            "was already used for a different request",
        ));
        assert_eq!(problem.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem.errors[0]["field"], "Idempotency-Key");
    }

    #[test]
    fn json_names_are_lower_camel_case() {
        assert_eq!(json_name("card.exp_month"), "card.expMonth");
        assert_eq!(json_name("email"), "email");
    }
}
