//! The route table, built once from the descriptor set: every RPC with a
//! `google.api.http` rule becomes a REST route, with the access its
//! `orderflow.options.v1.access` option declares.

use std::collections::HashMap;

use http::Method;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone; a token, if sent, must still be valid.
    Public,
    /// Any signed-in user.
    Authenticated,
    /// Users holding `admin`.
    Admin,
}

/// Where the request body goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyMapping {
    /// No body (GET, DELETE).
    None,
    /// `body: "*"`: the JSON body is the request message.
    Whole,
    /// `body: "field"`: the body fills one field (raw bytes when it is a `google.api.HttpBody`).
    Field(String),
}

/// One REST route and the RPC behind it.
#[derive(Debug, Clone)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// The template as declared, e.g. `/v1/users/{id}/roles`: the metrics label.
    pub template: String,
    /// Request field paths bound by the path parameters, in order.
    pub path_fields: Vec<String>,
    /// Body mapping.
    pub body: BodyMapping,
    /// Access rule.
    pub access: Access,
    /// The RPC.
    pub rpc: MethodDescriptor,
    /// gRPC path, `/package.Service/Method`.
    pub grpc_path: String,
    /// The upstream service key, e.g. `iam` (from `orderflow.iam.v1`).
    pub upstream: String,
}

/// Why the descriptor set does not make a valid route table (a build-time bug).
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The set does not decode.
    #[error("descriptor set: {0}")]
    Descriptors(String),
    /// A rule is malformed.
    #[error("{rpc}: {problem}")]
    Rule {
        /// The RPC's full name.
        rpc: String,
        /// What is wrong.
        problem: String,
    },
}

/// Routes by path, then method.
pub struct RouteTable {
    router: matchit::Router<usize>,
    by_path: Vec<HashMap<Method, usize>>,
    routes: Vec<Route>,
    pool: DescriptorPool,
}

/// The outcome of looking a request up.
pub enum Lookup<'a> {
    /// Matched: the route and its path parameter values, in template order.
    Found(&'a Route, Vec<String>),
    /// The path exists but not with this method: the allowed methods.
    MethodNotAllowed(Vec<Method>),
    /// No such path.
    NotFound,
}

impl RouteTable {
    /// Builds the table from an encoded `FileDescriptorSet` (options included).
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Self, RouteError> {
        let pool =
            DescriptorPool::decode(bytes).map_err(|e| RouteError::Descriptors(e.to_string()))?;
        let http_ext = pool
            .get_extension_by_name("google.api.http")
            .ok_or_else(|| RouteError::Descriptors("google.api.http is missing".into()))?;
        let access_ext = pool
            .get_extension_by_name("orderflow.options.v1.access")
            .ok_or_else(|| {
                RouteError::Descriptors("orderflow.options.v1.access is missing".into())
            })?;

        let mut table = Self {
            router: matchit::Router::new(),
            by_path: Vec::new(),
            routes: Vec::new(),
            pool: pool.clone(),
        };
        let mut slot_by_pattern: HashMap<String, usize> = HashMap::new();
        for service in pool.services() {
            for rpc in service.methods() {
                let options = rpc.options();
                if !options.has_extension(&http_ext) {
                    continue;
                }
                let rule = match options.get_extension(&http_ext).as_ref() {
                    Value::Message(m) => m.clone(),
                    _ => continue,
                };
                let fail = |problem: String| RouteError::Rule {
                    rpc: rpc.full_name().to_string(),
                    problem,
                };
                let access = match options.get_extension(&access_ext).as_ref() {
                    Value::EnumNumber(1) => Access::Public,
                    Value::EnumNumber(2) => Access::Authenticated,
                    Value::EnumNumber(3) => Access::Admin,
                    _ => {
                        return Err(fail(
                            "routed methods must declare orderflow.options.v1.access".into(),
                        ));
                    }
                };
                // The rule, then each of its `additional_bindings` (one RPC on several
                // routes, e.g. a return URL reached by GET and by a form POST).
                let mut bindings = vec![rule.clone()];
                if let Some(Value::List(more)) =
                    rule.get_field_by_name("additional_bindings").as_deref()
                {
                    bindings.extend(more.iter().filter_map(|b| match b {
                        Value::Message(m) => Some(m.clone()),
                        _ => None,
                    }));
                }
                for rule in bindings {
                    let (method, template) = http_pattern(&rule)
                        .ok_or_else(|| fail("google.api.http has no pattern".into()))?;
                    let body = match string_field(&rule, "body").as_str() {
                        "" => BodyMapping::None,
                        "*" => BodyMapping::Whole,
                        field => BodyMapping::Field(field.to_string()),
                    };
                    let (pattern, path_fields) = to_matchit(&template).map_err(fail)?;
                    for field in &path_fields {
                        if rpc
                            .input()
                            .get_field_by_name(field.split('.').next().unwrap_or_default())
                            .is_none()
                        {
                            return Err(fail(format!(
                                "path parameter {{{field}}} names no field of {}",
                                rpc.input().full_name()
                            )));
                        }
                    }
                    let upstream = service
                        .package_name()
                        .strip_prefix("orderflow.")
                        .and_then(|p| p.split('.').next())
                        .unwrap_or(service.package_name())
                        .to_string();
                    let index = table.routes.len();
                    table.routes.push(Route {
                        method: method.clone(),
                        template,
                        path_fields,
                        body,
                        access,
                        grpc_path: format!("/{}/{}", service.full_name(), rpc.name()),
                        rpc: rpc.clone(),
                        upstream,
                    });
                    let slot = match slot_by_pattern.get(&pattern) {
                        Some(slot) => *slot,
                        None => {
                            let slot = table.by_path.len();
                            table
                                .router
                                .insert(pattern.clone(), slot)
                                .map_err(|e| fail(format!("route conflict: {e}")))?;
                            table.by_path.push(HashMap::new());
                            slot_by_pattern.insert(pattern, slot);
                            slot
                        }
                    };
                    if table.by_path[slot].insert(method.clone(), index).is_some() {
                        return Err(fail(format!(
                            "{method} {} is declared twice",
                            table.routes[index].template
                        )));
                    }
                }
            }
        }
        Ok(table)
    }

