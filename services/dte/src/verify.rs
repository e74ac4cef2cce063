//! Verification of a received `EnvioDTE`, `EnvioBOLETA` or lone `DTE` (suppliers send them
//! too): per document, schema, document signature, TED signature against the CAF key inside
//! it, and the TED's `DD` against the document; for an envelope, its own signature.

use bergshamra::{DsigContext, KeysManager};

use crate::{
    caf::{self, strip_declaration},
    xml::{
        schema::{self, Schema},
        ted,
    },
};

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub passed: bool,
    /// False when the check does not apply (a lone DTE has no envelope).
    pub applicable: bool,
    pub detail: String,
}

impl Check {
    fn pass(detail: impl Into<String>) -> Self {
        Self {
            passed: true,
            applicable: true,
            detail: detail.into(),
        }
    }

    fn fail(detail: impl Into<String>) -> Self {
        Self {
            passed: false,
            applicable: true,
            detail: detail.into(),
        }
    }

    fn not_applicable(detail: impl Into<String>) -> Self {
        Self {
            passed: true,
            applicable: false,
            detail: detail.into(),
        }
    }

    fn of(result: Result<String, String>) -> Self {
        match result {
            Ok(detail) => Self::pass(detail),
            Err(detail) => Self::fail(detail),
        }
    }
}

/// The checks of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentReport {
    pub tipo_dte: i32,
    pub folio: i64,
    pub rut_emisor: String,
    /// `RUTRecep`: whom the document is addressed to.
    pub rut_receptor: String,
    /// The issuer's name (`RznSoc`, or a boleta's `RznSocEmisor`).
    pub razon_social_emisor: String,
    /// `FchEmis` as written.
    pub fch_emis: String,
    /// `MntTotal` (0 when absent or not a number).
    pub mnt_total: i64,
    /// The issuer's `CorreoEmisor` (may be empty).
    pub correo_emisor: String,
    /// The `DTE` element as received (its characters, decoded from the declared encoding).
    pub xml: String,
    pub schema: Check,
    pub signature: Check,
    pub ted: Check,
    pub ted_consistency: Check,
}

/// An envelope's `Caratula`: who sends it to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caratula {
    pub rut_emisor: String,
    pub rut_receptor: String,
    /// The `SetDTE`'s `ID`.
    pub set_id: String,
}

/// The report of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `EnvioDTE`, `EnvioBOLETA` or `DTE`.
    pub kind: String,
    /// The envelope's `Caratula` (none for a lone DTE).
    pub caratula: Option<Caratula>,
    pub envelope_signature: Check,
    pub documents: Vec<DocumentReport>,
}

impl Report {
    /// Every applicable check passed, and there was at least one document.
    pub fn valid(&self) -> bool {
        !self.documents.is_empty()
            && self.envelope_signature.passed
            && self.documents.iter().all(|d| {
                d.schema.passed && d.signature.passed && d.ted.passed && d.ted_consistency.passed
            })
    }

    /// A human-readable report, a line per check.
    pub fn render(&self) -> String {
        let mark = |c: &Check| {
            if !c.applicable {
                "n/a "
            } else if c.passed {
                "ok  "
            } else {
                "FAIL"
            }
        };
        let mut out = format!(
            "{}: {}\n  {} envelope signature: {}\n",
            self.kind,
            if self.valid() { "valid" } else { "NOT VALID" },
            mark(&self.envelope_signature),
            self.envelope_signature.detail
        );
        if self.documents.is_empty() {
            out.push_str("  no document found\n");
        }
        for d in &self.documents {
            out.push_str(&format!(
                "  document TipoDTE {} Folio {} RUTEmisor {}\n",
                d.tipo_dte, d.folio, d.rut_emisor
            ));
            for (name, check) in [
                ("schema", &d.schema),
                ("signature", &d.signature),
                ("TED", &d.ted),
                ("TED vs document", &d.ted_consistency),
            ] {
                out.push_str(&format!("    {} {name}: {}\n", mark(check), check.detail));
            }
        }
        out
    }
}

/// Why a file could not be verified at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("not well-formed XML: {0}")]
    Malformed(String),
    #[error("the root element is {0}, not EnvioDTE, EnvioBOLETA or DTE")]
    UnknownRoot(String),
}

