//! The OpenAPI 3.1 description of the REST API, generated from the same route table (and
//! so the same descriptor set and `google.api.http` annotations) that routes requests:
//! paths, path and query parameters, request and response schemas from the messages (in
//! the proto3 JSON mapping the transcoder speaks), the bearer security scheme, and the
//! problem+json error schema. Descriptions come from the proto comments.
//!
//! No crate generates OpenAPI from a dynamic descriptor pool, and the mapping is the
//! transcoder's own (int64 as numbers, enums by name), so it is written here.

use std::collections::BTreeMap;

use http::Method;
use platform::validate::{CONSTRAINTS, ValueRules};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use prost_types::FileDescriptorProto;
use serde_json::{Map, Value, json};

use crate::routes::{Access, BodyMapping, Route, RouteTable};

const PROBLEM: &str = "#/components/responses/Problem";

/// The error statuses every operation documents (as problem+json).
pub const ERROR_STATUSES: &[&str] = &[
    "400", "401", "403", "404", "409", "413", "415", "422", "429", "500", "503", "504",
];

/// Paths the gateway serves itself: (path, summary, content type of the answer).
pub const GATEWAY_PATHS: &[(&str, &str, &str)] = &[
    (
        "/health/live",
        "Liveness: the process serves requests",
        "application/json",
    ),
    (
        "/health/ready",
        "Readiness, with every named check (503 while one fails)",
        "application/json",
    ),
    (
        "/metrics",
        "Prometheus metrics",
        "text/plain; version=0.0.4",
    ),
    ("/openapi.json", "This document", "application/json"),
    (
        "/docs",
        "The API reference, rendered from this document",
        "text/html",
    ),
];

/// The leading comment attached to `path` in `file`, trimmed, if any.
fn comment(file: &FileDescriptorProto, path: &[i32]) -> Option<String> {
    let info = file.source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location
        .leading_comments
        .as_deref()
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A value's `buf.validate` rules as JSON Schema keywords (OpenAPI 3.1).
fn constrain(schema: &mut Value, rules: &ValueRules) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    match rules {
        ValueRules::String(s) => {
            if let Some(n) = s.min_len {
                map.insert("minLength".into(), json!(n));
            }
            if let Some(n) = s.max_len {
                map.insert("maxLength".into(), json!(n));
            }
            if let Some(p) = &s.pattern {
                map.insert("pattern".into(), json!(p.as_str()));
            }
            if s.email {
                map.insert("format".into(), json!("email"));
            }
            if s.uuid {
                map.insert("format".into(), json!("uuid"));
            }
            if !s.one_of.is_empty() {
                map.insert("enum".into(), json!(s.one_of));
            }
            if !s.examples.is_empty() {
                map.insert("examples".into(), json!(s.examples));
            }
        }
        ValueRules::Int(i) => {
            if let Some(n) = i.gte {
                map.insert("minimum".into(), json!(n));
            }
            if let Some(n) = i.gt {
                map.insert("exclusiveMinimum".into(), json!(n));
            }
            if let Some(n) = i.lte {
                map.insert("maximum".into(), json!(n));
            }
            if let Some(n) = i.lt {
                map.insert("exclusiveMaximum".into(), json!(n));
            }
            if !i.one_of.is_empty() {
                map.insert("enum".into(), json!(i.one_of));
            }
            if !i.examples.is_empty() {
                map.insert("examples".into(), json!(i.examples));
            }
        }
    }
}

fn describe(mut schema: Value, description: Option<String>) -> Value {
    if let (Some(d), Some(map)) = (description, schema.as_object_mut()) {
        map.insert("description".into(), Value::String(d));
    }
    schema
}

/// Collects component schemas while generating, so each message appears once.
#[derive(Default)]
struct Schemas {
    done: BTreeMap<String, Value>,
    /// Operation ids given so far (each must be unique in the document).
    operation_ids: std::collections::BTreeSet<String>,
}

