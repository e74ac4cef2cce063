//! CAF (Código de Autorización de Folios): the SII's grant of a folio range for one TipoDTE,
//! with the RSA key that stamps each document's TED. Parsed and checked on upload; a
//! development CAF can be generated ([`fake`]), clearly marked as not issued by the SII.

use base64::Engine as _;
use chrono::NaiveDate;
use platform::chile::Rut;
use rsa::{
    BigUint, RsaPrivateKey, RsaPublicKey,
    pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _},
    pkcs8::{DecodePublicKey as _, EncodePublicKey as _, LineEnding},
    traits::PublicKeyParts as _,
};

use crate::{
    domain::TipoDte,
    xml::{latin1, ted},
};

/// What is wrong with a CAF, naming the part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CAF {field}: {problem}")]
pub struct CafError {
    /// The element (path) at fault, e.g. `DA/RSAPK`.
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> CafError {
    CafError {
        field,
        problem: problem.into(),
    }
}

/// A parsed, internally consistent CAF.
#[derive(Debug, Clone)]
pub struct Caf {
    pub rut_emisor: Rut,
    pub razon_social: String,
    pub tipo: TipoDte,
    pub folio_from: i64,
    pub folio_to: i64,
    pub fecha_autorizacion: NaiveDate,
    pub idk: i64,
    /// `RSAPK`: the key a TED's `FRMT` verifies with.
    pub public_key: RsaPublicKey,
    /// `RSASK`: the key that stamps TEDs.
    pub private_key: RsaPrivateKey,
    /// The `CAF` element flattened, as it goes into every TED's `DD`.
    pub caf_element: String,
}

fn child<'a>(
    doc: &uppsala::Document<'a>,
    parent: uppsala::NodeId,
    name: &str,
) -> Option<uppsala::NodeId> {
    doc.children(parent)
        .into_iter()
        .find(|&c| doc.element(c).is_some_and(|e| e.name.local_name == name))
}

fn text<'a>(
    doc: &uppsala::Document<'a>,
    parent: uppsala::NodeId,
    name: &str,
    field: &'static str,
) -> Result<String, CafError> {
    let node = child(doc, parent, name).ok_or_else(|| bad(field, "is missing"))?;
    Ok(doc.text_content_deep(node).trim().to_string())
}

fn base64_uint(value: &str, field: &'static str) -> Result<BigUint, CafError> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| bad(field, "is not base64"))?;
    Ok(BigUint::from_bytes_be(&bytes))
}

/// The public key in a `RSAPK` element (`M`, `E` in base64).
pub fn rsapk(
    doc: &uppsala::Document<'_>,
    rsapk: uppsala::NodeId,
) -> Result<RsaPublicKey, CafError> {
    let m = base64_uint(&text(doc, rsapk, "M", "DA/RSAPK/M")?, "DA/RSAPK/M")?;
    let e = base64_uint(&text(doc, rsapk, "E", "DA/RSAPK/E")?, "DA/RSAPK/E")?;
    RsaPublicKey::new(m, e).map_err(|e| bad("DA/RSAPK", format!("is not a usable RSA key: {e}")))
}

