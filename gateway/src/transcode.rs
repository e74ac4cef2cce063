//! JSON ⇄ protobuf for one route: path parameters, query parameters and the body become
//! the request message (proto3 JSON mapping), the reply message becomes JSON again.
//! Messages are dynamic (`prost-reflect`), so any RPC in the descriptor set is served
//! without per-route code.

use bytes::{Buf, Bytes};
use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, ReflectMessage, SerializeOptions,
};
use serde_json::{Map, Value};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

use crate::routes::{BodyMapping, Route};

const HTTP_BODY: &str = "google.api.HttpBody";

/// Why a request could not be turned into a message: always the client's fault (4xx).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The body is not JSON, or not JSON of the request's shape.
    #[error("{detail}")]
    Body {
        /// The field path where parsing failed, when known (`card.number`).
        field: Option<String>,
        /// What is wrong.
        detail: String,
    },
    /// A path or query parameter is unknown or malformed.
    #[error("parameter {field}: {detail}")]
    Parameter {
        /// The parameter.
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// The body is not `application/json` where JSON is expected.
    #[error("expected an application/json body, got {0}")]
    UnsupportedMediaType(String),
}

/// Builds the request message of `route`.
pub fn build_request(
    route: &Route,
    path_values: &[String],
    query: Option<&str>,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<DynamicMessage, RequestError> {
    let input = route.rpc.input();
    let mut object = Map::new();
    match &route.body {
        BodyMapping::None => {}
        // An HTML form (a browser sent back by a payment page posts one): its fields fill
        // the message as query parameters do.
        BodyMapping::Whole if is_form(content_type) => {
            for (name, value) in form_urlencoded::parse(&body) {
                set_parameter(&input, &mut object, &name, &value, false)?;
            }
        }
        BodyMapping::Whole => object = json_object(content_type, &body, None)?,
        BodyMapping::Field(field) => {
            let fd = input
                .get_field_by_name(field)
                .expect("validated when routes were built");
            let value = match fd.kind() {
                Kind::Message(m) if m.full_name() == HTTP_BODY => {
                    use base64::Engine as _;
                    let mut raw = Map::new();
                    raw.insert(
                        "contentType".into(),
                        Value::String(
                            content_type
                                .unwrap_or("application/octet-stream")
                                .to_string(),
                        ),
                    );
                    raw.insert(
                        "data".into(),
                        Value::String(base64::engine::general_purpose::STANDARD.encode(&body)),
                    );
                    Value::Object(raw)
                }
                _ => Value::Object(json_object(content_type, &body, Some(field))?),
            };
            object.insert(field.clone(), value);
        }
    }
    if let Some(query) = query {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            set_parameter(&input, &mut object, &name, &value, false)?;
        }
    }
    for (field, raw) in route.path_fields.iter().zip(path_values) {
        let value = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| RequestError::Parameter {
                field: field.clone(),
                detail: "is not valid UTF-8".into(),
            })?;
        set_parameter(&input, &mut object, field, &value, true)?;
    }
    let mut tracker = serde_path_to_error::Track::new();
    let value = Value::Object(object);
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(
        input,
        serde_path_to_error::Deserializer::new(value, &mut tracker),
        &options,
    )
    .map_err(|e| {
        let path = tracker.path().to_string();
        RequestError::Body {
            field: (path != "." && !path.is_empty()).then_some(path),
            detail: e.to_string(),
        }
    })
}

fn is_form(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

fn json_object(
    content_type: Option<&str>,
    body: &[u8],
    field: Option<&str>,
) -> Result<Map<String, Value>, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    if let Some(ct) = content_type {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(RequestError::UnsupportedMediaType(essence));
        }
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(RequestError::Body {
            field: field.map(str::to_string),
            detail: "the body must be a JSON object".into(),
        }),
        Err(e) => Err(RequestError::Body {
            field: None,
            detail: format!("malformed JSON: {e}"),
        }),
    }
}