impl Schemas {
    /// A `$ref` to `message`, generating its schema (and its fields' schemas) once.
    fn reference(&mut self, message: &MessageDescriptor) -> Value {
        if let Some(schema) = well_known(message.full_name()) {
            return schema;
        }
        let name = message.full_name().to_string();
        if !self.done.contains_key(&name) {
            self.done.insert(name.clone(), Value::Null);
            let schema = self.message(message);
            self.done.insert(name.clone(), schema);
        }
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    fn message(&mut self, message: &MessageDescriptor) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in message.fields() {
            let schema = self.field(&field);
            let description = comment(field.parent_file().file_descriptor_proto(), field.path());
            properties.insert(field.json_name().to_string(), describe(schema, description));
            // Omitting a field sends its zero value: required when a rule refuses that.
            if CONSTRAINTS
                .field(&field)
                .is_some_and(|rules| rules.rejects_zero(&field))
            {
                required.push(field.json_name().to_string());
            }
        }
        let mut schema = json!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        });
        if !required.is_empty() {
            schema["required"] = json!(required);
        }
        describe(
            schema,
            comment(
                message.parent_file().file_descriptor_proto(),
                message.path(),
            ),
        )
    }

    fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                unreachable!("map fields are map entries")
            };
            let value = entry.map_entry_value_field();
            return json!({ "type": "object", "additionalProperties": self.single(&value.kind()) });
        }
        let mut item = self.single(&field.kind());
        let rules = CONSTRAINTS.field(field);
        if let Some(value) = rules.and_then(|r| r.value.as_ref()) {
            constrain(&mut item, value);
        }
        if field.is_list() {
            let mut list = json!({ "type": "array", "items": item });
            if let Some(min) = rules.and_then(|r| r.min_items) {
                list["minItems"] = json!(min);
            }
            if let Some(max) = rules.and_then(|r| r.max_items) {
                list["maxItems"] = json!(max);
            }
            list
        } else {
            item
        }
    }

    fn single(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double => json!({ "type": "number", "format": "double" }),
            Kind::Float => json!({ "type": "number", "format": "float" }),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({ "type": "integer", "format": "int32" })
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX })
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({ "type": "integer", "format": "int64" })
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({ "type": "integer", "format": "int64", "minimum": 0 })
            }
            Kind::Bool => json!({ "type": "boolean" }),
            Kind::String => json!({ "type": "string" }),
            Kind::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
            Kind::Enum(e) => {
                let values: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
                describe(
                    json!({ "type": "string", "enum": values }),
                    comment(e.parent_file().file_descriptor_proto(), e.path()),
                )
            }
            Kind::Message(m) => self.reference(m),
        }
    }
}

/// Schemas of the well-known types, as their proto3 JSON forms.
fn well_known(full_name: &str) -> Option<Value> {
    let wrapper = |t: &str| json!({ "type": t });
    Some(match full_name {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" => {
            json!({ "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$", "examples": ["1.5s"] })
        }
        "google.protobuf.Empty" => json!({ "type": "object", "additionalProperties": false }),
        "google.protobuf.Struct" => json!({ "type": "object" }),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({ "type": "array" }),
        "google.protobuf.FieldMask" => json!({ "type": "string" }),
        "google.protobuf.StringValue" => wrapper("string"),
        "google.protobuf.BoolValue" => wrapper("boolean"),
        "google.protobuf.BytesValue" => json!({ "type": "string", "contentEncoding": "base64" }),
        "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value" => wrapper("integer"),
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => wrapper("number"),
        "google.protobuf.Any" => json!({
            "type": "object",
            "properties": { "@type": { "type": "string" } },
            "required": ["@type"],
        }),
        _ => return None,
    })
}

