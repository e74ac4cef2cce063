//! `orderflow dte verify` on real documents from other companies' software
//! (`tests/corpus/`, sources in its SOURCES.md): its signature verdict agrees with
//! `xmlsec1 --verify` on every file, the TED and its agreement with the document pass on
//! the genuine ones, and each tampered copy names the check it breaks.

use std::{path::PathBuf, process::Command};

use dte::verify::{DocumentReport, verify};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// xmlsec1's verdict on the document signature (the key from the file's own KeyInfo).
fn xmlsec1_accepts(bytes: &[u8]) -> bool {
    let file = std::env::temp_dir().join(format!("corpus-{}.xml", uuid::Uuid::new_v4()));
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new("xmlsec1")
        .args([
            "--verify",
            "--id-attr:ID",
            "Documento",
            "--enabled-reference-uris",
            "same-doc",
        ])
        .arg(&file)
        .output()
        .expect("xmlsec1 runs (./dev test installs it)");
    std::fs::remove_file(&file).ok();
    out.status.success()
}

fn document(bytes: &[u8]) -> DocumentReport {
    let report = verify(bytes).unwrap();
    assert_eq!(report.documents.len(), 1);
    report.documents[0].clone()
}

const GENUINE: &[(&str, i32)] = &[
    ("DTE--60910000-1--33--2336600.xml", 33),
    ("DTE--96670340-7--61--110616.xml", 61),
    ("DTE--76354771-K--33--170--cleaned.xml", 33),
    ("DTE--76399752-9--33--25568--cleaned.xml", 33),
];

#[test]
fn genuine_documents_verify_as_xmlsec1_says_with_their_ted() {
    for (name, tipo) in GENUINE {
        let bytes = std::fs::read(corpus().join(name)).unwrap();
        let d = document(&bytes);
        assert_eq!(d.tipo_dte, *tipo, "{name}");
        assert!(xmlsec1_accepts(&bytes), "{name}: xmlsec1 refuses it");
        assert!(d.signature.passed, "{name}: {}", d.signature.detail);
        assert!(d.ted.passed, "{name}: {}", d.ted.detail);
        assert!(
            d.ted_consistency.passed,
            "{name}: {}",
            d.ted_consistency.detail
        );
    }
}

#[test]
fn tampered_copies_fail_where_they_were_tampered_and_xmlsec1_agrees() {
    let read = |name: &str| std::fs::read(corpus().join(name)).unwrap();

    // lib-cl-sii's own tampered copies.
    let monto = read("DTE--76354771-K--33--170--cleaned-mod-changed-monto.xml");
    let d = document(&monto);
    assert!(!xmlsec1_accepts(&monto));
    assert!(
        !d.signature.passed && d.signature.detail.contains("digest"),
        "{}",
        d.signature.detail
    );
    assert!(
        !d.ted.passed,
        "the amount is in the TED too: {}",
        d.ted.detail
    );

    let cert = read("DTE--76354771-K--33--170--cleaned-mod-replaced-cert.xml");
    assert!(!xmlsec1_accepts(&cert));
    assert!(!document(&cert).signature.passed);

    let unsigned = read("DTE--76354771-K--33--170--cleaned-mod-removed-signature.xml");
    assert!(!xmlsec1_accepts(&unsigned));
    let d = document(&unsigned);
    assert!(
        !d.signature.passed && d.signature.detail.contains("Signature"),
        "{}",
        d.signature.detail
    );
    assert!(d.ted.passed, "the TED is untouched");

    // The windows-1252 factura with its total changed outside the TED: the signature and
    // the TED's agreement with the document fail, naming MNT; the TED itself holds.
    let original = read("DTE--60910000-1--33--2336600.xml");
    let (from, to) = (
        b"<MntTotal>10642<".as_slice(),
        b"<MntTotal>10643<".as_slice(),
    );
    let at = original
        .windows(from.len())
        .position(|w| w == from)
        .expect("the total is in the file");
    let tampered = [&original[..at], to, &original[at + from.len()..]].concat();
    assert!(!xmlsec1_accepts(&tampered));
    let d = document(&tampered);
    assert!(!d.signature.passed);
    assert!(d.ted.passed);
    assert!(
        !d.ted_consistency.passed && d.ted_consistency.detail.contains("MNT"),
        "{}",
        d.ted_consistency.detail
    );
}
