//! The SII over HTTP, as the SII serves it: SOAP web services for the seed, the token and
//! the status of an `EnvioDTE`, the `DTEUpload` multipart form for uploading it, and the
//! boleta REST API (seed, token, envío, estado) for an `EnvioBOLETA`. Tokens are kept and
//! reused until they near expiry.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use platform::chile::Rut;
use reqwest::multipart::{Form, Part};

use super::{
    DocumentVerdict, Processed, SiiClient, SiiError, SiiRegistry, SiiStatus, Verdict,
    protocol::{self, element_text, soap_request, soap_return, split_rut},
    registry,
};
use crate::xml::signature::SigningIdentity;

/// Where the SII answers.
#[derive(Debug, Clone)]
pub struct SiiEndpoints {
    /// SOAP services and `DTEUpload` (`https://maullin.sii.cl` in certification).
    pub dte: String,
    /// The boleta API's seed, token and status (`https://apicert.sii.cl/recursos/v1`).
    pub boleta: String,
    /// The boleta API's upload (`https://pangal.sii.cl/recursos/v1`).
    pub boleta_upload: String,
    /// The registry of acceptance and claims
    /// (`https://ws2.sii.cl/WSREGISTRORECLAMODTECERT` in certification).
    pub registry: String,
}

impl SiiEndpoints {
    /// Every service under one base URL, at the paths the SII serves them (the
    /// simulator's layout).
    pub fn at(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        Self {
            dte: base.to_string(),
            boleta: format!("{base}/recursos/v1"),
            boleta_upload: format!("{base}/recursos/v1"),
            registry: format!("{base}/WSREGISTRORECLAMODTE"),
        }
    }

    /// The settings that point the DTE service here (`DTE_SII_URL` and the rest).
    pub fn settings(&self) -> [(&'static str, String); 4] {
        [
            ("DTE_SII_URL", self.dte.clone()),
            ("DTE_SII_BOLETA_URL", self.boleta.clone()),
            ("DTE_SII_BOLETA_UPLOAD_URL", self.boleta_upload.clone()),
            ("DTE_SII_REGISTRY_URL", self.registry.clone()),
        ]
    }
}

/// The SII's documented lifetime of a token is about an hour; a new one is taken before.
const TOKEN_REUSE: Duration = Duration::from_secs(30 * 60);

/// [`SiiClient`] over HTTP.
pub struct HttpSiiClient {
    http: reqwest::Client,
    endpoints: SiiEndpoints,
    identity: SigningIdentity,
    company: Rut,
    sender: Rut,
    /// Cached tokens: (for boletas?, token, taken at).
    tokens: Mutex<Vec<(bool, String, Instant)>>,
}

fn transport(e: impl std::fmt::Display) -> SiiError {
    SiiError::Transport(e.to_string())
}

impl HttpSiiClient {
    /// A client signing token requests with `identity`, uploading for `company` as `sender`.
    pub fn new(
        endpoints: SiiEndpoints,
        identity: SigningIdentity,
        company: Rut,
        sender: Rut,
        timeout: Duration,
    ) -> Result<Self, SiiError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent("Mozilla/4.0 (compatible; PROG 1.0; orderflow)")
            .build()
            .map_err(transport)?;
        Ok(Self {
            http,
            endpoints,
            identity,
            company,
            sender,
            tokens: Mutex::default(),
        })
    }

