//! The buyer's signed answers to a supplier: `RespuestaDTE` (RespuestaEnvioDTE_v10.xsd) in
//! its two forms, `RecepcionEnvio` (was the envelope received, and each document) and
//! `ResultadoDTE` (the commercial verdict on a document: accepted, accepted with
//! discrepancies, rejected); and `EnvioRecibos` (EnvioRecibos_v10.xsd: the goods or
//! services were received, Ley 19.983).

use chrono::NaiveDateTime;

use super::{
    document::{BuildError, el, num, timestamp},
    latin1,
    signature::{self, SignError, SigningIdentity},
};

/// The law's receipt declaration, exactly as `Recibos_v10.xsd` fixes it.
pub const DECLARACION: &str = "El acuse de recibo que se declara en este acto, de acuerdo a lo dispuesto en la letra b) del Art. 4, y la letra c) del Art. 5 de la Ley 19.983, acredita que la entrega de mercaderias o servicio(s) prestado(s) ha(n) sido recibido(s).";

/// What identifies a received document in every answer.
#[derive(Debug, Clone)]
pub struct DocumentRef {
    pub tipo_dte: i32,
    pub folio: i64,
    /// `FchEmis`, `YYYY-MM-DD`.
    pub fch_emis: String,
    pub rut_emisor: String,
    pub rut_recep: String,
    pub mnt_total: i64,
}

impl DocumentRef {
    fn write(&self, x: &mut String, tipo_element: &str) {
        num(x, tipo_element, self.tipo_dte);
        num(x, "Folio", self.folio);
        el(x, "FchEmis", &self.fch_emis, 10);
        el(x, "RUTEmisor", &self.rut_emisor, 10);
        el(x, "RUTRecep", &self.rut_recep, 10);
        num(x, "MntTotal", self.mnt_total);
    }
}

/// Who answers whom, and the answer's number.
#[derive(Debug, Clone)]
pub struct Parties {
    /// The company that received (`RutResponde`).
    pub rut_responde: String,
    /// The supplier (`RutRecibe`).
    pub rut_recibe: String,
    /// `IdRespuesta` (≥ 1).
    pub id_respuesta: i64,
}

/// One document's line of a `RecepcionEnvio`.
#[derive(Debug, Clone)]
pub struct RecepcionDte {
    pub document: DocumentRef,
    /// `EstadoRecepDTE`.
    pub estado: i32,
    pub glosa: String,
}

/// The reception of one envelope.
#[derive(Debug, Clone)]
pub struct Recepcion {
    /// `CodEnvio`: the receiver's number for the envelope (≥ 1).
    pub cod_envio: i64,
    /// The received file's name (`NmbEnvio`, ≤ 80 characters).
    pub nmb_envio: String,
    pub fch_recep: NaiveDateTime,
    /// The received envelope's `SetDTE` `ID` (`EnvioDTEID`).
    pub envio_dte_id: String,
    /// The received envelope's Caratula.
    pub rut_emisor: String,
    pub rut_receptor: String,
    /// `EstadoRecepEnv`.
    pub estado: i32,
    pub glosa: String,
    /// The documents' lines (none when the envelope could not be read as its schema says).
    pub documents: Vec<RecepcionDte>,
}

/// `EstadoDTE` of a `ResultadoDTE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted = 0,
    AcceptedWithDiscrepancies = 1,
    Rejected = 2,
}

/// The commercial verdict on one document.
#[derive(Debug, Clone)]
pub struct Resultado {
    pub document: DocumentRef,
    /// The envelope it came in (`CodEnvio` of its reception).
    pub cod_envio: i64,
    pub verdict: Verdict,
    pub glosa: String,
}

fn open(parties: &Parties, details: usize, signed_at: NaiveDateTime) -> String {
    let mut x = String::with_capacity(4096);
    x.push_str(&format!(
        "<RespuestaDTE xmlns=\"{ns}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
xsi:schemaLocation=\"{ns} RespuestaEnvioDTE_v10.xsd\" version=\"1.0\">\
<Resultado ID=\"Resultado{id}\"><Caratula version=\"1.0\">",
        ns = signature::SII_NS,
        id = parties.id_respuesta,
    ));
    el(&mut x, "RutResponde", &parties.rut_responde, 10);
    el(&mut x, "RutRecibe", &parties.rut_recibe, 10);
    num(&mut x, "IdRespuesta", parties.id_respuesta);
    num(&mut x, "NroDetalles", details);
    el(&mut x, "TmstFirmaResp", &timestamp(signed_at), 19);
    x.push_str("</Caratula>");
    x
}

/// Signs `x` (its root's last child a template for `id`) and encodes it as the SII's
/// ISO-8859-1 bytes with their declaration.
fn sign(x: &str, identity: &SigningIdentity) -> Result<Vec<u8>, BuildError> {
    let signed = identity.sign_last(x)?;
    let mut bytes = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n".to_vec();
    bytes.extend(
        latin1::encode(&signed)
            .map_err(|c| SignError::from(format!("a character outside ISO-8859-1: {c:?}")))?,
    );
    Ok(bytes)
}