// The small DOM helpers below are shared with `pdf::Sheet::of_dte`, which reads the same
// documents.
pub(crate) type Doc<'a> = uppsala::Document<'a>;
pub(crate) type Node = uppsala::NodeId;

fn element_named(doc: &Doc<'_>, node: Node, name: &str) -> bool {
    doc.element(node).is_some_and(|e| e.name.local_name == name)
}

pub(crate) fn children_named(doc: &Doc<'_>, parent: Node, name: &str) -> Vec<Node> {
    doc.children(parent)
        .into_iter()
        .filter(|&c| element_named(doc, c, name))
        .collect()
}

pub(crate) fn child(doc: &Doc<'_>, parent: Node, name: &str) -> Option<Node> {
    children_named(doc, parent, name).into_iter().next()
}

/// The text at a path of child names below `node`.
pub(crate) fn text_at(doc: &Doc<'_>, node: Node, path: &[&str]) -> Option<String> {
    let mut at = node;
    for name in path {
        at = child(doc, at, name)?;
    }
    Some(doc.text_content_deep(at).trim().to_string())
}

/// Verifies every signature in `xml` with the keys in their own `KeyInfo`; the results in
/// document order.
fn signatures(xml: &str) -> Result<Vec<bergshamra::VerifyResult>, String> {
    // `ID` (Documento, SetDTE) is among bergshamra's default ID attributes.
    let ctx = DsigContext::new_permissive(KeysManager::new());
    bergshamra::dsig::verify::verify_all(&ctx, xml).map_err(|e| e.to_string())
}

fn signature_check(result: Option<&bergshamra::VerifyResult>) -> Check {
    match result {
        Some(bergshamra::VerifyResult::Valid { .. }) => {
            Check::pass("RSA-SHA1 over the referenced element")
        }
        Some(bergshamra::VerifyResult::Invalid { reason }) => Check::fail(reason.clone()),
        None => Check::fail("no signature"),
    }
}

