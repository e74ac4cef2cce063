//! `orderflow sii-sim`: a local SII. It serves the endpoints [`super::client`] calls, in
//! the SII's formats (SOAP seed / token / status, `DTEUpload`, the boleta REST API), and
//! judges an upload the way the SII does: a signed token from a seed it issued, the
//! envelope against the schemas and its signature, the `Caratula` against the sender, and
//! each document's signature, TED and TED-vs-document. Verdicts are revealed as the SII
//! does: `REC` at the first status query, then the final estado. Every document it accepts
//! is on its registry of acceptance and claims ([`super::registry`]), with its reception
//! date, under the law's rules: 8 days from that date, and no event that contradicts an
//! earlier one.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use platform::CancellationToken;
use rand::Rng as _;
use tokio::net::TcpListener;

use super::{
    protocol::{element_text, respuesta, soap_argument, soap_response},
    registry::{self, Action},
};
use crate::{verify, xml::latin1};

/// One upload and the verdict it will get.
#[derive(Debug, Clone)]
struct Envio {
    boleta: bool,
    company: String,
    sender: String,
    polls: u32,
    verdict: Verdict,
}

/// How the SII judged an upload.
#[derive(Debug, Clone, Default)]
struct Verdict {
    /// `EPR` (processed: see the counts), or a rejection of the whole upload (`RSC` schema,
    /// `RFR` signature, `RCT` carátula).
    estado: String,
    glosa: String,
    /// Per TipoDTE: (informed, accepted, rejected, with objections).
    counts: Vec<(i32, u32, u32, u32, u32)>,
    /// Per rejected or objected document: (tipo, folio, estado, reasons).
    details: Vec<(i32, i64, &'static str, Vec<String>)>,
    /// The documents received (not rejected): (tipo, folio, RUTRecep).
    received: Vec<(i32, i64, String)>,
}

/// A document on the registry: who it is addressed to, when the SII received it, and its
/// events.
#[derive(Debug, Clone)]
struct Registered {
    receptor: String,
    received_at: chrono::DateTime<chrono::Utc>,
    events: Vec<registry::Event>,
}

#[derive(Default)]
struct SimState {
    seeds: HashSet<String>,
    tokens: HashSet<String>,
    envios: HashMap<u64, Envio>,
    next_track: u64,
    /// The registry: (RUTEmisor, TipoDTE, Folio) → the document.
    documents: HashMap<(String, i32, i64), Registered>,
}

/// The simulator, bound.
pub struct SiiSimulator {
    listener: TcpListener,
    state: Arc<Mutex<SimState>>,
}

/// A hold on a running simulator's registry, for tests: what the SII cannot be asked to do
/// over its wire, such as having received a document days ago.
#[derive(Clone)]
pub struct SimRegistry {
    state: Arc<Mutex<SimState>>,
}

impl SimRegistry {
    /// Moves the SII's reception of a document `by` into the past; false when the SII has
    /// not received it.
    pub fn backdate(&self, rut_emisor: &str, tipo: i32, folio: i64, by: chrono::Duration) -> bool {
        let mut st = self.state.lock().expect("not poisoned");
        match st.documents.get_mut(&(rut_emisor.to_string(), tipo, folio)) {
            Some(document) => {
                document.received_at -= by;
                true
            }
            None => false,
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("a valid response")
}

fn xml(body: String) -> Reply {
    reply(StatusCode::OK, "text/xml; charset=utf-8", body)
}

fn random_digits(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| char::from(b'0' + rng.gen_range(0..10)))
        .collect()
}

fn random_token() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    (0..13)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect()
}

impl SiiSimulator {
    /// Binds `addr` (port 0 for any).
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("setting SII_SIM_ADDR: cannot bind {addr}: {e}"))?;
        let first_track = 4_000_000_000 + rand::thread_rng().gen_range(0..1_000_000_000);
        Ok(Self {
            listener,
            state: Arc::new(Mutex::new(SimState {
                next_track: first_track,
                ..SimState::default()
            })),
        })
    }

    /// Its registry, for tests.
    pub fn registry(&self) -> SimRegistry {
        SimRegistry {
            state: self.state.clone(),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// `http://host:port` of the simulator.
    pub fn url(&self) -> String {
        let addr = self.local_addr();
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        format!("http://{host}:{}", addr.port())
    }

    /// Serves until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "SII simulator listening");
        let state = self.state;
        platform::admin::serve_http(self.listener, "SII simulator", shutdown, move |request| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(state, request).await) }
        })
        .await
    }
}