/// The signed `RespuestaDTE` with the `RecepcionEnvio` of one envelope.
pub fn build(
    parties: &Parties,
    recepcion: &Recepcion,
    signed_at: NaiveDateTime,
    identity: &SigningIdentity,
) -> Result<Vec<u8>, BuildError> {
    let r = recepcion;
    let mut x = open(parties, 1, signed_at);
    x.push_str("<RecepcionEnvio>");
    el(&mut x, "NmbEnvio", &r.nmb_envio, 80);
    el(&mut x, "FchRecep", &timestamp(r.fch_recep), 19);
    num(&mut x, "CodEnvio", r.cod_envio);
    el(&mut x, "EnvioDTEID", &r.envio_dte_id, 80);
    if !r.rut_emisor.is_empty() {
        el(&mut x, "RutEmisor", &r.rut_emisor, 10);
    }
    if !r.rut_receptor.is_empty() {
        el(&mut x, "RutReceptor", &r.rut_receptor, 10);
    }
    num(&mut x, "EstadoRecepEnv", r.estado);
    el(&mut x, "RecepEnvGlosa", &r.glosa, 256);
    if !r.documents.is_empty() {
        num(&mut x, "NroDTE", r.documents.len());
    }
    for d in &r.documents {
        x.push_str("<RecepcionDTE>");
        d.document.write(&mut x, "TipoDTE");
        num(&mut x, "EstadoRecepDTE", d.estado);
        el(&mut x, "RecepDTEGlosa", &d.glosa, 256);
        x.push_str("</RecepcionDTE>");
    }
    x.push_str("</RecepcionEnvio></Resultado>");
    x.push_str(&identity.template(&format!("Resultado{}", parties.id_respuesta)));
    x.push_str("</RespuestaDTE>");
    sign(&x, identity)
}

/// The signed `RespuestaDTE` with the `ResultadoDTE` of one document.
pub fn build_resultado(
    parties: &Parties,
    resultado: &Resultado,
    signed_at: NaiveDateTime,
    identity: &SigningIdentity,
) -> Result<Vec<u8>, BuildError> {
    let r = resultado;
    let mut x = open(parties, 1, signed_at);
    x.push_str("<ResultadoDTE>");
    r.document.write(&mut x, "TipoDTE");
    num(&mut x, "CodEnvio", r.cod_envio);
    num(&mut x, "EstadoDTE", r.verdict as i32);
    el(&mut x, "EstadoDTEGlosa", &r.glosa, 256);
    if r.verdict == Verdict::Rejected {
        // The schema's only code for a rejection: "-1, other reasons" (the glosa says which).
        num(&mut x, "CodRchDsc", -1);
    }
    x.push_str("</ResultadoDTE></Resultado>");
    x.push_str(&identity.template(&format!("Resultado{}", parties.id_respuesta)));
    x.push_str("</RespuestaDTE>");
    sign(&x, identity)
}

/// The signed `EnvioRecibos` with one `Recibo`: the goods or services of `document` were
/// received at `recinto`, declared by `rut_firma` (the signer). The `Recibo` is signed on
/// its own, then the set.
pub fn build_recibos(
    parties: &Parties,
    document: &DocumentRef,
    recinto: &str,
    rut_firma: &str,
    signed_at: NaiveDateTime,
    identity: &SigningIdentity,
) -> Result<Vec<u8>, BuildError> {
    let recibo_id = format!("Recibo{}", parties.id_respuesta);
    let mut r = format!(
        "<Recibo xmlns=\"{ns}\" version=\"1.0\"><DocumentoRecibo ID=\"{recibo_id}\">",
        ns = signature::SII_NS
    );
    document.write(&mut r, "TipoDoc");
    el(&mut r, "Recinto", recinto, 80);
    el(&mut r, "RutFirma", rut_firma, 10);
    el(&mut r, "Declaracion", DECLARACION, 256);
    el(&mut r, "TmstFirmaRecibo", &timestamp(signed_at), 19);
    r.push_str("</DocumentoRecibo>");
    r.push_str(&identity.template(&recibo_id));
    r.push_str("</Recibo>");
    let recibo = identity.sign_last(&r)?;

    let set_id = format!("SetRecibos{}", parties.id_respuesta);
    let mut x = format!(
        "<EnvioRecibos xmlns=\"{ns}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
xsi:schemaLocation=\"{ns} EnvioRecibos_v10.xsd\" version=\"1.0\"><SetRecibos ID=\"{set_id}\">\
<Caratula version=\"1.0\">",
        ns = signature::SII_NS
    );
    el(&mut x, "RutResponde", &parties.rut_responde, 10);
    el(&mut x, "RutRecibe", &parties.rut_recibe, 10);
    el(&mut x, "TmstFirmaEnv", &timestamp(signed_at), 19);
    x.push_str("</Caratula>");
    x.push_str(&recibo);
    x.push_str("</SetRecibos>");
    x.push_str(&identity.template(&set_id));
    x.push_str("</EnvioRecibos>");
    sign(&x, identity)
}
