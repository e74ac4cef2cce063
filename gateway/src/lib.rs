//! The public REST/JSON edge of orderflow.
//!
//! Routes come from the `google.api.http` annotations in the descriptor set
//! ([`routes`]); requests are transcoded JSON ⇄ protobuf ([`transcode`]) and forwarded
//! over gRPC; access tokens are verified locally against IAM's JWKS ([`auth`]); gRPC
//! status becomes RFC 9457 problem+json ([`problem`]). Built on hyper + tower only.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod auth;
pub mod authenticate;
pub mod docs;
pub mod idempotency;
pub mod load_shed;
pub mod openapi;
pub mod problem;
pub mod rate_limit;
pub mod routes;
pub mod transcode;
pub mod upstream;
pub mod web;

use std::{collections::HashMap, convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use platform::{
    CancellationToken,
    admin::Readiness,
    config::{ConfigError, Reader},
    grpc::Caller,
};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceBuilder;
use tower_http::{
    compression::CompressionLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
};

use crate::{
    access_log::{AccessLogLayer, RouteLabel},
    auth::Jwks,
    authenticate::AuthenticateLayer,
    idempotency::{GatewayBody, IdempotencyLayer},
    load_shed::LoadShedLayer,
    problem::Problem,
    rate_limit::RateLimitLayer,
    routes::{Access, Lookup, Route, RouteTable},
    transcode::{RequestError, build_request, render_response},
};

/// The upstream services and their default gRPC addresses (the ports `orderflow all` uses).
pub const UPSTREAMS: &[(&str, u16)] = &[
    ("iam", 50051),
    ("catalog", 50052),
    ("order", 50053),
    ("payment", 50054),
    ("dte", 50055),
];

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// `GATEWAY_ADDR`: where the REST API listens.
    pub addr: SocketAddr,
    /// `GATEWAY_<SERVICE>_URL` (e.g. `GATEWAY_IAM_URL`): each upstream's gRPC URL.
    pub upstreams: HashMap<String, String>,
    /// Deadlines per route (sent as `grpc-timeout`; past them the client gets 504):
    /// `GATEWAY_READ_TIMEOUT` for GET routes, `GATEWAY_UPSTREAM_TIMEOUT` for the others,
    /// `GATEWAY_ROUTE_TIMEOUTS` (`METHOD /template=duration`, comma separated) per route.
    pub timeouts: upstream::RouteTimeouts,
    /// `GATEWAY_READ_RETRIES`: retries of a GET refused with UNAVAILABLE (within a retry
    /// budget).
    pub read_retries: u32,
    /// `GATEWAY_MAX_BODY_BYTES`: larger request bodies get 413.
    pub max_body_bytes: usize,
    /// `GATEWAY_TRUST_FORWARDED_FOR`: take the client address from `X-Forwarded-For`
    /// (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
    /// `GATEWAY_MAX_IN_FLIGHT`: requests served at once; more are shed with 503.
    pub max_in_flight: usize,
    /// `GATEWAY_MAX_WAITS`: long polls (`GET …?waitFor=`) waiting at once, apart from
    /// `GATEWAY_MAX_IN_FLIGHT`; more are shed with 503.
    pub max_waits: usize,
    /// `GATEWAY_CORS_ORIGINS`: browser origins allowed to call the API (comma separated;
    /// `*` for any; empty: no CORS headers, so browsers allow same-origin only).
    pub cors_origins: Vec<String>,
    /// `GATEWAY_RATE_LIMIT_API` (e.g. `100/s`) and `GATEWAY_RATE_LIMIT_API_BURST`: the
    /// budget of each user (or, signed out, each client address) on most routes.
    pub rate_limit_api: rate_limit::Quota,
    /// `GATEWAY_RATE_LIMIT_AUTH` and `GATEWAY_RATE_LIMIT_AUTH_BURST`: the stricter budget
    /// on `/v1/auth/*`.
    pub rate_limit_auth: rate_limit::Quota,
    /// `GATEWAY_RATE_LIMIT_SHARE`: how many of a caller's requests a replica takes from
    /// Redis at once; unset, a tenth of the burst (at least one). `1` asks Redis on every
    /// request.
    pub rate_limit_share: Option<u32>,
    /// `REDIS_URL`: where rate-limit budgets are kept (shared by every replica).
    pub redis_url: platform::config::Secret,
    /// `REDIS_KEY_PREFIX`.
    pub redis_key_prefix: String,
    /// `INTERNAL_TOKEN_KEY`: signs the credential of every upstream call (the caller's
    /// identity, verified here, as the services verify it again).
    pub internal_key: Option<Arc<platform::identity::InternalKey>>,
    /// `GRPC_TLS_*`: mutual TLS to the upstreams, when configured.
    pub grpc_tls: Option<platform::tls::GrpcTls>,
}

