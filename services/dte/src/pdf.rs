//! The printable representation of a document, ours or a supplier's: issuer, the SII's red
//! box (RUT, type, folio), receptor, lines, references, totals, and the TED as a PDF417
//! barcode (error-correction
//! level 5, as the SII asks), drawn as vector bars so it prints sharp at any resolution.

use chrono::NaiveDate;
use pdf_writer::{Content, Finish as _, Name, Pdf, Rect, Ref, Str};
use rxing::{BarcodeFormat, EncodeHints, Writer as _, pdf417::PDF417Writer};

use crate::{
    domain::{Content as DocumentContent, Issuer, TipoDte, Totals},
    verify::{child, children_named, text_at},
    xml::latin1,
};

/// One of our documents as issued: what [`Sheet::issued`] prints.
pub struct Printable<'a> {
    pub tipo: TipoDte,
    pub folio: i64,
    pub fecha: NaiveDate,
    pub content: &'a DocumentContent,
    /// The `TED` element, flattened, exactly as in the signed document.
    pub ted: &'a str,
}

/// A company as a sheet names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Party {
    pub rut: String,
    pub razon_social: String,
    pub giro: String,
    /// Street, comuna and city, as one line.
    pub address: String,
}

/// One printed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub code: String,
    pub name: String,
    /// As the document writes it (`10`, `1.5`); empty when it has none.
    pub quantity: String,
    /// Printed already (`$ 1.500`); empty when it has none.
    pub unit_price: String,
    pub amount: i64,
}

/// Everything a printed document shows: ours ([`Sheet::issued`]) or a supplier's, read from
/// its XML ([`Sheet::of_dte`]), in the same layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sheet {
    pub issuer: Party,
    /// The SII's code (`TipoDTE`).
    pub tipo: i32,
    pub folio: i64,
    pub fecha: NaiveDate,
    pub receptor: Party,
    pub lines: Vec<Line>,
    /// Each reference to another document, printed.
    pub references: Vec<String>,
    pub totals: Totals,
    /// The `TED` element, flattened, exactly as in the signed document.
    pub ted: String,
    /// Below the stamp: the issuer's resolution, when known.
    pub resolution: Option<String>,
}

impl Sheet {
    /// One of our documents.
    pub fn issued(issuer: &Issuer, doc: &Printable<'_>) -> Self {
        let r = &doc.content.receptor;
        Sheet {
            issuer: Party {
                rut: issuer.rut.to_string(),
                razon_social: issuer.razon_social.clone(),
                giro: issuer.giro.clone(),
                address: format!("{}, {}, {}", issuer.address, issuer.comuna, issuer.ciudad),
            },
            tipo: doc.tipo.code(),
            folio: doc.folio,
            fecha: doc.fecha,
            receptor: Party {
                rut: r.rut.clone(),
                razon_social: r.razon_social.clone(),
                giro: r.giro.clone(),
                address: format!("{} {}", r.address, r.comuna),
            },
            lines: doc
                .content
                .items
                .iter()
                .map(|item| Line {
                    code: item.code.clone(),
                    name: if item.exempt {
                        format!("{} (exento)", item.name)
                    } else {
                        item.name.clone()
                    },
                    quantity: item.quantity.to_string(),
                    unit_price: pesos(item.unit_price),
                    amount: item.amount,
                })
                .collect(),
            references: doc
                .content
                .referencia
                .iter()
                .map(|reference| {
                    format!(
                        "{} Nº {} del {} — {}",
                        title(reference.tipo.code()),
                        reference.folio,
                        reference.fecha.format("%d-%m-%Y"),
                        reference.razon
                    )
                })
                .collect(),
            totals: doc.content.totals,
            ted: doc.ted.to_string(),
            resolution: Some(format!(
                "Res. {} de {}",
                issuer.nro_resol,
                issuer.fch_resol.format("%Y")
            )),
        }
    }

