//! ISO-8859-1, the SII's encoding. Written here rather than taken from a crate because the
//! mapping is the identity on code points 0–255 (encoding_rs maps the label to
//! windows-1252, which differs in 0x80–0x9F, so it would not round-trip SII bytes).

/// Decodes ISO-8859-1 bytes: every byte is the code point of the same value.
pub fn decode(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Encodes text as ISO-8859-1; a character outside it is an error naming it.
pub fn encode(text: &str) -> Result<Vec<u8>, char> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| c))
        .collect()
}

/// Text made representable in ISO-8859-1 and at most `max` characters long, as the SII's
/// field limits ask: a character outside ISO-8859-1 becomes `?`, control characters become
/// spaces.
pub fn field(text: &str, max: usize) -> String {
    text.trim()
        .chars()
        .map(|c| match u32::from(c) {
            0..0x20 | 0x7f..0xa0 => ' ',
            0..=0xff => c,
            _ => '?',
        })
        .take(max)
        .collect::<String>()
        .trim_end()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(encode(&decode(&all)).unwrap(), all);
    }

    #[test]
    fn fields_fit_the_sii_limits_and_charset() {
        assert_eq!(field("  Año 🎉 café\n", 40), "Año ? café");
        assert_eq!(field("abcdef", 3), "abc");
        assert_eq!(encode("ñ€"), Err('€'));
    }
}