    async fn soap(
        &self,
        service: &str,
        method: &str,
        args: &[(&str, &str)],
    ) -> Result<String, SiiError> {
        let response = self
            .http
            .post(format!("{}/DTEWS/{service}", self.endpoints.dte))
            .header("content-type", "text/xml; charset=utf-8")
            .header("soapaction", "")
            .body(soap_request(method, args))
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body = response.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(SiiError::Transport(format!("{service} answered {status}")));
        }
        soap_return(&body, method).ok_or_else(|| {
            SiiError::Transport(format!("{service}: no {method}Return in the answer"))
        })
    }

    fn signed_token_request(&self, seed: &str) -> Result<String, SiiError> {
        self.identity
            .sign_enveloped(&protocol::get_token_request(seed))
            .map_err(|e| SiiError::Refused(e.to_string()))
    }

    fn cached_token(&self, boleta: bool) -> Option<String> {
        self.tokens
            .lock()
            .expect("not poisoned")
            .iter()
            .find(|(b, _, at)| *b == boleta && at.elapsed() < TOKEN_REUSE)
            .map(|(_, token, _)| token.clone())
    }

    fn keep_token(&self, boleta: bool, token: &str) {
        let mut tokens = self.tokens.lock().expect("not poisoned");
        tokens.retain(|(b, _, _)| *b != boleta);
        tokens.push((boleta, token.to_string(), Instant::now()));
    }

    fn forget_token(&self, boleta: bool) {
        self.tokens
            .lock()
            .expect("not poisoned")
            .retain(|(b, _, _)| *b != boleta);
    }

    /// Seed → signed seed → token, for the SOAP services or the boleta API. A refused
    /// token is the company's problem (certificate, authorisation), not the document's, so
    /// it is reported as a transport error: documents wait and are retried.
    async fn token(&self, boleta: bool) -> Result<String, SiiError> {
        self.take_token(boleta).await.map_err(|e| match e {
            SiiError::Refused(detail) => {
                SiiError::Transport(format!("the SII refused a token: {detail}"))
            }
            transport => transport,
        })
    }

    async fn take_token(&self, boleta: bool) -> Result<String, SiiError> {
        if let Some(token) = self.cached_token(boleta) {
            return Ok(token);
        }
        let token = if boleta {
            let seed_doc = self
                .http
                .get(format!(
                    "{}/boleta.electronica.semilla",
                    self.endpoints.boleta
                ))
                .send()
                .await
                .map_err(transport)?
                .text()
                .await
                .map_err(transport)?;
            let seed = answer(&seed_doc, "SEMILLA")?;
            let answer_doc = self
                .http
                .post(format!(
                    "{}/boleta.electronica.token",
                    self.endpoints.boleta
                ))
                .header("content-type", "application/xml")
                .body(self.signed_token_request(&seed)?)
                .send()
                .await
                .map_err(transport)?
                .text()
                .await
                .map_err(transport)?;
            answer(&answer_doc, "TOKEN")?
        } else {
            let seed_doc = self.soap("CrSeed.jws", "getSeed", &[]).await?;
            let seed = answer(&seed_doc, "SEMILLA")?;
            let signed = self.signed_token_request(&seed)?;
            let answer_doc = self
                .soap("GetTokenFromSeed.jws", "getToken", &[("pszXml", &signed)])
                .await?;
            answer(&answer_doc, "TOKEN")?
        };
        self.keep_token(boleta, &token);
        Ok(token)
    }

    /// Calls the registry's `method` on a document; the answer's body. A fault about the
    /// token forgets it, so the next call takes a new one.
    async fn registry_call(
        &self,
        method: &str,
        rut_emisor: &str,
        tipo: i32,
        folio: i64,
        action: Option<registry::Action>,
    ) -> Result<String, SiiError> {
        let token = self.token(false).await?;
        let response = self
            .http
            .post(format!("{}/{}", self.endpoints.registry, registry::SERVICE))
            .header("content-type", "text/xml; charset=utf-8")
            .header("soapaction", "")
            .header("cookie", format!("TOKEN={token}"))
            .body(registry::request(method, rut_emisor, tipo, folio, action))
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body = response.text().await.map_err(transport)?;
        if status == reqwest::StatusCode::UNAUTHORIZED
            || (body.contains("Fault>") && body.to_lowercase().contains("token"))
        {
            self.forget_token(false);
            return Err(SiiError::Transport(format!(
                "{method}: the token was refused; a new one is taken"
            )));
        }
        if !status.is_success() && !body.contains("Fault>") {
            return Err(SiiError::Transport(format!("{method} answered {status}")));
        }
        Ok(body)
    }

    fn upload_form(&self, envelope: &[u8]) -> Result<Form, SiiError> {
        let (rut_sender, dv_sender) = split_rut(&self.sender.to_string());
        let (rut_company, dv_company) = split_rut(&self.company.to_string());
        let file = Part::bytes(envelope.to_vec())
            .file_name("envio.xml")
            .mime_str("application/octet-stream")
            .map_err(transport)?;
        Ok(Form::new()
            .text("rutSender", rut_sender)
            .text("dvSender", dv_sender)
            .text("rutCompany", rut_company)
            .text("dvCompany", dv_company)
            .part("archivo", file))
    }
}