    /// A signed `DTE` as another company's software wrote it (its `Documento`, `Liquidacion`
    /// or `Exportaciones`): its own issuer, receptor, lines, references, totals and TED.
    pub fn of_dte(xml: &str) -> Result<Self, PdfError> {
        let unreadable = |what: &str| PdfError::Unreadable(what.to_string());
        let text = crate::caf::strip_declaration(xml);
        let doc = uppsala::parse(text).map_err(|e| PdfError::Unreadable(e.to_string()))?;
        let root = doc
            .document_element()
            .ok_or_else(|| unreadable("no root element"))?;
        let children = |parent, name| children_named(&doc, parent, name);
        let at = |node, path: &[&str]| text_at(&doc, node, path).unwrap_or_default();
        let number = |node, path: &[&str]| -> i64 {
            let text = at(node, path);
            // Amounts are integers; a foreign-currency one may carry decimals.
            text.parse::<i64>()
                .or_else(|_| text.parse::<f64>().map(|f| f.round() as i64))
                .unwrap_or(0)
        };
        let document = ["Documento", "Liquidacion", "Exportaciones"]
            .iter()
            .find_map(|name| child(&doc, root, name))
            .ok_or_else(|| unreadable("no Documento in the DTE"))?;
        let encabezado =
            child(&doc, document, "Encabezado").ok_or_else(|| unreadable("no Encabezado"))?;
        let tipo = at(encabezado, &["IdDoc", "TipoDTE"])
            .parse()
            .map_err(|_| unreadable("no TipoDTE"))?;
        let folio = at(encabezado, &["IdDoc", "Folio"])
            .parse()
            .map_err(|_| unreadable("no Folio"))?;
        let fecha = NaiveDate::parse_from_str(&at(encabezado, &["IdDoc", "FchEmis"]), "%Y-%m-%d")
            .map_err(|_| unreadable("no FchEmis"))?;
        let place = |parts: [String; 3]| {
            parts
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let issuer = Party {
            rut: at(encabezado, &["Emisor", "RUTEmisor"]),
            razon_social: [&["Emisor", "RznSoc"][..], &["Emisor", "RznSocEmisor"]]
                .iter()
                .map(|path| at(encabezado, path))
                .find(|s| !s.is_empty())
                .unwrap_or_default(),
            giro: [&["Emisor", "GiroEmis"][..], &["Emisor", "GiroEmisor"]]
                .iter()
                .map(|path| at(encabezado, path))
                .find(|s| !s.is_empty())
                .unwrap_or_default(),
            address: place([
                at(encabezado, &["Emisor", "DirOrigen"]),
                at(encabezado, &["Emisor", "CmnaOrigen"]),
                at(encabezado, &["Emisor", "CiudadOrigen"]),
            ]),
        };
        let receptor = Party {
            rut: at(encabezado, &["Receptor", "RUTRecep"]),
            razon_social: at(encabezado, &["Receptor", "RznSocRecep"]),
            giro: at(encabezado, &["Receptor", "GiroRecep"]),
            address: place([
                at(encabezado, &["Receptor", "DirRecep"]),
                at(encabezado, &["Receptor", "CmnaRecep"]),
                at(encabezado, &["Receptor", "CiudadRecep"]),
            ]),
        };
        let lines = children(document, "Detalle")
            .into_iter()
            .map(|d| {
                let name = at(d, &["NmbItem"]);
                let price = at(d, &["PrcItem"]);
                Line {
                    code: at(d, &["CdgItem", "VlrCodigo"]),
                    name: if at(d, &["IndExe"]).is_empty() {
                        name
                    } else {
                        format!("{name} (exento)")
                    },
                    quantity: at(d, &["QtyItem"]),
                    unit_price: match price.parse::<i64>() {
                        Ok(n) => pesos(n),
                        Err(_) if price.is_empty() => String::new(),
                        // A fractional price, written as Chile writes decimals.
                        Err(_) => format!("$ {}", price.replace('.', ",")),
                    },
                    amount: number(d, &["MontoItem"]),
                }
            })
            .collect();
        let references = children(document, "Referencia")
            .into_iter()
            .map(|r| {
                let kind = at(r, &["TpoDocRef"]);
                let kind = kind
                    .parse::<i32>()
                    .map(|code| title(code).to_string())
                    .unwrap_or(kind);
                let fecha = NaiveDate::parse_from_str(&at(r, &["FchRef"]), "%Y-%m-%d")
                    .map(|f| f.format("%d-%m-%Y").to_string())
                    .unwrap_or_default();
                let razon = at(r, &["RazonRef"]);
                let mut line = format!("{kind} Nº {} del {fecha}", at(r, &["FolioRef"]));
                if !razon.is_empty() {
                    line.push_str(&format!(" — {razon}"));
                }
                line
            })
            .collect();
        let totals = Totals {
            net: number(encabezado, &["Totales", "MntNeto"]),
            exempt: number(encabezado, &["Totales", "MntExe"]),
            iva: number(encabezado, &["Totales", "IVA"]),
            total: number(encabezado, &["Totales", "MntTotal"]),
        };
        let ted = ted_of(xml).ok_or_else(|| unreadable("no TED"))?;
        Ok(Sheet {
            issuer,
            tipo,
            folio,
            fecha,
            receptor,
            lines,
            references,
            totals,
            ted,
            resolution: None,
        })
    }
}

/// Why a PDF could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("the TED cannot be encoded as PDF417: {0}")]
    Barcode(String),
    #[error("the document cannot be read for printing: {0}")]
    Unreadable(String),
}

