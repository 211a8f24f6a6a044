//! The reference page `GET /docs/api`, rendered from the OpenAPI document itself: every tag's
//! operations (method, path, parameters, body fields with an example, responses), a curl line
//! for each, the error codes, the webhook events and how to verify their signatures, and every
//! schema. Plain HTML with anchors; nothing is fetched from elsewhere and no script runs.

use serde_json::Value;

use crate::web::{Layout, error::ErrorCode};

/// A piece of inline text: plain, `code` or **strong** (the document's descriptions use these).
pub struct Inline {
    pub kind: &'static str,
    pub text: String,
}

/// A paragraph of inline pieces.
pub type Para = Vec<Inline>;

/// Markdown as the document uses it (paragraphs, `code`, **strong**), nothing more.
pub fn paragraphs(text: &str) -> Vec<Para> {
    text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()).map(inline).collect()
}

fn inline(text: &str) -> Para {
    let mut out = Vec::new();
    for (i, part) in text.split('`').enumerate() {
        if part.is_empty() {
            continue;
        }
        if i % 2 == 1 {
            out.push(Inline { kind: "code", text: part.to_string() });
            continue;
        }
        for (j, piece) in part.split("**").enumerate() {
            if !piece.is_empty() {
                out.push(Inline { kind: if j % 2 == 1 { "strong" } else { "text" }, text: piece.replace('\n', " ") });
            }
        }
    }
    out
}

pub struct Field {
    pub name: String,
    pub ty: String,
    pub ty_anchor: Option<String>,
    pub required: bool,
    pub description: Para,
}

pub struct Param {
    pub name: String,
    pub location: String,
    pub required: bool,
    pub ty: String,
    pub description: Para,
}

pub struct Body {
    pub ty: String,
    pub ty_anchor: Option<String>,
    pub fields: Vec<Field>,
    pub example: Option<String>,
}

pub struct Resp {
    pub status: String,
    pub description: Para,
    pub ty: Option<String>,
    pub ty_anchor: Option<String>,
}

pub struct Operation {
    pub anchor: String,
    pub method: String,
    pub path: String,
    pub summary: Para,
    pub description: Vec<Para>,
    pub public: bool,
    pub params: Vec<Param>,
    pub body: Option<Body>,
    pub responses: Vec<Resp>,
    pub curl: String,
}

pub struct Section {
    pub tag: String,
    pub description: Para,
    pub operations: Vec<Operation>,
}

pub struct SchemaView {
    pub name: String,
    pub anchor: String,
    pub description: Vec<Para>,
    pub fields: Vec<Field>,
    pub values: Vec<String>,
}

pub struct ErrorLine {
    pub code: &'static str,
    pub status: u16,
    pub meaning: &'static str,
}

#[derive(askama::Template)]
#[template(path = "docs/api.html")]
pub struct ReferencePage {
    pub layout: Layout,
    pub title: String,
    pub version: String,
    pub intro: Vec<Para>,
    pub base_url: String,
    pub sections: Vec<Section>,
    pub hooks: Vec<Operation>,
    pub errors: Vec<ErrorLine>,
    pub schemas: Vec<SchemaView>,
}

fn schema_anchor(name: &str) -> String {
    format!("schema-{name}")
}

/// The component name of a `$ref`.
fn ref_name(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.strip_prefix("#/components/schemas/")
}

/// A type as people read it ("string (uuid)", "array of Job", "integer or null"), with the
/// anchor of the schema it names.
fn type_label(schema: &Value) -> (String, Option<String>) {
    if let Some(name) = ref_name(schema) {
        return (name.to_string(), Some(schema_anchor(name)));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let mut anchor = None;
            let labels: Vec<String> = options
                .iter()
                .map(|option| {
                    let (label, a) = type_label(option);
                    anchor = anchor.take().or(a);
                    label
                })
                .collect();
            return (labels.join(if key == "allOf" { " and " } else { " or " }), anchor);
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> =
            values.iter().map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string())).collect();
        return (format!("one of {}", values.join(", ")), None);
    }
    let types: Vec<String> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        _ => vec![],
    };
    let mut anchor = None;
    let labels: Vec<String> = types
        .iter()
        .map(|t| match t.as_str() {
            "array" => {
                let (item, a) = schema.get("items").map(type_label).unwrap_or(("anything".into(), None));
                anchor = a;
                format!("array of {item}")
            }
            "object" => match schema.get("additionalProperties") {
                Some(extra) if extra.is_object() => {
                    let (value, a) = type_label(extra);
                    anchor = a;
                    format!("object of {value}")
                }
                _ => "object".to_string(),
            },
            other => match schema.get("format").and_then(Value::as_str) {
                Some(format) if other != "null" => format!("{other} ({format})"),
                _ => other.to_string(),
            },
        })
        .collect();
    if labels.is_empty() { ("any".into(), None) } else { (labels.join(" or "), anchor) }
}

