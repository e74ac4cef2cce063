//! The SII's registry of acceptance and claims (Ley 20.956, which gives Ley 19.983's 8 days
//! their legal effect): the SOAP web service `RegistroReclamoDteService`, as the SII's
//! "WS Consulta y Registro de Aceptación/Reclamo a DTE recibido" (v1.2) describes it and
//! other software calls it. The buyer registers its verdict on a received factura
//! (`ingresarAceptacionReclamoDoc`), reads a document's events (`listarEventosHistDoc`),
//! and asks when the SII received the document (`consultarFechaRecepcionSii`), from which
//! the 8 days count. The calls carry the same token as the other SOAP services (cookie
//! `TOKEN`). Requests and answers are document/literal: an element in the service's
//! namespace, unqualified children; this module builds and reads both sides, for the client
//! and the simulator.

use chrono::{NaiveDateTime, TimeZone as _, Utc};
use quick_xml::escape::escape;

use super::protocol::element_text;

/// The service's namespace.
pub const NAMESPACE: &str = "http://ws.registroreclamodte.diii.sdi.sii.cl";
/// The service's path under its base URL (`https://ws1.sii.cl/WSREGISTRORECLAMODTE`).
pub const SERVICE: &str = "registroreclamodteservice";

/// The only types the registry takes: facturas (33, 34) and facturas de compra (43).
pub const REGISTRY_TYPES: [i32; 3] = [33, 34, 43];

/// An action a buyer registers (`accionDoc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `ACD`: accepts the document's content.
    AcceptContent,
    /// `ERM`: gives the receipt of the goods or services (Ley 19.983).
    ReceiptOfGoods,
    /// `RCD`: claims the document's content.
    ClaimContent,
    /// `RFP`: claims a partial lack of the goods.
    ClaimPartialGoods,
    /// `RFT`: claims a total lack of the goods.
    ClaimTotalGoods,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::AcceptContent,
        Action::ReceiptOfGoods,
        Action::ClaimContent,
        Action::ClaimPartialGoods,
        Action::ClaimTotalGoods,
    ];

    /// The code the SII spells it with.
    pub fn code(self) -> &'static str {
        match self {
            Action::AcceptContent => "ACD",
            Action::ReceiptOfGoods => "ERM",
            Action::ClaimContent => "RCD",
            Action::ClaimPartialGoods => "RFP",
            Action::ClaimTotalGoods => "RFT",
        }
    }

    pub fn from_code(code: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.code() == code)
    }

    /// The SII's description of the event.
    pub fn description(self) -> &'static str {
        match self {
            Action::AcceptContent => "Acepta Contenido del Documento",
            Action::ReceiptOfGoods => "Otorga Recibo de Mercaderías o Servicios",
            Action::ClaimContent => "Reclamo al Contenido del Documento",
            Action::ClaimPartialGoods => "Reclamo por Falta Parcial de Mercaderías",
            Action::ClaimTotalGoods => "Reclamo por Falta Total de Mercaderías",
        }
    }

    /// A claim (`RCD`, `RFP`, `RFT`).
    pub fn is_claim(self) -> bool {
        matches!(
            self,
            Action::ClaimContent | Action::ClaimPartialGoods | Action::ClaimTotalGoods
        )
    }
}

/// `codResp`: the action was registered.
pub const OK: i32 = 0;
/// `codResp`: the same event was registered before (a retry after a lost answer).
pub const ALREADY_REGISTERED: i32 = 7;
/// `codResp`: more than 8 days since the SII received the document.
pub const TOO_LATE: i32 = 8;
/// `codResp` of `listarEventosHistDoc`: the events follow.
pub const EVENTS_LISTED: i32 = 15;
/// `codResp` of `listarEventosHistDoc`: the document has no events.
pub const NO_EVENTS: i32 = 16;
/// `codResp`: the SII has not received the document.
pub const NOT_RECEIVED: i32 = 18;

/// The SII's answer (`codResp`, `descResp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: i32,
    pub description: String,
}

impl Answer {
    /// The registry took the action (or had it already).
    pub fn registered(&self) -> bool {
        matches!(self.code, OK | ALREADY_REGISTERED)
    }
}

