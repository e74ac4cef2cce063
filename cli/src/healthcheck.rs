//! `orderflow healthcheck`: a readiness probe for Docker's HEALTHCHECK, so the image
//! needs no curl.

use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// GETs `url` (plain http) and returns the status code.
pub async fn probe(url: &str) -> anyhow::Result<u16> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("not a URL: {url}"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "only http:// URLs can be probed: {url}"
    );
    let host = uri.host().context("the URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        anyhow::Ok(status)
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .context("timed out after 5s")?
}
