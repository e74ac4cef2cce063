//! Every document type this service issues, checked by tools that are not ours: `xmllint`
//! against the SII's schemas and `xmlsec1` for both signatures; the TED's `FRMT` against the
//! CAF's public key. Also the official SII sample as a test vector.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::LazyLock,
};

use chrono::NaiveDate;
use dte::{
    caf::{self, Caf},
    certificate,
    domain::{self, Content, Issued, Issuer, Item, Receptor, Sale, TipoDte},
    xml::{
        document::{self, SignedDte, Stamp},
        latin1,
        signature::SigningIdentity,
        ted,
    },
};
use platform::chile::Rut;

mod common;

use common::sii_reference;

fn issuer() -> Issuer {
    dte::development_issuer()
}

struct Signer {
    identity: SigningIdentity,
    certificate_pem: String,
}

static SIGNER: LazyLock<Signer> = LazyLock::new(|| {
    let (key, der) = certificate::self_signed("12345678-5").unwrap();
    let identity = certificate::identity(&key, der).unwrap();
    Signer {
        certificate_pem: identity.certificate_pem(),
        identity,
    }
});

fn fecha() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
}

fn caf_for(tipo: TipoDte) -> Caf {
    let xml = caf::fake(tipo, 1, 100, &issuer().rut, "Orderflow SpA", fecha()).unwrap();
    Caf::parse(xml.as_bytes()).unwrap()
}

fn item(code: &str, name: &str, quantity: i64, unit_price: i64, exempt: bool) -> Item {
    Item {
        code: code.into(),
        name: name.into(),
        quantity,
        unit_price,
        exempt,
        amount: quantity * unit_price,
    }
}

fn buyer() -> Receptor {
    Receptor {
        rut: "97975000-5".into(),
        razon_social: "Compras & Cía. Ltda.".into(),
        giro: "Comercio".into(),
        address: "San Diego 2222".into(),
        comuna: "La Florida".into(),
    }
}

fn build(content: &Content, folio: i64, caf: &Caf) -> SignedDte {
    document::build_dte(
        &issuer(),
        content,
        folio,
        fecha(),
        fecha().and_hms_opt(10, 30, 0).unwrap(),
        &Stamp {
            caf_element: &caf.caf_element,
            caf_key: &caf.private_key,
        },
        &SIGNER.identity,
    )
    .unwrap()
}

fn envelope(dte: &SignedDte) -> Vec<u8> {
    document::build_envelope(
        &issuer(),
        std::slice::from_ref(dte),
        fecha().and_hms_opt(10, 30, 1).unwrap(),
        &SIGNER.identity,
    )
    .unwrap()
}

/// A scratch directory for one test's files.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dte-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}); ./dev test installs it"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// `xmllint --schema` with the envelope's own schema.
fn schema_check(dir: &Path, name: &str, xml: &[u8], schema: &str) -> Result<String, String> {
    let file = dir.join(name);
    std::fs::write(&file, xml).unwrap();
    run(Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(sii_reference().join("schemas").join(schema))
        .arg(&file))
}

/// `xmlsec1 --verify` of the signature at `xpath` with the signer's certificate.
fn signature_check(dir: &Path, name: &str, xml: &[u8], xpath: &str) -> Result<String, String> {
    let file = dir.join(name);
    std::fs::write(&file, xml).unwrap();
    let cert = dir.join("signer.pem");
    std::fs::write(&cert, &SIGNER.certificate_pem).unwrap();
    run(Command::new("xmlsec1")
        .args([
            "--verify",
            "--id-attr:ID",
            "Documento",
            "--id-attr:ID",
            "SetDTE",
        ])
        .arg("--pubkey-cert-pem")
        .arg(&cert)
        .args(["--node-xpath", xpath])
        .arg(&file))
}

/// The `DTE` elements of an envelope, each as a document of its own, as it was when signed.
fn dtes_of(envelope: &[u8]) -> Vec<String> {
    let text = latin1::decode(envelope);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("<DTE ").or_else(|| rest.find("<DTE>")) {
        let end = rest[start..].find("</DTE>").unwrap() + start + "</DTE>".len();
        out.push(rest[start..end].to_string());
        rest = &rest[end..];
    }
    out
}

