//! Optional mutual TLS between the roles, for deployments without a service mesh.
//!
//! With `GRPC_TLS_CA_FILE`, `GRPC_TLS_CERT_FILE` and `GRPC_TLS_KEY_FILE` set, every role's
//! gRPC server asks each caller for a certificate signed by that CA (the admin port, with
//! the probes, stays plain HTTP), and every gRPC client the role opens (the gateway's
//! upstreams, order → catalog, payment → order) presents the role's certificate and checks
//! the server's against the same CA; `http://` upstream URLs are upgraded to `https://`.
//! With Istio (the chart's default) the mesh's mTLS does this and these stay unset.
//!
//! [`generate_development`] makes a development CA and a certificate per role, like
//! `orderflow dev-certs` writes them; they are for a laptop or a test, never production.

use std::path::Path;

use crate::config::{ConfigError, Reader};

/// The settings.
pub const CA_SETTING: &str = "GRPC_TLS_CA_FILE";
/// The role's certificate (PEM, the chain without the CA).
pub const CERT_SETTING: &str = "GRPC_TLS_CERT_FILE";
/// The role's private key (PEM).
pub const KEY_SETTING: &str = "GRPC_TLS_KEY_FILE";

/// A role's TLS material: the CA every peer must be signed by, and its own identity.
#[derive(Clone)]
pub struct GrpcTls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl std::fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrpcTls(***)")
    }
}

impl GrpcTls {
    /// The material from the three settings; `None` when none is set, an error naming
    /// the setting when only some are, or a file cannot be read or holds no PEM.
    pub fn from_settings(r: &Reader<'_>) -> Result<Option<Self>, ConfigError> {
        let paths = [CA_SETTING, CERT_SETTING, KEY_SETTING].map(|k| (k, r.optional(k)));
        if paths.iter().all(|(_, p)| p.is_none()) {
            return Ok(None);
        }
        let mut files = Vec::new();
        for (key, path) in paths {
            let path = path.ok_or_else(|| ConfigError {
                key: key.into(),
                problem: format!(
                    "is required when any of {CA_SETTING}, {CERT_SETTING}, {KEY_SETTING} is set"
                ),
            })?;
            let bytes = std::fs::read(&path).map_err(|e| ConfigError {
                key: key.into(),
                problem: format!("cannot be read ({path}): {e}"),
            })?;
            if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
                return Err(ConfigError {
                    key: key.into(),
                    problem: format!("is not a PEM file ({path})"),
                });
            }
            files.push(bytes);
        }
        let key = files.pop().expect("three files");
        let cert = files.pop().expect("three files");
        let ca = files.pop().expect("three files");
        Ok(Some(Self { ca, cert, key }))
    }

    /// The server side: this role's identity, and every client must present a
    /// certificate the CA signed.
    #[cfg(feature = "grpc-server")]
    pub fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    /// The client side: trust only the CA, and present this role's identity.
    pub fn client_config(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
    }
}

/// A lazily connecting channel to `url` (named by `setting` in errors), over mutual TLS
/// when `tls` is given (an `http://` URL is then upgraded to `https://`).
pub fn endpoint(
    url: &str,
    setting: &str,
    tls: Option<&GrpcTls>,
) -> Result<tonic::transport::Endpoint, ConfigError> {
    let malformed = |problem: String| ConfigError {
        key: setting.into(),
        problem,
    };
    let url = match (tls, url.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        _ => url.to_string(),
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| malformed(format!("is not a URL ({url:?}): {e}")))?;
    match tls {
        Some(tls) => endpoint
            .tls_config(tls.client_config())
            .map_err(|e| malformed(format!("cannot use TLS ({url:?}): {e}"))),
        None => Ok(endpoint),
    }
}

/// Files written by [`generate_development`].
pub struct DevelopmentFiles {
    /// The CA certificate.
    pub ca: std::path::PathBuf,
    /// Per role: (certificate, key).
    pub roles: Vec<(String, std::path::PathBuf, std::path::PathBuf)>,
}