impl GatewaySettings {
    /// Reads the gateway's settings.
    pub fn from_source(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let mut upstreams = HashMap::new();
        for (name, port) in UPSTREAMS {
            let key = format!("GATEWAY_{}_URL", name.to_uppercase());
            let url = r.string(&key, &format!("http://127.0.0.1:{port}"));
            if Endpoint::from_shared(url.clone()).is_err()
                || !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(ConfigError {
                    key,
                    problem: format!("is malformed ({url:?}): expected an http:// URL"),
                });
            }
            upstreams.insert(name.to_string(), url);
        }
        Ok(Self {
            addr: r.parse("GATEWAY_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            upstreams,
            timeouts: upstream::RouteTimeouts {
                read: r.duration("GATEWAY_READ_TIMEOUT", Duration::from_secs(5))?,
                write: r.duration("GATEWAY_UPSTREAM_TIMEOUT", Duration::from_secs(15))?,
                overrides: upstream::RouteTimeouts::parse_overrides(
                    &r.string("GATEWAY_ROUTE_TIMEOUTS", upstream::DEFAULT_OVERRIDES),
                )
                .map_err(|problem| ConfigError {
                    key: "GATEWAY_ROUTE_TIMEOUTS".into(),
                    problem,
                })?,
            },
            read_retries: r.parse("GATEWAY_READ_RETRIES", 2)?,
            max_body_bytes: r.parse("GATEWAY_MAX_BODY_BYTES", 1024 * 1024)?,
            trust_forwarded_for: r.parse("GATEWAY_TRUST_FORWARDED_FOR", false)?,
            max_in_flight: r.parse("GATEWAY_MAX_IN_FLIGHT", 1024)?,
            max_waits: r.parse("GATEWAY_MAX_WAITS", 10_000)?,
            cors_origins: cors_origins(&r.string("GATEWAY_CORS_ORIGINS", ""))?,
            rate_limit_api: quota(r, "GATEWAY_RATE_LIMIT_API", "100/s", 200)?,
            rate_limit_auth: quota(r, "GATEWAY_RATE_LIMIT_AUTH", "60/m", 20)?,
            rate_limit_share: match r.optional("GATEWAY_RATE_LIMIT_SHARE") {
                None => None,
                Some(raw) => Some(
                    raw.trim()
                        .parse()
                        .ok()
                        .filter(|n: &u32| *n > 0)
                        .ok_or_else(|| ConfigError {
                            key: "GATEWAY_RATE_LIMIT_SHARE".into(),
                            problem: format!("{raw:?} is not a positive number of requests"),
                        })?,
                ),
            },
            redis_url: r.secret("REDIS_URL", "redis://127.0.0.1:6379/"),
            redis_key_prefix: r.string("REDIS_KEY_PREFIX", "orderflow:"),
            internal_key: platform::identity::InternalKey::from_settings(r)?,
            grpc_tls: platform::tls::GrpcTls::from_settings(r)?,
        })
    }
}

fn quota(
    r: &Reader<'_>,
    key: &str,
    rate: &str,
    burst: u32,
) -> Result<rate_limit::Quota, ConfigError> {
    let burst_key = format!("{key}_BURST");
    let burst = r.parse(&burst_key, burst)?;
    rate_limit::Quota::parse_rate(&r.string(key, rate), burst).map_err(|problem| ConfigError {
        key: key.into(),
        problem,
    })
}

fn cors_origins(raw: &str) -> Result<Vec<String>, ConfigError> {
    let origins: Vec<String> = raw
        .split(',')
        .map(|o| o.trim().trim_end_matches('/').to_string())
        .filter(|o| !o.is_empty())
        .collect();
    for origin in &origins {
        let valid = origin == "*"
            || ((origin.starts_with("http://") || origin.starts_with("https://"))
                && HeaderValue::from_str(origin).is_ok());
        if !valid {
            return Err(ConfigError {
                key: "GATEWAY_CORS_ORIGINS".into(),
                problem: format!(
                    "has {origin:?}: expected origins like https://shop.example.cl, or *"
                ),
            });
        }
    }
    Ok(origins)
}

/// CORS for the configured origins (none: a layer that adds nothing).
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            http::HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            http::HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}

