//! The printable representation of a document: issuer, the SII's red box (RUT, type,
//! folio), receptor, lines, totals, and the TED as a PDF417 barcode (error-correction
//! level 5, as the SII asks), drawn as vector bars so it prints sharp at any resolution.

use chrono::NaiveDate;
use pdf_writer::{Content, Finish as _, Name, Pdf, Rect, Ref, Str};
use rxing::{BarcodeFormat, EncodeHints, Writer as _, pdf417::PDF417Writer};

use crate::{
    domain::{Content as DocumentContent, Issuer, TipoDte},
    xml::latin1,
};

/// What a printed document shows.
pub struct Printable<'a> {
    pub tipo: TipoDte,
    pub folio: i64,
    pub fecha: NaiveDate,
    pub content: &'a DocumentContent,
    /// The `TED` element, flattened, exactly as in the signed document.
    pub ted: &'a str,
}

/// Why a PDF could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("the TED cannot be encoded as PDF417: {0}")]
    Barcode(String),
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

fn title(tipo: TipoDte) -> &'static str {
    match tipo {
        TipoDte::Factura => "FACTURA ELECTRÓNICA",
        TipoDte::FacturaExenta => "FACTURA NO AFECTA O EXENTA ELECTRÓNICA",
        TipoDte::Boleta => "BOLETA ELECTRÓNICA",
        TipoDte::BoletaExenta => "BOLETA EXENTA ELECTRÓNICA",
        TipoDte::NotaDebito => "NOTA DE DÉBITO ELECTRÓNICA",
        TipoDte::NotaCredito => "NOTA DE CRÉDITO ELECTRÓNICA",
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
pub fn render(issuer: &Issuer, doc: &Printable<'_>) -> Result<Vec<u8>, PdfError> {
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
    text(
        &mut c,
        REGULAR,
        9.0,
        40.0,
        762.0,
        &format!("{}, {}, {}", issuer.address, issuer.comuna, issuer.ciudad),
    );
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
    let r = &doc.content.receptor;
    let mut y = 700.0;
    for (label, value) in [
        ("Fecha de emisión", doc.fecha.format("%d-%m-%Y").to_string()),
        ("Señor(es)", r.razon_social.clone()),
        ("R.U.T.", r.rut.clone()),
        ("Giro", r.giro.clone()),
        ("Dirección", format!("{} {}", r.address, r.comuna)),
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
    for item in &doc.content.items {
        text(
            &mut c,
            REGULAR,
            8.0,
            40.0,
            y,
            &latin1::field(&item.code, 16),
        );
        let name = if item.exempt {
            format!("{} (exento)", item.name)
        } else {
            item.name.clone()
        };
        text(&mut c, REGULAR, 8.0, 130.0, y, &latin1::field(&name, 48));
        text(&mut c, REGULAR, 8.0, 380.0, y, &item.quantity.to_string());
        text(&mut c, REGULAR, 8.0, 430.0, y, &pesos(item.unit_price));
        text(&mut c, REGULAR, 8.0, 500.0, y, &pesos(item.amount));
        y -= 12.0;
    }
    if let Some(reference) = &doc.content.referencia {
        y -= 6.0;
        text(
            &mut c,
            REGULAR,
            8.0,
            40.0,
            y,
            &format!(
                "Referencia: {} Nº {} del {} — {}",
                title(reference.tipo),
                reference.folio,
                reference.fecha.format("%d-%m-%Y"),
                reference.razon
            ),
        );
        y -= 12.0;
    }
    // Totals.
    y -= 10.0;
    let t = doc.content.totals;
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
    let bars = ted_barcode(doc.ted)?;
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
        &format!(
            "Res. {} de {} - Verifique documento: www.sii.cl",
            issuer.nro_resol,
            issuer.fch_resol.format("%Y")
        ),
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
