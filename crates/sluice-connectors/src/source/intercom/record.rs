//! The record of an Intercom conversation (see the fields in the module docs
//! of [`super`]).

use serde_json::{Map, Value, json};
use sluice_core::Record;

/// Maps an Intercom conversation (API 2.x JSON) to a record (see the module docs).
pub fn conversation_record(source: &str, c: &Value, with_parts: bool) -> Result<Record, String> {
    let id = conversation_id(c).ok_or("the conversation has no id")?;
    let src = c.get("source");
    let body = src.and_then(|s| s.get("body")).and_then(Value::as_str).unwrap_or("");
    let mut text = body.to_string();
    let mut fields = Map::new();
    if with_parts {
        let parts = c
            .pointer("/conversation_parts/conversation_parts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for part in parts {
            if let Some(body) = part.get("body").and_then(Value::as_str).filter(|b| !b.trim().is_empty()) {
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(body);
            }
        }
        fields.insert("parts".into(), json!(parts.len()));
    }
    if let Some(title) = str_field(c.get("title")) {
        fields.insert("title".into(), json!(title));
    }
    if let Some(subject) = str_field(src.and_then(|s| s.get("subject"))) {
        fields.insert("subject".into(), json!(subject));
    }
    for (key, value) in [
        ("state", str_field(c.get("state"))),
        ("priority", str_field(c.get("priority"))),
        ("channel", str_field(src.and_then(|s| s.get("type")))),
        ("author_type", str_field(src.and_then(|s| s.pointer("/author/type")))),
    ] {
        if let Some(value) = value {
            fields.insert(key.into(), json!(value));
        }
    }
    if let Some(domain) = str_field(src.and_then(|s| s.pointer("/author/email")))
        .and_then(|email| email.rsplit_once('@').map(|(_, domain)| domain.to_lowercase()))
        .filter(|d| !d.is_empty())
    {
        fields.insert("author_domain".into(), json!(domain));
    }
    let tags: Vec<&str> = c
        .pointer("/tags/tags")
        .and_then(Value::as_array)
        .map(|tags| tags.iter().filter_map(|t| t.get("name").and_then(Value::as_str)).collect())
        .unwrap_or_default();
    if !tags.is_empty() {
        fields.insert("tags".into(), json!(tags));
    }
    if let Some(created) = c.get("created_at").and_then(Value::as_i64) {
        fields.insert("created_at".into(), json!(created));
    }
    Ok(Record { source: source.to_string(), id, text, fields, updated_at: c.get("updated_at").and_then(Value::as_i64) })
}

/// A non-empty string value, trimmed.
fn str_field(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// The id of a conversation: a string, or a number written as one.
pub(crate) fn conversation_id(c: &Value) -> Option<String> {
    match c.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_map_to_records() {
        let c = json!({
            "type": "conversation", "id": "123", "title": null, "created_at": 10, "updated_at": 20,
            "state": "open", "priority": "not_priority",
            "tags": {"type": "tag.list", "tags": [{"name": "vip"}]},
            "source": {"type": "email", "subject": "Refund", "body": "<p>I was charged twice</p>",
                       "author": {"type": "user", "email": "Ann@Example.COM"}},
            "conversation_parts": {"conversation_parts": [{"body": "<p>Sorry!</p>"}, {"body": null}]},
        });
        let r = conversation_record("intercom", &c, false).unwrap();
        assert_eq!((r.id.as_str(), r.text.as_str(), r.updated_at), ("123", "<p>I was charged twice</p>", Some(20)));
        assert_eq!(r.fields["author_domain"], "example.com");
        assert_eq!(r.fields["tags"], json!(["vip"]));
        assert_eq!(r.fields["subject"], "Refund");
        assert!(!r.fields.contains_key("title") && !r.fields.contains_key("parts"));
        assert!(!serde_json::to_string(&r).unwrap().contains("Ann@"), "no email addresses");
        let full = conversation_record("intercom", &c, true).unwrap();
        assert_eq!(full.text, "<p>I was charged twice</p>\n\n<p>Sorry!</p>");
        assert_eq!(full.fields["parts"], 2);
        assert!(conversation_record("intercom", &json!({"source": {}}), false).is_err());
        assert_eq!(conversation_record("i", &json!({"id": 7}), false).unwrap().id, "7");
    }
}