fn read_error(method: &str, e: registry::ReadError) -> SiiError {
    match e {
        registry::ReadError::Fault(message) => {
            SiiError::Refused(format!("{method}: the SII answered a fault: {message}"))
        }
        registry::ReadError::Unexpected(detail) => {
            SiiError::Transport(format!("{method}: {detail}"))
        }
    }
}

#[async_trait::async_trait]
impl SiiRegistry for HttpSiiClient {
    async fn register(
        &self,
        rut_emisor: &str,
        tipo: i32,
        folio: i64,
        action: registry::Action,
    ) -> Result<registry::Answer, SiiError> {
        const METHOD: &str = "ingresarAceptacionReclamoDoc";
        let body = self
            .registry_call(METHOD, rut_emisor, tipo, folio, Some(action))
            .await?;
        registry::read_answer(&body, METHOD)
            .map(|(answer, _)| answer)
            .map_err(|e| read_error(METHOD, e))
    }

    async fn events(
        &self,
        rut_emisor: &str,
        tipo: i32,
        folio: i64,
    ) -> Result<(registry::Answer, Vec<registry::Event>), SiiError> {
        const METHOD: &str = "listarEventosHistDoc";
        let body = self
            .registry_call(METHOD, rut_emisor, tipo, folio, None)
            .await?;
        registry::read_answer(&body, METHOD).map_err(|e| read_error(METHOD, e))
    }

    async fn reception_date(
        &self,
        rut_emisor: &str,
        tipo: i32,
        folio: i64,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, SiiError> {
        const METHOD: &str = "consultarFechaRecepcionSii";
        let body = self
            .registry_call(METHOD, rut_emisor, tipo, folio, None)
            .await?;
        registry::read_reception_date(&body).map_err(|e| read_error(METHOD, e))
    }
}

/// A `SII:RESPUESTA` value, or the SII's refusal (`ESTADO` other than `00`).
fn answer(doc: &str, field: &str) -> Result<String, SiiError> {
    match element_text(doc, "ESTADO").as_deref() {
        Some("00") | None => element_text(doc, field)
            .ok_or_else(|| SiiError::Transport(format!("the answer has no {field}: {doc}"))),
        Some(estado) => Err(SiiError::Refused(format!(
            "ESTADO {estado}: {}",
            element_text(doc, "GLOSA").unwrap_or_default()
        ))),
    }
}

/// A processed upload's counts, and its summary.
fn processed(accepted: u64, rejected: u64, objections: u64, glosa: &str) -> Processed {
    Processed {
        accepted,
        rejected,
        objections,
        summary: format!(
            "{glosa}: {accepted} aceptados, {rejected} rechazados, {objections} reparos"
        ),
        named: Vec::new(),
    }
}

/// The documents a boleta status answer names (`detalle_rep_rech`): each with its estado
/// (`RCH` rejected, `RLV` / `RPR` accepted with objections) and its reasons.
fn named_boletas(json: &serde_json::Value) -> Vec<DocumentVerdict> {
    let Some(rows) = json["detalle_rep_rech"].as_array() else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|row| {
            let number = |v: &serde_json::Value| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            };
            let reasons: Vec<&str> = row["error"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["descripcion"].as_str())
                .collect();
            Some(DocumentVerdict {
                tipo: i32::try_from(number(&row["tipo"])?).ok()?,
                folio: number(&row["folio"])?,
                verdict: if row["estado"].as_str() == Some("RCH") {
                    Verdict::Rejected
                } else {
                    Verdict::AcceptedWithObjections
                },
                detail: reasons.join(", "),
            })
        })
        .collect()
}

/// Estados of an upload the SII is still working on.
const IN_PROGRESS: &[&str] = &["REC", "SOK", "CRT", "FOK", "PDR", "PRD", "-11"];