/// Verifies one file (ISO-8859-1 or UTF-8 bytes).
pub fn verify(bytes: &[u8]) -> Result<Report, VerifyError> {
    // The characters the file declares (windows-1252 is not ISO-8859-1): the canonical
    // form its signatures cover is computed from them.
    let decoded =
        crate::xml::declared::decode(bytes).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let text = strip_declaration(&decoded);
    let doc = uppsala::parse(text).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let root = doc
        .document_element()
        .ok_or_else(|| VerifyError::Malformed("no root element".into()))?;
    let kind = doc
        .element(root)
        .map(|e| e.name.local_name.to_string())
        .unwrap_or_default();
    let caratula = child(&doc, root, "SetDTE").and_then(|set| {
        let c = child(&doc, set, "Caratula")?;
        Some(Caratula {
            rut_emisor: text_at(&doc, c, &["RutEmisor"]).unwrap_or_default(),
            rut_receptor: text_at(&doc, c, &["RutReceptor"]).unwrap_or_default(),
            set_id: doc
                .element(set)
                .and_then(|e| e.get_attribute("ID"))
                .unwrap_or_default()
                .to_string(),
        })
    });
    let (schema, envelope_signature, dte_nodes) = match kind.as_str() {
        "EnvioDTE" | "EnvioBOLETA" => {
            let schema = if kind == "EnvioDTE" {
                Schema::EnvioDte
            } else {
                Schema::EnvioBoleta
            };
            let set = child(&doc, root, "SetDTE");
            let dtes = set
                .map(|s| children_named(&doc, s, "DTE"))
                .unwrap_or_default();
            // The envelope's signature is the root's own (last) Signature child.
            let envelope = match signatures(text) {
                Ok(results) if child(&doc, root, "Signature").is_some() => {
                    signature_check(results.last())
                }
                Ok(_) => Check::fail("the envelope has no Signature"),
                Err(e) => Check::fail(e),
            };
            (schema, envelope, dtes)
        }
        "DTE" => (
            if is_boleta(&doc, root) {
                Schema::EnvioBoleta
            } else {
                Schema::Dte
            },
            Check::not_applicable("a lone DTE has no envelope"),
            vec![root],
        ),
        other => return Err(VerifyError::UnknownRoot(other.to_string())),
    };
    let lone_boleta = kind == "DTE" && schema == Schema::EnvioBoleta;
    let schema_source = if lone_boleta {
        std::borrow::Cow::Owned(boleta_in_envelope(text))
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    let schema_check = Check::of(
        schema::validate(&schema_source, schema)
            .map(|()| format!("conforms to {}", schema.file()))
            .map_err(|errors| errors.join("; ")),
    );
    let documents = dte_nodes
        .into_iter()
        .map(|dte| document_report(&doc, dte, &schema_check))
        .collect();
    Ok(Report {
        kind,
        caratula,
        envelope_signature,
        documents,
    })
}

fn is_boleta(doc: &Doc<'_>, dte: Node) -> bool {
    child(doc, dte, "Documento")
        .and_then(|d| text_at(doc, d, &["Encabezado", "IdDoc", "TipoDTE"]))
        .is_some_and(|t| t == "39" || t == "41")
}

/// Boletas are declared only inside `EnvioBOLETA`, so a lone one is validated inside an
/// envelope whose own parts (Caratula, Signature) are placeholders that conform: any error
/// reported is the document's.
fn boleta_in_envelope(dte: &str) -> String {
    let b64 = "AAAA";
    format!(
        "<EnvioBOLETA xmlns=\"http://www.sii.cl/SiiDte\" version=\"1.0\"><SetDTE ID=\"S\">\
<Caratula version=\"1.0\"><RutEmisor>1-9</RutEmisor><RutEnvia>1-9</RutEnvia><RutReceptor>60803000-K</RutReceptor>\
<FchResol>2000-01-01</FchResol><NroResol>0</NroResol><TmstFirmaEnv>2000-01-01T00:00:00</TmstFirmaEnv>\
<SubTotDTE><TpoDTE>39</TpoDTE><NroDTE>1</NroDTE></SubTotDTE></Caratula>{dte}</SetDTE>\
<Signature xmlns=\"http://www.w3.org/2000/09/xmldsig#\"><SignedInfo>\
<CanonicalizationMethod Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315\"/>\
<SignatureMethod Algorithm=\"http://www.w3.org/2000/09/xmldsig#rsa-sha1\"/><Reference URI=\"#S\">\
<DigestMethod Algorithm=\"http://www.w3.org/2000/09/xmldsig#sha1\"/><DigestValue>{b64}</DigestValue></Reference>\
</SignedInfo><SignatureValue>{b64}</SignatureValue><KeyInfo><KeyValue><RSAKeyValue><Modulus>{b64}</Modulus>\
<Exponent>{b64}</Exponent></RSAKeyValue></KeyValue><X509Data><X509Certificate>{b64}</X509Certificate></X509Data>\
</KeyInfo></Signature></EnvioBOLETA>"
    )
}

fn document_report(doc: &Doc<'_>, dte: Node, schema: &Check) -> DocumentReport {
    let documento = child(doc, dte, "Documento");
    let field = |path: &[&str]| {
        documento
            .and_then(|d| text_at(doc, d, path))
            .unwrap_or_default()
    };
    // The document's signature verifies on the DTE taken out as a document of its own, as
    // it was when signed (before the envelope's namespaces surrounded it).
    let signature = match doc.node_source(dte) {
        Some(source) => match signatures(source) {
            Ok(results) => signature_check(results.first()),
            Err(e) => Check::fail(e),
        },
        None => Check::fail("the DTE cannot be read"),
    };
    let (ted, ted_consistency) = match documento.and_then(|d| child(doc, d, "TED")) {
        Some(ted_node) => ted_checks(doc, ted_node, &field),
        None => (
            Check::fail("the document has no TED"),
            Check::fail("the document has no TED"),
        ),
    };
    DocumentReport {
        tipo_dte: field(&["Encabezado", "IdDoc", "TipoDTE"])
            .parse()
            .unwrap_or(0),
        folio: field(&["Encabezado", "IdDoc", "Folio"])
            .parse()
            .unwrap_or(0),
        rut_emisor: field(&["Encabezado", "Emisor", "RUTEmisor"]),
        rut_receptor: field(&["Encabezado", "Receptor", "RUTRecep"]),
        razon_social_emisor: Some(field(&["Encabezado", "Emisor", "RznSoc"]))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| field(&["Encabezado", "Emisor", "RznSocEmisor"])),
        fch_emis: field(&["Encabezado", "IdDoc", "FchEmis"]),
        mnt_total: field(&["Encabezado", "Totales", "MntTotal"])
            .parse()
            .unwrap_or(0),
        correo_emisor: field(&["Encabezado", "Emisor", "CorreoEmisor"]),
        xml: doc.node_source(dte).unwrap_or_default().to_string(),
        schema: schema.clone(),
        signature,
        ted,
        ted_consistency,
    }
}