/// One event of a document in the registry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// `ACD`, `ERM`, `RCD`, `RFP`, `RFT` (and the SII's own, e.g. `NCA`, `ENC`).
    pub code: String,
    pub description: String,
    /// Who registered it (`rutResponsable`-`dvResponsable`).
    pub responsible: String,
    /// When, as the SII wrote it (`fechaEvento`).
    pub at: String,
}

/// The request calling `method` with a document's key (and an action).
pub fn request(
    method: &str,
    rut_emisor: &str,
    tipo: i32,
    folio: i64,
    action: Option<Action>,
) -> String {
    let (rut, dv) = super::protocol::split_rut(rut_emisor);
    let action = action
        .map(|a| format!("<accionDoc>{}</accionDoc>", a.code()))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:ws=\"{NAMESPACE}\">\
<soapenv:Header/><soapenv:Body><ws:{method}><rutEmisor>{}</rutEmisor><dvEmisor>{}</dvEmisor>\
<tipoDoc>{tipo}</tipoDoc><folio>{folio}</folio>{action}</ws:{method}></soapenv:Body></soapenv:Envelope>",
        escape(rut.as_str()),
        escape(dv.as_str()),
    )
}

/// The method a request calls: the first element of its `Body`.
pub fn requested_method(body: &str) -> Option<String> {
    let at = body.find("Body")?;
    let rest = &body[at..];
    let open = rest.find('<')? + 1;
    let name = rest[open..]
        .split(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .next()?;
    Some(name.rsplit(':').next()?.to_string())
}

/// A request's document key: (RUTEmisor, TipoDTE, Folio), as sent (unchecked).
pub fn requested_document(body: &str) -> (String, String, String) {
    let text = |name| element_text(body, name).unwrap_or_default();
    (
        format!("{}-{}", text("rutEmisor").trim(), text("dvEmisor").trim()),
        text("tipoDoc").trim().to_string(),
        text("folio").trim().to_string(),
    )
}

/// The SOAP response of `method` returning `inner` (already XML).
pub fn response(method: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<S:Envelope xmlns:S=\"http://schemas.xmlsoap.org/soap/envelope/\"><S:Body>\
<ns2:{method}Response xmlns:ns2=\"{NAMESPACE}\"><return>{inner}</return></ns2:{method}Response>\
</S:Body></S:Envelope>"
    )
}

/// The `return` of an answer with a code.
pub fn answer_body(answer: &Answer, events: &[Event]) -> String {
    let events: String = events
        .iter()
        .map(|e| {
            let (rut, dv) = super::protocol::split_rut(&e.responsible);
            format!(
                "<listaEventosDoc><codEvento>{}</codEvento><descEvento>{}</descEvento>\
<dvResponsable>{}</dvResponsable><fechaEvento>{}</fechaEvento><rutResponsable>{}</rutResponsable>\
</listaEventosDoc>",
                escape(e.code.as_str()),
                escape(e.description.as_str()),
                escape(dv.as_str()),
                escape(e.at.as_str()),
                escape(rut.as_str()),
            )
        })
        .collect();
    format!(
        "<codResp>{}</codResp><descResp>{}</descResp>{events}",
        answer.code,
        escape(answer.description.as_str())
    )
}

/// A SOAP 1.1 fault (served with HTTP 500).
pub fn fault(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<S:Envelope xmlns:S=\"http://schemas.xmlsoap.org/soap/envelope/\"><S:Body><S:Fault>\
<faultcode>S:{code}</faultcode><faultstring>{}</faultstring></S:Fault></S:Body></S:Envelope>",
        escape(message)
    )
}

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// A SOAP fault: its `faultstring`.
    Fault(String),
    /// Not the answer expected.
    Unexpected(String),
}

fn fault_of(body: &str) -> Option<ReadError> {
    body.contains("Fault>").then(|| {
        ReadError::Fault(element_text(body, "faultstring").unwrap_or_else(|| body.to_string()))
    })
}

/// The inner slices of every element named `name` (unprefixed).
fn all_elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

