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

/// A value the schema calls valid: its example, else the least its constraints allow.
fn minimal(schema: &serde_json::Value, doc: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Value, json};
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return minimal(&doc["components"]["schemas"][name], doc);
    }
    if let Some(example) = schema["examples"].get(0) {
        return example.clone();
    }
    if let Some(first) = schema["enum"].get(0) {
        return first.clone();
    }
    match schema["type"].as_str() {
        Some("object") => {
            let mut out = serde_json::Map::new();
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                out.insert(name.into(), minimal(&schema["properties"][name], doc));
            }
            Value::Object(out)
        }
        Some("array") => {
            let n = schema["minItems"].as_u64().unwrap_or(0) as usize;
            Value::Array(vec![minimal(&schema["items"], doc); n])
        }
        Some("integer") | Some("number") => {
            let above = schema["exclusiveMinimum"].as_i64().map(|n| n + 1);
            json!(schema["minimum"].as_i64().or(above).unwrap_or(0))
        }
        Some("boolean") => json!(false),
        Some("string") => match schema["format"].as_str() {
            Some("uuid") => json!(uuid::Uuid::now_v7().to_string()),
            Some("email") => json!("ana@example.cl"),
            Some("date-time") => json!("2026-12-01T00:00:00Z"),
            _ => json!("x".repeat(schema["minLength"].as_u64().unwrap_or(0) as usize)),
        },
        _ => json!({}),
    }
}

#[tokio::test]
async fn a_request_the_openapi_document_calls_valid_is_never_refused_as_malformed() {
    let s = spawn_suite().await;
    let admin = s.admin("admin@tienda.cl").await;
    let doc: serde_json::Value = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut tried = 0;
    let mut refused = Vec::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, op) in operations.as_object().unwrap() {
            let content = &op["requestBody"]["content"];
            // A raw upload (a CAF, a DTE to verify) is valid by its signatures, which no
            // schema can say; Webpay's return is Webpay's request, not a client's.
            if content.get("*/*").is_some() || path.starts_with("/v1/payments/webpay/") {
                continue;
            }
            let mut url = path.clone();
            let mut query = Vec::new();
            let mut idempotency = false;
            for p in op["parameters"].as_array().into_iter().flatten() {
                let p = match p["$ref"].as_str() {
                    Some(r) => &doc["components"]["parameters"][r.rsplit('/').next().unwrap()],
                    None => p,
                };
                let name = p["name"].as_str().unwrap();
                match p["in"].as_str() {
                    Some("path") => {
                        let value = minimal(&p["schema"], &doc);
                        let value = value.as_str().map_or(value.to_string(), str::to_string);
                        url = url.replace(&format!("{{{name}}}"), &value);
                    }
                    Some("query") if p["required"] == true => {
                        query.push((name.to_string(), minimal(&p["schema"], &doc).to_string()));
                    }
                    Some("header") if name.eq_ignore_ascii_case("idempotency-key") => {
                        idempotency = true
                    }
                    _ => {}
                }
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut request = s
                .http
                .request(method.clone(), format!("{}{url}", s.base))
                .bearer_auth(&admin)
                .query(&query);
            if idempotency {
                request = request.header("idempotency-key", uuid::Uuid::new_v4().to_string());
            }
            let body = content
                .get("application/json")
                .map(|c| minimal(&c["schema"], &doc));
            if let Some(body) = &body {
                request = request.json(body);
            }
            let answer = s.raw(request).await;
            tried += 1;
            if answer.status == StatusCode::BAD_REQUEST {
                refused.push(format!(
                    "{method} {url} {}: {}",
                    body.map(|b| b.to_string()).unwrap_or_default(),
                    answer.body
                ));
            }
        }
    }
    assert!(tried >= 35, "only {tried} operations tried");
    assert!(
        refused.is_empty(),
        "valid by the document, refused with 400:\n{}",
        refused.join("\n")
    );
}

#[tokio::test]
async fn each_service_refuses_what_breaks_the_protos_constraints_naming_every_field() {
    use tonic_types::StatusExt as _;
    let s = spawn_suite().await;
    // Straight to the IAM service, past the gateway: the service itself checks.
    let channel = tonic::transport::Channel::from_shared(format!(
        "http://{}",
        s.grpc_addrs["orderflow.iam.v1.IamService"]
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let mut iam = proto::iam::v1::iam_service_client::IamServiceClient::new(channel);
    let status = iam
        .register(proto::iam::v1::RegisterRequest {
            email: "not-an-email".into(),
            password: "short".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let fields: Vec<(String, String)> = status
        .get_details_bad_request()
        .expect("field violations")
        .field_violations
        .into_iter()
        .map(|v| (v.field, v.description))
        .collect();
    assert_eq!(
        fields,
        vec![
            (
                "email".to_string(),
                "must be a valid email address".to_string()
            ),
            (
                "password".to_string(),
                "must be at least 12 characters".to_string()
            )
        ]
    );

    // Through the gateway: both, as problem+json `errors[]` in JSON names.
    let refused = s
        .call(
            Method::POST,
            "/v1/orders",
            Some(&s.customer("ana@example.cl").await),
            Some(serde_json::json!({"lines": [{"sku": "CAFE-1", "quantity": 0}], "buyer": {"rut": "uno", "razonSocial": "x"}})),
        )
        .await;
    refused.assert_problem(400);
    let named: Vec<&str> = refused.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        named,
        vec!["lines[0].quantity", "buyer.rut"],
        "{}",
        refused.body
    );
    assert_eq!(
        refused.body["errors"][1]["detail"],
        "must look like 76369187-K"
    );
}