fn description_of(schema: &Value) -> Para {
    schema.get("description").and_then(Value::as_str).map(inline).unwrap_or_default()
}

fn fields_of(doc: &Value, schema: &Value) -> Vec<Field> {
    let schema = resolve(doc, schema);
    let mut fields = Vec::new();
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            fields.extend(fields_of(doc, part));
        }
    }
    let required: Vec<&str> =
        schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    for (name, property) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
        let (ty, ty_anchor) = type_label(property);
        fields.push(Field {
            name: name.clone(),
            ty,
            ty_anchor,
            required: required.contains(&name.as_str()),
            description: description_of(property),
        });
    }
    fields
}

/// `schema`, or the component it refers to.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match ref_name(schema) {
        Some(name) => doc.pointer(&format!("/components/schemas/{name}")).unwrap_or(schema),
        None => schema,
    }
}

fn example_of(doc: &Value, media: &Value) -> Option<Value> {
    if let Some(example) = media.get("example") {
        return Some(example.clone());
    }
    let schema = resolve(doc, media.get("schema")?);
    schema.get("example").cloned().or_else(|| schema.get("examples")?.as_array()?.first().cloned())
}

fn operation(doc: &Value, method: &str, path: &str, op: &Value, base_url: &str) -> Operation {
    let public =
        op["security"].as_array().is_some_and(|s| s.iter().all(|r| r.as_object().is_some_and(|o| o.is_empty())));
    let params: Vec<Param> = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| Param {
            name: p["name"].as_str().unwrap_or_default().to_string(),
            location: p["in"].as_str().unwrap_or_default().to_string(),
            required: p["required"].as_bool().unwrap_or(false),
            ty: type_label(&p["schema"]).0,
            description: p["description"].as_str().map(inline).unwrap_or_default(),
        })
        .collect();
    let body = op.pointer("/requestBody/content/application~1json").map(|media| {
        let schema = media.get("schema").cloned().unwrap_or(Value::Null);
        let (ty, ty_anchor) = type_label(&schema);
        Body {
            ty,
            ty_anchor,
            fields: fields_of(doc, &schema),
            example: example_of(doc, media).and_then(|e| serde_json::to_string_pretty(&e).ok()),
        }
    });
    let mut responses = Vec::new();
    for (status, response) in op["responses"].as_object().into_iter().flatten() {
        let response = match response.get("$ref").and_then(Value::as_str) {
            Some(reference) => doc.pointer(&reference.replacen("#", "", 1)).unwrap_or(response),
            None => response,
        };
        let schema = response
            .get("content")
            .and_then(Value::as_object)
            .and_then(|c| c.values().next())
            .and_then(|m| m.get("schema"));
        let (ty, ty_anchor) = match schema {
            Some(schema) => {
                let (label, anchor) = type_label(schema);
                (Some(label), anchor)
            }
            None => (None, None),
        };
        responses.push(Resp {
            status: status.clone(),
            description: response["description"].as_str().map(inline).unwrap_or_default(),
            ty,
            ty_anchor,
        });
    }
    let summary = op["summary"].as_str().map(inline).unwrap_or_default();
    let description = op["description"].as_str().map(paragraphs).unwrap_or_default();
    let anchor = op["operationId"].as_str().map(str::to_string).unwrap_or_else(|| format!("{method}-{path}"));
    let curl = curl(method, path, public, body.as_ref().and_then(|b| b.example.as_deref()), base_url);
    Operation {
        anchor,
        method: method.to_uppercase(),
        path: path.to_string(),
        summary,
        description,
        public,
        params,
        body,
        responses,
        curl,
    }
}