async fn handle(state: Arc<Mutex<SimState>>, request: Request<Incoming>) -> Reply {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let token = request
        .headers()
        .get("cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| {
            c.split(';')
                .find_map(|kv| kv.trim().strip_prefix("TOKEN=").map(str::to_string))
        });
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|c| c.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, "text/plain", "unreadable body"),
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    let authenticated = token
        .as_ref()
        .is_some_and(|t| state.lock().expect("not poisoned").tokens.contains(t));
    match (method, path.as_str()) {
        (Method::POST, "/DTEWS/CrSeed.jws") => xml(soap_response("getSeed", &issue_seed(&state))),
        (Method::GET, "/recursos/v1/boleta.electronica.semilla") => xml(issue_seed(&state)),
        (Method::POST, "/DTEWS/GetTokenFromSeed.jws") => {
            let signed = soap_argument(&text, "pszXml").unwrap_or_default();
            xml(soap_response(
                "getToken",
                &issue_token(&state, &signed).await,
            ))
        }
        (Method::POST, "/recursos/v1/boleta.electronica.token") => {
            xml(issue_token(&state, &text).await)
        }
        (Method::POST, "/cgi_dte/UPL/DTEUpload") => {
            upload(&state, &content_type, body, authenticated, false).await
        }
        (Method::POST, "/recursos/v1/boleta.electronica.envio") => {
            upload(&state, &content_type, body, authenticated, true).await
        }
        (Method::POST, "/WSREGISTRORECLAMODTE/registroreclamodteservice") => {
            if !authenticated {
                return reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/xml; charset=utf-8",
                    registry::fault("Server", "Token invalido o no informado"),
                );
            }
            registry_call(&state, &text)
        }
        (Method::POST, "/DTEWS/QueryEstUp.jws") => {
            xml(soap_response("getEstUp", &soap_status(&state, &text)))
        }
        (Method::GET, p) if p.starts_with("/recursos/v1/boleta.electronica.envio/") => {
            if !authenticated {
                return reply(
                    StatusCode::UNAUTHORIZED,
                    "application/json",
                    "{\"error\":\"token\"}",
                );
            }
            boleta_status(&state, p.rsplit('/').next().unwrap_or(""))
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "no such SII service"),
    }
}

fn issue_seed(state: &Mutex<SimState>) -> String {
    let seed = random_digits(12);
    state
        .lock()
        .expect("not poisoned")
        .seeds
        .insert(seed.clone());
    respuesta(&format!("<SEMILLA>{seed}</SEMILLA>"), "<ESTADO>00</ESTADO>")
}

/// A token for a signed seed: the signature must verify and the seed must be one this SII
/// issued and nobody used.
async fn issue_token(state: &Mutex<SimState>, signed: &str) -> String {
    let signed_owned = signed.to_string();
    let verified = tokio::task::spawn_blocking(move || {
        let ctx = bergshamra::DsigContext::new_permissive(bergshamra::KeysManager::new());
        bergshamra::dsig::verify::verify(&ctx, &signed_owned).is_ok_and(|r| r.is_valid())
    })
    .await
    .unwrap_or(false);
    let seed = element_text(signed, "Semilla").unwrap_or_default();
    let mut st = state.lock().expect("not poisoned");
    if !verified {
        return respuesta(
            "",
            "<ESTADO>-07</ESTADO><GLOSA>Firma del token incorrecta</GLOSA>",
        );
    }
    if !st.seeds.remove(&seed) {
        return respuesta(
            "",
            "<ESTADO>-03</ESTADO><GLOSA>Semilla invalida o ya usada</GLOSA>",
        );
    }
    let token = random_token();
    st.tokens.insert(token.clone());
    respuesta(
        &format!("<TOKEN>{token}</TOKEN>"),
        "<ESTADO>00</ESTADO><GLOSA>Token Creado</GLOSA>",
    )
}