fn ted_checks(doc: &Doc<'_>, ted_node: Node, field: &dyn Fn(&[&str]) -> String) -> (Check, Check) {
    let Some(dd) = child(doc, ted_node, "DD") else {
        let missing = Check::fail("the TED has no DD");
        return (missing.clone(), missing);
    };
    let frmt = text_at(doc, ted_node, &["FRMT"]).unwrap_or_default();
    let dd_text = |name: &str| text_at(doc, dd, &[name]).unwrap_or_default();
    let ted = (|| -> Result<String, String> {
        let caf = child(doc, dd, "CAF").ok_or("the DD has no CAF")?;
        let rsapk = child(doc, caf, "DA")
            .and_then(|da| child(doc, da, "RSAPK"))
            .ok_or("the CAF has no DA/RSAPK")?;
        let key = caf::rsapk(doc, rsapk).map_err(|e| e.to_string())?;
        let source = doc.node_source(dd).ok_or("the DD cannot be read")?;
        let flat = ted::flatten_dd(source).map_err(|e| e.to_string())?;
        ted::verify(&flat, &frmt, &key)
            .map(|()| "FRMT verifies with the CAF's RSAPK".to_string())
            .map_err(|e| format!("FRMT does not verify with the CAF's RSAPK: {e}"))
    })();
    let caf_text = |path: &[&str]| {
        child(doc, dd, "CAF")
            .and_then(|c| text_at(doc, c, path))
            .unwrap_or_default()
    };
    let mut mismatches = Vec::new();
    let mut expect = |what: &str, in_ted: String, in_document: String| {
        if in_ted != in_document {
            mismatches.push(format!("{what}: TED {in_ted:?}, document {in_document:?}"));
        }
    };
    let prefix = |s: String, n: usize| s.chars().take(n).collect::<String>().trim_end().to_string();
    expect(
        "RE",
        dd_text("RE"),
        field(&["Encabezado", "Emisor", "RUTEmisor"]),
    );
    expect(
        "TD",
        dd_text("TD"),
        field(&["Encabezado", "IdDoc", "TipoDTE"]),
    );
    expect("F", dd_text("F"), field(&["Encabezado", "IdDoc", "Folio"]));
    expect(
        "FE",
        dd_text("FE"),
        field(&["Encabezado", "IdDoc", "FchEmis"]),
    );
    expect(
        "RR",
        dd_text("RR"),
        field(&["Encabezado", "Receptor", "RUTRecep"]),
    );
    expect(
        "RSR",
        prefix(dd_text("RSR"), 40),
        prefix(field(&["Encabezado", "Receptor", "RznSocRecep"]), 40),
    );
    expect(
        "MNT",
        dd_text("MNT"),
        field(&["Encabezado", "Totales", "MntTotal"]),
    );
    expect(
        "IT1",
        prefix(dd_text("IT1"), 40),
        prefix(field(&["Detalle", "NmbItem"]), 40),
    );
    expect(
        "CAF RE",
        caf_text(&["DA", "RE"]),
        field(&["Encabezado", "Emisor", "RUTEmisor"]),
    );
    expect(
        "CAF TD",
        caf_text(&["DA", "TD"]),
        field(&["Encabezado", "IdDoc", "TipoDTE"]),
    );
    let folio: i64 = dd_text("F").parse().unwrap_or(-1);
    let from: i64 = caf_text(&["DA", "RNG", "D"]).parse().unwrap_or(0);
    let to: i64 = caf_text(&["DA", "RNG", "H"]).parse().unwrap_or(-1);
    if !(from..=to).contains(&folio) {
        mismatches.push(format!("F {folio} is outside the CAF's range {from}..{to}"));
    }
    let consistency = if mismatches.is_empty() {
        Check::pass(
            "RE, TD, F, FE, RR, RSR, MNT and IT1 match the document; F is in the CAF's range",
        )
    } else {
        Check::fail(mismatches.join("; "))
    };
    (Check::of(ted), consistency)
}