/// Security headers every response carries (unless a handler set its own).
const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
];

/// What every request handler shares.
struct GatewayState {
    retries: upstream::Retries,
    /// `/openapi.json`, generated once from the route table.
    openapi: Bytes,
    /// `/docs`, rendered once from that document.
    docs: Bytes,
    limiter: Arc<rate_limit::Limiter>,
    redis: platform::redis::RedisHandle,
    routes: RouteTable,
    channels: HashMap<String, Channel>,
    jwks: Jwks,
    /// Mints each upstream call's credential.
    minter: platform::identity::Minter,
    readiness: Readiness,
    settings: GatewaySettings,
}

/// The gateway, bound and ready to run.
pub struct Gateway {
    listener: TcpListener,
    state: Arc<GatewayState>,
}

impl Gateway {
    /// Builds the route table, prepares upstream channels (connected lazily) and binds.
    pub async fn build(settings: GatewaySettings) -> anyhow::Result<Self> {
        let routes = RouteTable::from_descriptor_set(proto::FILE_DESCRIPTOR_SET)?;
        for (method, template) in settings.timeouts.overrides.keys() {
            if !routes
                .routes()
                .iter()
                .any(|r| r.method == method && r.template == *template)
            {
                anyhow::bail!(
                    "setting GATEWAY_ROUTE_TIMEOUTS: {method} {template} is not a route of the gateway"
                );
            }
        }
        let minter = platform::identity::Minter::new(
            settings
                .internal_key
                .clone()
                .ok_or_else(platform::identity::InternalKey::missing)?,
            platform::identity::GATEWAY,
        );
        let openapi_doc = openapi::document(&routes);
        let docs = Bytes::from(docs::render(&openapi_doc));
        let openapi = Bytes::from(serde_json::to_vec(&openapi_doc)?);
        let mut channels = HashMap::new();
        for (name, url) in &settings.upstreams {
            let setting = format!("GATEWAY_{}_URL", name.to_uppercase());
            let channel = platform::tls::endpoint(url, &setting, settings.grpc_tls.as_ref())?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .connect_lazy();
            channels.insert(name.clone(), channel);
        }
        let jwks = Jwks::new(channels["iam"].clone());
        jwks.load_in_background();
        let readiness = {
            let jwks = jwks.clone();
            Readiness::new().with_check("gateway.jwks", move || {
                let jwks = jwks.clone();
                async move {
                    if jwks.is_loaded().await {
                        Ok(())
                    } else {
                        Err("JWKS not loaded from IAM yet".into())
                    }
                }
            })
        };
        let listener = platform::config::bind(settings.addr, "GATEWAY_ADDR").await?;
        let redis = platform::redis::RedisHandle::new(
            settings.redis_url.expose(),
            &settings.redis_key_prefix,
        )
        .context("setting REDIS_URL")?;
        let limiter = Arc::new(
            rate_limit::Limiter::new(
                redis.clone(),
                settings.rate_limit_auth,
                settings.rate_limit_api,
            )
            .with_share(settings.rate_limit_share),
        );
        Ok(Self {
            listener,
            state: Arc::new(GatewayState {
                retries: upstream::Retries::new(settings.read_retries),
                openapi,
                docs,
                limiter,
                redis,
                routes,
                channels,
                jwks,
                minter,
                readiness,
                settings,
            }),
        })
    }

