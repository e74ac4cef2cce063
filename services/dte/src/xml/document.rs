//! A DTE as the SII's schemas spell it: `Documento` (header, lines, totals, reference, TED)
//! signed inside its `DTE`, and the envelope (`EnvioBOLETA` or `EnvioDTE`) with its
//! `Caratula`, signed over `SetDTE`. Written compactly, no whitespace between tags.

use chrono::{NaiveDate, NaiveDateTime};
use quick_xml::escape::escape;
use rsa::RsaPrivateKey;

use super::{
    latin1,
    signature::{self, SignError, SigningIdentity},
    ted,
};
use crate::domain::{Content, Issuer, RUT_SII, TipoDte};

/// What stamping a document needs from its CAF.
pub struct Stamp<'a> {
    /// The `CAF` element, flattened, embedded in the `DD`.
    pub caf_element: &'a str,
    /// `RSASK`.
    pub caf_key: &'a RsaPrivateKey,
}

/// Why a document could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Ted(#[from] ted::TedError),
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// A signed `DTE` element, ready to go into an envelope.
#[derive(Debug, Clone)]
pub struct SignedDte {
    pub tipo: TipoDte,
    pub folio: i64,
    /// The `DTE` element as signed (UTF-8 text, no declaration).
    pub xml: String,
}

/// Appends `<name>text</name>`, text escaped and cut to the SII's limit.
pub(crate) fn el(out: &mut String, name: &str, text: &str, max: usize) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    out.push_str(&escape(latin1::field(text, max)));
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// Appends `<name>n</name>`.
pub(crate) fn num(out: &mut String, name: &str, n: impl std::fmt::Display) {
    out.push_str(&format!("<{name}>{n}</{name}>"));
}

fn date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