fn curl(method: &str, path: &str, public: bool, example: Option<&str>, base_url: &str) -> String {
    let path = path.replace("{id}", "$ID").replace("{job_id}", "$JOB_ID").replace("{delivery_id}", "$DELIVERY_ID");
    let mut lines = vec![format!(
        "curl -s{}",
        if method == "get" { String::new() } else { format!(" -X {}", method.to_uppercase()) }
    )];
    if !public {
        lines.push("  -H \"Authorization: Bearer $KEY\"".into());
    }
    if let Some(example) = example {
        let compact = serde_json::from_str::<Value>(example).map(|v| v.to_string()).unwrap_or_default();
        lines.push("  -H 'content-type: application/json'".into());
        lines.push(format!("  -d '{}'", compact.replace('\'', "'\\''")));
    }
    let base = if base_url.is_empty() { "$FACEOFF".to_string() } else { base_url.trim_end_matches('/').to_string() };
    lines.push(format!("  \"{base}{path}\""));
    lines.join(" \\\n")
}

impl ReferencePage {
    pub fn build(layout: Layout, doc: &Value, base_url: &str) -> ReferencePage {
        let mut sections: Vec<Section> = doc["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|tag| Section {
                tag: tag["name"].as_str().unwrap_or_default().to_string(),
                description: tag["description"].as_str().map(inline).unwrap_or_default(),
                operations: Vec::new(),
            })
            .collect();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for method in ["get", "post", "put", "patch", "delete"] {
                let Some(op) = item.get(method) else { continue };
                let tag = op["tags"][0].as_str().unwrap_or("other").to_string();
                let built = operation(doc, method, path, op, base_url);
                match sections.iter_mut().find(|s| s.tag == tag) {
                    Some(section) => section.operations.push(built),
                    None => sections.push(Section { tag, description: Vec::new(), operations: vec![built] }),
                }
            }
        }
        sections.retain(|s| !s.operations.is_empty());
        let hooks = doc["webhooks"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(name, item)| item.get("post").map(|op| operation(doc, "post", name, op, base_url)))
            .map(|mut op| {
                op.curl = String::new();
                op
            })
            .collect();
        let mut schemas: Vec<SchemaView> = doc["components"]["schemas"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, schema)| SchemaView {
                name: name.clone(),
                anchor: schema_anchor(name),
                description: schema["description"].as_str().map(paragraphs).unwrap_or_default(),
                fields: fields_of(doc, schema),
                values: schema["enum"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
                    .chain(schema["oneOf"].as_array().into_iter().flatten().filter_map(|v| {
                        v["enum"].as_array().and_then(|e| e.first()).and_then(Value::as_str).map(|s| {
                            match v["description"].as_str() {
                                Some(d) => format!("{s}: {d}"),
                                None => s.to_string(),
                            }
                        })
                    }))
                    .collect(),
            })
            .collect();
        schemas.sort_by(|a, b| a.name.cmp(&b.name));
        ReferencePage {
            layout,
            title: doc["info"]["title"].as_str().unwrap_or("API").to_string(),
            version: doc["info"]["version"].as_str().unwrap_or_default().to_string(),
            intro: doc["info"]["description"].as_str().map(paragraphs).unwrap_or_default(),
            base_url: base_url.trim_end_matches('/').to_string(),
            sections,
            hooks,
            errors: ErrorCode::ALL
                .iter()
                .map(|(code, status, meaning)| ErrorLine { code: code.as_str(), status: *status, meaning })
                .collect(),
            schemas,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_markdown() {
        let para = inline("Send **this** as `Authorization: Bearer` now");
        let kinds: Vec<&str> = para.iter().map(|i| i.kind).collect();
        assert_eq!(kinds, ["text", "strong", "text", "code", "text"]);
        assert_eq!(para[3].text, "Authorization: Bearer");
        assert_eq!(
            type_label(&serde_json::json!({"type": ["integer", "null"], "format": "int64"})).0,
            "integer (int64) or null"
        );
        assert_eq!(
            type_label(&serde_json::json!({"type": "array", "items": {"$ref": "#/components/schemas/Job"}})).0,
            "array of Job"
        );
    }
}
