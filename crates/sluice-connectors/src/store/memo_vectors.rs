//! Memo values as the stores keep them: every vector (an array of numbers
//! under an `embedding` key) is cut out of the JSON into one blob of
//! little-endian `f32`s, and the JSON holds `{"f32": [start, len]}` in its
//! place (`start` and `len` counted in values). A 256-dimension vector then
//! takes 1 KiB instead of about 5 KiB of JSON text. Values without vectors,
//! and those stored before the blob existed (vectors still in the JSON),
//! read back unchanged.

use serde_json::{Map, Value, json};

use super::{embedding_from_bytes, embedding_to_bytes};

/// The key whose number arrays are vectors.
const VECTOR_KEY: &str = "embedding";
/// The key of a reference into the blob.
const REF_KEY: &str = "f32";

/// The JSON to store, with its vectors replaced by references, and the blob
/// holding them (`None` when there were none).
pub fn split_vectors(value: &Value) -> (Value, Option<Vec<u8>>) {
    let mut flat: Vec<f32> = Vec::new();
    let json = split(value, &mut flat, false);
    let blob = (!flat.is_empty()).then(|| embedding_to_bytes(&flat));
    (json, blob)
}

fn split(value: &Value, flat: &mut Vec<f32>, under_vector_key: bool) -> Value {
    match value {
        Value::Array(items) if under_vector_key && !items.is_empty() && items.iter().all(Value::is_number) => {
            let start = flat.len();
            flat.extend(items.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32));
            json!({ REF_KEY: [start, items.len()] })
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| split(v, flat, false)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), split(v, flat, k == VECTOR_KEY))).collect())
        }
        other => other.clone(),
    }
}

/// The stored JSON with its vectors put back from `blob`; `None` when a
/// reference does not fit the blob (the memo then misses: the stage runs again).
pub fn join_vectors(json: Value, blob: Option<&[u8]>) -> Option<Value> {
    let Some(blob) = blob else { return Some(json) };
    let flat = embedding_from_bytes(blob).ok()?;
    join(json, &flat, false)
}

fn join(value: Value, flat: &[f32], under_vector_key: bool) -> Option<Value> {
    match value {
        Value::Object(map) if under_vector_key && map.len() == 1 && map.contains_key(REF_KEY) => {
            let at = map.get(REF_KEY)?.as_array()?;
            let (start, len) = (at.first()?.as_u64()? as usize, at.get(1)?.as_u64()? as usize);
            let values = flat.get(start..start.checked_add(len)?)?;
            Some(Value::Array(values.iter().map(|v| Value::from(f64::from(*v))).collect()))
        }
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                let under = k == VECTOR_KEY;
                out.insert(k, join(v, flat, under)?);
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => {
            items.into_iter().map(|v| join(v, flat, false)).collect::<Option<Vec<_>>>().map(Value::Array)
        }
        other => Some(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_go_to_the_blob_and_come_back_as_the_same_f32s() {
        let value = json!({
            "embedding": null,
            "chunks": [
                {"text": "a1", "embedding": [0.1, -2.5, 3.0]},
                {"text": "b2", "embedding": [1e-7, 0.0]},
            ],
            "confidence": 0.9,
            "ids": [1, 2, 3],
        });
        let (stored, blob) = split_vectors(&value);
        let blob = blob.expect("a blob");
        assert_eq!(blob.len(), 5 * 4);
        assert_eq!(stored["chunks"][1]["embedding"], json!({"f32": [3, 2]}));
        assert_eq!(stored["ids"], json!([1, 2, 3]), "only arrays under `embedding` are vectors");
        assert_eq!(stored["confidence"], json!(0.9));
        let back = join_vectors(stored, Some(&blob)).unwrap();
        let v: Vec<f32> = serde_json::from_value(back["chunks"][0]["embedding"].clone()).unwrap();
        assert_eq!(v, vec![0.1f32, -2.5, 3.0]);
        let v: Vec<f32> = serde_json::from_value(back["chunks"][1]["embedding"].clone()).unwrap();
        assert_eq!(v, vec![1e-7f32, 0.0]);
        assert_eq!(back["embedding"], Value::Null);
        assert_eq!(back["ids"], json!([1, 2, 3]));
    }

    #[test]
    fn values_without_vectors_and_old_rows_read_back_unchanged() {
        let classification = json!({"category": "bug", "confidence": 0.5});
        assert_eq!(split_vectors(&classification), (classification.clone(), None));
        let old = json!({"embedding": [0.25, 0.5], "chunks": []});
        assert_eq!(join_vectors(old.clone(), None), Some(old));
    }

    #[test]
    fn a_reference_outside_the_blob_is_a_miss_not_a_panic() {
        let stored = json!({"embedding": {"f32": [2, 5]}});
        assert_eq!(join_vectors(stored.clone(), Some(&embedding_to_bytes(&[1.0, 2.0]))), None);
        assert_eq!(join_vectors(stored.clone(), Some(&[1, 2, 3])), None);
        assert_eq!(join_vectors(json!({"embedding": {"f32": [u64::MAX, 2]}}), Some(&[0; 8])), None);
    }
}