    /// Finds the route for `method` and `path`.
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let Ok(matched) = self.router.at(path) else {
            return Lookup::NotFound;
        };
        let methods = &self.by_path[*matched.value];
        // HEAD is answered like GET.
        let wanted = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        match methods.get(wanted) {
            Some(&index) => {
                let values = matched.params.iter().map(|(_, v)| v.to_string()).collect();
                Lookup::Found(&self.routes[index], values)
            }
            None => {
                let mut allowed: Vec<Method> = methods.keys().cloned().collect();
                allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                Lookup::MethodNotAllowed(allowed)
            }
        }
    }

    /// Every route, in declaration order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The descriptor pool the routes come from.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }
}

fn string_field(msg: &DynamicMessage, name: &str) -> String {
    msg.get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn http_pattern(rule: &DynamicMessage) -> Option<(Method, String)> {
    for (name, method) in [
        ("get", Method::GET),
        ("post", Method::POST),
        ("put", Method::PUT),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if rule.has_field_by_name(name) {
            return Some((method, string_field(rule, name)));
        }
    }
    None
}

/// `/v1/users/{id}/roles/{role}` → (`/v1/users/{p0}/roles/{p1}`, `["id", "role"]`). The
/// parameters are renamed by position so templates that name the same segment
/// differently (`{id}`, `{order_id}`) share one router entry.
fn to_matchit(template: &str) -> Result<(String, Vec<String>), String> {
    if !template.starts_with('/') {
        return Err(format!("template {template:?} must start with /"));
    }
    let mut pattern = String::with_capacity(template.len());
    let mut fields = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        pattern.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed {{ in {template:?}"))?
            + open;
        let field = &rest[open + 1..close];
        if field.is_empty() || field.contains('=') {
            return Err(format!(
                "unsupported path parameter {{{field}}} in {template:?}"
            ));
        }
        pattern.push_str(&format!("{{p{}}}", fields.len()));
        fields.push(field.to_string());
        rest = &rest[close + 1..];
    }
    pattern.push_str(rest);
    Ok((pattern, fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::from_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .expect("our protos make a valid table")
    }

    #[test]
    fn templates_become_positional_patterns() {
        assert_eq!(
            to_matchit("/v1/users/{id}/roles/{role}").unwrap(),
            (
                "/v1/users/{p0}/roles/{p1}".into(),
                vec!["id".into(), "role".into()]
            )
        );
        assert_eq!(
            to_matchit("/v1/orders/{id}:cancel").unwrap().0,
            "/v1/orders/{p0}:cancel"
        );
        assert!(to_matchit("/v1/{name=shelves/*}").is_err());
    }

    #[test]
    fn the_auth_routes_are_declared() {
        let t = table();
        for (method, path, rpc, access) in [
            (
                Method::POST,
                "/v1/auth/register",
                "Register",
                Access::Public,
            ),
            (Method::POST, "/v1/auth/login", "Login", Access::Public),
            (Method::POST, "/v1/auth/refresh", "Refresh", Access::Public),
            (Method::POST, "/v1/auth/logout", "Logout", Access::Public),
            (Method::GET, "/v1/me", "GetMe", Access::Authenticated),
            (Method::GET, "/v1/users", "ListUsers", Access::Admin),
            (
                Method::POST,
                "/v1/users/abc/roles",
                "GrantRole",
                Access::Admin,
            ),
            (
                Method::DELETE,
                "/v1/users/abc/roles/admin",
                "RevokeRole",
                Access::Admin,
            ),
            (
                Method::GET,
                "/.well-known/jwks.json",
                "GetJwks",
                Access::Public,
            ),
        ] {
            match t.lookup(&method, path) {
                Lookup::Found(route, _) => {
                    assert_eq!(route.rpc.name(), rpc, "{method} {path}");
                    assert_eq!(route.access, access, "{method} {path}");
                    assert_eq!(route.upstream, "iam");
                }
                _ => panic!("{method} {path} is not routed"),
            }
        }
    }

    #[test]
    fn parameters_method_mismatch_and_unknown_paths() {
        let t = table();
        match t.lookup(&Method::DELETE, "/v1/users/u1/roles/admin") {
            Lookup::Found(route, values) => {
                assert_eq!(
                    route.path_fields,
                    vec!["id".to_string(), "role".to_string()]
                );
                assert_eq!(values, vec!["u1".to_string(), "admin".to_string()]);
            }
            _ => panic!("not found"),
        }
        match t.lookup(&Method::POST, "/v1/orders/o1:cancel") {
            Lookup::Found(route, values) => {
                assert_eq!(route.rpc.name(), "CancelOrder");
                assert_eq!(values, vec!["o1".to_string()]);
            }
            _ => panic!("custom verb not routed"),
        }
        match t.lookup(&Method::PUT, "/v1/me") {
            Lookup::MethodNotAllowed(allowed) => assert_eq!(allowed, vec![Method::GET]),
            _ => panic!("expected 405"),
        }
        assert!(matches!(
            t.lookup(&Method::GET, "/v1/nothing"),
            Lookup::NotFound
        ));
    }
}