/// Reads an answer with a code, and its events if any.
pub fn read_answer(body: &str, method: &str) -> Result<(Answer, Vec<Event>), ReadError> {
    if let Some(fault) = fault_of(body) {
        return Err(fault);
    }
    if !body.contains(&format!("{method}Response")) {
        return Err(ReadError::Unexpected(format!(
            "no {method}Response in {body}"
        )));
    }
    let code = element_text(body, "codResp")
        .and_then(|c| c.trim().parse().ok())
        .ok_or_else(|| ReadError::Unexpected(format!("no codResp in {body}")))?;
    let description = element_text(body, "descResp").unwrap_or_default();
    let events = all_elements(body, "listaEventosDoc")
        .into_iter()
        .map(|e| {
            let text = |name| element_text(e, name).unwrap_or_default().trim().to_string();
            let (rut, dv) = (text("rutResponsable"), text("dvResponsable"));
            Event {
                code: text("codEvento"),
                description: text("descEvento"),
                responsible: if dv.is_empty() {
                    rut
                } else {
                    format!("{rut}-{dv}")
                },
                at: text("fechaEvento"),
            }
        })
        .collect();
    Ok((Answer { code, description }, events))
}

/// The SII's way of writing a reception date: `21-02-2017 19:02:03`, Chile's time.
pub const DATE_FORMAT: &str = "%d-%m-%Y %H:%M:%S";

/// Reads `consultarFechaRecepcionSii`'s answer: when the SII received the document, or
/// `None` when it has no date for it (an empty return).
pub fn read_reception_date(body: &str) -> Result<Option<chrono::DateTime<Utc>>, ReadError> {
    if let Some(fault) = fault_of(body) {
        return Err(fault);
    }
    if !body.contains("consultarFechaRecepcionSiiResponse") {
        return Err(ReadError::Unexpected(format!(
            "no consultarFechaRecepcionSiiResponse in {body}"
        )));
    }
    let text = element_text(body, "return").unwrap_or_default();
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let local = NaiveDateTime::parse_from_str(text, DATE_FORMAT)
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S"))
        .map_err(|_| ReadError::Unexpected(format!("{text:?} is not a date")))?;
    chrono_tz::America::Santiago
        .from_local_datetime(&local)
        .earliest()
        .map(|t| Some(t.with_timezone(&Utc)))
        .ok_or_else(|| ReadError::Unexpected(format!("{text:?} is not a time in Chile")))
}

/// Writes a reception date as the SII does.
pub fn format_date(at: chrono::DateTime<Utc>) -> String {
    at.with_timezone(&chrono_tz::America::Santiago)
        .format(DATE_FORMAT)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip() {
        let body = request(
            "ingresarAceptacionReclamoDoc",
            "76086428-5",
            33,
            42,
            Some(Action::ClaimPartialGoods),
        );
        assert_eq!(
            requested_method(&body).as_deref(),
            Some("ingresarAceptacionReclamoDoc")
        );
        assert_eq!(
            requested_document(&body),
            ("76086428-5".into(), "33".into(), "42".into())
        );
        assert_eq!(element_text(&body, "accionDoc").as_deref(), Some("RFP"));

        let events = vec![Event {
            code: "RCD".into(),
            description: "Reclamo al Contenido del Documento".into(),
            responsible: "76369187-K".into(),
            at: "02-12-2026 10:11:12".into(),
        }];
        let answer = Answer {
            code: EVENTS_LISTED,
            description: "Listado de eventos del documento".into(),
        };
        let back = read_answer(
            &response("listarEventosHistDoc", &answer_body(&answer, &events)),
            "listarEventosHistDoc",
        )
        .unwrap();
        assert_eq!(back, (answer, events));

        let fault = read_answer(&fault("Server", "Token invalido"), "listarEventosHistDoc");
        assert_eq!(fault, Err(ReadError::Fault("Token invalido".into())));

        let at = Utc.with_ymd_and_hms(2026, 12, 2, 13, 0, 0).unwrap();
        let date = response("consultarFechaRecepcionSii", &format_date(at));
        assert_eq!(read_reception_date(&date), Ok(Some(at)));
        assert!(format_date(at).starts_with("02-12-2026 10:00:00"));
        let none = response("consultarFechaRecepcionSii", "");
        assert_eq!(read_reception_date(&none), Ok(None));
    }
}