/// Puts one path or query parameter into the JSON object, at its (possibly dotted) field
/// path, typed for the field: proto3 JSON accepts numbers as strings, but not booleans.
fn set_parameter(
    input: &MessageDescriptor,
    object: &mut Map<String, Value>,
    name: &str,
    raw: &str,
    from_path: bool,
) -> Result<(), RequestError> {
    let err = |detail: &str| RequestError::Parameter {
        field: name.to_string(),
        detail: detail.to_string(),
    };
    let mut message = input.clone();
    let mut target = object;
    let parts: Vec<&str> = name.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let fd = message
            .get_field_by_name(part)
            .or_else(|| message.get_field_by_json_name(part))
            .ok_or_else(|| err("is not a parameter of this route"))?;
        let key = fd.name().to_string();
        if i + 1 < parts.len() {
            let Kind::Message(inner) = fd.kind() else {
                return Err(err("is not a parameter of this route"));
            };
            message = inner;
            let slot = target
                .entry(key)
                .or_insert_with(|| Value::Object(Map::new()));
            target = match slot {
                Value::Object(map) => map,
                _ => return Err(err("conflicts with another parameter")),
            };
            continue;
        }
        let value = match fd.kind() {
            Kind::Bool => match raw {
                "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                _ => return Err(err("must be true or false")),
            },
            Kind::Message(m)
                if m.full_name() != "google.protobuf.Timestamp"
                    && m.full_name() != "google.protobuf.Duration" =>
            {
                return Err(err("cannot be given as a parameter"));
            }
            _ => Value::String(raw.to_string()),
        };
        if fd.is_list() {
            match target
                .entry(key)
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(items) => items.push(value),
                _ => return Err(err("conflicts with another parameter")),
            }
        } else if from_path {
            // The path wins over a body that names the same field.
            target.insert(key, value);
        } else if target.insert(key, value).is_some() {
            return Err(err("is given more than once"));
        }
    }
    Ok(())
}

/// The reply type the gateway answers with `303 See Other` (a browser redirect).
pub const SEE_OTHER: &str = "orderflow.options.v1.SeeOther";

/// Where an `orderflow.options.v1.SeeOther` reply sends the browser, if `message` is one.
pub fn see_other(message: &DynamicMessage) -> Option<String> {
    (message.descriptor().full_name() == SEE_OTHER).then(|| {
        message
            .get_field_by_name("location")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "/".into())
    })
}

/// A reply rendered for HTTP: its content type and bytes.
pub struct Rendered {
    /// `application/json`, or the `google.api.HttpBody` content type.
    pub content_type: String,
    /// The body.
    pub body: Bytes,
}

/// Renders a reply: `google.api.HttpBody` as its raw bytes, anything else as proto3 JSON
/// with lowerCamelCase names, default values included and 64-bit integers as numbers
/// (CLP amounts stay far below 2^53).
pub fn render_response(message: &DynamicMessage) -> Rendered {
    if message.descriptor().full_name() == HTTP_BODY {
        let content_type = message
            .get_field_by_name("content_type")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let data = message
            .get_field_by_name("data")
            .and_then(|v| v.as_bytes().cloned())
            .unwrap_or_default();
        return Rendered {
            content_type: if content_type.is_empty() {
                "application/octet-stream".into()
            } else {
                content_type
            },
            body: data,
        };
    }
    let options = SerializeOptions::new()
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut serializer, &options)
        .expect("a dynamic message always serialises to JSON");
    Rendered {
        content_type: "application/json".into(),
        body: Bytes::from(out),
    }
}

/// A tonic codec for dynamic messages: encodes the request as built, decodes the reply
/// by the RPC's output descriptor.
#[derive(Clone)]
pub struct DynamicCodec {
    output: MessageDescriptor,
}

impl DynamicCodec {
    /// A codec whose replies are `output` messages.
    pub fn new(output: MessageDescriptor) -> Self {
        Self { output }
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder {
            output: self.output.clone(),
        }
    }
}

/// Encodes dynamic messages.
pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.reserve(item.encoded_len());
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }
}

/// Decodes replies of one message type.
pub struct DynamicDecoder {
    output: MessageDescriptor,
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let bytes = src.copy_to_bytes(src.remaining());
        DynamicMessage::decode(self.output.clone(), bytes)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding the reply: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{Lookup, RouteTable};
    use http::Method;

