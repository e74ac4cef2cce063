//! The pieces of the `orderflow` binary that tests reuse: starting the whole suite in
//! one process ([`suite`]), the container health probe ([`healthcheck`]), the load
//! generator ([`loadgen`]) and the suite it can start to measure ([`spawn`]).
#![forbid(unsafe_code)]

pub mod chaos;
pub mod healthcheck;
pub mod invariants;
pub mod loadgen;
pub mod spawn;
pub mod suite;

/// The binary's version as traces report it (`service.version`): the crate version, with
/// `+<commit>` where the build knew the commit (see `build.rs`).
pub fn version() -> String {
    match env!("ORDERFLOW_REVISION") {
        "" => env!("CARGO_PKG_VERSION").to_string(),
        commit => format!("{}+{commit}", env!("CARGO_PKG_VERSION")),
    }
}