impl Caf {
    /// Parses a CAF file (`AUTORIZACION`, ISO-8859-1 or UTF-8 bytes) and checks it holds
    /// together: a supported TipoDTE, a sane range, and a private key matching `RSAPK`.
    pub fn parse(bytes: &[u8]) -> Result<Self, CafError> {
        let source = match std::str::from_utf8(bytes) {
            Ok(s) if !declares_latin1(s) => s.to_string(),
            _ => latin1::decode(bytes),
        };
        let source = strip_declaration(&source);
        let doc = uppsala::parse(source).map_err(|e| bad("XML", e.to_string()))?;
        let root = doc
            .document_element()
            .ok_or_else(|| bad("AUTORIZACION", "is missing"))?;
        if doc
            .element(root)
            .is_none_or(|e| e.name.local_name != "AUTORIZACION")
        {
            return Err(bad("AUTORIZACION", "must be the root element"));
        }
        let caf = child(&doc, root, "CAF").ok_or_else(|| bad("CAF", "is missing"))?;
        let da = child(&doc, caf, "DA").ok_or_else(|| bad("DA", "is missing"))?;
        if child(&doc, caf, "FRMA").is_none() {
            return Err(bad("FRMA", "is missing"));
        }
        let rut_emisor = Rut::parse(&text(&doc, da, "RE", "DA/RE")?)
            .map_err(|e| bad("DA/RE", format!("is not a valid RUT: {e}")))?;
        let razon_social = text(&doc, da, "RS", "DA/RS")?;
        let td = text(&doc, da, "TD", "DA/TD")?;
        let tipo = td
            .parse()
            .ok()
            .and_then(TipoDte::from_code)
            .ok_or_else(|| {
                bad(
                    "DA/TD",
                    format!("{td:?} is not a supported TipoDTE (33, 34, 39, 41, 56, 61)"),
                )
            })?;
        let rng = child(&doc, da, "RNG").ok_or_else(|| bad("DA/RNG", "is missing"))?;
        let folio = |name, field| -> Result<i64, CafError> {
            let raw = text(&doc, rng, name, field)?;
            raw.parse::<i64>().ok().filter(|f| *f >= 1).ok_or_else(|| {
                bad(
                    field,
                    format!("{raw:?} is not a folio (a positive integer)"),
                )
            })
        };
        let folio_from = folio("D", "DA/RNG/D")?;
        let folio_to = folio("H", "DA/RNG/H")?;
        if folio_to < folio_from {
            return Err(bad(
                "DA/RNG",
                format!("ends ({folio_to}) before it starts ({folio_from})"),
            ));
        }
        let fa = text(&doc, da, "FA", "DA/FA")?;
        let fecha_autorizacion = NaiveDate::parse_from_str(&fa, "%Y-%m-%d")
            .map_err(|_| bad("DA/FA", format!("{fa:?} is not a date (YYYY-MM-DD)")))?;
        let idk_raw = text(&doc, da, "IDK", "DA/IDK")?;
        let idk = idk_raw
            .parse()
            .map_err(|_| bad("DA/IDK", format!("{idk_raw:?} is not a number")))?;
        let rsapk_node = child(&doc, da, "RSAPK").ok_or_else(|| bad("DA/RSAPK", "is missing"))?;
        let public_key = rsapk(&doc, rsapk_node)?;
        let rsask = text(&doc, root, "RSASK", "RSASK")?;
        let private_key = RsaPrivateKey::from_pkcs1_pem(&rsask)
            .or_else(|_| rsa::pkcs8::DecodePrivateKey::from_pkcs8_pem(&rsask))
            .map_err(|_| bad("RSASK", "is not an RSA private key in PEM"))?;
        if private_key.n() != public_key.n() || private_key.e() != public_key.e() {
            return Err(bad("RSASK", "does not match the public key in DA/RSAPK"));
        }
        if let Some(pubk) = child(&doc, root, "RSAPUBK") {
            let pem = doc.text_content_deep(pubk);
            let declared = RsaPublicKey::from_public_key_pem(pem.trim())
                .map_err(|_| bad("RSAPUBK", "is not an RSA public key in PEM"))?;
            if declared != public_key {
                return Err(bad("RSAPUBK", "does not match the public key in DA/RSAPK"));
            }
        }
        let caf_source = doc
            .node_source(caf)
            .ok_or_else(|| bad("CAF", "is unreadable"))?;
        let caf_element =
            latin1::decode(&ted::flatten_dd(caf_source).map_err(|e| bad("CAF", e.to_string()))?);
        Ok(Self {
            rut_emisor,
            razon_social,
            tipo,
            folio_from,
            folio_to,
            fecha_autorizacion,
            idk,
            public_key,
            private_key,
            caf_element,
        })
    }

    /// Refuses a CAF granted to another company.
    pub fn check_issuer(&self, company: &Rut) -> Result<(), CafError> {
        if &self.rut_emisor != company {
            return Err(bad(
                "DA/RE",
                format!("{} is not the company's RUT ({company})", self.rut_emisor),
            ));
        }
        Ok(())
    }
}

fn declares_latin1(source: &str) -> bool {
    let head: String = source
        .chars()
        .take(100)
        .collect::<String>()
        .to_ascii_lowercase();
    head.starts_with("<?xml") && head.contains("iso-8859-1")
}

/// Drops the XML declaration: the text is already decoded, so its `encoding` no longer
/// describes it.
pub fn strip_declaration(source: &str) -> &str {
    let trimmed = source.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with("<?xml")
        && let Some(end) = trimmed.find("?>")
    {
        return &trimmed[end + 2..];
    }
    trimmed
}

