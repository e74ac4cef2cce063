//! The pieces of the `orderflow` binary that tests reuse: starting the whole suite in
//! one process ([`suite`]) and the container health probe ([`healthcheck`]).
#![forbid(unsafe_code)]

pub mod healthcheck;
pub mod suite;
