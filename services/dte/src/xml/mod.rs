//! The SII's XML: ISO-8859-1 text, the TED stamp, signatures, documents and envelopes.
pub mod declared;
pub mod document;
pub mod latin1;
pub mod schema;
pub mod signature;
pub mod ted;
