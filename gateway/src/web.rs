//! The storefront and the back-office, embedded: `web/dist` (built from `web/src` by
//! `web/build`, committed so `cargo build` needs no npm) is compiled into the binary; the
//! storefront is served at `/`, the back-office at `/admin` (its data comes from the API,
//! which checks the admin role on every call). Every path
//! outside the API and the gateway's own (`/v1/`, `/health/`, `/metrics`, `/docs`,
//! `/openapi.json`, `/.well-known/`) is a storefront page: the same HTML, whose script
//! routes by path. Pages go out under a strict Content-Security-Policy: scripts, styles
//! and API calls from this origin only, nothing inline, nothing third-party.

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;

/// The storefront's Content-Security-Policy.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

const INDEX: &[u8] = include_bytes!("../../web/dist/index.html");
/// The back-office's page, for `/admin` and everything under it.
const ADMIN: &[u8] = include_bytes!("../../web/dist/admin.html");

/// The assets, by path.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/assets/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/dist/app.js"),
    ),
    (
        "/assets/admin.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/dist/admin.js"),
    ),
    (
        "/assets/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/dist/app.css"),
    ),
];

/// Paths the storefront never answers for.
const NOT_WEB: &[&str] = &["/v1/", "/health/", "/.well-known/"];
const NOT_WEB_EXACT: &[&str] = &["/metrics", "/docs", "/openapi.json", "/v1"];

/// The storefront's answer for `path`, or `None` when the path is not the storefront's.
pub fn respond(method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
    if NOT_WEB.iter().any(|p| path.starts_with(p)) || NOT_WEB_EXACT.contains(&path) {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let (content_type, body, cache) = match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, content_type, body)) => (*content_type, *body, "no-cache"),
        // An unknown asset is a 404, not the page.
        None if path.starts_with("/assets/") => return None,
        None => ("text/html; charset=utf-8", page_for(path), "no-cache"),
    };
    Some(
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CACHE_CONTROL, cache)
            .header(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            )
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .header(header::REFERRER_POLICY, "same-origin")
            .body(Full::new(Bytes::from_static(body)))
            .expect("static response parts are valid"),
    )
}

/// The page for a path: the back-office's under `/admin`, the storefront's elsewhere.
fn page_for(path: &str) -> &'static [u8] {
    if path == "/admin" || path.starts_with("/admin/") {
        ADMIN
    } else {
        INDEX
    }
}

/// The refresh token's cookie for browser clients (`x-token-delivery: cookie`).
pub const REFRESH_COOKIE: &str = "orderflow_refresh";

/// The header a browser client sends to get (and give) its refresh token as a cookie.
pub const COOKIE_DELIVERY: &str = "x-token-delivery";

/// `Set-Cookie` for a refresh token: HttpOnly (no script reads it), Secure, SameSite=Strict,
/// and only sent to `/v1/auth` (refresh and logout).
pub fn refresh_cookie(token: &str, max_age_secs: i64) -> String {
    format!(
        "{REFRESH_COOKIE}={token}; Path=/v1/auth; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age_secs}"
    )
}

/// `Set-Cookie` that removes the refresh token.
pub fn cleared_refresh_cookie() -> String {
    refresh_cookie("", 0)
}

/// The refresh token in a request's cookies.
pub fn refresh_from_cookies(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == REFRESH_COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_assets_are_served_but_never_in_place_of_the_api() {
        let page = respond(&Method::GET, "/pedidos/123").unwrap();
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(
            page.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        let js = respond(&Method::GET, "/assets/app.js").unwrap();
        assert!(
            js.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        assert!(respond(&Method::GET, "/assets/missing.js").is_none());
        for api in [
            "/v1/products",
            "/health/ready",
            "/metrics",
            "/docs",
            "/openapi.json",
        ] {
            assert!(respond(&Method::GET, api).is_none(), "{api}");
        }
        assert!(respond(&Method::POST, "/").is_none());
        assert!(respond(&Method::GET, "/admin/pedidos/1").is_some());
        assert_eq!(page_for("/admin"), ADMIN);
        assert_eq!(page_for("/admin/pedidos/1"), ADMIN);
        assert_eq!(page_for("/administrador"), INDEX);
        assert_eq!(page_for("/pedidos/1"), INDEX);
    }

    #[test]
    fn the_refresh_cookie_is_http_only_strict_and_scoped_to_auth() {
        let cookie = refresh_cookie("abc", 60);
        for part in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/v1/auth",
            "Max-Age=60",
        ] {
            assert!(cookie.contains(part), "{cookie}");
        }
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; orderflow_refresh=tok; b=2".parse().unwrap(),
        );
        assert_eq!(refresh_from_cookies(&headers).as_deref(), Some("tok"));
    }
}
