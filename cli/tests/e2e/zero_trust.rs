//! An attacker on the services' network: raw gRPC calls straight to each service's port,
//! skipping the gateway. A service believes only the internal token it verifies itself.

use std::{net::SocketAddr, str::FromStr as _};

use platform::{
    grpc::Caller,
    grpc_auth::{ACCESS_TABLE, Access},
    identity::{GATEWAY, InternalKey, Minter},
    testing::test_internal_key,
};
use tonic::Code;

use crate::helpers::{TestSuite, spawn_suite};

/// The headers the services used to believe.
const FORGED: [(&str, &str); 3] = [
    (
        "x-orderflow-user-id",
        "0193a5f0-0000-7000-8000-000000000001",
    ),
    ("x-orderflow-roles", "customer,admin"),
    ("x-orderflow-client-ip", "203.0.113.50"),
];

/// Calls `path` on the service at `addr` with an empty message, `headers` and, when
/// given, `token` as the bearer credential; the status it answers (OK included).
async fn raw_call(
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, &str)],
    token: Option<&str>,
) -> tonic::Status {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("the service accepts connections");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    for (name, value) in headers {
        request.metadata_mut().insert(*name, value.parse().unwrap());
    }
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc
        .unary(
            request,
            http::uri::PathAndQuery::from_str(path).unwrap(),
            codec,
        )
        .await
    {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

/// `/pkg.Service/Method` → the service's address in the running suite.
fn service_of(s: &TestSuite, path: &str) -> (String, SocketAddr) {
    let service = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let addr = *s
        .grpc_addrs
        .get(service.as_str())
        .unwrap_or_else(|| panic!("no address for {service}"));
    (service, addr)
}

fn methods(access: Access) -> Vec<&'static String> {
    let mut paths: Vec<&String> = ACCESS_TABLE
        .iter()
        .filter(|(_, a)| **a == access)
        .map(|(p, _)| p)
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no {access:?} methods");
    paths
}

#[tokio::test]
async fn forged_identity_headers_open_no_method_of_any_service() {
    let s = spawn_suite().await;
    let mut refused = 0;
    for access in [Access::Authenticated, Access::Admin, Access::Internal] {
        for path in methods(access) {
            let (_, addr) = service_of(&s, path);
            let status = raw_call(addr, path, &FORGED, None).await;
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{path} ({access:?}) with forged headers and no token: {status:?}"
            );
            refused += 1;
        }
    }
    assert!(refused >= 25, "only {refused} methods checked");

    // The attack of the report: the product was not created.
    let create = "/orderflow.catalog.v1.CatalogService/CreateProduct";
    let (_, catalog) = service_of(&s, create);
    assert_eq!(
        raw_call(catalog, create, &FORGED, None).await.code(),
        Code::Unauthenticated
    );
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM catalog.products")
        .fetch_one(&s.iam_pool)
        .await
        .unwrap();
    assert_eq!(products, 0);

    // Public methods still answer anyone, forged headers or not.
    let list = "/orderflow.catalog.v1.CatalogService/ListProducts";
    assert_eq!(
        raw_call(catalog, list, &FORGED, None).await.code(),
        Code::Ok
    );
}

#[tokio::test]
async fn a_customers_credential_opens_neither_admin_nor_internal_methods() {
    let s = spawn_suite().await;
    let customer = Caller {
        user_id: Some(uuid::Uuid::now_v7()),
        roles: vec!["customer".into()],
        ..Caller::default()
    };
    let minter = Minter::new(test_internal_key(), GATEWAY);
    for access in [Access::Admin, Access::Internal] {
        for path in methods(access) {
            let (service, addr) = service_of(&s, path);
            let token = minter.token(&service, &customer);
            let status = raw_call(addr, path, &[], Some(&token)).await;
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{path} ({access:?}) with a customer's credential: {status:?}"
            );
        }
    }
    // Nor does an admin's credential minted by the gateway open internal methods: only
    // orderflow's backend services may reserve stock or read what an order owes.
    let admin = Caller {
        roles: vec!["customer".into(), "admin".into()],
        ..customer
    };
    for path in methods(Access::Internal) {
        let (service, addr) = service_of(&s, path);
        let token = minter.token(&service, &admin);
        assert_eq!(
            raw_call(addr, path, &[], Some(&token)).await.code(),
            Code::PermissionDenied,
            "{path}"
        );
    }
}

#[tokio::test]
async fn expired_tampered_misaddressed_and_foreign_credentials_are_unauthenticated() {
    let s = spawn_suite().await;
    let get_me = "/orderflow.iam.v1.IamService/GetMe";
    let (iam, addr) = service_of(&s, get_me);
    let user = Caller {
        user_id: Some(uuid::Uuid::now_v7()),
        roles: vec!["customer".into()],
        ..Caller::default()
    };
    let minter = Minter::new(test_internal_key(), GATEWAY);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    // The control: a valid credential gets past the check (to "no such user").
    let valid = minter.token(&iam, &user);
    assert_eq!(
        raw_call(addr, get_me, &[], Some(&valid)).await.code(),
        Code::NotFound
    );

    let expired = minter.token_at(&iam, &user, now - 3600);
    let misaddressed = minter.token("orderflow.catalog.v1.CatalogService", &user);
    let foreign =
        Minter::new(std::sync::Arc::new(InternalKey::generate()), GATEWAY).token(&iam, &user);
    // The claims changed (an admin role added) under the original signature.
    let tampered = {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let mut parts: Vec<String> = valid.split('.').map(str::to_string).collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        claims["roles"] = serde_json::json!(["customer", "admin"]);
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        parts.join(".")
    };
    for (what, token) in [
        ("expired", expired.as_str()),
        ("for another service", misaddressed.as_str()),
        ("signed by another key", foreign.as_str()),
        ("tampered", tampered.as_str()),
        ("not a JWT", "not-a-token"),
    ] {
        let status = raw_call(addr, get_me, &[], Some(token)).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    // A bad credential is refused even on a public method.
    let list = "/orderflow.catalog.v1.CatalogService/ListProducts";
    let (_, catalog) = service_of(&s, list);
    assert_eq!(
        raw_call(catalog, list, &[], Some("not-a-token"))
            .await
            .code(),
        Code::Unauthenticated
    );
}