/// `GetProduct` → `Get product`.
fn summary_of(rpc: &str) -> String {
    let mut out = String::new();
    for (i, c) in rpc.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push(' ');
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Top-level request fields a client may pass in the query string: scalars, enums,
/// timestamps and lists of them, not bound by the path nor the body.
fn query_parameters(route: &Route, schemas: &mut Schemas) -> Vec<Value> {
    if route.body == BodyMapping::Whole {
        return Vec::new();
    }
    let bound: Vec<&str> = route
        .path_fields
        .iter()
        .map(|f| f.split('.').next().unwrap_or_default())
        .collect();
    let mut parameters = Vec::new();
    for field in route.rpc.input().fields() {
        if bound.contains(&field.name())
            || matches!(&route.body, BodyMapping::Field(b) if b == field.name())
            || field.is_map()
        {
            continue;
        }
        let queryable = match field.kind() {
            Kind::Message(m) => matches!(
                m.full_name(),
                "google.protobuf.Timestamp" | "google.protobuf.Duration"
            ),
            _ => true,
        };
        if !queryable {
            continue;
        }
        let mut parameter = json!({
            "name": field.json_name(),
            "in": "query",
            "required": false,
            "schema": schemas.field(&field),
        });
        if field.is_list() {
            parameter["explode"] = json!(true);
        }
        if let Some(d) = comment(field.parent_file().file_descriptor_proto(), field.path()) {
            parameter["description"] = json!(d);
        }
        parameters.push(parameter);
    }
    parameters
}

fn operation(route: &Route, schemas: &mut Schemas) -> Value {
    let rpc = &route.rpc;
    let service = rpc.parent_service();
    let mut parameters: Vec<Value> = route
        .path_fields
        .iter()
        .map(|field| {
            // The field's own schema, with its constraints (a UUID, a SKU's pattern…).
            let schema = rpc
                .input()
                .get_field_by_name(field)
                .filter(|f| f.kind() == Kind::String && !f.is_list())
                .map_or_else(|| json!({ "type": "string" }), |f| schemas.field(&f));
            json!({
                "name": field,
                "in": "path",
                "required": true,
                "schema": schema,
            })
        })
        .collect();
    parameters.extend(query_parameters(route, schemas));
    // The gateway's Idempotency-Key layer guards every POST but the credential endpoints.
    if route.method == Method::POST && !route.template.starts_with("/v1/auth/") {
        parameters.push(json!({ "$ref": "#/components/parameters/IdempotencyKey" }));
    }
    // An RPC on several routes (additional bindings): the first keeps the plain id.
    let mut operation_id = format!("{}_{}", service.name(), rpc.name());
    if !schemas.operation_ids.insert(operation_id.clone()) {
        operation_id = format!(
            "{operation_id}_{}",
            route.method.as_str().to_ascii_lowercase()
        );
        schemas.operation_ids.insert(operation_id.clone());
    }
    let mut op = json!({
        "operationId": operation_id,
        "summary": summary_of(rpc.name()),
        "tags": [route.upstream],
        "parameters": parameters,
        "responses": {
            "200": response_body(rpc.output(), schemas),
            "default": { "$ref": PROBLEM },
        },
        "x-grpc-method": route.grpc_path,
    });
    // Every refusal a client may meet on any route, each an RFC 9457 problem (the
    // gateway's status table in the README says when each happens).
    for status in ERROR_STATUSES {
        op["responses"][*status] = json!({ "$ref": PROBLEM });
    }
    let mut description =
        comment(rpc.parent_file().file_descriptor_proto(), rpc.path()).unwrap_or_default();
    match route.access {
        Access::Public => {
            op["security"] = json!([{}, { "bearerAuth": [] }]);
        }
        Access::Authenticated => {
            op["security"] = json!([{ "bearerAuth": [] }]);
        }
        Access::Admin => {
            op["security"] = json!([{ "bearerAuth": [] }]);
            if !description.is_empty() {
                description.push_str("\n\n");
            }
            description.push_str("Requires the `admin` role.");
        }
    }
    op["x-access"] = json!(match route.access {
        Access::Public => "public",
        Access::Authenticated => "authenticated",
        Access::Admin => "admin",
    });
    if !description.is_empty() {
        op["description"] = json!(description);
    }
    if let Some(body) = request_body(route, schemas) {
        op["requestBody"] = body;
    }
    if rpc.output().full_name() == crate::transcode::SEE_OTHER {
        // A browser route: 303 to the Location, never JSON; a form body is accepted.
        let responses = op["responses"].as_object_mut().expect("an object");
        responses.remove("200");
        responses.insert(
            "303".into(),
            json!({
                "description": "The browser goes on to the page in `Location`",
                "headers": { "Location": { "schema": { "type": "string" } } },
            }),
        );
        if let Some(content) = op
            .get_mut("requestBody")
            .and_then(|b| b.get_mut("content"))
            .and_then(Value::as_object_mut)
            && let Some(json_body) = content.get("application/json").cloned()
        {
            content.insert("application/x-www-form-urlencoded".into(), json_body);
        }
    }
    op
}

fn request_body(route: &Route, schemas: &mut Schemas) -> Option<Value> {
    let input = route.rpc.input();
    let schema = match &route.body {
        BodyMapping::None => return None,
        BodyMapping::Whole if route.path_fields.is_empty() => schemas.reference(&input),
        // The message without what the path binds (`sku` of PATCH /v1/products/{sku}): a
        // body need not, and should not, repeat it.
        BodyMapping::Whole => {
            let mut schema = schemas.message(&input);
            for bound in &route.path_fields {
                let Some(field) = input.get_field_by_name(bound) else {
                    continue;
                };
                let name = field.json_name();
                if let Some(properties) = schema["properties"].as_object_mut() {
                    properties.remove(name);
                }
                if let Some(required) = schema["required"].as_array_mut() {
                    required.retain(|r| r != name);
                    if required.is_empty() {
                        schema.as_object_mut().map(|m| m.remove("required"));
                    }
                }
            }
            schema
        }
        BodyMapping::Field(name) => {
            let field = input.get_field_by_name(name)?;
            if let Kind::Message(m) = field.kind()
                && m.full_name() == "google.api.HttpBody"
            {
                return Some(json!({
                    "required": true,
                    "content": { "*/*": { "schema": { "type": "string", "contentMediaType": "application/octet-stream" } } },
                }));
            }
            schemas.field(&field)
        }
    };
    Some(json!({
        "required": false,
        "content": { "application/json": { "schema": schema } },
    }))
}

fn response_body(output: MessageDescriptor, schemas: &mut Schemas) -> Value {
    if output.full_name() == "google.api.HttpBody" {
        return json!({
            "description": "The document, in the content type the service chose",
            "content": { "*/*": { "schema": { "type": "string", "contentMediaType": "application/octet-stream" } } },
        });
    }
    json!({
        "description": "OK",
        "content": { "application/json": { "schema": schemas.reference(&output) } },
    })
}

/// The OpenAPI 3.1 document for every route in `table` and the gateway's own paths.
pub fn document(table: &RouteTable) -> Value {
    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut tags: BTreeMap<String, Option<String>> = BTreeMap::new();
    for route in table.routes() {
        let service = route.rpc.parent_service();
        tags.entry(route.upstream.clone()).or_insert_with(|| {
            comment(
                service.parent_file().file_descriptor_proto(),
                service.path(),
            )
        });
        paths.entry(route.template.clone()).or_default().insert(
            route.method.as_str().to_ascii_lowercase(),
            operation(route, &mut schemas),
        );
    }
    for (path, summary, content_type) in GATEWAY_PATHS {
        let mut get = json!({
            "operationId": format!("gateway_{}", path.trim_start_matches('/').replace(['/', '.'], "_")),
            "summary": summary,
            "tags": ["gateway"],
            "security": [{}],
            "responses": {
                "200": { "description": "OK", "content": { (content_type.to_string()): { "schema": {} } } },
            },
        });
        if *path == "/health/ready" {
            get["responses"]["503"] =
                json!({ "description": "Not ready: the failing checks are named" });
        }
        paths
            .entry(path.to_string())
            .or_default()
            .insert("get".into(), get);
    }
    let tags: Vec<Value> = tags
        .into_iter()
        .map(|(name, description)| match description {
            Some(d) => json!({ "name": name, "description": d }),
            None => json!({ "name": name }),
        })
        .chain([json!({ "name": "gateway", "description": "Served by the gateway itself" })])
        .collect();
    let mut components_schemas: Map<String, Value> = schemas.done.into_iter().collect();
    components_schemas.insert("Problem".into(), problem_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "orderflow",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "An online shop in Chile: accounts, catalog, orders, payments and SII tax documents",
            "description": "REST/JSON in the proto3 JSON mapping (lowerCamelCase names, enums by name, 64-bit integers as numbers, timestamps in RFC 3339). Errors are RFC 9457 problem+json. Every POST outside /v1/auth accepts an `Idempotency-Key`.",
        },
        "servers": [{ "url": "/" }],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": components_schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token from `POST /v1/auth/login` (EdDSA, verified against `/.well-known/jwks.json`).",
                },
            },
            "parameters": {
                "IdempotencyKey": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": false,
                    "description": "Makes a retried POST safe: the first final answer for this key is replayed for 24 h (`Idempotent-Replayed: true`); the same key with a different request is 422, while the first is in flight 409.",
                    "schema": { "type": "string", "minLength": 1, "maxLength": 257 },
                },
            },
            "responses": {
                "Problem": {
                    "description": "An RFC 9457 problem: 4xx for the client's mistakes (naming the field), 5xx for ours",
                    "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } },
                },
            },
        },
    })
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["type", "title", "status"],
        "properties": {
            "type": { "type": "string", "format": "uri-reference" },
            "title": { "type": "string" },
            "status": { "type": "integer", "minimum": 400, "maximum": 599 },
            "detail": { "type": "string" },
            "instance": { "type": "string", "format": "uri-reference" },
            "errors": {
                "type": "array",
                "description": "The offending fields (lowerCamelCase JSON paths, or a header name)",
                "items": {
                    "type": "object",
                    "required": ["field", "detail"],
                    "properties": {
                        "field": { "type": "string" },
                        "detail": { "type": "string" },
                    },
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        document(&RouteTable::from_descriptor_set(proto::FILE_DESCRIPTOR_SET).unwrap())
    }

    #[test]
    fn every_route_is_described_with_its_access() {
        let table = RouteTable::from_descriptor_set(proto::FILE_DESCRIPTOR_SET).unwrap();
        let doc = document(&table);
        for route in table.routes() {
            let op = &doc["paths"][&route.template][route.method.as_str().to_ascii_lowercase()];
            assert!(
                op.is_object(),
                "{} {} missing",
                route.method,
                route.template
            );
            let secured = op["security"] == json!([{ "bearerAuth": [] }]);
            assert_eq!(
                secured,
                route.access != Access::Public,
                "{}",
                route.template
            );
        }
        for (path, _, _) in GATEWAY_PATHS {
            assert!(doc["paths"][path]["get"].is_object(), "{path}");
        }
    }

    #[test]
    fn parameters_and_schemas_follow_the_proto3_json_mapping() {
        let doc = doc();
        let list = &doc["paths"]["/v1/products"]["get"];
        let names: Vec<&str> = list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"pageSize") && names.contains(&"minPrice"),
            "{names:?}"
        );
        let get = &doc["paths"]["/v1/products/{sku}"]["get"];
        assert_eq!(get["parameters"][0]["name"], "sku");
        assert_eq!(get["parameters"][0]["in"], "path");
        let product = &doc["components"]["schemas"]["orderflow.catalog.v1.Product"];
        assert_eq!(product["properties"]["netPrice"]["type"], "integer");
        assert_eq!(product["properties"]["createdAt"]["format"], "date-time");
        assert_eq!(
            product["properties"]["netPrice"]["description"],
            "Unit price before IVA, in CLP pesos."
        );
        let create = &doc["paths"]["/v1/products"]["post"];
        assert_eq!(
            create["parameters"].as_array().unwrap().last().unwrap()["$ref"],
            "#/components/parameters/IdempotencyKey"
        );
        assert!(
            create["description"]
                .as_str()
                .unwrap_or_default()
                .contains("admin")
        );
        // Every $ref resolves.
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/components/").skip(1) {
            let target = &piece[..piece.find('"').unwrap()];
            let (kind, name) = target.split_once('/').unwrap();
            assert!(
                doc["components"][kind][name].is_object(),
                "dangling $ref {target}"
            );
        }
    }
}