/// The text of the first `<name>` element (attributes allowed).
fn first<'a>(xml: &'a str, name: &str) -> &'a str {
    let open = xml
        .match_indices(&format!("<{name}"))
        .map(|(i, _)| i)
        .find(|&i| matches!(xml.as_bytes()[i + 1 + name.len()], b'>' | b' '))
        .unwrap_or_else(|| panic!("no <{name}>"));
    let start = xml[open..].find('>').unwrap() + open + 1;
    let end = xml[start..].find(&format!("</{name}>")).unwrap() + start;
    &xml[start..end]
}

/// Runs every independent check on one document's envelope.
fn assert_sii_valid(envelope: &[u8], tipo: TipoDte, caf: &Caf) {
    let dir = scratch();
    let schema = if tipo.is_boleta() {
        "EnvioBOLETA_v11.xsd"
    } else {
        "EnvioDTE_v10.xsd"
    };
    let ours = dte::xml::schema::validate(
        dte::caf::strip_declaration(&latin1::decode(envelope)),
        if tipo.is_boleta() {
            dte::xml::schema::Schema::EnvioBoleta
        } else {
            dte::xml::schema::Schema::EnvioDte
        },
    );
    assert_eq!(ours, Ok(()), "type {tipo}: our own schema check");
    if let Err(e) = schema_check(&dir, "envelope.xml", envelope, schema) {
        panic!(
            "type {tipo}: the envelope does not validate:\n{e}\n{}",
            latin1::decode(envelope)
        );
    }
    signature_check(
        &dir,
        "envelope.xml",
        envelope,
        "/*/*[local-name()='Signature']",
    )
    .unwrap_or_else(|e| panic!("type {tipo}: the envelope signature fails:\n{e}"));
    let dtes = dtes_of(envelope);
    assert_eq!(dtes.len(), 1);
    signature_check(
        &dir,
        "dte.xml",
        dtes[0].as_bytes(),
        "/*/*[local-name()='Signature']",
    )
    .unwrap_or_else(|e| panic!("type {tipo}: the document signature fails:\n{e}"));
    let dd_start = dtes[0].find("<DD>").unwrap();
    let dd_end = dtes[0].find("</DD>").unwrap() + "</DD>".len();
    let flat = ted::flatten_dd(&dtes[0][dd_start..dd_end]).unwrap();
    ted::verify(&flat, first(&dtes[0], "FRMT"), &caf.public_key)
        .unwrap_or_else(|e| panic!("type {tipo}: FRMT does not verify: {e}"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn every_document_type_validates_and_its_signatures_and_ted_verify() {
    let lines = vec![
        item(
            "SKU-1",
            "Parlantes Multimedia 180W. — edición ñandú",
            2,
            45_000,
            false,
        ),
        item("SKU-2", "Libro exento", 1, 12_990, true),
    ];
    let exempt_lines = vec![item("SKU-2", "Libro exento", 3, 12_990, true)];
    let cases = [
        (None, lines.clone(), TipoDte::Boleta),
        (None, exempt_lines.clone(), TipoDte::BoletaExenta),
        (Some(buyer()), lines.clone(), TipoDte::Factura),
        (Some(buyer()), exempt_lines, TipoDte::FacturaExenta),
    ];
    for (receptor, items, tipo) in cases {
        let content = domain::document_for_sale(Sale { receptor, items });
        assert_eq!(content.tipo, tipo);
        let caf = caf_for(tipo);
        let dte = build(&content, 7, &caf);
        assert_sii_valid(&envelope(&dte), tipo, &caf);
    }
}

#[test]
fn notas_de_credito_reference_the_original_and_validate() {
    let factura_caf = caf_for(TipoDte::Factura);
    let content = domain::document_for_sale(Sale {
        receptor: Some(buyer()),
        items: vec![item("SKU-1", "Mouse", 2, 5_000, false)],
    });
    let original = Issued {
        tipo: TipoDte::Factura,
        folio: 60,
        fecha: fecha(),
        content: content.clone(),
    };
    build(&content, 60, &factura_caf);
    let nc_caf = caf_for(TipoDte::NotaCredito);
    for (amount, full, cod_ref) in [(11_900, true, "1"), (1_000, false, "3")] {
        let nc = domain::nota_de_credito(&original, amount, full);
        let dte = build(&nc, 3, &nc_caf);
        assert_eq!(first(&dte.xml, "TpoDocRef"), "33");
        assert_eq!(first(&dte.xml, "FolioRef"), "60");
        assert_eq!(first(&dte.xml, "FchRef"), "2026-11-23");
        assert_eq!(first(&dte.xml, "CodRef"), cod_ref);
        assert_eq!(first(&dte.xml, "MntTotal"), amount.to_string());
        assert_sii_valid(&envelope(&dte), TipoDte::NotaCredito, &nc_caf);
    }
}

#[test]
fn the_official_samples_ted_verifies_against_the_caf_inside_it() {
    let bytes =
        std::fs::read(sii_reference().join("samples/F60T33-ejemplo-oficial-SII.xml")).unwrap();
    let text = latin1::decode(&bytes);
    let dd = &text[text.find("<DD>").unwrap()..text.find("</DD>").unwrap() + "</DD>".len()];
    let flat = ted::flatten_dd(dd).unwrap();
    // The flattened DD keeps text exactly (two spaces in "EMPRESA  LTDA") and drops only the
    // CRLF and tabs between tags.
    let flat_text = latin1::decode(&flat);
    assert!(flat_text.starts_with("<DD><RE>97975000-5</RE><TD>33</TD><F>60</F>"));
    assert!(flat_text.contains("<RSR>EMPRESA  LTDA</RSR>"));
    assert!(flat_text.ends_with("<TSTED>2003-10-13T09:33:20</TSTED></DD>"));
    assert!(!flat_text.contains('\n') && !flat_text.contains('\t'));
    let doc = uppsala::parse(dd).unwrap();
    let rsapk = doc.get_elements_by_tag_name("RSAPK")[0];
    let public = caf::rsapk(&doc, rsapk).unwrap();
    let frmt = first(&text, "FRMT");
    ted::verify(&flat, frmt, &public).expect("the official FRMT verifies");
    // One changed character in the DD breaks it.
    let tampered = latin1::decode(&flat).replace("119000", "119001");
    assert!(ted::verify(&latin1::encode(&tampered).unwrap(), frmt, &public).is_err());
}

#[test]
fn the_official_samples_envelope_signature_verifies_with_xmlsec1() {
    let sample =
        std::fs::read(sii_reference().join("samples/F60T33-ejemplo-oficial-SII.xml")).unwrap();
    let dir = scratch();
    let text = latin1::decode(&sample);
    // The signer's certificate is the one inside the sample.
    let cert_start = text.rfind("<X509Certificate>").unwrap() + "<X509Certificate>".len();
    let cert_end = text.rfind("</X509Certificate>").unwrap();
    let cert = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        text[cert_start..cert_end].replace("\r", "")
    );
    std::fs::write(dir.join("sample.pem"), cert).unwrap();
    std::fs::write(dir.join("sample.xml"), &sample).unwrap();
    run(Command::new("xmlsec1")
        .args(["--verify", "--id-attr:ID", "SetDTE", "--pubkey-cert-pem"])
        .arg(dir.join("sample.pem"))
        .args(["--node-xpath", "/*/*[local-name()='Signature']"])
        .arg(dir.join("sample.xml")))
    .expect("the official envelope signature verifies");
    // Its document signature verifies on the DTE taken out as it was signed.
    let dte = &dtes_of(&sample)[0];
    std::fs::write(dir.join("dte.xml"), latin1::encode(dte).unwrap()).unwrap();
    run(Command::new("xmlsec1")
        .args(["--verify", "--id-attr:ID", "Documento", "--pubkey-cert-pem"])
        .arg(dir.join("sample.pem"))
        .args(["--node-xpath", "/*/*[local-name()='Signature']"])
        .arg(dir.join("dte.xml")))
    .expect("the official document signature verifies");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn verify_accepts_the_official_sample() {
    let sample =
        std::fs::read(sii_reference().join("samples/F60T33-ejemplo-oficial-SII.xml")).unwrap();
    let report = dte::verify::verify(&sample).unwrap();
    let text = report.render();
    assert_eq!(report.kind, "EnvioDTE");
    assert!(report.envelope_signature.passed, "{text}");
    assert_eq!(report.documents.len(), 1, "{text}");
    let d = &report.documents[0];
    assert_eq!(
        (d.tipo_dte, d.folio, d.rut_emisor.as_str()),
        (33, 60, "97975000-5")
    );
    assert!(d.ted.passed, "{text}");
    assert!(d.ted_consistency.passed, "{text}");
    assert!(d.signature.passed, "{text}");
}

#[test]
fn verify_passes_our_documents_and_names_every_check_a_tampered_amount_breaks() {
    let caf = caf_for(TipoDte::Factura);
    let content = domain::document_for_sale(Sale {
        receptor: Some(buyer()),
        items: vec![item("SKU-1", "Mouse", 2, 5_000, false)],
    });
    let envelope = envelope(&build(&content, 9, &caf));
    let report = dte::verify::verify(&envelope).unwrap();
    assert!(report.valid(), "{}", report.render());

    // The total outside the TED: both signatures and the TED/document agreement fail; the
    // TED itself is intact.
    let text = latin1::decode(&envelope);
    let tampered = text.replace("<MntTotal>11900</MntTotal>", "<MntTotal>11901</MntTotal>");
    assert_ne!(tampered, text);
    let report = dte::verify::verify(&latin1::encode(&tampered).unwrap()).unwrap();
    let d = &report.documents[0];
    assert!(!report.valid());
    assert!(!report.envelope_signature.passed);
    assert!(!d.signature.passed, "{}", report.render());
    assert!(d.ted.passed);
    assert!(!d.ted_consistency.passed);
    assert!(
        d.ted_consistency.detail.contains("MNT"),
        "{}",
        d.ted_consistency.detail
    );

    // The amount inside the TED: FRMT no longer verifies.
    let tampered = text.replace("<MNT>11900</MNT>", "<MNT>11901</MNT>");
    let report = dte::verify::verify(&latin1::encode(&tampered).unwrap()).unwrap();
    assert!(!report.documents[0].ted.passed, "{}", report.render());

    // A schema violation is reported as such.
    let tampered = text.replace("<TasaIVA>19</TasaIVA>", "<TasaIVA>diecinueve</TasaIVA>");
    let report = dte::verify::verify(&latin1::encode(&tampered).unwrap()).unwrap();
    assert!(!report.documents[0].schema.passed, "{}", report.render());
}

#[test]
fn verify_checks_a_lone_dte_without_an_envelope() {
    let caf = caf_for(TipoDte::Boleta);
    let content = domain::document_for_sale(Sale {
        receptor: None,
        items: vec![item("SKU-1", "Café", 1, 2_500, false)],
    });
    let dte = build(&content, 1, &caf);
    let report = dte::verify::verify(dte.xml.as_bytes()).unwrap();
    assert_eq!(report.kind, "DTE");
    assert!(!report.envelope_signature.applicable);
    let d = &report.documents[0];
    assert!(
        d.signature.passed && d.ted.passed && d.ted_consistency.passed,
        "{}",
        report.render()
    );
    assert!(matches!(
        dte::verify::verify(b"<Factura/>"),
        Err(dte::verify::VerifyError::UnknownRoot(_))
    ));
}

/// Renders page 1 of a PDF at 300 dpi and decodes its PDF417 symbols with tools that are
/// not ours (pdfium and zxing-cpp, from PyPI into a virtualenv under `target/`): the raw
/// bytes of each symbol found.
fn barcodes_in_pdf(pdf: &[u8]) -> Vec<u8> {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pdf417-venv");
    let python = platform::testing::python_venv(
        &venv,
        9,
        &["pypdfium2==5.15.2", "zxing-cpp==3.1.1", "pillow==12.0.0"],
    );
    let dir = scratch();
    std::fs::write(dir.join("doc.pdf"), pdf).unwrap();
    let script = [
        "import sys, pypdfium2, zxingcpp",
        "page = pypdfium2.PdfDocument(sys.argv[1])[0]",
        "image = page.render(scale=300 / 72).to_pil()",
        "found = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.PDF417)",
        "sys.stdout.buffer.write(b''.join(f.bytes for f in found))",
    ]
    .join("\n");
    let out = Command::new(python)
        .args(["-c", &script])
        .arg(dir.join("doc.pdf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(dir).ok();
    out.stdout
}

#[test]
fn the_pdfs_barcode_decodes_to_the_exact_ted() {
    let caf = caf_for(TipoDte::Factura);
    let content = domain::document_for_sale(Sale {
        receptor: Some(buyer()),
        items: vec![
            item("SKU-1", "Parlantes Multimedia 180W.", 20, 4_500, false),
            item("SKU-2", "Libro exento ñandú", 1, 5_000, true),
        ],
    });
    let dte = build(&content, 60, &caf);
    let ted = dte::pdf::ted_of(&dte.xml).unwrap();
    assert!(
        ted.starts_with("<TED version=\"1.0\"><DD><RE>76369187-K</RE>"),
        "{ted}"
    );
    assert!(ted.ends_with("</FRMT></TED>"));
    let pdf = dte::pdf::render(&dte::pdf::Sheet::issued(
        &issuer(),
        &dte::pdf::Printable {
            tipo: content.tipo,
            folio: 60,
            fecha: fecha(),
            content: &content,
            ted: &ted,
        },
    ))
    .unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    if let Some(keep) = std::env::var_os("DTE_KEEP_PDF") {
        std::fs::write(keep, &pdf).unwrap();
    }
    assert_eq!(barcodes_in_pdf(&pdf), latin1::encode(&ted).unwrap());
}

/// Suppliers' documents from other companies' software (the corpus) print in our layout with
/// their own data, and the barcode is their TED byte for byte.
#[test]
fn a_suppliers_document_prints_with_its_own_data_and_exact_ted() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let read = |name: &str| {
        let bytes = std::fs::read(corpus.join(name)).unwrap();
        dte::xml::declared::decode(&bytes).unwrap()
    };
    // windows-1252, a fractional price.
    let factura = read("DTE--60910000-1--33--2336600.xml");
    let sheet = dte::pdf::Sheet::of_dte(&factura).unwrap();
    assert_eq!(
        (sheet.tipo, sheet.folio, sheet.issuer.rut.as_str()),
        (33, 2336600, "60910000-1")
    );
    assert_eq!(sheet.issuer.razon_social, "Universidad de Chile");
    assert_eq!(sheet.receptor.razon_social, "FYNPAL SPA");
    assert_eq!(sheet.totals.total, 10642);
    assert_eq!(sheet.lines.len(), 1);
    assert_eq!(sheet.lines[0].quantity, "1.0");
    assert_eq!(sheet.lines[0].unit_price, "$ 8942,86");
    assert_eq!(
        sheet.resolution, None,
        "a lone DTE does not say its resolution"
    );
    let pdf = dte::pdf::render(&sheet).unwrap();
    assert_eq!(
        barcodes_in_pdf(&pdf),
        latin1::encode(&dte::pdf::ted_of(&factura).unwrap()).unwrap()
    );
    // A nota de crédito names the document it corrects.
    let nota = dte::pdf::Sheet::of_dte(&read("DTE--96670340-7--61--110616.xml")).unwrap();
    assert_eq!(
        (nota.tipo, nota.issuer.razon_social.as_str()),
        (61, "Bata Chile S.A.")
    );
    assert_eq!(nota.totals.total, 57_347_078);
    assert!(
        nota.references
            .iter()
            .any(|r| r.starts_with("FACTURA ELECTRÓNICA Nº 115885")
                && r.ends_with("Comision venta corner Hites")),
        "{:?}",
        nota.references
    );
    assert!(dte::pdf::render(&nota).unwrap().starts_with(b"%PDF-"));
    // Not a DTE: a clear refusal.
    let error = dte::pdf::Sheet::of_dte("<DTE><Otro/></DTE>").unwrap_err();
    assert!(error.to_string().contains("no Documento"), "{error}");
}

#[tokio::test]
async fn a_configured_certificate_signs_from_pem_files_or_pkcs12() {
    let dir = scratch();
    let (key_pem, der) = certificate::self_signed("12345678-5").unwrap();
    let cert_pem = certificate::identity(&key_pem, der.clone())
        .unwrap()
        .certificate_pem();
    std::fs::write(dir.join("key.pem"), &key_pem).unwrap();
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    run(Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:secreto", "-inkey"])
        .arg(dir.join("key.pem"))
        .arg("-in")
        .arg(dir.join("cert.pem"))
        .arg("-out")
        .arg(dir.join("company.p12")))
    .expect("openssl makes the PKCS#12 file");
    // Neither source touches the database.
    let pool = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap();
    let holder = Rut::parse("12345678-5").unwrap();
    for source in [
        dte::CertificateSource::Pem {
            certificate: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        },
        dte::CertificateSource::Pkcs12 {
            path: dir.join("company.p12"),
            password: "secreto".into(),
        },
    ] {
        let identity = dte::signing_identity(&pool, &source, &holder)
            .await
            .unwrap_or_else(|e| panic!("{source:?}: {e:#}"));
        assert_eq!(identity.certificate_der(), der.as_slice(), "{source:?}");
        let caf = caf_for(TipoDte::Boleta);
        let content = domain::document_for_sale(Sale {
            receptor: None,
            items: vec![item("SKU-1", "Café", 1, 2_500, false)],
        });
        let dte = document::build_dte(
            &issuer(),
            &content,
            1,
            fecha(),
            fecha().and_hms_opt(9, 0, 0).unwrap(),
            &Stamp {
                caf_element: &caf.caf_element,
                caf_key: &caf.private_key,
            },
            &identity,
        )
        .unwrap();
        let envelope = document::build_envelope(
            &issuer(),
            &[dte],
            fecha().and_hms_opt(9, 0, 1).unwrap(),
            &identity,
        )
        .unwrap();
        signature_check(
            &dir,
            "envelope.xml",
            &envelope,
            "/*/*[local-name()='Signature']",
        )
        .unwrap_or_else(|e| panic!("{source:?}: {e}"));
    }
    // A wrong password is an error naming the setting.
    let wrong = dte::signing_identity(
        &pool,
        &dte::CertificateSource::Pkcs12 {
            path: dir.join("company.p12"),
            password: "otra".into(),
        },
        &holder,
    )
    .await
    .unwrap_err();
    assert!(
        format!("{wrong:#}").contains("DTE_CERT_PKCS12"),
        "{wrong:#}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn certificate_settings_are_checked_at_start() {
    use std::collections::HashMap;
    let settings = |pairs: &[(&'static str, &'static str)]| {
        let vars: HashMap<&str, &str> = pairs.iter().copied().collect();
        dte::DteSettings::from_source(&platform::config::Reader::new(&vars))
    };
    assert!(matches!(
        settings(&[]).unwrap().certificate,
        dte::CertificateSource::Development
    ));
    let production = settings(&[("DTE_SII_ENVIRONMENT", "production")]).unwrap_err();
    assert_eq!(production.key, "DTE_CERT_PKCS12");
    let both = settings(&[("DTE_CERT_PKCS12", "a.p12"), ("DTE_CERT_PEM", "c.pem")]).unwrap_err();
    assert_eq!(both.key, "DTE_CERT_PEM");
    assert_eq!(
        settings(&[("DTE_RUT_EMISOR", "76369187-5")])
            .unwrap_err()
            .key,
        "DTE_RUT_EMISOR"
    );
    assert_eq!(
        settings(&[("DTE_SII_URL", "maullin")]).unwrap_err().key,
        "DTE_SII_URL"
    );
    // An EnvioBOLETA holds 1 to 500 boletas.
    for size in ["0", "501"] {
        assert_eq!(
            settings(&[("DTE_SII_BATCH_SIZE", size)]).unwrap_err().key,
            "DTE_SII_BATCH_SIZE"
        );
    }
    let worker = settings(&[
        ("DTE_SII_BATCH_SIZE", "100"),
        ("DTE_SII_BATCH_WINDOW", "5s"),
    ])
    .unwrap()
    .sii_worker;
    assert_eq!(
        (worker.batch_size, worker.batch_window),
        (100, std::time::Duration::from_secs(5))
    );
    let production = settings(&[
        ("DTE_SII_ENVIRONMENT", "production"),
        ("DTE_CERT_PKCS12", "/etc/orderflow/company.p12"),
    ])
    .unwrap();
    assert_eq!(production.sii.dte, "https://palena.sii.cl");
}

#[test]
fn a_windows_1252_document_verifies_from_the_characters_it_declares() {
    // Another company's software writes windows-1252: “quotes”, a dash and € are bytes
    // 0x80–0x9F there, which ISO-8859-1 reads as control characters.
    let caf = caf_for(TipoDte::Factura);
    let content = domain::document_for_sale(Sale {
        receptor: Some(buyer()),
        items: vec![item("SKU-1", "Mouse", 2, 5_000, false)],
    });
    let dte = build(&content, 7, &caf);
    let signature_at = dte.xml.find("<Signature").unwrap();
    let unsigned = format!(
        "{}{}</DTE>",
        &dte.xml[..signature_at],
        SIGNER
            .identity
            .template(&document::documento_id(TipoDte::Factura, 7))
    )
    .replace(
        "<DirRecep>San Diego 2222</DirRecep>",
        "<DirRecep>San Diego 2222 “Torre B” – 2° piso €</DirRecep>",
    );
    assert!(unsigned.contains("€"), "the address is in the document");
    let signed = SIGNER.identity.sign_last(&unsigned).unwrap();
    let file = format!("<?xml version=\"1.0\" encoding=\"windows-1252\"?>\n{signed}");
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&file);
    assert!(!unmappable);
    let bytes = bytes.into_owned();
    assert!(
        bytes.contains(&0x93) && bytes.contains(&0x80),
        "0x80–0x9F bytes in the file"
    );

    // xmlsec1 (libxml2 reads windows-1252 as declared) and our verifier agree.
    let dir = scratch();
    signature_check(
        &dir,
        "dte-1252.xml",
        &bytes,
        "/*/*[local-name()='Signature']",
    )
    .unwrap_or_else(|e| panic!("xmlsec1 refuses it:\n{e}"));
    let report = dte::verify::verify(&bytes).unwrap();
    let d = &report.documents[0];
    assert!(d.signature.passed, "{}", report.render());
    assert!(
        d.ted.passed && d.ted_consistency.passed,
        "{}",
        report.render()
    );

    // The same bytes declared ISO-8859-1 are other characters: the digest fails, as it
    // does for xmlsec1.
    let relabelled = [
        b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>".as_slice(),
        &bytes[bytes.iter().position(|&b| b == b'\n').unwrap()..],
    ]
    .concat();
    assert!(
        signature_check(
            &dir,
            "dte-latin1.xml",
            &relabelled,
            "/*/*[local-name()='Signature']"
        )
        .is_err()
    );
    let report = dte::verify::verify(&relabelled).unwrap();
    assert!(!report.documents[0].signature.passed, "{}", report.render());
    std::fs::remove_dir_all(dir).ok();
}
