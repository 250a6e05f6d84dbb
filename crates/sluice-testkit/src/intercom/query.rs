//! The subset of Intercom's search query language the fake understands.
//!
//! A query is a single filter `{"field", "operator", "value"}` or a group
//! `{"operator": "AND"|"OR", "value": [query, ...]}` (groups nest). Fields:
//! `updated_at`, `created_at` (epoch seconds; the value may be a number or a
//! numeric string, as real clients send both), `id`, `state`, `open`,
//! `priority`, `source.type`. Operators: `=`, `!=`, `>`, `<`, `>=`, `<=` on
//! timestamps; `=`, `!=`, `IN`, `NIN` on the others. Anything else is refused
//! with a 400 so a test learns at once that it relies on something the fake
//! does not model.

use serde_json::Value;

use super::dataset::{Conversation, Dataset};

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Query {
    Time { field: TimeField, op: Cmp, value: i64 },
    Text { field: TextField, negate: bool, values: Vec<String> },
    And(Vec<Query>),
    Or(Vec<Query>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum TimeField {
    UpdatedAt,
    CreatedAt,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum TextField {
    Id,
    State,
    Open,
    Priority,
    SourceType,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

impl Query {
    pub fn parse(v: &Value) -> Result<Query, String> {
        let obj = v.as_object().ok_or("query must be an object")?;
        let op = obj.get("operator").and_then(Value::as_str).ok_or("query is missing its operator")?;
        if let Some(field) = obj.get("field") {
            let field = field.as_str().ok_or("field must be a string")?;
            let value = obj.get("value").ok_or_else(|| format!("query on {field} is missing its value"))?;
            return parse_filter(field, op, value);
        }
        let list =
            obj.get("value").and_then(Value::as_array).ok_or("a query without field must have an array value")?;
        if list.is_empty() {
            return Err("a query group needs at least one filter".into());
        }
        let subs = list.iter().map(Query::parse).collect::<Result<Vec<_>, _>>()?;
        match op.to_ascii_uppercase().as_str() {
            "AND" => Ok(Query::And(subs)),
            "OR" => Ok(Query::Or(subs)),
            other => Err(format!("unsupported group operator {other:?} (AND, OR)")),
        }
    }

    /// The query with `>`/`<` on timestamps read as `>=`/`<=`.
    pub fn inclusive(self) -> Query {
        match self {
            Query::And(qs) => Query::And(qs.into_iter().map(Query::inclusive).collect()),
            Query::Or(qs) => Query::Or(qs.into_iter().map(Query::inclusive).collect()),
            Query::Time { field, op: Cmp::Gt, value } => Query::Time { field, op: Cmp::Ge, value },
            Query::Time { field, op: Cmp::Lt, value } => Query::Time { field, op: Cmp::Le, value },
            other => other,
        }
    }

    pub fn matches(&self, c: &Conversation) -> bool {
        match self {
            Query::And(qs) => qs.iter().all(|q| q.matches(c)),
            Query::Or(qs) => qs.iter().any(|q| q.matches(c)),
            Query::Time { field, op, value } => {
                let t = match field {
                    TimeField::UpdatedAt => c.updated_at,
                    TimeField::CreatedAt => c.created_at,
                };
                match op {
                    Cmp::Eq => t == *value,
                    Cmp::Ne => t != *value,
                    Cmp::Gt => t > *value,
                    Cmp::Lt => t < *value,
                    Cmp::Ge => t >= *value,
                    Cmp::Le => t <= *value,
                }
            }
            Query::Text { field, negate, values } => {
                let actual = match field {
                    TextField::Id => c.id.clone(),
                    TextField::State => c.state.clone(),
                    TextField::Open => (c.state == "open").to_string(),
                    TextField::Priority => c.priority.clone(),
                    TextField::SourceType => c.source_type.clone(),
                };
                values.contains(&actual) != *negate
            }
        }
    }
}

fn parse_filter(field: &str, op: &str, value: &Value) -> Result<Query, String> {
    let time_field = match field {
        "updated_at" => Some(TimeField::UpdatedAt),
        "created_at" => Some(TimeField::CreatedAt),
        _ => None,
    };
    if let Some(field_kind) = time_field {
        let cmp = match op {
            "=" => Cmp::Eq,
            "!=" => Cmp::Ne,
            ">" => Cmp::Gt,
            "<" => Cmp::Lt,
            ">=" => Cmp::Ge,
            "<=" => Cmp::Le,
            other => return Err(format!("unsupported operator {other:?} for {field}")),
        };
        let value = match value {
            Value::Number(n) => n.as_i64().ok_or_else(|| format!("{field} must be an integer timestamp"))?,
            Value::String(s) => {
                s.trim().parse::<i64>().map_err(|_| format!("{field} must be a timestamp, got {s:?}"))?
            }
            _ => return Err(format!("{field} must be a timestamp")),
        };
        return Ok(Query::Time { field: field_kind, op: cmp, value });
    }
    let text_field = match field {
        "id" => TextField::Id,
        "state" => TextField::State,
        "open" => TextField::Open,
        "priority" => TextField::Priority,
        "source.type" => TextField::SourceType,
        other => {
            return Err(format!(
                "unsupported field {other:?} (the fake supports updated_at, created_at, id, state, open, priority, source.type)"
            ));
        }
    };
    let scalar = |v: &Value| -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(format!("{field} must be compared with a string, number or boolean")),
        }
    };
    let (negate, values) = match op {
        "=" => (false, vec![scalar(value)?]),
        "!=" => (true, vec![scalar(value)?]),
        "IN" | "NIN" => {
            let list = value.as_array().ok_or_else(|| format!("{op} on {field} needs an array value"))?;
            (op == "NIN", list.iter().map(scalar).collect::<Result<Vec<_>, _>>()?)
        }
        other => return Err(format!("unsupported operator {other:?} for {field}")),
    };
    Ok(Query::Text { field: text_field, negate, values })
}

impl Dataset {
    /// Ids that the search endpoint would return for this `query` object
    /// (the value of the request's `"query"` key), in (`updated_at`, id)
    /// ascending order. (Here, beside `Query`, so the dataset does not import
    /// the query language that reads it.)
    pub fn ids_matching(&self, query: &Value) -> Result<Vec<String>, String> {
        let q = Query::parse(query)?;
        Ok(self.all().iter().filter(|c| q.matches(c)).map(|c| c.id.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_single_and_nested() {
        let q = Query::parse(&json!({"field": "updated_at", "operator": ">", "value": "100"})).unwrap();
        assert_eq!(q, Query::Time { field: TimeField::UpdatedAt, op: Cmp::Gt, value: 100 });
        let q = Query::parse(&json!({
            "operator": "AND",
            "value": [
                {"field": "updated_at", "operator": ">=", "value": 1},
                {"operator": "OR", "value": [
                    {"field": "state", "operator": "=", "value": "open"},
                    {"field": "id", "operator": "IN", "value": ["5", 6]}
                ]}
            ]
        }))
        .unwrap();
        match q {
            Query::And(v) => assert!(matches!(v[1], Query::Or(_))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_what_it_does_not_model() {
        assert!(Query::parse(&json!({"field": "updated_at", "operator": "~", "value": 1})).is_err());
        assert!(Query::parse(&json!({"field": "custom_attributes.x", "operator": "=", "value": 1})).is_err());
        assert!(Query::parse(&json!({"field": "updated_at", "operator": ">", "value": "soon"})).is_err());
        assert!(
            Query::parse(&json!({"operator": "XOR", "value": [{"field": "id", "operator": "=", "value": "1"}]}))
                .is_err()
        );
        assert!(Query::parse(&json!({"operator": "AND", "value": []})).is_err());
        assert!(Query::parse(&json!([])).is_err());
    }
}