/// A development CAF for `tipo`, folios `from..=to`, for the company `rut` / `razon_social`:
/// a fresh 512-bit key with exponent 3 (the shape of the SII's), `FRMA` signed by a
/// throwaway key, and a comment saying it is not from the SII. The SII would reject any
/// document stamped with it.
pub fn fake(
    tipo: TipoDte,
    from: i64,
    to: i64,
    rut: &Rut,
    razon_social: &str,
    today: NaiveDate,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        from >= 1 && to >= from,
        "the range {from}..{to} is empty or not positive"
    );
    let mut rng = rand::thread_rng();
    let exponent = BigUint::from(3u8);
    let key = RsaPrivateKey::new_with_exp(&mut rng, 512, &exponent)?;
    let not_the_sii = RsaPrivateKey::new_with_exp(&mut rng, 512, &exponent)?;
    let b64 = |n: &BigUint| base64::engine::general_purpose::STANDARD.encode(n.to_bytes_be());
    let razon_social = quick_xml::escape::escape(latin1::field(razon_social, 40)).into_owned();
    let da = format!(
        "<DA><RE>{rut}</RE><RS>{razon_social}</RS><TD>{tipo}</TD><RNG><D>{from}</D><H>{to}</H></RNG>\
<FA>{today}</FA><RSAPK><M>{m}</M><E>{e}</E></RSAPK><IDK>100</IDK></DA>",
        today = today.format("%Y-%m-%d"),
        m = b64(key.n()),
        e = b64(key.e()),
    );
    let frma = ted::sign(&ted::flatten_dd(&da)?, &not_the_sii)?;
    let rsask = key.to_pkcs1_pem(LineEnding::LF)?;
    let rsapubk = key.to_public_key().to_public_key_pem(LineEnding::LF)?;
    Ok(format!(
        "<?xml version=\"1.0\"?>\n\
<!-- DEVELOPMENT CAF generated by orderflow: NOT ISSUED BY THE SII. Documents stamped with it are not valid tax documents. -->\n\
<AUTORIZACION>\n<CAF version=\"1.0\">\n{da}\n<FRMA algoritmo=\"SHA1withRSA\">{frma}</FRMA>\n</CAF>\n\
<RSASK>{rsask}</RSASK>\n<RSAPUBK>{rsapubk}</RSAPUBK>\n</AUTORIZACION>\n",
        rsask = rsask.as_str(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn company() -> Rut {
        Rut::parse("76369187-K").unwrap()
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    #[test]
    fn a_fake_caf_parses_and_its_key_stamps() {
        let xml = fake(
            TipoDte::Boleta,
            1,
            1000,
            &company(),
            "Orderflow & Cía",
            today(),
        )
        .unwrap();
        assert!(xml.contains("NOT ISSUED BY THE SII"));
        let caf = Caf::parse(xml.as_bytes()).unwrap();
        assert_eq!(
            (caf.tipo, caf.folio_from, caf.folio_to),
            (TipoDte::Boleta, 1, 1000)
        );
        caf.check_issuer(&company()).unwrap();
        assert!(
            caf.caf_element
                .starts_with("<CAF version=\"1.0\"><DA><RE>76369187-K</RE>")
        );
        let flat = ted::flatten_dd("<DD><F>1</F></DD>").unwrap();
        let frmt = ted::sign(&flat, &caf.private_key).unwrap();
        ted::verify(&flat, &frmt, &caf.public_key).unwrap();
    }

    #[test]
    fn a_bad_caf_names_what_is_wrong() {
        let good = fake(TipoDte::Factura, 5, 9, &company(), "X", today()).unwrap();
        let other = fake(TipoDte::Factura, 5, 9, &company(), "X", today()).unwrap();
        let field = |xml: &str| Caf::parse(xml.as_bytes()).unwrap_err().field;
        assert_eq!(field(&good.replace("<TD>33</TD>", "<TD>52</TD>")), "DA/TD");
        assert_eq!(field(&good.replace("<H>9</H>", "<H>4</H>")), "DA/RNG");
        assert_eq!(field(&good.replace("<D>5</D>", "<D>x</D>")), "DA/RNG/D");
        assert_eq!(field(&good.replace("76369187-K", "76369187-5")), "DA/RE");
        assert_eq!(field("<AUTORIZACION><CAF/>"), "XML");
        assert_eq!(field("<OTHER/>"), "AUTORIZACION");
        // The private key of another CAF does not match this one's RSAPK.
        let start = |x: &str| x.find("<RSASK>").unwrap();
        let end = |x: &str| x.find("</RSASK>").unwrap();
        let swapped = format!(
            "{}{}{}",
            &good[..start(&good)],
            &other[start(&other)..end(&other)],
            &good[end(&good)..]
        );
        assert_eq!(field(&swapped), "RSASK");
        let err = Caf::parse(good.as_bytes())
            .unwrap()
            .check_issuer(&Rut::parse("97975000-5").unwrap())
            .unwrap_err();
        assert_eq!(err.field, "DA/RE");
    }
}
