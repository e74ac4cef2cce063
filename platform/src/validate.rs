//! Field constraints declared once, in the protos, with protovalidate's `buf.validate`
//! annotations (`[(buf.validate.field).string = {email: true}]`): enforced by every
//! service in front of its handlers ([`ValidateLayer`], installed by
//! [`crate::grpc_server::GrpcServer`]) and published by the gateway in the OpenAPI schemas
//! (`format`, `pattern`, `minLength`, `maximum`, `required`…), so what the document calls
//! valid is what the services accept. Rules that need the database (a unique email, the
//! stock) stay in the services.
//!
//! Evaluated here rather than by the `prost-protovalidate` crate: that crate generates its
//! rule types with prost-build at build time, which needs a system `protoc`, and building
//! orderflow must need nothing but Rust. This reads the same annotations through
//! prost-reflect from our descriptor set (compiled by protox) and implements the standard
//! rules our protos use, with protovalidate's semantics (implicit-presence fields are
//! checked even when zero unless `ignore = IGNORE_IF_ZERO_VALUE`; `optional` fields only
//! when set; one difference: `email` forgives surrounding spaces). A rule it does not
//! implement (CEL included) makes [`Constraints::from_pool`] fail, so no proto can declare
//! a constraint that silently goes unchecked.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock},
};

use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor,
    ReflectMessage as _, Value,
};

/// One broken rule: the field's path (`lines[0].quantity`), the rule's id
/// (`int64.lte`, protovalidate's spelling) and what it asks, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field, dotted, with list indexes: `buyer.rut`, `lines[2].sku`.
    pub field: String,
    /// The rule, e.g. `string.min_len`.
    pub rule: String,
    /// What the value must be, e.g. `must be at least 12 characters`.
    pub message: String,
}

/// String rules (`buf.validate.StringRules`).
#[derive(Debug, Clone, Default)]
pub struct StringRules {
    /// Characters, at least.
    pub min_len: Option<u64>,
    /// Characters, at most.
    pub max_len: Option<u64>,
    /// An RE2-style pattern (Rust's regex dialect agrees on what our protos use).
    pub pattern: Option<regex::Regex>,
    /// An email address.
    pub email: bool,
    /// A hyphenated UUID.
    pub uuid: bool,
    /// One of these values.
    pub one_of: Vec<String>,
    /// Example values (documentation only).
    pub examples: Vec<String>,
}

/// Integer rules (`buf.validate.Int32Rules` and `Int64Rules`).
#[derive(Debug, Clone, Default)]
pub struct IntRules {
    /// Greater than.
    pub gt: Option<i64>,
    /// At least.
    pub gte: Option<i64>,
    /// Less than.
    pub lt: Option<i64>,
    /// At most.
    pub lte: Option<i64>,
    /// One of these values.
    pub one_of: Vec<i64>,
    /// Example values (documentation only).
    pub examples: Vec<i64>,
}

/// What one value must be.
#[derive(Debug, Clone)]
pub enum ValueRules {
    /// A string.
    String(StringRules),
    /// An int32 or int64.
    Int(IntRules),
}

/// A field's rules, as declared with `(buf.validate.field)`.
#[derive(Debug, Clone, Default)]
pub struct FieldRules {
    /// The field must be set (non-zero for an implicit-presence field).
    pub required: bool,
    /// The zero value passes whatever the other rules say.
    pub ignore_if_zero: bool,
    /// Rules on the value (each element's, for a list with `repeated.items`).
    pub value: Option<ValueRules>,
    /// For a list: items, at least.
    pub min_items: Option<u64>,
    /// For a list: items, at most.
    pub max_items: Option<u64>,
}

impl FieldRules {
    /// Whether the field's zero value (an omitted JSON property) breaks a rule: such a
    /// field is `required` in the OpenAPI schema.
    pub fn rejects_zero(&self, field: &FieldDescriptor) -> bool {
        if field.supports_presence() && !field.is_list() {
            return self.required;
        }
        if self.required {
            return true;
        }
        if self.ignore_if_zero {
            return false;
        }
        if field.is_list() {
            return self.min_items.is_some_and(|n| n > 0);
        }
        match &self.value {
            Some(ValueRules::String(s)) => !check_string(s, "").is_empty(),
            Some(ValueRules::Int(i)) => !check_int(i, 0).is_empty(),
            None => false,
        }
    }
}

