//! Who is calling: the client address (the peer, or `X-Forwarded-For` behind a trusted
//! proxy) and, when a bearer token is sent, the verified user and roles. The result is a
//! [`Caller`] in the request's extensions for the layers and the router after it; a token
//! that does not verify is answered here with 401. Route access rules (public,
//! authenticated, admin) are the router's: they need the route.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use platform::grpc::Caller;
use uuid::Uuid;

use crate::{auth::Jwks, problem::Problem};

/// A caller with no token: only the address is known.
pub fn anonymous(peer: SocketAddr) -> Caller {
    Caller {
        user_id: None,
        roles: Vec::new(),
        client_ip: Some(peer.ip().to_string()),
        service: None,
    }
}

/// Establishes the [`Caller`] of each request on one connection.
#[derive(Clone)]
pub struct AuthenticateLayer {
    jwks: Jwks,
    trust_forwarded_for: bool,
    peer: SocketAddr,
}

impl AuthenticateLayer {
    /// For a connection from `peer`.
    pub fn new(jwks: Jwks, trust_forwarded_for: bool, peer: SocketAddr) -> Self {
        Self {
            jwks,
            trust_forwarded_for,
            peer,
        }
    }
}

impl<S> tower::Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            config: self.clone(),
        }
    }
}

/// The service made by [`AuthenticateLayer`].
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    config: AuthenticateLayer,
}

fn challenge(error: &str, detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, detail).header(
        header::WWW_AUTHENTICATE,
        &format!(r#"Bearer realm="orderflow", error="{error}""#),
    )
}

/// The bearer token, if any; a malformed Authorization header is an error.
fn bearer(headers: &http::HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| challenge("invalid_request", "the Authorization header is malformed"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim().to_string()))
        }
        _ => Err(challenge(
            "invalid_request",
            "expected Authorization: Bearer <token>",
        )),
    }
}

async fn identify(
    config: &AuthenticateLayer,
    headers: &http::HeaderMap,
) -> Result<Caller, Problem> {
    let mut caller = anonymous(config.peer);
    if config.trust_forwarded_for
        && let Some(client) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    {
        caller.client_ip = Some(client.to_string());
    }
    if let Some(token) = bearer(headers)? {
        let claims = config.jwks.verify(&token).await.map_err(|e| {
            tracing::debug!(error = %e, "token refused");
            metrics::counter!("gateway_tokens_refused_total").increment(1);
            let detail = match e {
                platform::jwt::TokenError::Expired => "the access token has expired",
                _ => "the access token is invalid",
            };
            challenge("invalid_token", detail)
        })?;
        caller.user_id = Some(
            Uuid::parse_str(&claims.sub)
                .map_err(|_| challenge("invalid_token", "the access token is invalid"))?,
        );
        caller.roles = claims.roles;
    }
    Ok(caller)
}

impl<S, B> tower::Service<Request<B>> for Authenticate<S>
where
    S: tower::Service<Request<B>, Response = Response<Full<Bytes>>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone that was made ready is the one that is called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        // Split, so only the (shareable) head is borrowed while the token is checked.
        let (mut parts, body) = req.into_parts();
        Box::pin(async move {
            match identify(&config, &parts.headers).await {
                Ok(caller) => {
                    parts.extensions.insert(caller);
                    inner.call(Request::from_parts(parts, body)).await
                }
                Err(problem) => Ok(problem.into_response(parts.uri.path())),
            }
        })
    }
}