async fn multipart_fields(content_type: &str, body: Bytes) -> Option<HashMap<String, Bytes>> {
    let boundary = multer::parse_boundary(content_type).ok()?;
    let stream = futures::stream::once(async move { Ok::<_, Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut fields = HashMap::new();
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        fields.insert(name, field.bytes().await.ok()?);
    }
    Some(fields)
}

async fn upload(
    state: &Mutex<SimState>,
    content_type: &str,
    body: Bytes,
    authenticated: bool,
    boleta: bool,
) -> Reply {
    let refuse = |status: &str, detail: &str| {
        if boleta {
            let code = if status == "5" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            reply(
                code,
                "application/json",
                serde_json::json!({"estado": status, "glosa": detail}).to_string(),
            )
        } else {
            xml(format!(
                "<?xml version=\"1.0\"?><RECEPCIONDTE><STATUS>{status}</STATUS><DETAIL><ERROR>{detail}</ERROR></DETAIL></RECEPCIONDTE>"
            ))
        }
    };
    if !authenticated {
        return refuse("5", "Usuario no autenticado (token)");
    }
    let Some(fields) = multipart_fields(content_type, body).await else {
        return refuse("3", "Formulario incompleto");
    };
    let field = |name: &str| {
        fields
            .get(name)
            .map(|b| String::from_utf8_lossy(b).trim().to_string())
            .unwrap_or_default()
    };
    let Some(file) = fields.get("archivo").cloned() else {
        return refuse("3", "Falta el archivo");
    };
    let company = format!("{}-{}", field("rutCompany"), field("dvCompany"));
    let sender = format!("{}-{}", field("rutSender"), field("dvSender"));
    let expected_root = if boleta { "EnvioBOLETA" } else { "EnvioDTE" };
    let file_for_check = file.clone();
    let report = tokio::task::spawn_blocking(move || verify::verify(&file_for_check))
        .await
        .ok();
    let verdict = judge(
        report,
        expected_root,
        &latin1::decode(&file),
        &company,
        &sender,
    );
    let track = {
        let mut st = state.lock().expect("not poisoned");
        st.next_track += 1;
        let track = st.next_track;
        let received_at = chrono::Utc::now();
        for (tipo, folio, receptor) in &verdict.received {
            st.documents
                .entry((company.clone(), *tipo, *folio))
                .or_insert_with(|| Registered {
                    receptor: receptor.clone(),
                    received_at,
                    events: Vec::new(),
                });
        }
        st.envios.insert(
            track,
            Envio {
                boleta,
                company: company.clone(),
                sender: sender.clone(),
                polls: 0,
                verdict,
            },
        );
        track
    };
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S");
    if boleta {
        reply(
            StatusCode::OK,
            "application/json",
            serde_json::json!({
                "rut_emisor": company, "rut_envia": sender, "trackid": track,
                "fecha_recepcion": now.to_string(), "estado": "REC", "file": "envio.xml"
            })
            .to_string(),
        )
    } else {
        xml(format!(
            "<?xml version=\"1.0\"?><RECEPCIONDTE><RUTSENDER>{sender}</RUTSENDER><RUTCOMPANY>{company}</RUTCOMPANY>\
<FILE>envio.xml</FILE><TIMESTAMP>{now}</TIMESTAMP><STATUS>0</STATUS><TRACKID>{track}</TRACKID></RECEPCIONDTE>"
        ))
    }
}

/// The SII's checks of one upload.
fn judge(
    report: Option<Result<verify::Report, verify::VerifyError>>,
    expected_root: &str,
    text: &str,
    company: &str,
    sender: &str,
) -> Verdict {
    let reject = |estado: &str, glosa: String| Verdict {
        estado: estado.into(),
        glosa,
        ..Verdict::default()
    };
    let report = match report {
        Some(Ok(r)) => r,
        Some(Err(e)) => return reject("RSC", format!("Rechazado por Error en Schema: {e}")),
        None => return reject("RSC", "Rechazado por Error en Schema".into()),
    };
    if report.kind != expected_root {
        return reject(
            "RSC",
            format!(
                "Rechazado por Error en Schema: se esperaba {expected_root}, llegó {}",
                report.kind
            ),
        );
    }
    if let Some(bad) = report.documents.iter().find(|d| !d.schema.passed) {
        return reject(
            "RSC",
            format!("Rechazado por Error en Schema: {}", bad.schema.detail),
        );
    }
    if !report.envelope_signature.passed {
        return reject(
            "RFR",
            format!(
                "Rechazado por Error en Firma: {}",
                report.envelope_signature.detail
            ),
        );
    }
    let caratula = |name| element_text(text, name).unwrap_or_default();
    if caratula("RutEmisor") != company || caratula("RutEnvia") != sender {
        return reject(
            "RCT",
            format!(
                "Rechazado por Error en Carátula: RutEmisor {} / RutEnvia {} no corresponden al envío ({company} / {sender})",
                caratula("RutEmisor"),
                caratula("RutEnvia")
            ),
        );
    }
    let mut verdict = Verdict {
        estado: "EPR".into(),
        glosa: "Envio Procesado".into(),
        ..Verdict::default()
    };
    for (i, d) in report.documents.iter().enumerate() {
        let mut reasons: Vec<String> = [
            ("firma", &d.signature),
            ("TED", &d.ted),
            ("TED vs documento", &d.ted_consistency),
        ]
        .into_iter()
        .filter(|(_, c)| !c.passed)
        .map(|(what, c)| format!("{what}: {}", c.detail))
        .collect();
        let rejected = !reasons.is_empty();
        // A factura to a receptor without giro is accepted with an objection (reparo).
        let objected = !rejected
            && matches!(d.tipo_dte, 33 | 34)
            && nth_document(text, i).is_some_and(|doc| !doc.contains("<GiroRecep>"));
        if objected {
            reasons.push("Falta GiroRecep".into());
        }
        let row = match verdict.counts.iter_mut().find(|c| c.0 == d.tipo_dte) {
            Some(row) => row,
            None => {
                verdict.counts.push((d.tipo_dte, 0, 0, 0, 0));
                verdict.counts.last_mut().expect("just pushed")
            }
        };
        row.1 += 1;
        if rejected {
            row.3 += 1;
            verdict.details.push((d.tipo_dte, d.folio, "RCH", reasons));
        } else if objected {
            row.2 += 1;
            row.4 += 1;
            verdict.details.push((d.tipo_dte, d.folio, "RLV", reasons));
        } else {
            row.2 += 1;
        }
        if !rejected {
            verdict
                .received
                .push((d.tipo_dte, d.folio, d.rut_receptor.clone()));
        }
    }
    verdict
}

/// One call to the registry of acceptance and claims.
fn registry_call(state: &Mutex<SimState>, body: &str) -> Reply {
    let method = registry::requested_method(body).unwrap_or_default();
    let answer = |code: i32, description: &str| registry::Answer {
        code,
        description: description.to_string(),
    };
    let respond = |answer: registry::Answer, events: &[registry::Event]| {
        xml(registry::response(
            &method,
            &registry::answer_body(&answer, events),
        ))
    };
    let (rut_emisor, tipo, folio) = registry::requested_document(body);
    let Ok(rut) = platform::chile::Rut::parse(&rut_emisor) else {
        return respond(answer(1, "Rut Emisor Erróneo"), &[]);
    };
    let Ok(folio) = folio.parse::<i64>() else {
        return respond(answer(2, "Número de Folio Erróneo"), &[]);
    };
    let Some(tipo) = tipo
        .parse::<i32>()
        .ok()
        .filter(|t| registry::REGISTRY_TYPES.contains(t))
    else {
        return respond(
            answer(
                3,
                "Tipo de documento no corresponde (distinto de 33, 34, 43)",
            ),
            &[],
        );
    };
    let key = (rut.to_string(), tipo, folio);
    let mut st = state.lock().expect("not poisoned");
    let document = st.documents.get_mut(&key);
    let now = chrono::Utc::now();
    match method.as_str() {
        "consultarFechaRecepcionSii" => {
            let date = document
                .map(|d| registry::format_date(d.received_at))
                .unwrap_or_default();
            xml(registry::response(&method, &date))
        }
        "listarEventosHistDoc" => match document {
            None => respond(
                answer(registry::NOT_RECEIVED, "Documento no ha sido recibido"),
                &[],
            ),
            Some(d) if d.events.is_empty() => respond(
                answer(
                    registry::NO_EVENTS,
                    "Documento no presenta eventos de reclamos o acuse de recibo",
                ),
                &[],
            ),
            Some(d) => respond(
                answer(registry::EVENTS_LISTED, "Listado de eventos del documento"),
                &d.events,
            ),
        },
        "ingresarAceptacionReclamoDoc" => {
            let Some(action) = element_text(body, "accionDoc")
                .as_deref()
                .map(str::trim)
                .and_then(Action::from_code)
            else {
                return respond(answer(4, "Acción inválida"), &[]);
            };
            let Some(document) = document else {
                return respond(
                    answer(registry::NOT_RECEIVED, "Documento no ha sido recibido"),
                    &[],
                );
            };
            let (code, description) = register(document, action, now);
            respond(answer(code, &description), &[])
        }
        _ => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/xml; charset=utf-8",
            registry::fault("Client", &format!("Operación desconocida: {method}")),
        ),
    }
}

