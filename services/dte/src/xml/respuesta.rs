//! `RespuestaDTE` (RespuestaEnvioDTE_v10.xsd): the buyer's signed answer to a supplier's
//! envelope. This module builds its `RecepcionEnvio` form: whether the envelope was
//! received, and each document's reception code.

use chrono::NaiveDateTime;

use super::{
    document::{BuildError, el, num, timestamp},
    latin1,
    signature::{self, SignError, SigningIdentity},
};

/// One document's line of a `RecepcionEnvio`.
#[derive(Debug, Clone)]
pub struct RecepcionDte {
    pub tipo_dte: i32,
    pub folio: i64,
    /// `FchEmis`, `YYYY-MM-DD`.
    pub fch_emis: String,
    pub rut_emisor: String,
    pub rut_recep: String,
    pub mnt_total: i64,
    /// `EstadoRecepDTE`.
    pub estado: i32,
    pub glosa: String,
}

/// The reception of one envelope.
#[derive(Debug, Clone)]
pub struct Recepcion {
    /// Who answers (the company that received: `RutResponde`).
    pub rut_responde: String,
    /// Who gets the answer (the supplier: `RutRecibe`).
    pub rut_recibe: String,
    /// `IdRespuesta` and `CodEnvio`: the receiver's number for this envelope (≥ 1).
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

/// The signed `RespuestaDTE` for `recepcion`, as ISO-8859-1 bytes with their declaration.
pub fn build(
    recepcion: &Recepcion,
    signed_at: NaiveDateTime,
    identity: &SigningIdentity,
) -> Result<Vec<u8>, BuildError> {
    let r = recepcion;
    let mut x = String::with_capacity(2048 + 512 * r.documents.len());
    x.push_str(&format!(
        "<RespuestaDTE xmlns=\"{ns}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
xsi:schemaLocation=\"{ns} RespuestaEnvioDTE_v10.xsd\" version=\"1.0\">\
<Resultado ID=\"Resultado{id}\"><Caratula version=\"1.0\">",
        ns = signature::SII_NS,
        id = r.cod_envio,
    ));
    el(&mut x, "RutResponde", &r.rut_responde, 10);
    el(&mut x, "RutRecibe", &r.rut_recibe, 10);
    num(&mut x, "IdRespuesta", r.cod_envio);
    num(&mut x, "NroDetalles", 1);
    el(&mut x, "TmstFirmaResp", &timestamp(signed_at), 19);
    x.push_str("</Caratula><RecepcionEnvio>");
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
        num(&mut x, "TipoDTE", d.tipo_dte);
        num(&mut x, "Folio", d.folio);
        el(&mut x, "FchEmis", &d.fch_emis, 10);
        el(&mut x, "RUTEmisor", &d.rut_emisor, 10);
        el(&mut x, "RUTRecep", &d.rut_recep, 10);
        num(&mut x, "MntTotal", d.mnt_total);
        num(&mut x, "EstadoRecepDTE", d.estado);
        el(&mut x, "RecepDTEGlosa", &d.glosa, 256);
        x.push_str("</RecepcionDTE>");
    }
    x.push_str("</RecepcionEnvio></Resultado>");
    x.push_str(&identity.template(&format!("Resultado{}", r.cod_envio)));
    x.push_str("</RespuestaDTE>");
    let signed = identity.sign_last(&x)?;
    let mut bytes = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n".to_vec();
    bytes.extend(
        latin1::encode(&signed)
            .map_err(|c| SignError::from(format!("a character outside ISO-8859-1: {c:?}")))?,
    );
    Ok(bytes)
}
