//! The SII's wire formats, shared by the client and the simulator: SOAP envelopes whose
//! return value is an escaped `SII:RESPUESTA` document, the `getToken` request, the
//! `RECEPCIONDTE` upload answer, and the boleta API's JSON.

use quick_xml::escape::{escape, unescape};

/// A SOAP 1.1 request calling `method` with string arguments.
pub fn soap_request(method: &str, args: &[(&str, &str)]) -> String {
    let args: String = args
        .iter()
        .map(|(name, value)| {
            format!(
                "<{name} xsi:type=\"xsd:string\">{}</{name}>",
                escape(*value)
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
<soapenv:Body><{method}>{args}</{method}></soapenv:Body></soapenv:Envelope>"
    )
}

/// A SOAP response whose `<methodReturn>` carries `inner` (an XML document) escaped.
pub fn soap_response(method: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
<soapenv:Body><ns1:{method}Response soapenv:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\" \
xmlns:ns1=\"http://DefaultNamespace\"><{method}Return xsi:type=\"xsd:string\">{}</{method}Return>\
</ns1:{method}Response></soapenv:Body></soapenv:Envelope>",
        escape(inner)
    )
}

/// The text of the first element named `name` (any prefix), unescaped.
pub fn element_text(xml: &str, name: &str) -> Option<String> {
    let mut at = 0;
    while let Some(found) = xml[at..].find('<') {
        let open = at + found;
        let rest = &xml[open + 1..];
        let tag_end = rest.find('>')?;
        let tag = &rest[..tag_end];
        let local = tag
            .split_whitespace()
            .next()
            .unwrap_or("")
            .rsplit(':')
            .next()
            .unwrap_or("");
        if local == name && !tag.starts_with('/') && !tag.ends_with('/') {
            let body_start = open + 1 + tag_end + 1;
            let qname = tag.split_whitespace().next().unwrap_or("");
            let close = xml[body_start..].find(&format!("</{qname}>"))? + body_start;
            return unescape(&xml[body_start..close])
                .ok()
                .map(|t| t.into_owned());
        }
        at = open + 1;
    }
    None
}

/// The arguments of a SOAP call: the text of each named element.
pub fn soap_argument(body: &str, name: &str) -> Option<String> {
    element_text(body, name)
}

/// The escaped document a SOAP response returns.
pub fn soap_return(body: &str, method: &str) -> Option<String> {
    element_text(body, &format!("{method}Return"))
}

/// `SII:RESPUESTA` with a body and header.
pub fn respuesta(body: &str, header: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><SII:RESPUESTA xmlns:SII=\"http://www.sii.cl/XMLSchema\">\
<SII:RESP_BODY>{body}</SII:RESP_BODY><SII:RESP_HDR>{header}</SII:RESP_HDR></SII:RESPUESTA>"
    )
}

/// The unsigned token request for a seed; it is signed whole (enveloped).
pub fn get_token_request(seed: &str) -> String {
    format!(
        "<getToken><item><Semilla>{}</Semilla></item></getToken>",
        escape(seed)
    )
}

/// The multipart form fields an upload carries beside the file.
pub struct UploadFields {
    pub rut_sender: String,
    pub dv_sender: String,
    pub rut_company: String,
    pub dv_company: String,
}

/// Splits `12345678-5` into number and check digit.
pub fn split_rut(rut: &str) -> (String, String) {
    match rut.split_once('-') {
        Some((n, dv)) => (n.to_string(), dv.to_string()),
        None => (rut.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_soap_return_round_trips_its_escaped_document() {
        let inner = respuesta("<SEMILLA>012</SEMILLA>", "<ESTADO>00</ESTADO>");
        let body = soap_response("getSeed", &inner);
        assert!(body.contains("&lt;SEMILLA&gt;"));
        let back = soap_return(&body, "getSeed").unwrap();
        assert_eq!(back, inner);
        assert_eq!(element_text(&back, "SEMILLA").unwrap(), "012");
        assert_eq!(element_text(&back, "ESTADO").unwrap(), "00");
        let request = soap_request("getEstUp", &[("TrackId", "42"), ("Token", "a&b")]);
        assert_eq!(soap_argument(&request, "Token").unwrap(), "a&b");
        assert_eq!(split_rut("76369187-K"), ("76369187".into(), "K".into()));
    }
}