/// The registry's rules for one action on one document: the answer's code and text.
fn register(
    document: &mut Registered,
    action: Action,
    now: chrono::DateTime<chrono::Utc>,
) -> (i32, String) {
    let has = |codes: &[&str]| {
        document
            .events
            .iter()
            .find(|e| codes.contains(&e.code.as_str()))
            .map(|e| e.code.clone())
    };
    if has(&[action.code()]).is_some() {
        return (
            registry::ALREADY_REGISTERED,
            "Evento registrado previamente".into(),
        );
    }
    if now > document.received_at + chrono::Duration::days(crate::received::DEADLINE_DAYS) {
        return (
            registry::TOO_LATE,
            "Pasados 8 días después de la recepción no es posible registrar reclamos o eventos"
                .into(),
        );
    }
    let claimed = has(&["RCD", "RFP", "RFT"]);
    let refusal = match action {
        a if a.is_claim() => {
            if let Some(by) = claimed {
                Some((5, format!("DTE ya está reclamado por {by}")))
            } else if has(&["ACD"]).is_some() {
                Some((11, "No se puede reclamar DTE previamente aceptado".into()))
            } else if has(&["ERM"]).is_some() {
                Some((
                    13,
                    "No se puede reclamar DTE previamente registrado como acuso recibo mercadería"
                        .into(),
                ))
            } else {
                None
            }
        }
        Action::AcceptContent => claimed.map(|by| {
            (
                12,
                format!("No se puede dar por aceptado DTE previamente rechazado por {by}"),
            )
        }),
        _ => claimed.map(|by| {
            (
                6,
                format!(
                    "No se puede acusar recibo de mercadería de DTE previamente reclamado por {by}"
                ),
            )
        }),
    };
    if let Some(refusal) = refusal {
        return refusal;
    }
    document.events.push(registry::Event {
        code: action.code().into(),
        description: action.description().into(),
        // The registry names the company that acted: here, the document's receptor.
        responsible: document.receptor.clone(),
        at: registry::format_date(now),
    });
    (registry::OK, "Acción Completada OK".into())
}