/// Writes a development CA (`ca.pem`) and, for each role, `<role>.pem` and
/// `<role>-key.pem` into `dir`, valid for `localhost`, `127.0.0.1`, the role's name and
/// `orderflow-<role>` (compose and Kubernetes service names). Files already there are
/// kept, so the CA is generated once. NOT for production.
pub fn generate_development(dir: &Path, roles: &[&str]) -> anyhow::Result<DevelopmentFiles> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    std::fs::create_dir_all(dir)?;
    let ca_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca-key.pem");
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        DnType::CommonName,
        "orderflow development CA (NOT FOR PRODUCTION)",
    );
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = match std::fs::read_to_string(&ca_key_path) {
        Ok(pem) if ca_path.exists() => KeyPair::from_pem(&pem)?,
        _ => {
            let key = KeyPair::generate()?;
            let cert = ca_params.self_signed(&key)?;
            std::fs::write(&ca_path, cert.pem())?;
            write_private(&ca_key_path, &key.serialize_pem())?;
            key
        }
    };
    let issuer = Issuer::new(ca_params, ca_key);
    let mut out = DevelopmentFiles {
        ca: ca_path,
        roles: Vec::new(),
    };
    for role in roles {
        let cert_path = dir.join(format!("{role}.pem"));
        let key_path = dir.join(format!("{role}-key.pem"));
        if !(cert_path.exists() && key_path.exists()) {
            let mut params = CertificateParams::new(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                role.to_string(),
                format!("orderflow-{role}"),
            ])?;
            params.distinguished_name.push(
                DnType::CommonName,
                format!("orderflow {role} (development)"),
            );
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &issuer)?;
            std::fs::write(&cert_path, cert.pem())?;
            write_private(&key_path, &key.serialize_pem())?;
        }
        out.roles.push((role.to_string(), cert_path, key_path));
    }
    Ok(out)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_but_not_all_settings_name_the_missing_one() {
        let dir = std::env::temp_dir().join(format!("tls-{}", uuid::Uuid::new_v4()));
        let files = generate_development(&dir, &["order"]).unwrap();
        let ca = files.ca.display().to_string();
        let src: std::collections::HashMap<&str, &str> =
            [(CA_SETTING, ca.as_str())].into_iter().collect();
        let err = GrpcTls::from_settings(&Reader::new(&src)).unwrap_err();
        assert_eq!(err.key, CERT_SETTING);

        let (_, cert, key) = &files.roles[0];
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let src: std::collections::HashMap<&str, &str> = [
            (CA_SETTING, ca.as_str()),
            (CERT_SETTING, cert.as_str()),
            (KEY_SETTING, "/nonexistent/key.pem"),
        ]
        .into_iter()
        .collect();
        let err = GrpcTls::from_settings(&Reader::new(&src)).unwrap_err();
        assert_eq!(err.key, KEY_SETTING);

        let src: std::collections::HashMap<&str, &str> = [
            (CA_SETTING, ca.as_str()),
            (CERT_SETTING, cert.as_str()),
            (KEY_SETTING, key.as_str()),
        ]
        .into_iter()
        .collect();
        assert!(
            GrpcTls::from_settings(&Reader::new(&src))
                .unwrap()
                .is_some()
        );
        // Generated once: a second run keeps the CA.
        let before = std::fs::read(&files.ca).unwrap();
        generate_development(&dir, &["order", "catalog"]).unwrap();
        assert_eq!(std::fs::read(&files.ca).unwrap(), before);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn with_tls_an_http_upstream_is_upgraded_and_a_bad_url_names_its_setting() {
        let err = endpoint("not a url", "GATEWAY_ORDER_URL", None).unwrap_err();
        assert_eq!(err.key, "GATEWAY_ORDER_URL");
        let plain = endpoint("http://127.0.0.1:50053", "X", None).unwrap();
        assert_eq!(plain.uri().scheme_str(), Some("http"));
    }
}