/// Every annotated field of a descriptor pool, read once.
pub struct Constraints {
    fields: HashMap<String, FieldRules>,
    /// Messages with rules somewhere inside them (themselves or nested): the only ones
    /// [`Constraints::validate`] walks.
    checked: HashMap<String, bool>,
}

/// The constraints of orderflow's protos.
pub static CONSTRAINTS: LazyLock<Arc<Constraints>> = LazyLock::new(|| {
    let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET)
        .expect("the compiled descriptor set decodes");
    Arc::new(Constraints::from_pool(&pool).unwrap_or_else(|e| panic!("buf.validate rules: {e}")))
});

fn unsupported(field: &FieldDescriptor, rule: &str) -> String {
    format!(
        "{}: the rule `{rule}` is not implemented by platform::validate (implement it there or use a supported one)",
        field.full_name()
    )
}

fn u64_of(v: &Value) -> Option<u64> {
    v.as_u64()
}

fn string_rules(field: &FieldDescriptor, rules: &DynamicMessage) -> Result<StringRules, String> {
    let mut out = StringRules::default();
    for (f, v) in rules.fields() {
        match f.name() {
            "min_len" => out.min_len = u64_of(v),
            "max_len" => out.max_len = u64_of(v),
            "pattern" => {
                let p = v.as_str().unwrap_or_default();
                out.pattern = Some(
                    regex::Regex::new(p)
                        .map_err(|e| format!("{}: pattern {p:?}: {e}", field.full_name()))?,
                );
            }
            "email" => out.email = v.as_bool().unwrap_or(false),
            "uuid" => out.uuid = v.as_bool().unwrap_or(false),
            "in" => {
                out.one_of = v
                    .as_list()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            }
            "example" => {
                out.examples = v
                    .as_list()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            }
            other => return Err(unsupported(field, &format!("string.{other}"))),
        }
    }
    Ok(out)
}

fn int_rules(field: &FieldDescriptor, rules: &DynamicMessage) -> Result<IntRules, String> {
    let int = |v: &Value| v.as_i64().or_else(|| v.as_i32().map(i64::from));
    let ints = |v: &Value| -> Vec<i64> {
        v.as_list()
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n.as_i64().or_else(|| n.as_i32().map(i64::from)))
            .collect()
    };
    let mut out = IntRules::default();
    for (f, v) in rules.fields() {
        match f.name() {
            "gt" => out.gt = int(v),
            "gte" => out.gte = int(v),
            "lt" => out.lt = int(v),
            "lte" => out.lte = int(v),
            "in" => out.one_of = ints(v),
            "example" => out.examples = ints(v),
            other => return Err(unsupported(field, &format!("int.{other}"))),
        }
    }
    Ok(out)
}

/// Reads a `FieldRules` message (a field's, or a list's `items`).
fn field_rules(
    field: &FieldDescriptor,
    rules: &DynamicMessage,
    list_item: bool,
) -> Result<FieldRules, String> {
    let mut out = FieldRules::default();
    for (f, v) in rules.fields() {
        match (f.name(), v) {
            ("required", v) => out.required = v.as_bool().unwrap_or(false),
            // IGNORE_IF_ZERO_VALUE.
            ("ignore", Value::EnumNumber(1)) => out.ignore_if_zero = true,
            ("ignore", Value::EnumNumber(0)) => {}
            ("string", Value::Message(m)) if field_kind_is(field, "string") => {
                out.value = Some(ValueRules::String(string_rules(field, m)?))
            }
            ("int32" | "int64", Value::Message(m)) if field_kind_is(field, f.name()) => {
                out.value = Some(ValueRules::Int(int_rules(field, m)?))
            }
            ("repeated", Value::Message(m)) if field.is_list() && !list_item => {
                for (rf, rv) in m.fields() {
                    match (rf.name(), rv) {
                        ("min_items", v) => out.min_items = u64_of(v),
                        ("max_items", v) => out.max_items = u64_of(v),
                        ("items", Value::Message(items)) => {
                            let item = field_rules(field, items, true)?;
                            if item.required || item.ignore_if_zero {
                                return Err(unsupported(field, "repeated.items.required/ignore"));
                            }
                            out.value = item.value;
                        }
                        (other, _) => {
                            return Err(unsupported(field, &format!("repeated.{other}")));
                        }
                    }
                }
            }
            (other, _) => return Err(unsupported(field, other)),
        }
    }
    Ok(out)
}