    fn route<'a>(t: &'a RouteTable, method: Method, path: &str) -> (&'a Route, Vec<String>) {
        match t.lookup(&method, path) {
            Lookup::Found(r, v) => (r, v),
            _ => panic!("{path} not routed"),
        }
    }

    fn table() -> RouteTable {
        RouteTable::from_descriptor_set(proto::FILE_DESCRIPTOR_SET).unwrap()
    }

    #[test]
    fn body_fields_accept_both_spellings() {
        let t = table();
        let (r, v) = route(&t, Method::POST, "/v1/auth/refresh");
        for body in [r#"{"refreshToken":"abc"}"#, r#"{"refresh_token":"abc"}"#] {
            let msg =
                build_request(r, &v, None, Some("application/json"), Bytes::from(body)).unwrap();
            let decoded =
                proto::iam::v1::RefreshRequest::decode(msg.encode_to_vec().as_slice()).unwrap();
            assert_eq!(decoded.refresh_token, "abc");
        }
    }

    #[test]
    fn path_and_query_parameters_fill_the_message() {
        let t = table();
        let (r, v) = route(&t, Method::DELETE, "/v1/users/u%2D1/roles/admin");
        let msg = build_request(r, &v, None, None, Bytes::new()).unwrap();
        let decoded =
            proto::iam::v1::RevokeRoleRequest::decode(msg.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            (decoded.id.as_str(), decoded.role.as_str()),
            ("u-1", "admin")
        );

        let (r, v) = route(&t, Method::GET, "/v1/users");
        let msg = build_request(
            r,
            &v,
            Some("pageSize=5&pageToken=x%20y"),
            None,
            Bytes::new(),
        )
        .unwrap();
        let decoded =
            proto::iam::v1::ListUsersRequest::decode(msg.encode_to_vec().as_slice()).unwrap();
        assert_eq!((decoded.page_size, decoded.page_token.as_str()), (5, "x y"));
    }

    #[test]
    fn bad_input_names_the_problem() {
        let t = table();
        let (r, v) = route(&t, Method::POST, "/v1/auth/login");
        let err = build_request(
            r,
            &v,
            None,
            Some("application/json"),
            Bytes::from("{\"email\": "),
        )
        .unwrap_err();
        assert!(
            matches!(&err, RequestError::Body { detail, .. } if detail.starts_with("malformed JSON")),
            "{err:?}"
        );

        let err = build_request(
            r,
            &v,
            None,
            Some("application/json"),
            Bytes::from(r#"{"email": 5}"#),
        )
        .unwrap_err();
        assert!(
            matches!(&err, RequestError::Body { field: Some(f), .. } if f == "email"),
            "{err:?}"
        );

        let err = build_request(
            r,
            &v,
            None,
            Some("application/json"),
            Bytes::from(r#"{"emial": "a"}"#),
        )
        .unwrap_err();
        assert!(err.to_string().contains("emial"), "{err}");

        let err = build_request(r, &v, None, Some("text/plain"), Bytes::from("hi")).unwrap_err();
        assert_eq!(err, RequestError::UnsupportedMediaType("text/plain".into()));

        let (r, v) = route(&t, Method::GET, "/v1/users");
        let err = build_request(r, &v, Some("color=red"), None, Bytes::new()).unwrap_err();
        assert!(matches!(err, RequestError::Parameter { ref field, .. } if field == "color"));
        let err = build_request(r, &v, Some("pageSize=lots"), None, Bytes::new()).unwrap_err();
        assert!(
            matches!(err, RequestError::Body { field: Some(ref f), .. } if f == "page_size"),
            "{err:?}"
        );
    }

    #[test]
    fn replies_render_as_proto3_json() {
        let user = proto::iam::v1::User {
            id: "u1".into(),
            email: "a@b.cl".into(),
            roles: vec![],
            created_at: None,
        };
        let t = table();
        let desc = t
            .pool()
            .get_message_by_name("orderflow.iam.v1.User")
            .unwrap();
        let msg = DynamicMessage::decode(desc, user.encode_to_vec().as_slice()).unwrap();
        let rendered = render_response(&msg);
        let json: Value = serde_json::from_slice(&rendered.body).unwrap();
        assert_eq!(json["email"], "a@b.cl");
        assert_eq!(
            json["roles"],
            serde_json::json!([]),
            "defaults are included"
        );
        let pair = proto::iam::v1::TokenPair {
            expires_in: 900,
            ..Default::default()
        };
        let desc = t
            .pool()
            .get_message_by_name("orderflow.iam.v1.TokenPair")
            .unwrap();
        let msg = DynamicMessage::decode(desc, pair.encode_to_vec().as_slice()).unwrap();
        let json: Value = serde_json::from_slice(&render_response(&msg).body).unwrap();
        assert_eq!(
            json["expiresIn"], 900,
            "int64 as a JSON number, lowerCamelCase name"
        );
    }
}