/// The `TED` element of a signed document or envelope (the first one), whitespace between
/// tags removed as in the `DD` rule.
pub fn ted_of(xml: &str) -> Option<String> {
    let start = xml.find("<TED")?;
    let end = xml[start..].find("</TED>")? + start + "</TED>".len();
    let flat = super::xml::ted::flatten_dd(&xml[start..end]).ok()?;
    Some(latin1::decode(&flat))
}

/// The TED's PDF417 symbol: error-correction level 5, the text as ISO-8859-1 bytes, one
/// bit per module (each row four modules tall, as PDF417 draws them).
pub fn ted_barcode(ted: &str) -> Result<rxing::common::BitMatrix, PdfError> {
    let hints = EncodeHints {
        ErrorCorrection: Some("5".into()),
        CharacterSet: Some("ISO-8859-1".into()),
        // 2: byte compaction, the TED carried byte for byte.
        Pdf417Compaction: Some("2".into()),
        Margin: Some("0".into()),
        ..EncodeHints::default()
    };
    PDF417Writer
        .encode_with_hints(ted, &BarcodeFormat::PDF_417, 0, 0, &hints)
        .map_err(|e| PdfError::Barcode(e.to_string()))
}

/// A type's printed name, by its SII code.
fn title(tipo: i32) -> &'static str {
    match tipo {
        33 => "FACTURA ELECTRÓNICA",
        34 => "FACTURA NO AFECTA O EXENTA ELECTRÓNICA",
        39 => "BOLETA ELECTRÓNICA",
        41 => "BOLETA EXENTA ELECTRÓNICA",
        43 => "LIQUIDACIÓN FACTURA ELECTRÓNICA",
        46 => "FACTURA DE COMPRA ELECTRÓNICA",
        52 => "GUÍA DE DESPACHO ELECTRÓNICA",
        56 => "NOTA DE DÉBITO ELECTRÓNICA",
        61 => "NOTA DE CRÉDITO ELECTRÓNICA",
        110 => "FACTURA DE EXPORTACIÓN ELECTRÓNICA",
        111 => "NOTA DE DÉBITO DE EXPORTACIÓN ELECTRÓNICA",
        112 => "NOTA DE CRÉDITO DE EXPORTACIÓN ELECTRÓNICA",
        _ => "DOCUMENTO TRIBUTARIO ELECTRÓNICO",
    }
}

/// Pesos as printed in Chile: `$ 1.190`.
fn pesos(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    format!("{}$ {out}", if n < 0 { "-" } else { "" })
}

/// Writes text in Helvetica (WinAnsi, which is ISO-8859-1 for every printable character
/// the SII's fields allow).
fn text(c: &mut Content, font: &[u8], size: f32, x: f32, y: f32, s: &str) {
    let bytes = latin1::encode(&latin1::field(s, 200)).unwrap_or_default();
    c.begin_text();
    c.set_font(Name(font), size);
    c.next_line(x, y);
    c.show(Str(&bytes));
    c.end_text();
}