fn field_kind_is(field: &FieldDescriptor, rules: &str) -> bool {
    matches!(
        (field.kind(), rules),
        (Kind::String, "string") | (Kind::Int32, "int32") | (Kind::Int64, "int64")
    )
}

impl Constraints {
    /// Reads every `(buf.validate.field)` annotation in `pool`. Fails on a rule this
    /// module does not implement, on a message or oneof rule, and on a rule that does not
    /// fit its field's type.
    pub fn from_pool(pool: &DescriptorPool) -> Result<Self, String> {
        let mut fields = HashMap::new();
        let extension = |name: &str| pool.get_extension_by_name(name);
        let field_ext = extension("buf.validate.field");
        let message_ext = extension("buf.validate.message");
        let oneof_ext = extension("buf.validate.oneof");
        let set = |options: DynamicMessage, ext: &Option<ExtensionDescriptor>| {
            ext.as_ref().is_some_and(|e| options.has_extension(e))
        };
        for message in pool.all_messages() {
            if message.package_name().starts_with("buf.validate") {
                continue;
            }
            if set(message.options(), &message_ext) {
                return Err(format!(
                    "{}: message rules are not implemented by platform::validate",
                    message.full_name()
                ));
            }
            for oneof in message.oneofs() {
                if set(oneof.options(), &oneof_ext) {
                    return Err(format!(
                        "{}: oneof rules are not implemented by platform::validate",
                        oneof.full_name()
                    ));
                }
            }
            let Some(ext) = &field_ext else { continue };
            for field in message.fields() {
                let options = field.options();
                if !options.has_extension(ext) {
                    continue;
                }
                let Value::Message(rules) = options.get_extension(ext).into_owned() else {
                    continue;
                };
                fields.insert(
                    field.full_name().to_string(),
                    field_rules(&field, &rules, false)?,
                );
            }
        }
        let mut constraints = Self {
            fields,
            checked: HashMap::new(),
        };
        for message in pool.all_messages() {
            constraints.mark(&message, &mut Vec::new());
        }
        Ok(constraints)
    }

    /// Whether `message` has rules in it or in a message it holds (cycles end it).
    fn mark(&mut self, message: &MessageDescriptor, path: &mut Vec<String>) -> bool {
        let name = message.full_name().to_string();
        if let Some(done) = self.checked.get(&name) {
            return *done;
        }
        if path.contains(&name) {
            return false;
        }
        path.push(name.clone());
        let mut any = false;
        for field in message.fields() {
            any |= self.fields.contains_key(field.full_name());
            if let Kind::Message(inner) = field.kind()
                && !field.is_map()
            {
                any |= self.mark(&inner, path);
            }
        }
        path.pop();
        self.checked.insert(name, any);
        any
    }

    /// The rules declared on `field`, if any.
    pub fn field(&self, field: &FieldDescriptor) -> Option<&FieldRules> {
        self.fields.get(field.full_name())
    }

    /// Whether messages of this type have anything to check.
    pub fn checks(&self, message: &MessageDescriptor) -> bool {
        self.checked
            .get(message.full_name())
            .copied()
            .unwrap_or(false)
    }

    /// Every rule `message` breaks, in field order (empty when it is valid).
    pub fn validate(&self, message: &DynamicMessage) -> Vec<Violation> {
        let mut out = Vec::new();
        self.walk(message, "", &mut out);
        out
    }

