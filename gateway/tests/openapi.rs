//! The generated OpenAPI document validates as OpenAPI 3.1 with a third-party validator
//! (`openapi-spec-validator` from PyPI, installed once into a virtualenv under cargo's
//! target directory) and describes every route the gateway serves.

use std::{path::PathBuf, process::Command, sync::Mutex};

use gateway::{openapi, routes::RouteTable};

const VALIDATOR: &str = "openapi-spec-validator==0.9.0";

/// A command running the validator, installing it on first use. Installs go to a private
/// directory renamed into place, so concurrent test processes never see half a venv.
fn validator() -> Command {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("openapi-venv");
    if !venv.join("installed").exists() {
        let tmp = venv.with_extension(format!("tmp-{}", std::process::id()));
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let status = Command::new(&python)
            .args(["-m", "venv"])
            .arg(&tmp)
            .status()
            .unwrap_or_else(|e| panic!("{python} is needed to validate the OpenAPI document: {e}"));
        assert!(status.success(), "{python} -m venv failed");
        let status = Command::new(tmp.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                VALIDATOR,
            ])
            .status()
            .expect("pip runs");
        assert!(status.success(), "pip install {VALIDATOR} failed");
        std::fs::write(tmp.join("installed"), VALIDATOR).unwrap();
        if std::fs::rename(&tmp, &venv).is_err() {
            // Another process got there first.
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    let mut command = Command::new(venv.join("bin/python"));
    command.args(["-m", "openapi_spec_validator", "--schema", "3.1.0"]);
    command
}

#[test]
fn the_document_is_valid_openapi_3_1_and_covers_every_route() {
    let table = RouteTable::from_descriptor_set(proto::FILE_DESCRIPTOR_SET).unwrap();
    let doc = openapi::document(&table);
    assert_eq!(doc["openapi"], "3.1.0");
    for route in table.routes() {
        assert!(
            doc["paths"][&route.template][route.method.as_str().to_ascii_lowercase()].is_object(),
            "{} {} is served but not described",
            route.method,
            route.template
        );
    }

    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("openapi-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = validator().arg(&file).output().expect("the validator runs");
    let _ = std::fs::remove_file(&file);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "not valid OpenAPI 3.1:\n{report}");
    assert!(report.contains("OK"), "{report}");
}

#[test]
fn the_validator_refuses_a_broken_document() {
    // The check above can fail: a document missing its required parts is refused.
    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("openapi-broken-{}.json", std::process::id()));
    std::fs::write(
        &file,
        br#"{"openapi": "3.1.0", "paths": {"/x": {"get": {"responses": 5}}}}"#,
    )
    .unwrap();
    let out = validator().arg(&file).output().expect("the validator runs");
    let _ = std::fs::remove_file(&file);
    assert!(!out.status.success());
}