    /// Adds readiness checks of roles running in the same process (`orderflow all`), so
    /// the gateway's `/health/ready` speaks for the whole suite.
    pub fn with_readiness(mut self, extra: Readiness) -> Self {
        let state = Arc::get_mut(&mut self.state).expect("not running yet");
        state.readiness = std::mem::take(&mut state.readiness).merge(extra);
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` fires, then stops accepting and drains open connections
    /// (at most 30 s): hyper's graceful shutdown closes idle keep-alive connections at
    /// once, lets in-flight requests finish and answers them with `Connection: close`
    /// (HTTP/1) or GOAWAY (HTTP/2), so clients reconnect elsewhere.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        platform::admin::prometheus();
        // Counted from 0, so the dashboard's panels and the alerts on refusals read a
        // number, not "no data", until the first one.
        metrics::counter!("http_requests_shed_total").increment(0);
        for class in ["auth", "api"] {
            metrics::counter!("gateway_rate_limited_total", "class" => class).increment(0);
        }
        tracing::info!(addr = %self.local_addr(), routes = self.state.routes.routes().len(), "gateway listening");
        let graceful = GracefulShutdown::new();
        let load_shed = LoadShedLayer::new(
            self.state.settings.max_in_flight,
            self.state.settings.max_waits,
        );
        let cors = cors(&self.state.settings.cors_origins);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let _ = stream.set_nodelay(true);
            // Layer order, outermost first: a request id exists before anything logs;
            // it is echoed on every response; the access log sees the final status (shed
            // requests included); load shedding comes before any work is done.
            //   security headers on everything; compression of what goes out; CORS
            //   answers preflights itself (they are never shed nor routed); shedding
            //   before any work; the caller is established before the rate limit, which
            //   budgets by user (or address); idempotency comes after the rate limit (a
            //   refused request claims no key) and keys by the same caller.
            let [h1, h2, h3, h4, h5] = SECURITY_HEADERS.map(|(name, value)| {
                SetResponseHeaderLayer::if_not_present(
                    http::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            });
            let service = ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(AccessLogLayer)
                .layer(h1)
                .layer(h2)
                .layer(h3)
                .layer(h4)
                .layer(h5)
                .layer(CompressionLayer::new())
                .layer(cors.clone())
                .layer(load_shed.clone())
                .layer(AuthenticateLayer::new(
                    self.state.jwks.clone(),
                    self.state.settings.trust_forwarded_for,
                    peer,
                ))
                .layer(RateLimitLayer::new(self.state.limiter.clone()))
                .layer(IdempotencyLayer::new(
                    self.state.redis.clone(),
                    self.state.settings.max_body_bytes,
                ))
                .service(Edge {
                    state: self.state.clone(),
                    peer,
                    draining: shutdown.clone(),
                });
            let connection = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service),
                )
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        tracing::info!("gateway draining");
        if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after 30s; closing them");
        }
        Ok(())
    }
}

/// The innermost service: admin paths, then REST routes.
#[derive(Clone)]
struct Edge {
    state: Arc<GatewayState>,
    peer: SocketAddr,
    /// Fires when the gateway starts draining.
    draining: CancellationToken,
}

impl tower::Service<Request<GatewayBody>> for Edge {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<GatewayBody>) -> Self::Future {
        let state = self.state.clone();
        let peer = self.peer;
        if !load_shed::is_long_poll(&req) {
            return Box::pin(async move { Ok(route_request(state, req, peer).await) });
        }
        // A long poll idles until its resource changes (up to ORDER_WATCH_MAX_WAIT): it
        // must not hold a draining gateway up. Once the drain starts it is answered with
        // what is there now, which is a valid answer to a long poll (the client asks
        // again, on a connection to another replica).
        let draining = self.draining.clone();
        let now = without_wait(&req);
        Box::pin(async move {
            tokio::select! {
                response = route_request(state.clone(), req, peer) => Ok(response),
                _ = draining.cancelled() => Ok(route_request(state, now, peer).await),
            }
        })
    }
}

/// The same GET without its `waitFor` (the caller as authenticated kept).
fn without_wait(req: &Request<GatewayBody>) -> Request<GatewayBody> {
    let query: Vec<&str> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("waitFor=") && !p.starts_with("wait_for="))
        .collect();
    let uri = if query.is_empty() {
        req.uri().path().to_string()
    } else {
        format!("{}?{}", req.uri().path(), query.join("&"))
    };
    let mut again = Request::new(
        http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = uri.parse().unwrap_or_else(|_| req.uri().clone());
    *again.headers_mut() = req.headers().clone();
    if let Some(caller) = req.extensions().get::<Caller>() {
        again.extensions_mut().insert(caller.clone());
    }
    again
}

async fn route_request(
    state: Arc<GatewayState>,
    req: Request<GatewayBody>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if let Some(mut resp) = platform::admin::respond(req.method(), &path, &state.readiness).await {
        resp.extensions_mut().insert(RouteLabel(path));
        return resp;
    }
    if let Some(mut resp) = describe(&state, req.method(), &path) {
        resp.extensions_mut().insert(RouteLabel(path));
        return resp;
    }
    if let Some(mut resp) = web::respond(req.method(), &path) {
        resp.extensions_mut()
            .insert(RouteLabel("/ (storefront)".into()));
        return resp;
    }
    let (route, values) = match state.routes.lookup(req.method(), &path) {
        Lookup::Found(route, values) => (route, values),
        Lookup::MethodNotAllowed(allowed) => {
            let allow = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            return Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed here; use {allow}", req.method()),
            )
            .header(header::ALLOW, &allow)
            .into_response(&path);
        }
        Lookup::NotFound => {
            return Problem::new(StatusCode::NOT_FOUND, "no such route").into_response(&path);
        }
    };
    let mut response = forward(&state, route, values, req, peer)
        .await
        .unwrap_or_else(|p| p.into_response(&path));
    response
        .extensions_mut()
        .insert(RouteLabel(route.template.clone()));
    response
}

/// `GET /openapi.json` and `GET /docs`.
fn describe(state: &GatewayState, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
    let (body, content_type, csp) = match path {
        "/openapi.json" => (state.openapi.clone(), "application/json", None),
        "/docs" => (
            state.docs.clone(),
            "text/html; charset=utf-8",
            Some(docs::CONTENT_SECURITY_POLICY),
        ),
        _ => return None,
    };
    if method != Method::GET && method != Method::HEAD {
        return Some(
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed here; use GET"),
            )
            .header(header::ALLOW, "GET")
            .into_response(path),
        );
    }
    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "public, max-age=300");
    if let Some(csp) = csp {
        response = response.header(header::CONTENT_SECURITY_POLICY, csp);
    }
    Some(
        response
            .body(Full::new(body))
            .expect("static response parts are valid"),
    )
}

/// Checks access, transcodes and calls the RPC. `Err` is an answer already decided.
async fn forward(
    state: &GatewayState,
    route: &Route,
    values: Vec<String>,
    req: Request<GatewayBody>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Problem> {
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(|| authenticate::anonymous(peer));
    authorize(route, &caller)?;
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(body, state.settings.max_body_bytes)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body exceeds {} bytes", state.settings.max_body_bytes),
            ));
        }
        Err(_) => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            ));
        }
    };
    // A browser keeps its refresh token in an HttpOnly cookie (see `web`): it asks with
    // `x-token-delivery: cookie`, and refresh and logout read the token from the cookie.
    let cookie_client = parts
        .headers
        .get(web::COOKIE_DELIVERY)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cookie"));
    let token_rpc = TokenRpc::of(route);
    let body = match (cookie_client, token_rpc) {
        (true, Some(TokenRpc::Refresh | TokenRpc::Logout)) => {
            with_refresh_from_cookie(body, web::refresh_from_cookies(&parts.headers))
        }
        _ => body,
    };
    let message = build_request(
        route,
        &values,
        parts.uri.query(),
        content_type.as_deref(),
        body,
    )
    .map_err(|e| match e {
        RequestError::UnsupportedMediaType(_) => {
            Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string())
        }
        RequestError::Body {
            field: Some(field),
            detail,
        } => {
            let field = problem::json_name(&field);
            Problem::new(StatusCode::BAD_REQUEST, format!("{field}: {detail}"))
                .field(&field, detail)
        }
        RequestError::Body {
            field: None,
            detail,
        } => Problem::new(StatusCode::BAD_REQUEST, detail),
        RequestError::Parameter { field, detail } => {
            Problem::new(StatusCode::BAD_REQUEST, format!("{field} {detail}")).field(&field, detail)
        }
    })?;

    let mut metadata = tonic::metadata::MetadataMap::new();
    // An anonymous public read has nothing to vouch for (no user; no service uses the
    // client address of a read): it goes without a credential, and the catalog's hot
    // path pays nothing for the check. Everything else carries one.
    let anonymous_read =
        route.access == Access::Public && caller.user_id.is_none() && route.method == Method::GET;
    if !anonymous_read {
        let credential = format!(
            "Bearer {}",
            state
                .minter
                .token(route.rpc.parent_service().full_name(), &caller)
        );
        metadata.insert(
            "authorization",
            credential.parse().expect("a JWT is valid metadata"),
        );
    }
    for name in ["x-request-id", "idempotency-key"] {
        if let Some(v) = parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
        {
            metadata.insert(name, v);
        }
    }
    // The trace context goes in per attempt, from its CLIENT span (upstream::call).

    let channel = state
        .channels
        .get(&route.upstream)
        .cloned()
        .ok_or_else(|| Problem::new(StatusCode::NOT_IMPLEMENTED, "no upstream for this route"))?;
    let timeout = state.settings.timeouts.of(route);
    let reply = upstream::call(channel, route, metadata, message, timeout, &state.retries)
        .await
        .map_err(|e| match e {
            upstream::CallError::Status(status) => {
                if problem::http_status(status.code()).is_server_error() {
                    tracing::warn!(rpc = %route.grpc_path, code = ?status.code(), message = status.message(), "upstream error");
                }
                let problem = Problem::from_status_of(&status, Some(&route.rpc.input()));
                // A refused refresh token is spent: the browser forgets it.
                if cookie_client && token_rpc == Some(TokenRpc::Refresh) {
                    problem.header(header::SET_COOKIE, &web::cleared_refresh_cookie())
                } else {
                    problem
                }
            }
            upstream::CallError::TimedOut(after) => {
                tracing::warn!(rpc = %route.grpc_path, ?after, "upstream deadline passed");
                Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "the {} service did not answer within {} ms",
                        route.upstream,
                        after.as_millis()
                    ),
                )
            }
        })?;
    if let Some(location) = transcode::see_other(&reply) {
        return Ok(Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(
                header::LOCATION,
                HeaderValue::from_str(&location).map_err(|_| {
                    Problem::new(
                        StatusCode::BAD_GATEWAY,
                        "the service answered an invalid redirect",
                    )
                })?,
            )
            .header(header::CACHE_CONTROL, "no-store")
            .body(Full::new(Bytes::new()))
            .expect("static response parts are valid"));
    }
    let mut rendered = render_response(&reply);
    let mut set_cookie = None;
    if cookie_client {
        match token_rpc {
            Some(TokenRpc::Issue | TokenRpc::Refresh) => {
                let (body, cookie) = move_refresh_to_cookie(&rendered.body);
                rendered.body = body;
                set_cookie = cookie;
            }
            Some(TokenRpc::Logout) => set_cookie = Some(web::cleared_refresh_cookie()),
            _ => {}
        }
    }
    let mut response = Response::builder().status(StatusCode::OK);
    if let Some(cookie) = set_cookie
        && let Ok(value) = HeaderValue::from_str(&cookie)
    {
        response = response.header(header::SET_COOKIE, value);
    }
    Ok(response
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&rendered.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        )
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(rendered.body))
        .expect("static response parts are valid"))
}

/// The RPCs that hand out or spend refresh tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenRpc {
    /// Login and refresh: the reply carries a refresh token.
    Issue,
    /// Refresh: the request spends one.
    Refresh,
    /// Logout: the request revokes one.
    Logout,
}

impl TokenRpc {
    fn of(route: &Route) -> Option<Self> {
        match route.grpc_path.as_str() {
            "/orderflow.iam.v1.IamService/Login" => Some(Self::Issue),
            "/orderflow.iam.v1.IamService/Refresh" => Some(Self::Refresh),
            "/orderflow.iam.v1.IamService/Logout" => Some(Self::Logout),
            _ => None,
        }
    }
}

/// The request body with `refreshToken` from the cookie, unless the body names one.
fn with_refresh_from_cookie(body: Bytes, cookie: Option<String>) -> Bytes {
    let Some(token) = cookie else { return body };
    let mut object = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(o)) => o,
            // Malformed: let the transcoder say so.
            _ => return body,
        }
    };
    let named = ["refreshToken", "refresh_token"].iter().any(|k| {
        object
            .get(*k)
            .and_then(|v| v.as_str())
            .is_some_and(|v| !v.is_empty())
    });
    if !named {
        object.remove("refresh_token");
        object.insert("refreshToken".into(), serde_json::Value::String(token));
    }
    Bytes::from(serde_json::Value::Object(object).to_string())
}

/// A token pair's JSON without its refresh token, and the cookie that carries it instead.
fn move_refresh_to_cookie(body: &Bytes) -> (Bytes, Option<String>) {
    let Ok(serde_json::Value::Object(mut pair)) = serde_json::from_slice(body) else {
        return (body.clone(), None);
    };
    let Some(serde_json::Value::String(token)) = pair.remove("refreshToken") else {
        return (body.clone(), None);
    };
    let max_age = pair
        .get("refreshExpiresIn")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(30 * 24 * 3600);
    (
        Bytes::from(serde_json::Value::Object(pair).to_string()),
        Some(web::refresh_cookie(&token, max_age)),
    )
}

/// Enforces the route's access rule on the caller the [`authenticate`] layer established.
fn authorize(route: &Route, caller: &Caller) -> Result<(), Problem> {
    match route.access {
        Access::Public => {}
        Access::Authenticated | Access::Admin if caller.user_id.is_none() => {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "sign in first: this route needs an access token",
            )
            .header(header::WWW_AUTHENTICATE, r#"Bearer realm="orderflow""#));
        }
        Access::Admin if !caller.has_role("admin") => {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "this route needs the admin role",
            ));
        }
        _ => {}
    }
    Ok(())
}
