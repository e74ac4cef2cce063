//! Serving a service's gRPC API the same way everywhere: the standard health service,
//! reflection over every orderflow proto, one trace span per call, every call's
//! credential verified and its access enforced ([`crate::grpc_auth`]), and the admin
//! endpoint beside it; all of it drains when `shutdown` fires.
//!
//! Behind the `grpc-server` feature, which pulls tonic's server (and axum through its
//! router): services enable it, the gateway does not.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{server::NamedService, service::Routes};

use std::sync::Arc;

use crate::{
    admin::Readiness, grpc_auth::AuthorizeLayer, identity::InternalKey, identity::Verifier,
    telemetry::GrpcTraceLayer,
};

/// A service's listeners and its API, ready to serve.
pub struct GrpcServer {
    /// The gRPC port.
    pub grpc: TcpListener,
    /// The admin port (`/health/*`, `/metrics`).
    pub admin: TcpListener,
    /// What `/health/ready` checks.
    pub readiness: Readiness,
    /// The deployment's internal key: every call's token is verified with it.
    pub key: Arc<InternalKey>,
    /// Mutual TLS on the gRPC port, when configured.
    pub tls: Option<crate::tls::GrpcTls>,
}

impl GrpcServer {
    /// Serves `service` (reported SERVING to `grpc.health.v1` under its name) plus
    /// health and reflection until `shutdown`, then drains in-flight calls.
    pub async fn serve<S>(self, service: S, shutdown: CancellationToken) -> anyhow::Result<()>
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status(S::NAME, tonic_health::ServingStatus::Serving)
            .await;
        health_reporter
            .set_service_status(
                crate::grpc::OVERALL_HEALTH_SERVICE,
                tonic_health::ServingStatus::Serving,
            )
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let admin = tokio::spawn(crate::admin::serve(
            self.admin,
            self.readiness,
            shutdown.clone(),
        ));
        tracing::info!(service = S::NAME, grpc = %self.grpc.local_addr()?, "listening");
        let routes = Routes::new(service)
            .add_service(health_service)
            .add_service(reflection);
        // Tracing first, so refused calls are traced too; then the access check, which
        // every RPC of the service passes through (grpc_auth); then the request's
        // constraints, for callers who may call it.
        let layers = tower::ServiceBuilder::new()
            .layer(GrpcTraceLayer)
            .layer(AuthorizeLayer::new(Verifier::new(self.key, S::NAME)))
            // Then the protos' buf.validate constraints (platform::validate).
            .layer(crate::validate::ValidateLayer);
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.server_config())?;
        }
        builder
            .layer(layers)
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                // No Nagle: small replies must not wait for the peer's delayed ACK
                // (it showed as a 40 ms p99 in the gateway overhead benchmark).
                tonic::transport::server::TcpIncoming::from(self.grpc).with_nodelay(Some(true)),
                shutdown.cancelled_owned(),
            )
            .await?;
        admin.await??;
        Ok(())
    }
}
