//! Validation against the SII's official schemas (copied into `services/dte/schemas`, ISO-8859-1
//! as the SII publishes them, and embedded in the binary).

use std::sync::OnceLock;

use uppsala::XsdValidator;

use super::latin1;

const SCHEMAS: &[(&str, &[u8])] = &[
    ("DTE_v10.xsd", include_bytes!("../../schemas/DTE_v10.xsd")),
    (
        "EnvioDTE_v10.xsd",
        include_bytes!("../../schemas/EnvioDTE_v10.xsd"),
    ),
    (
        "EnvioBOLETA_v11.xsd",
        include_bytes!("../../schemas/EnvioBOLETA_v11.xsd"),
    ),
    (
        "SiiTypes_v10.xsd",
        include_bytes!("../../schemas/SiiTypes_v10.xsd"),
    ),
    (
        "xmldsignature_v10.xsd",
        include_bytes!("../../schemas/xmldsignature_v10.xsd"),
    ),
];

/// Which schema a document is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    EnvioDte,
    EnvioBoleta,
    Dte,
}

impl Schema {
    /// The schema's file name, as the SII publishes it.
    pub fn file(self) -> &'static str {
        match self {
            Schema::EnvioDte => "EnvioDTE_v10.xsd",
            Schema::EnvioBoleta => "EnvioBOLETA_v11.xsd",
            Schema::Dte => "DTE_v10.xsd",
        }
    }
}

/// The three compiled validators.
struct Validators {
    envio_dte: XsdValidator,
    envio_boleta: XsdValidator,
    dte: XsdValidator,
}

/// Writes the schemas (as UTF-8) to a private directory, where the validator resolves their
/// `xs:include` / `xs:import`, compiles the three validators and removes the directory:
/// once per process, since compiling the SII's schemas costs far more than validating a
/// document against them.
fn compile() -> Result<Validators, String> {
    let dir = std::env::temp_dir().join(format!("orderflow-sii-schemas-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let compiled = (|| {
        for (name, bytes) in SCHEMAS {
            let text =
                latin1::decode(bytes).replacen("encoding=\"ISO-8859-1\"", "encoding=\"UTF-8\"", 1);
            std::fs::write(dir.join(name), text).map_err(|e| e.to_string())?;
        }
        let one = |schema: Schema| -> Result<XsdValidator, String> {
            let source =
                std::fs::read_to_string(dir.join(schema.file())).map_err(|e| e.to_string())?;
            let schema_doc = uppsala::parse(&source).map_err(|e| format!("schema: {e}"))?;
            XsdValidator::from_schema_with_base_path(&schema_doc, Some(&dir))
                .map_err(|e| format!("schema: {e}"))
        };
        Ok(Validators {
            envio_dte: one(Schema::EnvioDte)?,
            envio_boleta: one(Schema::EnvioBoleta)?,
            dte: one(Schema::Dte)?,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    compiled
}

/// The compiled validator of `schema`.
fn validator(schema: Schema) -> Result<&'static XsdValidator, String> {
    static COMPILED: OnceLock<Result<Validators, String>> = OnceLock::new();
    let validators = COMPILED
        .get_or_init(compile)
        .as_ref()
        .map_err(|e| format!("the schemas cannot be loaded: {e}"))?;
    Ok(match schema {
        Schema::EnvioDte => &validators.envio_dte,
        Schema::EnvioBoleta => &validators.envio_boleta,
        Schema::Dte => &validators.dte,
    })
}

/// Validates `xml` (decoded text, declaration removed) against `schema`; the errors, with
/// their lines, when it does not conform.
pub fn validate(xml: &str, schema: Schema) -> Result<(), Vec<String>> {
    let validator = validator(schema).map_err(|e| vec![e])?;
    // uppsala 0.12 measures xs:length / xs:maxLength in UTF-8 bytes where XSD counts
    // characters, so "ñandú" would count 7. A copy with each non-ASCII character replaced by
    // one ASCII letter has the same lengths and nothing else the SII types constrain changes.
    let ascii: String = xml
        .chars()
        .map(|c| if c.is_ascii() { c } else { 'x' })
        .collect();
    let doc = uppsala::parse(&ascii).map_err(|e| vec![format!("not well-formed XML: {e}")])?;
    let errors = validator.validate(&doc);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors
            .into_iter()
            .map(|e| match e.line {
                Some(line) => format!("line {line}: {}", e.message),
                None => e.message,
            })
            .collect())
    }
}
