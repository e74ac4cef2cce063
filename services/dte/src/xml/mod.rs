//! The SII's XML: ISO-8859-1 text, the TED stamp, signatures, documents and envelopes, and
//! the answers to suppliers.
pub mod declared;
pub mod document;
pub mod latin1;
pub mod respuesta;
pub mod schema;
pub mod signature;
pub mod ted;
