//! The pieces of the `orderflow` binary that tests reuse: starting the whole suite in
//! one process ([`suite`]), the container health probe ([`healthcheck`]) and the load
//! generator ([`loadgen`]).
#![forbid(unsafe_code)]

pub mod healthcheck;
pub mod loadgen;
pub mod suite;
