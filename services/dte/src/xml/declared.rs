//! A received XML file's characters, decoded as its XML declaration says (XML 1.0, 4.3.3).
//!
//! Signatures cover the canonical form (C14N 1.0), which is UTF-8 of the document's
//! *characters*; so the bytes must become characters exactly as the declared encoding maps
//! them before anything is canonicalised. ISO-8859-1 maps each byte to the code point of
//! the same value (as libxml2, and so xmlsec1, reads it); windows-1252, which other
//! companies' software declares, differs from it in 0x80–0x9F (“ ” ‘ ’ – — € …), and
//! reading those bytes as ISO-8859-1 turns a curly quote into a control character and a
//! valid signature into a failed digest.

use super::latin1;

/// Why a file's bytes cannot be read as the characters it declares.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The declaration names an encoding no XML processor here knows.
    #[error("the XML declaration names an unknown encoding {0:?}")]
    Unknown(String),
    /// A byte sequence is not valid in the declared encoding.
    #[error("the bytes are not valid {0}")]
    Invalid(String),
}

/// The `encoding` of the file's XML declaration, if it has one.
fn declared_label(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(200)];
    let head: String = head.iter().map(|&b| char::from(b)).collect();
    let declaration = head.trim_start();
    if !declaration.starts_with("<?xml") {
        return None;
    }
    let declaration = &declaration[..declaration.find("?>")?];
    let at = declaration.find("encoding")? + "encoding".len();
    let rest = declaration[at..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &rest[1..];
    Some(value[..value.find(quote)?].trim().to_ascii_lowercase())
}

/// The file's characters. No declaration (or one without `encoding`) means UTF-8, as XML
/// says; a file that is not valid UTF-8 and declares nothing is read as ISO-8859-1, the
/// SII's encoding, which every byte is valid in.
pub fn decode(bytes: &[u8]) -> Result<String, DecodeError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    match declared_label(bytes).as_deref() {
        None | Some("utf-8" | "utf8") => match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_string()),
            Err(_) if declared_label(bytes).is_none() => Ok(latin1::decode(bytes)),
            Err(_) => Err(DecodeError::Invalid("UTF-8".into())),
        },
        // ISO-8859-1 and its registered aliases: the identity on 0–255. (encoding_rs,
        // following the WHATWG, would read these labels as windows-1252.)
        Some(
            "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "iso_8859-1:1987" | "latin1" | "l1"
            | "cp819" | "ibm819" | "iso-ir-100" | "csisolatin1",
        ) => Ok(latin1::decode(bytes)),
        Some(label) => {
            let encoding = encoding_rs::Encoding::for_label(label.as_bytes())
                .ok_or_else(|| DecodeError::Unknown(label.to_string()))?;
            encoding
                .decode_without_bom_handling_and_without_replacement(bytes)
                .map(|text| text.into_owned())
                .ok_or_else(|| DecodeError::Invalid(encoding.name().to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_1252_and_iso_8859_1_differ_where_they_differ() {
        let body = b"<a>\x93Caf\xe9\x94 \x80</a>";
        let as_1252 = [
            b"<?xml version='1.0' encoding='WINDOWS-1252'?>".as_slice(),
            body,
        ]
        .concat();
        assert!(
            decode(&as_1252)
                .unwrap()
                .ends_with("<a>\u{201c}Café\u{201d} €</a>")
        );
        let as_latin1 = [
            b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>".as_slice(),
            body,
        ]
        .concat();
        assert!(
            decode(&as_latin1)
                .unwrap()
                .ends_with("<a>\u{93}Café\u{94} \u{80}</a>")
        );
    }

    #[test]
    fn utf8_is_the_default_and_undeclared_latin1_is_tolerated() {
        assert_eq!(decode("<a>ñ</a>".as_bytes()).unwrap(), "<a>ñ</a>");
        assert_eq!(decode(b"<a>\xf1</a>").unwrap(), "<a>ñ</a>");
        assert_eq!(
            decode(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><a>\xf1</a>"),
            Err(DecodeError::Invalid("UTF-8".into()))
        );
        assert_eq!(
            decode(b"<?xml version=\"1.0\" encoding=\"klingon\"?><a/>"),
            Err(DecodeError::Unknown("klingon".into()))
        );
    }
}
