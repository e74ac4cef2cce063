//! The TED (timbre electrónico): `FRMT` is RSA PKCS#1 v1.5 SHA-1, with the CAF's private
//! key, over the `DD` element flattened: ISO-8859-1, whitespace between tags removed, text
//! and attributes exactly as written.

use base64::Engine as _;
use quick_xml::{Reader, events::Event};
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha1::{Digest as _, Sha1};

use super::latin1;

/// Why a TED cannot be made or checked.
#[derive(Debug, thiserror::Error)]
pub enum TedError {
    #[error("the DD is not well-formed XML: {0}")]
    Malformed(String),
    #[error("the DD holds a character outside ISO-8859-1: {0:?}")]
    NotLatin1(char),
    #[error("FRMT is not base64")]
    FrmtNotBase64,
    #[error("RSA: {0}")]
    Rsa(#[from] rsa::Error),
}

/// The bytes `FRMT` signs: the `DD` element's source with whitespace-only text between tags
/// dropped, encoded in ISO-8859-1.
pub fn flatten_dd(dd_source: &str) -> Result<Vec<u8>, TedError> {
    let mut reader = Reader::from_str(dd_source);
    let mut flat = String::with_capacity(dd_source.len());
    let mut start = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| TedError::Malformed(e.to_string()))?;
        let end = usize::try_from(reader.buffer_position()).expect("fits in memory");
        let raw = &dd_source[start..end];
        start = end;
        match event {
            Event::Eof => break,
            Event::Text(_) if raw.trim().is_empty() => {}
            _ => flat.push_str(raw),
        }
    }
    latin1::encode(&flat).map_err(TedError::NotLatin1)
}

/// `FRMT`'s value (base64) for a flattened `DD`.
pub fn sign(flat_dd: &[u8], caf_key: &RsaPrivateKey) -> Result<String, TedError> {
    let digest = Sha1::digest(flat_dd);
    let signature = caf_key.sign(Pkcs1v15Sign::new::<Sha1>(), &digest)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(signature))
}

/// Checks `FRMT` (base64, line breaks allowed) over a flattened `DD`.
pub fn verify(flat_dd: &[u8], frmt: &str, caf_public: &RsaPublicKey) -> Result<(), TedError> {
    let compact: String = frmt.chars().filter(|c| !c.is_whitespace()).collect();
    let signature = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| TedError::FrmtNotBase64)?;
    let digest = Sha1::digest(flat_dd);
    caf_public.verify(Pkcs1v15Sign::new::<Sha1>(), &digest, &signature)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattening_drops_only_whitespace_between_tags() {
        let dd = "<DD>\r\n\t<RE>1-9</RE>\n <RSR>EMPRESA  LTDA &amp; Cía</RSR>\n<X a=\"1\"/></DD>";
        assert_eq!(
            flatten_dd(dd).unwrap(),
            latin1::encode("<DD><RE>1-9</RE><RSR>EMPRESA  LTDA &amp; Cía</RSR><X a=\"1\"/></DD>")
                .unwrap()
        );
    }
}