    fn walk(&self, message: &DynamicMessage, prefix: &str, out: &mut Vec<Violation>) {
        if !self.checks(&message.descriptor()) {
            return;
        }
        for field in message.descriptor().fields() {
            let path = format!("{prefix}{}", field.name());
            let value = message.get_field(&field);
            if let Some(rules) = self.field(&field) {
                self.check_field(&field, rules, message, &value, &path, out);
            }
            if let Kind::Message(_) = field.kind()
                && !field.is_map()
            {
                match value.as_ref() {
                    Value::List(items) => {
                        for (i, item) in items.iter().enumerate() {
                            if let Value::Message(m) = item {
                                self.walk(m, &format!("{path}[{i}]."), out);
                            }
                        }
                    }
                    Value::Message(m) if message.has_field(&field) => {
                        self.walk(m, &format!("{path}."), out)
                    }
                    _ => {}
                }
            }
        }
    }

    fn check_field(
        &self,
        field: &FieldDescriptor,
        rules: &FieldRules,
        message: &DynamicMessage,
        value: &Value,
        path: &str,
        out: &mut Vec<Violation>,
    ) {
        let mut push = |field: String, rule: &str, message: String| {
            out.push(Violation {
                field,
                rule: rule.to_string(),
                message,
            })
        };
        if field.is_list() {
            let items = value.as_list().unwrap_or_default();
            if let Some(min) = rules.min_items
                && (items.len() as u64) < min
            {
                push(
                    path.to_string(),
                    "repeated.min_items",
                    format!(
                        "must have at least {min} item{}",
                        if min == 1 { "" } else { "s" }
                    ),
                );
            }
            if let Some(max) = rules.max_items
                && (items.len() as u64) > max
            {
                push(
                    path.to_string(),
                    "repeated.max_items",
                    format!("must have at most {max} items"),
                );
            }
            if let Some(value_rules) = &rules.value {
                for (i, item) in items.iter().enumerate() {
                    for (rule, text) in check_value(value_rules, item) {
                        push(format!("{path}[{i}]"), rule, text);
                    }
                }
            }
            return;
        }
        let set = message.has_field(field);
        if rules.required && !set {
            push(path.to_string(), "required", "is required".into());
            return;
        }
        // An `optional` field is checked only when present; an implicit-presence one
        // always, unless its zero value is to be ignored.
        if !set && (field.supports_presence() || rules.ignore_if_zero) {
            return;
        }
        if let Some(value_rules) = &rules.value {
            for (rule, text) in check_value(value_rules, value) {
                push(path.to_string(), rule, text);
            }
        }
    }
}

fn check_value(rules: &ValueRules, value: &Value) -> Vec<(&'static str, String)> {
    match rules {
        ValueRules::String(s) => check_string(s, value.as_str().unwrap_or_default()),
        ValueRules::Int(i) => check_int(
            i,
            value
                .as_i64()
                .or_else(|| value.as_i32().map(i64::from))
                .unwrap_or_default(),
        ),
    }
}

fn check_string(rules: &StringRules, s: &str) -> Vec<(&'static str, String)> {
    let mut broken = Vec::new();
    let chars = s.chars().count() as u64;
    if let Some(min) = rules.min_len
        && chars < min
    {
        broken.push((
            "string.min_len",
            if min == 1 {
                "is required".to_string()
            } else {
                format!("must be at least {min} characters")
            },
        ));
    }
    if let Some(max) = rules.max_len
        && chars > max
    {
        broken.push((
            "string.max_len",
            format!("must be at most {max} characters"),
        ));
    }
    if let Some(pattern) = &rules.pattern
        && !pattern.is_match(s)
    {
        broken.push((
            "string.pattern",
            match rules.examples.first() {
                Some(example) => format!("must look like {example}"),
                None => format!("must match {}", pattern.as_str()),
            },
        ));
    }
    // Surrounding spaces are forgiven (one difference from protovalidate's `email`): a
    // pasted address often carries them, and IAM trims and lowercases what it stores.
    if rules.email && !email_address::EmailAddress::is_valid(s.trim()) {
        broken.push(("string.email", "must be a valid email address".into()));
    }
    if rules.uuid && !(s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()) {
        broken.push(("string.uuid", "must be a UUID".into()));
    }
    if !rules.one_of.is_empty() && !rules.one_of.iter().any(|v| v == s) {
        let allowed: Vec<&str> = rules
            .one_of
            .iter()
            .filter(|v| !v.is_empty())
            .map(String::as_str)
            .collect();
        broken.push((
            "string.in",
            format!("must be one of {}", allowed.join(", ")),
        ));
    }
    broken
}

