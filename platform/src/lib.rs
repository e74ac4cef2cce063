//! The shared runtime every orderflow service and the gateway stand on.
//!
//! Layout:
//! - [`config`]: typed settings read from the environment (or a map, in tests); a missing
//!   or malformed variable is an error that names it.
//! - [`telemetry`]: `tracing` with text or JSON logs, optional OTLP export, and W3C trace
//!   context carried on HTTP/gRPC headers.
//! - [`db`]: a Postgres pool confined to the service's own schema, plus migrations.
//! - [`redis`]: a reconnecting Redis connection with a key prefix.
//! - [`admin`]: `/health/live`, `/health/ready` (named checks) and `/metrics`.
//! - [`grpc`]: the verified caller, errors with details, the health service.
//! - [`identity`]: internal tokens: how a role proves who calls, and on whose behalf.
//! - [`grpc_auth`]: the layer that verifies them and enforces each RPC's access level.
//! - [`jwt`]: access-token claims and verification against a JWK set.
//! - [`tls`]: optional mutual TLS between the roles (without a mesh).
//! - [`shutdown`]: the signal every server drains on.
//! - [`clock`]: "now" behind a handle that tests can move.
#![forbid(unsafe_code)]

pub mod admin;
pub mod amqp;
pub mod chile;
pub mod clock;
pub mod config;
pub mod db;
pub mod grpc;
#[cfg(feature = "grpc-server")]
pub mod grpc_auth;
#[cfg(feature = "grpc-server")]
pub mod grpc_server;
pub mod identity;
pub mod jwt;
pub mod redis;
pub mod shutdown;
pub mod telemetry;
pub mod testing;
pub mod tls;
#[cfg(feature = "constraints")]
pub mod validate;

pub use tokio_util::sync::CancellationToken;
