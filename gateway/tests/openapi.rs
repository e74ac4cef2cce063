//! The generated OpenAPI document validates as OpenAPI 3.1 with a third-party validator
//! (`openapi-spec-validator` from PyPI, installed once into a virtualenv under cargo's
//! target directory) and describes every route the gateway serves.

use std::{path::PathBuf, process::Command};

use gateway::{openapi, routes::RouteTable};

const VALIDATOR: &str = "openapi-spec-validator==0.9.0";

/// The validator, installed on first use.
fn validator() -> Command {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("openapi-venv");
    let mut command = Command::new(platform::testing::python_venv(&venv, 9, &[VALIDATOR]));
    command.args(["-m", "openapi_spec_validator", "--schema", "3.1.0"]);
    command
}

#[test]
fn the_document_is_valid_openapi_3_1_and_covers_every_route() {
    let table = RouteTable::from_descriptor_set(proto::FILE_DESCRIPTOR_SET).unwrap();
    let doc = openapi::document(&table);
    assert_eq!(doc["openapi"], "3.1.0");
    for route in table.routes() {
        let op = &doc["paths"][&route.template][route.method.as_str().to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is served but not described",
            route.method,
            route.template
        );
        let what = format!("{} {}", route.method, route.template);
        assert!(op["operationId"].is_string(), "{what}: no operationId");
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: no summary"
        );
        for status in openapi::ERROR_STATUSES {
            assert_eq!(
                op["responses"][*status]["$ref"], "#/components/responses/Problem",
                "{what}: {status} is not described as problem+json"
            );
        }
    }
    let ids: std::collections::HashSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let operations = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum::<usize>();
    assert_eq!(ids.len(), operations, "operationIds are unique");

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
