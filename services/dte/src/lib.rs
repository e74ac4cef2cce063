//! DTE
#![forbid(unsafe_code)]
pub mod caf;
pub mod certificate;
pub mod domain;
pub mod xml;