pub(crate) fn timestamp(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// The `ID` of a document's `Documento`: `T39F12`.
pub fn documento_id(tipo: TipoDte, folio: i64) -> String {
    format!("T{}F{folio}", tipo.code())
}

/// Builds, stamps and signs one document.
pub fn build_dte(
    issuer: &Issuer,
    content: &Content,
    folio: i64,
    fecha: NaiveDate,
    signed_at: NaiveDateTime,
    stamp: &Stamp<'_>,
    identity: &SigningIdentity,
) -> Result<SignedDte, BuildError> {
    let tipo = content.tipo;
    let boleta = tipo.is_boleta();
    let exempt_doc = tipo.is_exempt();
    let id = documento_id(tipo, folio);
    let mut d = String::with_capacity(4096);
    d.push_str(&format!("<Documento ID=\"{id}\"><Encabezado><IdDoc>"));
    num(&mut d, "TipoDTE", tipo);
    num(&mut d, "Folio", folio);
    el(&mut d, "FchEmis", &date(fecha), 10);
    if boleta {
        // 3: boletas de venta y servicios.
        num(&mut d, "IndServicio", 3);
        if !exempt_doc {
            // 2: line amounts are net, so the totals are exactly what was charged.
            num(&mut d, "IndMntNeto", 2);
        }
    }
    d.push_str("</IdDoc><Emisor>");
    el(&mut d, "RUTEmisor", &issuer.rut.to_string(), 10);
    if boleta {
        el(&mut d, "RznSocEmisor", &issuer.razon_social, 100);
        el(&mut d, "GiroEmisor", &issuer.giro, 80);
    } else {
        el(&mut d, "RznSoc", &issuer.razon_social, 100);
        el(&mut d, "GiroEmis", &issuer.giro, 80);
        num(&mut d, "Acteco", issuer.acteco);
    }
    el(&mut d, "DirOrigen", &issuer.address, 70);
    el(&mut d, "CmnaOrigen", &issuer.comuna, 20);
    el(&mut d, "CiudadOrigen", &issuer.ciudad, 20);
    d.push_str("</Emisor><Receptor>");
    let r = &content.receptor;
    el(&mut d, "RUTRecep", &r.rut, 10);
    el(&mut d, "RznSocRecep", &r.razon_social, 100);
    if !boleta && !r.giro.is_empty() {
        el(&mut d, "GiroRecep", &r.giro, 40);
    }
    if !r.address.is_empty() {
        el(&mut d, "DirRecep", &r.address, 70);
    }
    if !r.comuna.is_empty() {
        el(&mut d, "CmnaRecep", &r.comuna, 20);
    }
    d.push_str("</Receptor><Totales>");
    let t = content.totals;
    if !exempt_doc && (t.net > 0 || t.iva > 0) {
        num(&mut d, "MntNeto", t.net);
    }
    if t.exempt > 0 || exempt_doc {
        num(&mut d, "MntExe", t.exempt);
    }
    if !exempt_doc && (t.net > 0 || t.iva > 0) {
        if !boleta {
            num(&mut d, "TasaIVA", platform::chile::IVA_PERCENT);
        }
        num(&mut d, "IVA", t.iva);
    }
    num(&mut d, "MntTotal", t.total);
    d.push_str("</Totales></Encabezado>");
    for (n, item) in content.items.iter().enumerate() {
        d.push_str("<Detalle>");
        num(&mut d, "NroLinDet", n + 1);
        if !item.code.is_empty() {
            d.push_str("<CdgItem><TpoCodigo>INT1</TpoCodigo>");
            el(&mut d, "VlrCodigo", &item.code, 35);
            d.push_str("</CdgItem>");
        }
        if item.exempt && !exempt_doc {
            num(&mut d, "IndExe", 1);
        }
        el(&mut d, "NmbItem", &item.name, 80);
        num(&mut d, "QtyItem", item.quantity);
        num(&mut d, "PrcItem", item.unit_price);
        num(&mut d, "MontoItem", item.amount);
        d.push_str("</Detalle>");
    }
    if let Some(reference) = &content.referencia {
        d.push_str("<Referencia>");
        num(&mut d, "NroLinRef", 1);
        num(&mut d, "TpoDocRef", reference.tipo);
        num(&mut d, "FolioRef", reference.folio);
        el(&mut d, "FchRef", &date(reference.fecha), 10);
        num(&mut d, "CodRef", reference.cod_ref.code());
        el(&mut d, "RazonRef", &reference.razon, 90);
        d.push_str("</Referencia>");
    }
    let mut dd = String::with_capacity(1024);
    dd.push_str("<DD>");
    el(&mut dd, "RE", &issuer.rut.to_string(), 10);
    num(&mut dd, "TD", tipo);
    num(&mut dd, "F", folio);
    el(&mut dd, "FE", &date(fecha), 10);
    el(&mut dd, "RR", &r.rut, 10);
    el(&mut dd, "RSR", &r.razon_social, 40);
    num(&mut dd, "MNT", t.total);
    el(
        &mut dd,
        "IT1",
        content.items.first().map_or("", |i| i.name.as_str()),
        40,
    );
    dd.push_str(stamp.caf_element);
    el(&mut dd, "TSTED", &timestamp(signed_at), 19);
    dd.push_str("</DD>");
    let frmt = ted::sign(&ted::flatten_dd(&dd)?, stamp.caf_key)?;
    d.push_str("<TED version=\"1.0\">");
    d.push_str(&dd);
    d.push_str(&format!(
        "<FRMT algoritmo=\"SHA1withRSA\">{frmt}</FRMT></TED>"
    ));
    el(&mut d, "TmstFirma", &timestamp(signed_at), 19);
    d.push_str("</Documento>");
    let unsigned = format!(
        "<DTE xmlns=\"{}\" version=\"1.0\">{d}{}</DTE>",
        signature::SII_NS,
        identity.template(&id)
    );
    Ok(SignedDte {
        tipo,
        folio,
        xml: identity.sign_last(&unsigned)?,
    })
}

/// The envelope of `dtes` (all boletas, or none), signed over `SetDTE`, as ISO-8859-1 bytes
/// with their XML declaration: exactly what goes to the SII.
pub fn build_envelope(
    issuer: &Issuer,
    dtes: &[SignedDte],
    signed_at: NaiveDateTime,
    identity: &SigningIdentity,
) -> Result<Vec<u8>, BuildError> {
    build_envelope_to(issuer, RUT_SII, dtes, signed_at, identity)
}

/// [`build_envelope`] addressed to `rut_receptor` (`Caratula/RutReceptor`): the SII's RUT
/// for the SII, the buyer's for the copy exchanged with the buyer.
pub fn build_envelope_to(
    issuer: &Issuer,
    rut_receptor: &str,
    dtes: &[SignedDte],
    signed_at: NaiveDateTime,
    identity: &SigningIdentity,
) -> Result<Vec<u8>, BuildError> {
    let boletas = dtes.first().is_some_and(|d| d.tipo.is_boleta());
    let (root, schema) = if boletas {
        ("EnvioBOLETA", "EnvioBOLETA_v11.xsd")
    } else {
        ("EnvioDTE", "EnvioDTE_v10.xsd")
    };
    let mut x = String::with_capacity(dtes.iter().map(|d| d.xml.len()).sum::<usize>() + 4096);
    x.push_str(&format!(
        "<{root} xmlns=\"{ns}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
xsi:schemaLocation=\"{ns} {schema}\" version=\"1.0\"><SetDTE ID=\"SetDoc\"><Caratula version=\"1.0\">",
        ns = signature::SII_NS
    ));
    el(&mut x, "RutEmisor", &issuer.rut.to_string(), 10);
    el(&mut x, "RutEnvia", &issuer.rut_envia.to_string(), 10);
    el(&mut x, "RutReceptor", rut_receptor, 10);
    el(&mut x, "FchResol", &date(issuer.fch_resol), 10);
    num(&mut x, "NroResol", issuer.nro_resol);
    el(&mut x, "TmstFirmaEnv", &timestamp(signed_at), 19);
    let mut tipos: Vec<TipoDte> = dtes.iter().map(|d| d.tipo).collect();
    tipos.sort_by_key(|t| t.code());
    tipos.dedup();
    for tipo in tipos {
        x.push_str("<SubTotDTE>");
        num(&mut x, "TpoDTE", tipo);
        num(
            &mut x,
            "NroDTE",
            dtes.iter().filter(|d| d.tipo == tipo).count(),
        );
        x.push_str("</SubTotDTE>");
    }
    x.push_str("</Caratula>");
    for dte in dtes {
        x.push_str(&dte.xml);
    }
    x.push_str("</SetDTE>");
    x.push_str(&identity.template("SetDoc"));
    x.push_str(&format!("</{root}>"));
    let signed = identity.sign_last(&x)?;
    let mut bytes = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n".to_vec();
    bytes.extend(
        latin1::encode(&signed)
            .map_err(|c| SignError::from(format!("a character outside ISO-8859-1: {c:?}")))?,
    );
    Ok(bytes)
}
