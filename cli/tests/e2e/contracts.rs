//! The protos as other toolchains see them: the reference protoc (grpcio-tools) compiles
//! every file unchanged, and a Python client generated from them talks to the services.

use reqwest::{Method, StatusCode};

use crate::{helpers::spawn_suite, orders::product};

/// The pinned toolchain: protoc as grpcio-tools ships it, and the gRPC runtime.
const PYTHON_GRPC: &[&str] = &["grpcio-tools==1.85.1", "grpcio==1.85.1"];

#[tokio::test]
async fn a_python_client_generated_by_protoc_browses_the_catalog_and_signs_in() {
    let s = spawn_suite().await;
    let admin = s.admin("admin@tienda.cl").await;
    product(&s, &admin, "PY-CAFE-1", 5033, 5).await;

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join("target/test-tools/python-grpc");
    let root = root.clone();
    let python =
        tokio::task::spawn_blocking(move || platform::testing::python_venv(&venv, 9, PYTHON_GRPC))
            .await
            .unwrap();
    let out = std::env::temp_dir().join(format!("py-stubs-{}", uuid::Uuid::new_v4()));
    let addr = |service: &str| s.grpc_addrs[service].to_string();
    let (iam, catalog) = (
        addr("orderflow.iam.v1.IamService"),
        addr("orderflow.catalog.v1.CatalogService"),
    );
    let stubs = out.clone();
    // The client blocks; the suite keeps serving on this test's runtime meanwhile.
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(root.join("cli/tests/clients/python_client.py"))
            .arg(root.join("proto/protos"))
            .arg(&stubs)
            .arg(iam)
            .arg(catalog)
            .arg("PY-CAFE-1")
            .arg("pythonista@example.cl")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(&out).ok();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let answer: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert!(answer["compiled"].as_u64().unwrap() >= 8, "{answer}");
    assert_eq!(answer["listed"], serde_json::json!(["PY-CAFE-1"]));
    assert_eq!(answer["product"]["name"], "Producto PY-CAFE-1");
    assert_eq!(answer["product"]["gross"], 5989);
    assert_eq!(answer["registered"], "pythonista@example.cl");
    assert_eq!(answer["access_token"], true);
    // Straight to IAM with no credential, an admin RPC is refused (zero trust holds for
    // every client, not only ours).
    assert_eq!(answer["list_users"], "UNAUTHENTICATED");
    // The account the Python client made is real: it signs in through the gateway.
    let login = s
        .login("pythonista@example.cl", crate::helpers::PASSWORD)
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let me = s
        .call(
            Method::GET,
            "/v1/me",
            login.body["accessToken"].as_str(),
            None,
        )
        .await;
    assert_eq!(me.body["email"], "pythonista@example.cl");
}