/// The document as a one-page A4 PDF.
pub fn render(doc: &Sheet) -> Result<Vec<u8>, PdfError> {
    let issuer = &doc.issuer;
    const REGULAR: &[u8] = b"F1";
    const BOLD: &[u8] = b"F2";
    let (catalog, pages, page, regular, bold, contents) = (
        Ref::new(1),
        Ref::new(2),
        Ref::new(3),
        Ref::new(4),
        Ref::new(5),
        Ref::new(6),
    );
    let mut c = Content::new();
    // Issuer, top left.
    text(&mut c, BOLD, 13.0, 40.0, 790.0, &issuer.razon_social);
    text(&mut c, REGULAR, 9.0, 40.0, 775.0, &issuer.giro);
    text(&mut c, REGULAR, 9.0, 40.0, 762.0, &issuer.address);
    // The red box: RUT, type, folio.
    c.set_stroke_rgb(0.8, 0.0, 0.0);
    c.set_fill_rgb(0.8, 0.0, 0.0);
    c.set_line_width(2.0);
    c.rect(370.0, 730.0, 185.0, 75.0);
    c.stroke();
    c.set_stroke_gray(0.0);
    text(
        &mut c,
        BOLD,
        11.0,
        385.0,
        785.0,
        &format!("R.U.T.: {}", issuer.rut),
    );
    text(&mut c, BOLD, 9.0, 385.0, 768.0, title(doc.tipo));
    text(
        &mut c,
        BOLD,
        11.0,
        385.0,
        750.0,
        &format!("Nº {}", doc.folio),
    );
    text(&mut c, REGULAR, 8.0, 385.0, 736.0, "S.I.I. - SANTIAGO");
    c.set_fill_gray(0.0);
    // Receptor and date.
    let r = &doc.receptor;
    let mut y = 700.0;
    for (label, value) in [
        ("Fecha de emisión", doc.fecha.format("%d-%m-%Y").to_string()),
        ("Señor(es)", r.razon_social.clone()),
        ("R.U.T.", r.rut.clone()),
        ("Giro", r.giro.clone()),
        ("Dirección", r.address.clone()),
    ] {
        if !value.trim().is_empty() {
            text(
                &mut c,
                REGULAR,
                9.0,
                40.0,
                y,
                &format!("{label}: {}", value.trim()),
            );
            y -= 13.0;
        }
    }
    // Lines.
    y -= 10.0;
    for (x, head) in [
        (40.0, "Código"),
        (130.0, "Descripción"),
        (380.0, "Cant."),
        (430.0, "Precio"),
        (500.0, "Total"),
    ] {
        text(&mut c, BOLD, 9.0, x, y, head);
    }
    c.set_line_width(0.5);
    c.move_to(40.0, y - 4.0);
    c.line_to(555.0, y - 4.0);
    c.stroke();
    y -= 16.0;
    // As many lines as the page holds above the totals and the stamp; the rest are
    // counted.
    const LINES_FIT: usize = 30;
    for line in doc.lines.iter().take(LINES_FIT) {
        text(
            &mut c,
            REGULAR,
            8.0,
            40.0,
            y,
            &latin1::field(&line.code, 16),
        );
        text(
            &mut c,
            REGULAR,
            8.0,
            130.0,
            y,
            &latin1::field(&line.name, 48),
        );
        text(&mut c, REGULAR, 8.0, 380.0, y, &line.quantity);
        text(&mut c, REGULAR, 8.0, 430.0, y, &line.unit_price);
        text(&mut c, REGULAR, 8.0, 500.0, y, &pesos(line.amount));
        y -= 12.0;
    }
    if doc.lines.len() > LINES_FIT {
        text(
            &mut c,
            REGULAR,
            8.0,
            130.0,
            y,
            &format!("… y {} líneas más", doc.lines.len() - LINES_FIT),
        );
        y -= 12.0;
    }
    for reference in doc.references.iter().take(4) {
        y -= 6.0;
        text(
            &mut c,
            REGULAR,
            8.0,
            40.0,
            y,
            &format!("Referencia: {reference}"),
        );
        y -= 12.0;
    }
    // Totals.
    y -= 10.0;
    let t = doc.totals;
    for (label, amount, show) in [
        ("Monto neto", t.net, t.net != 0 || t.iva != 0),
        ("Monto exento", t.exempt, t.exempt != 0),
        ("IVA 19%", t.iva, t.net != 0 || t.iva != 0),
        ("Total", t.total, true),
    ] {
        if show {
            text(&mut c, BOLD, 9.0, 400.0, y, label);
            text(&mut c, BOLD, 9.0, 500.0, y, &pesos(amount));
            y -= 13.0;
        }
    }
    // The TED: at most 9 cm wide (255 pt), bars of whole runs.
    let bars = ted_barcode(&doc.ted)?;
    let (w, h) = (bars.getWidth(), bars.getHeight());
    let module = (255.0 / w as f32).min(1.5);
    let (left, bottom) = (40.0, 90.0);
    for row in 0..h {
        let mut x = 0;
        while x < w {
            if bars.get(x, row) {
                let start = x;
                while x < w && bars.get(x, row) {
                    x += 1;
                }
                c.rect(
                    left + start as f32 * module,
                    bottom + (h - 1 - row) as f32 * module,
                    (x - start) as f32 * module,
                    module,
                );
            } else {
                x += 1;
            }
        }
    }
    c.fill_nonzero();
    text(
        &mut c,
        REGULAR,
        8.0,
        left,
        bottom - 14.0,
        "Timbre Electrónico SII",
    );
    text(
        &mut c,
        REGULAR,
        8.0,
        left,
        bottom - 26.0,
        &match &doc.resolution {
            Some(resolution) => format!("{resolution} - Verifique documento: www.sii.cl"),
            None => "Verifique documento: www.sii.cl".to_string(),
        },
    );

    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(pages);
    pdf.pages(pages).kids([page]).count(1);
    let mut p = pdf.page(page);
    p.media_box(Rect::new(0.0, 0.0, 595.0, 842.0));
    p.parent(pages);
    p.contents(contents);
    let mut resources = p.resources();
    let mut fonts = resources.fonts();
    fonts.pair(Name(REGULAR), regular);
    fonts.pair(Name(BOLD), bold);
    fonts.finish();
    resources.finish();
    p.finish();
    pdf.type1_font(regular)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.stream(contents, &c.finish());
    Ok(pdf.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pesos_print_with_thousands_dots() {
        assert_eq!(pesos(1190), "$ 1.190");
        assert_eq!(pesos(119_000), "$ 119.000");
        assert_eq!(pesos(12), "$ 12");
        assert_eq!(pesos(-1_000_000), "-$ 1.000.000");
    }
}