/// The `i`-th `Documento` of an envelope's text.
fn nth_document(text: &str, i: usize) -> Option<&str> {
    let mut rest = text;
    for _ in 0..i {
        let at = rest.find("</Documento>")?;
        rest = &rest[at + "</Documento>".len()..];
    }
    let start = rest.find("<Documento")?;
    let end = rest[start..].find("</Documento>")? + start;
    Some(&rest[start..end])
}

/// The next status of an upload: `REC` at the first query, then the verdict.
fn poll(state: &Mutex<SimState>, track: u64, company: &str, boleta: bool) -> Option<Envio> {
    let mut st = state.lock().expect("not poisoned");
    let envio = st.envios.get_mut(&track)?;
    if envio.company != company || envio.boleta != boleta {
        return None;
    }
    envio.polls += 1;
    Some(envio.clone())
}

fn soap_status(state: &Mutex<SimState>, body: &str) -> String {
    let token = soap_argument(body, "Token").unwrap_or_default();
    if !state.lock().expect("not poisoned").tokens.contains(&token) {
        return respuesta("", "<ESTADO>001</ESTADO><GLOSA>TOKEN NO EXISTE</GLOSA>");
    }
    let company = format!(
        "{}-{}",
        soap_argument(body, "RutCompania").unwrap_or_default(),
        soap_argument(body, "DvCompania").unwrap_or_default()
    );
    let track: u64 = soap_argument(body, "TrackId")
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let Some(envio) = poll(state, track, &company, false) else {
        return respuesta("", "<ESTADO>-11</ESTADO><GLOSA>TRACKID NO EXISTE</GLOSA>");
    };
    if envio.polls == 1 {
        return respuesta(
            "",
            &format!("<TRACKID>{track}</TRACKID><ESTADO>REC</ESTADO><GLOSA>Envio Recibido</GLOSA>"),
        );
    }
    let v = &envio.verdict;
    let header = format!(
        "<TRACKID>{track}</TRACKID><ESTADO>{}</ESTADO><GLOSA>{}</GLOSA>",
        v.estado,
        quick_xml::escape::escape(v.glosa.as_str())
    );
    let sum = |f: fn(&(i32, u32, u32, u32, u32)) -> u32| v.counts.iter().map(f).sum::<u32>();
    let body = if v.estado == "EPR" {
        format!(
            "<TIPO_DOCTO>{}</TIPO_DOCTO><INFORMADOS>{}</INFORMADOS><ACEPTADOS>{}</ACEPTADOS><RECHAZADOS>{}</RECHAZADOS><REPAROS>{}</REPAROS>",
            v.counts.first().map_or(0, |c| c.0),
            sum(|c| c.1),
            sum(|c| c.2),
            sum(|c| c.3),
            sum(|c| c.4)
        )
    } else {
        String::new()
    };
    respuesta(&body, &header)
}

