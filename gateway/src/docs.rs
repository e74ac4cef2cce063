//! `GET /docs`: the API reference as one self-contained HTML page rendered from the
//! OpenAPI document (no scripts, no fonts, nothing fetched: it works offline and under a
//! strict Content-Security-Policy). Rendered once at start.
//!
//! Written here rather than embedding Swagger UI or Redoc: those are megabytes of
//! JavaScript fetched or vendored, for a page that only has to list operations and
//! schemas.

use std::fmt::Write as _;

use serde_json::Value;

/// The policy `/docs` is served with: its own inline stylesheet, nothing else.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#1d232a}\
code,pre{font:13px ui-monospace,monospace}h2{border-bottom:1px solid #ccd;margin-top:2.5rem}\
.op{border:1px solid #dde;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}\
.m{display:inline-block;min-width:4.5rem;font-weight:700}.get{color:#0a6}.post{color:#06c}.put,.patch{color:#a60}.delete{color:#c22}\
.acc{float:right;font-size:12px;border-radius:4px;padding:0 .4rem;background:#eef}\
table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #dde;padding:.2rem .5rem;text-align:left;vertical-align:top}\
.d{white-space:pre-line;color:#444}";

/// Escapes text for HTML element content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// A short type description of a schema, linking to component schemas.
fn type_of(schema: &Value) -> String {
    if let Some(target) = schema["$ref"].as_str() {
        let name = target.rsplit('/').next().unwrap_or_default();
        let short = name.rsplit('.').next().unwrap_or(name);
        return format!("<a href=\"#schema-{}\">{}</a>", esc(name), esc(short));
    }
    match str_of(schema, "type") {
        "array" => format!("array of {}", type_of(&schema["items"])),
        "object" if schema["additionalProperties"].is_object() => {
            format!("map of {}", type_of(&schema["additionalProperties"]))
        }
        "" => "any".into(),
        t => {
            let mut s = esc(t);
            if let Some(f) = schema["format"].as_str() {
                let _ = write!(s, " ({})", esc(f));
            }
            if let Some(values) = schema["enum"].as_array() {
                let values: Vec<String> = values
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|v| format!("<code>{}</code>", esc(v)))
                    .collect();
                let _ = write!(s, ": {}", values.join(", "));
            }
            s
        }
    }
}

fn render_operation(out: &mut String, method: &str, path: &str, op: &Value) {
    let _ = write!(
        out,
        "<div class=\"op\" id=\"{id}\"><span class=\"acc\">{access}</span><span class=\"m {method}\">{upper}</span><code>{path}</code> — {summary}",
        id = esc(str_of(op, "operationId")),
        access = esc(op["x-access"].as_str().unwrap_or("public")),
        upper = method.to_ascii_uppercase(),
        path = esc(path),
        summary = esc(str_of(op, "summary")),
    );
    if let Some(d) = op["description"].as_str() {
        let _ = write!(out, "<p class=\"d\">{}</p>", esc(d));
    }
    let params: Vec<&Value> = op["parameters"]
        .as_array()
        .map(|p| p.iter().filter(|p| p["name"].is_string()).collect())
        .unwrap_or_default();
    if !params.is_empty() {
        out.push_str("<table><tr><th>parameter</th><th>in</th><th>type</th><th></th></tr>");
        for p in params {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"d\">{}</td></tr>",
                esc(str_of(p, "name")),
                esc(str_of(p, "in")),
                type_of(&p["schema"]),
                esc(str_of(p, "description")),
            );
        }
        out.push_str("</table>");
    }
    let keyed = op["parameters"].as_array().is_some_and(|p| {
        p.iter().any(|p| {
            p["$ref"]
                .as_str()
                .is_some_and(|r| r.ends_with("/IdempotencyKey"))
        })
    });
    if keyed {
        out.push_str("<p>Accepts an <code>Idempotency-Key</code> header.</p>");
    }
    if let Some(content) = op["requestBody"]["content"].as_object() {
        for (media, body) in content {
            let _ = write!(
                out,
                "<p>Body (<code>{}</code>): {}</p>",
                esc(media),
                type_of(&body["schema"])
            );
        }
    }
    if let Some(content) = op["responses"]["200"]["content"].as_object() {
        for (media, body) in content {
            let _ = write!(
                out,
                "<p>200 (<code>{}</code>): {}; errors: <a href=\"#schema-Problem\">problem+json</a></p>",
                esc(media),
                type_of(&body["schema"])
            );
        }
    }
    out.push_str("</div>");
}

/// The HTML page for `doc` (an OpenAPI 3.1 document as [`crate::openapi::document`] makes).
pub fn render(doc: &Value) -> String {
    let mut out = String::with_capacity(256 * 1024);
    let title = esc(str_of(&doc["info"], "title"));
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} API</title><style>{STYLE}</style></head><body><h1>{title} API <small>{}</small></h1><p>{}</p><p class=\"d\">{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3.1).</p>",
        esc(str_of(&doc["info"], "version")),
        esc(str_of(&doc["info"], "summary")),
        esc(str_of(&doc["info"], "description")),
    );
    let tags: Vec<&Value> = doc["tags"]
        .as_array()
        .map(|t| t.iter().collect())
        .unwrap_or_default();
    out.push_str("<nav><ul>");
    for tag in &tags {
        let name = esc(str_of(tag, "name"));
        let _ = write!(out, "<li><a href=\"#tag-{name}\">{name}</a></li>");
    }
    out.push_str("<li><a href=\"#schemas\">schemas</a></li></ul></nav>");
    let empty = serde_json::Map::new();
    let paths = doc["paths"].as_object().unwrap_or(&empty);
    for tag in &tags {
        let name = str_of(tag, "name");
        let _ = write!(
            out,
            "<h2 id=\"tag-{0}\">{0}</h2><p class=\"d\">{1}</p>",
            esc(name),
            esc(str_of(tag, "description"))
        );
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap_or(&empty) {
                let tagged = op["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == name));
                if tagged {
                    render_operation(&mut out, method, path, op);
                }
            }
        }
    }
    out.push_str("<h2 id=\"schemas\">Schemas</h2>");
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap_or(&empty) {
        let _ = write!(
            out,
            "<h3 id=\"schema-{0}\"><code>{0}</code></h3>",
            esc(name)
        );
        if let Some(d) = schema["description"].as_str() {
            let _ = write!(out, "<p class=\"d\">{}</p>", esc(d));
        }
        if let Some(props) = schema["properties"].as_object() {
            out.push_str("<table><tr><th>field</th><th>type</th><th></th></tr>");
            for (field, prop) in props {
                let _ = write!(
                    out,
                    "<tr><td><code>{}</code></td><td>{}</td><td class=\"d\">{}</td></tr>",
                    esc(field),
                    type_of(prop),
                    esc(str_of(prop, "description")),
                );
            }
            out.push_str("</table>");
        }
    }
    out.push_str("</body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_lists_every_operation_and_escapes_text() {
        let table =
            crate::routes::RouteTable::from_descriptor_set(proto::FILE_DESCRIPTOR_SET).unwrap();
        let doc = crate::openapi::document(&table);
        let html = render(&doc);
        for route in table.routes() {
            assert!(
                html.contains(&format!("<code>{}</code>", esc(&route.template))),
                "{} is not on the page",
                route.template
            );
        }
        assert!(html.contains("id=\"schema-orderflow.catalog.v1.Product\""));
        assert!(!html.contains("<script"));
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