#[async_trait::async_trait]
impl SiiClient for HttpSiiClient {
    async fn submit(&self, envelope: &[u8], boleta: bool) -> Result<String, SiiError> {
        let token = self.token(boleta).await?;
        let url = if boleta {
            format!("{}/boleta.electronica.envio", self.endpoints.boleta_upload)
        } else {
            format!("{}/cgi_dte/UPL/DTEUpload", self.endpoints.dte)
        };
        let response = self
            .http
            .post(url)
            .header("cookie", format!("TOKEN={token}"))
            .multipart(self.upload_form(envelope)?)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body = response.text().await.map_err(transport)?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            self.forget_token(boleta);
            return Err(SiiError::Transport(
                "the token was refused; a new one is taken".into(),
            ));
        }
        if status.is_server_error() {
            return Err(SiiError::Transport(format!("upload answered {status}")));
        }
        if boleta {
            let json: serde_json::Value = serde_json::from_str(&body)
                .map_err(|_| SiiError::Transport(format!("upload answered {status}: {body}")))?;
            match &json["trackid"] {
                serde_json::Value::Number(n) => Ok(n.to_string()),
                serde_json::Value::String(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(SiiError::Refused(format!(
                    "upload answered {status}: {body}"
                ))),
            }
        } else {
            match element_text(&body, "STATUS").as_deref() {
                Some("0") => element_text(&body, "TRACKID")
                    .ok_or_else(|| SiiError::Transport(format!("no TRACKID in {body}"))),
                Some(code) => {
                    if code == "5" {
                        // 5: not authenticated; the token expired.
                        self.forget_token(boleta);
                        return Err(SiiError::Transport("the token was refused".into()));
                    }
                    Err(SiiError::Refused(format!(
                        "DTEUpload STATUS {code}: {}",
                        element_text(&body, "DETAIL").unwrap_or_default()
                    )))
                }
                None => Err(SiiError::Transport(format!(
                    "upload answered {status}: {body}"
                ))),
            }
        }
    }

    async fn status(&self, track_id: &str, boleta: bool) -> Result<SiiStatus, SiiError> {
        let token = self.token(boleta).await?;
        let (rut, dv) = split_rut(&self.company.to_string());
        if boleta {
            let response = self
                .http
                .get(format!(
                    "{}/boleta.electronica.envio/{rut}-{dv}-{track_id}",
                    self.endpoints.boleta
                ))
                .header("cookie", format!("TOKEN={token}"))
                .send()
                .await
                .map_err(transport)?;
            let body = response.text().await.map_err(transport)?;
            let json: serde_json::Value = serde_json::from_str(&body)
                .map_err(|_| SiiError::Transport(format!("estado answered: {body}")))?;
            let estado = json["estado"].as_str().unwrap_or_default().to_string();
            if estado == "EPR" {
                let count = |field: &str| {
                    json["estadistica"]
                        .as_array()
                        .map(|rows| rows.iter().map(|r| r[field].as_u64().unwrap_or(0)).sum())
                        .unwrap_or(0)
                };
                let mut processed = processed(
                    count("aceptados"),
                    count("rechazados"),
                    count("reparos"),
                    "Envío procesado",
                );
                processed.named = named_boletas(&json);
                return Ok(SiiStatus::Processed(processed));
            }
            if IN_PROGRESS.contains(&estado.as_str()) {
                return Ok(SiiStatus::Pending { estado });
            }
            return Ok(SiiStatus::Rejected {
                detail: format!("{estado}: {}", json["glosa"].as_str().unwrap_or_default()),
            });
        }
        let doc = self
            .soap(
                "QueryEstUp.jws",
                "getEstUp",
                &[
                    ("RutCompania", &rut),
                    ("DvCompania", &dv),
                    ("TrackId", track_id),
                    ("Token", &token),
                ],
            )
            .await?;
        let estado = element_text(&doc, "ESTADO").unwrap_or_default();
        let glosa = element_text(&doc, "GLOSA").unwrap_or_default();
        let count = |field: &str| {
            element_text(&doc, field)
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        };
        Ok(match estado.as_str() {
            "EPR" => SiiStatus::Processed(processed(
                count("ACEPTADOS"),
                count("RECHAZADOS"),
                count("REPAROS"),
                &glosa,
            )),
            // Accepted with objections, counts unsaid.
            "RPR" => SiiStatus::Processed(Processed {
                objections: 1,
                summary: glosa,
                ..Processed::default()
            }),
            e if IN_PROGRESS.contains(&e) => SiiStatus::Pending { estado },
            "001" | "002" | "-3" => {
                // The token lapsed: take a new one next time.
                self.forget_token(boleta);
                return Err(SiiError::Transport(format!(
                    "status: token refused ({estado})"
                )));
            }
            _ => SiiStatus::Rejected {
                detail: format!("{estado}: {glosa}"),
            },
        })
    }
}