fn boleta_status(state: &Mutex<SimState>, id: &str) -> Reply {
    // {rut}-{dv}-{trackid}
    let mut parts = id.rsplitn(2, '-');
    let track: u64 = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    let company = parts.next().unwrap_or_default().to_string();
    let Some(envio) = poll(state, track, &company, true) else {
        return reply(
            StatusCode::NOT_FOUND,
            "application/json",
            "{\"error\":\"trackid no existe\"}",
        );
    };
    let v = &envio.verdict;
    let json = if envio.polls == 1 {
        serde_json::json!({"rut_emisor": envio.company, "rut_envia": envio.sender, "trackid": track, "estado": "REC"})
    } else {
        serde_json::json!({
            "rut_emisor": envio.company, "rut_envia": envio.sender, "trackid": track,
            "estado": v.estado, "glosa": v.glosa,
            "estadistica": v.counts.iter().map(|c| serde_json::json!({
                "tipo": c.0, "informados": c.1, "aceptados": c.2, "rechazados": c.3, "reparos": c.4
            })).collect::<Vec<_>>(),
            "detalle_rep_rech": v.details.iter().map(|d| serde_json::json!({
                "tipo": d.0, "folio": d.1, "estado": d.2,
                "error": d.3.iter().map(|r| serde_json::json!({"descripcion": r})).collect::<Vec<_>>()
            })).collect::<Vec<_>>(),
        })
    };
    reply(StatusCode::OK, "application/json", json.to_string())
}