fn check_int(rules: &IntRules, n: i64) -> Vec<(&'static str, String)> {
    let mut broken = Vec::new();
    if let Some(gt) = rules.gt
        && n <= gt
    {
        broken.push(("int.gt", format!("must be greater than {gt}")));
    }
    if let Some(gte) = rules.gte
        && n < gte
    {
        broken.push(("int.gte", format!("must be at least {gte}")));
    }
    if let Some(lt) = rules.lt
        && n >= lt
    {
        broken.push(("int.lt", format!("must be less than {lt}")));
    }
    if let Some(lte) = rules.lte
        && n > lte
    {
        broken.push(("int.lte", format!("must be at most {lte}")));
    }
    if !rules.one_of.is_empty() && !rules.one_of.contains(&n) {
        let allowed: Vec<String> = rules
            .one_of
            .iter()
            .filter(|v| **v != 0)
            .map(i64::to_string)
            .collect();
        broken.push(("int.in", format!("must be one of {}", allowed.join(", "))));
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(name: &str, json: &str) -> DynamicMessage {
        let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
        let descriptor = pool.get_message_by_name(name).unwrap();
        let mut de = serde_json::Deserializer::from_str(json);
        DynamicMessage::deserialize(descriptor, &mut de).unwrap()
    }

    fn broken(name: &str, json: &str) -> Vec<(String, String)> {
        CONSTRAINTS
            .validate(&message(name, json))
            .into_iter()
            .map(|v| (v.field, v.rule))
            .collect()
    }

    #[test]
    fn every_annotation_in_the_protos_is_one_this_module_checks() {
        // Building them fails on any rule not implemented here.
        let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
        let c = Constraints::from_pool(&pool).unwrap();
        assert!(c.fields.len() >= 40, "{}", c.fields.len());
    }

    #[test]
    fn strings_numbers_and_lists_are_checked_with_their_paths() {
        let register = "orderflow.iam.v1.RegisterRequest";
        assert!(
            broken(
                register,
                r#"{"email":"ana@example.cl","password":"correct horse battery"}"#
            )
            .is_empty()
        );
        assert_eq!(
            broken(register, r#"{"email":"ana","password":"short"}"#),
            vec![
                ("email".to_string(), "string.email".to_string()),
                ("password".to_string(), "string.min_len".to_string())
            ]
        );
        let place = "orderflow.order.v1.PlaceOrderRequest";
        assert_eq!(
            broken(place, r#"{"lines":[]}"#),
            vec![("lines".to_string(), "repeated.min_items".to_string())]
        );
        assert_eq!(
            broken(
                place,
                r#"{"lines":[{"sku":"A","quantity":1},{"sku":"B","quantity":0}],"documentType":"boleto"}"#
            ),
            vec![
                ("lines[1].quantity".to_string(), "int.gte".to_string()),
                ("document_type".to_string(), "string.in".to_string())
            ]
        );
        // A buyer's RUT may be left out (a boleta) but not malformed.
        assert!(broken(place, r#"{"lines":[{"sku":"A","quantity":1}],"buyer":{}}"#).is_empty());
        assert_eq!(
            broken(
                place,
                r#"{"lines":[{"sku":"A","quantity":1}],"buyer":{"rut":"abc"}}"#
            ),
            vec![("buyer.rut".to_string(), "string.pattern".to_string())]
        );
    }

    #[test]
    fn an_optional_field_is_checked_only_when_present() {
        let update = "orderflow.catalog.v1.UpdateProductRequest";
        assert!(broken(update, r#"{"sku":"CAFE-1"}"#).is_empty());
        assert_eq!(
            broken(update, r#"{"sku":"CAFE-1","netPrice":0}"#),
            vec![("net_price".to_string(), "int.gt".to_string())]
        );
        assert_eq!(
            broken(update, r#"{"sku":"cafe 1"}"#),
            vec![("sku".to_string(), "string.pattern".to_string())]
        );
    }

    #[test]
    fn a_zero_value_is_required_exactly_when_a_rule_refuses_it() {
        let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
        let field = |m: &str, f: &str| {
            pool.get_message_by_name(m)
                .unwrap()
                .get_field_by_name(f)
                .unwrap()
        };
        let rejects = |m: &str, f: &str| {
            let fd = field(m, f);
            CONSTRAINTS.field(&fd).is_some_and(|r| r.rejects_zero(&fd))
        };
        assert!(rejects("orderflow.iam.v1.RegisterRequest", "email"));
        assert!(rejects("orderflow.order.v1.PlaceOrderRequest", "lines"));
        assert!(!rejects(
            "orderflow.order.v1.PlaceOrderRequest",
            "document_type"
        ));
        assert!(!rejects("orderflow.order.v1.Buyer", "rut"));
        assert!(!rejects(
            "orderflow.catalog.v1.UpdateProductRequest",
            "net_price"
        ));
        assert!(!rejects(
            "orderflow.catalog.v1.ListProductsRequest",
            "page_size"
        ));
    }
}

/// The request message type of every orderflow RPC that has constraints, by gRPC path.
#[cfg(feature = "grpc-server")]
static CHECKED_INPUTS: LazyLock<HashMap<String, MessageDescriptor>> = LazyLock::new(|| {
    let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET)
        .expect("the compiled descriptor set decodes");
    let mut inputs = HashMap::new();
    for service in pool.services() {
        for method in service.methods() {
            if CONSTRAINTS.checks(&method.input()) && !method.is_client_streaming() {
                inputs.insert(
                    format!("/{}/{}", service.full_name(), method.name()),
                    method.input(),
                );
            }
        }
    }
    inputs
});

/// INVALID_ARGUMENT naming every broken rule as a `google.rpc.BadRequest` field violation
/// (the gateway turns them into problem+json `errors[]`).
pub fn invalid_argument(violations: &[Violation]) -> tonic::Status {
    use tonic_types::{ErrorDetails, FieldViolation, StatusExt as _};
    let summary = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.message))
        .collect::<Vec<_>>()
        .join("; ");
    let details = ErrorDetails::with_bad_request(
        violations
            .iter()
            .map(|v| FieldViolation::new(v.field.clone(), v.message.clone()))
            .collect::<Vec<_>>(),
    );
    tonic::Status::with_error_details(tonic::Code::InvalidArgument, summary, details)
}

/// Checks every request of an RPC with constraints before its handler runs.
#[cfg(feature = "grpc-server")]
#[derive(Clone, Copy, Default)]
pub struct ValidateLayer;

#[cfg(feature = "grpc-server")]
impl<S> tower::Layer<S> for ValidateLayer {
    type Service = Validate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Validate { inner }
    }
}

/// The service made by [`ValidateLayer`]: reads the request's one gRPC message, decodes
/// it by the RPC's input type and answers INVALID_ARGUMENT for what breaks a rule;
/// otherwise hands the same bytes on. Requests of RPCs without constraints, compressed
/// messages (tonic refuses those itself) and streams pass untouched.
#[cfg(feature = "grpc-server")]
#[derive(Clone)]
pub struct Validate<S> {
    inner: S,
}

#[cfg(feature = "grpc-server")]
impl<S, ResBody> tower::Service<http::Request<tonic::body::Body>> for Validate<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        use http_body_util::BodyExt as _;
        let Some(input) = CHECKED_INPUTS.get(req.uri().path()).cloned() else {
            return Box::pin(self.inner.call(req));
        };
        // The service that was made ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(status) => return Ok(status.into_http::<ResBody>()),
            };
            // One uncompressed gRPC frame: flag 0, a 4-byte length, the message.
            if bytes.len() >= 5 && bytes[0] == 0 {
                let length = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
                if bytes.len() == 5 + length
                    && let Ok(message) = DynamicMessage::decode(input, &bytes[5..])
                {
                    let violations = CONSTRAINTS.validate(&message);
                    if !violations.is_empty() {
                        metrics::counter!("grpc_requests_invalid_total").increment(1);
                        return Ok(invalid_argument(&violations).into_http::<ResBody>());
                    }
                }
            }
            let body = tonic::body::Body::new(
                http_body_util::Full::new(bytes).map_err(|never| match never {}),
            );
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}
