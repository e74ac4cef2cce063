//! DTE
#![forbid(unsafe_code)]
pub mod caf;
pub mod certificate;
pub mod domain;
pub mod issuing;
pub mod store;
pub mod verify;
pub mod xml;
