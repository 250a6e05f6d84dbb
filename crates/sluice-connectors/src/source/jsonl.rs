//! JSON lines files: one JSON object per line, one partition per file.
//!
//! The cursor of a page is `"<byte offset>:<line number>"` of its first line,
//! so line numbers in failure locators stay right across pages and resumes.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sluice_core::{Context, Page, Record, Source, SourceError, SourceItem};

use crate::ConfigError;
use crate::util::line_cursor::LineCursor as Cursor;
use crate::util::paths::match_files;
use crate::util::text::raw_of;
use crate::util::time::timestamp_from_value;
use crate::util::validate::{check_not_empty, check_range};

fn default_page_size() -> usize {
    500
}

fn default_name() -> String {
    "jsonl".to_string()
}

fn default_id_field() -> String {
    "id".to_string()
}

fn default_text_field() -> String {
    "text".to_string()
}

/// `[source] kind = "jsonl"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    /// A file, or a glob (`data/*.jsonl`) matching one or more files.
    pub path: String,
    /// Lines per page (1..=100000).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Source name stored with every record.
    #[serde(default = "default_name")]
    pub name: String,
    /// Key of the record id (a string or a number).
    #[serde(default = "default_id_field")]
    pub id_field: String,
    /// Key of the record text (a string).
    #[serde(default = "default_text_field")]
    pub text_field: String,
}

impl JsonlConfig {
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            page_size: default_page_size(),
            name: default_name(),
            id_field: default_id_field(),
            text_field: default_text_field(),
        }
    }
}

/// Reads JSON lines files. Malformed lines become `SourceItem::Invalid`
/// (`error_type` `parse`, `missing_field` or `encoding`, id `<file>:<line>`).
#[derive(Debug)]
pub struct JsonlSource {
    config: Arc<JsonlConfig>,
    /// (partition name, file), sorted by name.
    files: Vec<(String, PathBuf)>,
}

impl JsonlSource {
    pub fn new(config: JsonlConfig) -> Result<Self, ConfigError> {
        check_not_empty("jsonl.path", &config.path)?;
        check_range("jsonl.page_size", config.page_size, 1, 100_000)?;
        check_not_empty("jsonl.name", &config.name)?;
        check_not_empty("jsonl.id_field", &config.id_field)?;
        check_not_empty("jsonl.text_field", &config.text_field)?;
        if config.id_field == config.text_field {
            return Err(ConfigError(format!(
                "jsonl.id_field = {:?} must differ from jsonl.text_field = {:?}",
                config.id_field, config.text_field
            )));
        }
        let files = match_files("jsonl.path", "jsonl", &config.path)?;
        Ok(Self { config: Arc::new(config), files })
    }

    /// The matched files, as partition names.
    pub fn files(&self) -> Vec<String> {
        self.files.iter().map(|(name, _)| name.clone()).collect()
    }
}

#[async_trait]
impl Source for JsonlSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn partitions(&self) -> Result<Vec<String>, SourceError> {
        Ok(self.files())
    }

    async fn fetch(&self, _ctx: &Context, partition: &str, cursor: Option<&str>) -> Result<Page, SourceError> {
        let Some((name, path)) = self.files.iter().find(|(name, _)| name == partition) else {
            return Err(SourceError::fatal(format!("jsonl: unknown partition {partition:?}")));
        };
        let start = Cursor::parse("jsonl", cursor)?;
        let (config, name, path) = (self.config.clone(), name.clone(), path.clone());
        tokio::task::spawn_blocking(move || read_page(&config, &name, &path, start))
            .await
            .map_err(|e| SourceError::fatal(format!("jsonl: reading {partition} panicked: {e}")))?
    }
}

fn read_page(config: &JsonlConfig, name: &str, path: &Path, start: Cursor) -> Result<Page, SourceError> {
    let io_error = |e: std::io::Error| SourceError::fatal(format!("jsonl: cannot read {name}: {e}"));
    let mut file = File::open(path).map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len();
    if start.offset > len {
        return Err(SourceError::CursorInvalid {
            message: format!("jsonl cursor offset {} is past the end of {name} ({len} bytes)", start.offset),
        });
    }
    if start.offset > 0 {
        // A page starts right after a newline; anything else means the file changed.
        let mut before = [0u8; 1];
        file.seek(SeekFrom::Start(start.offset - 1)).map_err(io_error)?;
        file.read_exact(&mut before).map_err(io_error)?;
        if before[0] != b'\n' {
            return Err(SourceError::CursorInvalid {
                message: format!("jsonl cursor offset {} of {name} is not at the start of a line", start.offset),
            });
        }
    } else {
        file.seek(SeekFrom::Start(0)).map_err(io_error)?;
    }
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut next = start;
    let mut items = Vec::with_capacity(config.page_size.min(4096));
    let mut buf = Vec::new();
    let mut at_end = false;
    while items.len() < config.page_size {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf).map_err(io_error)?;
        if read == 0 {
            at_end = true;
            break;
        }
        let line_number = next.line;
        next.offset += read as u64;
        next.line += 1;
        let mut line = buf.as_slice();
        while let [rest @ .., b'\n' | b'\r'] = line {
            line = rest;
        }
        if line_number == 1 {
            line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        items.push(parse_line(config, Locator { file: name, line: line_number }, line));
    }
    if !at_end {
        at_end = reader.fill_buf().map_err(io_error)?.is_empty();
    }
    Ok(Page { items, next: (!at_end).then(|| next.render()), dropped: 0 })
}

/// Where a line is: `<file>:<line number>`, the id of an invalid item. Formatted
/// only when a line is bad.
#[derive(Clone, Copy, Debug)]
struct Locator<'a> {
    file: &'a str,
    line: u64,
}

impl std::fmt::Display for Locator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

fn invalid(locator: Locator<'_>, raw: &[u8], error_type: &str, error: String) -> SourceItem {
    SourceItem::Invalid { id: locator.to_string(), raw: raw_of(raw), error_type: error_type.to_string(), error }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One non-blank line into a record, or an invalid item saying what was wrong.
fn parse_line(config: &JsonlConfig, locator: Locator<'_>, line: &[u8]) -> SourceItem {
    let text = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(e) => return invalid(locator, line, "encoding", format!("{locator}: line is not valid UTF-8: {e}")),
    };
    let mut map: Map<String, Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            return invalid(
                locator,
                line,
                "parse",
                format!("{locator}: line is {}, not a JSON object", kind_of(&other)),
            );
        }
        Err(e) => return invalid(locator, line, "parse", format!("{locator}: invalid JSON: {e}")),
    };
    let id_field = &config.id_field;
    let id = match map.remove(id_field) {
        Some(Value::String(id)) if !id.is_empty() => id,
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(_)) => {
            return invalid(locator, line, "missing_field", format!("{locator}: field {id_field:?} is empty"));
        }
        None | Some(Value::Null) => {
            return invalid(locator, line, "missing_field", format!("{locator}: missing field {id_field:?}"));
        }
        Some(other) => {
            let kind = kind_of(&other);
            let error = format!("{locator}: field {id_field:?} must be a string or a number, found {kind}");
            return invalid(locator, line, "missing_field", error);
        }
    };
    let text_field = &config.text_field;
    let text = match map.remove(text_field) {
        Some(Value::String(text)) => text,
        None | Some(Value::Null) => {
            return invalid(locator, line, "missing_field", format!("{locator}: missing field {text_field:?}"));
        }
        Some(other) => {
            let error = format!("{locator}: field {text_field:?} must be a string, found {}", kind_of(&other));
            return invalid(locator, line, "missing_field", error);
        }
    };
    let updated_at = map.get("updated_at").and_then(timestamp_from_value);
    if updated_at.is_some() {
        map.remove("updated_at");
    }
    SourceItem::Record(Record { source: config.name.clone(), id, text, fields: map, updated_at })
}

/// `kind = "jsonl"`.
impl crate::kind::SourceKind for JsonlConfig {
    fn build(&self) -> Result<Arc<dyn Source>, ConfigError> {
        Ok(Arc::new(JsonlSource::new(self.clone())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> JsonlConfig {
        JsonlConfig::new("unused")
    }

    #[test]
    fn cursor_round_trips_and_refuses_garbage() {
        assert_eq!(Cursor::parse("jsonl", None).unwrap(), Cursor::START);
        let c = Cursor { offset: 120, line: 7 };
        assert_eq!(Cursor::parse("jsonl", Some(&c.render())).unwrap(), c);
        for bad in ["", "12", "a:b", "12:0", "0:5", "12:1", "-1:2"] {
            assert!(matches!(Cursor::parse("jsonl", Some(bad)), Err(SourceError::CursorInvalid { .. })), "{bad}");
        }
    }

    #[test]
    fn line_parsing_keeps_fields_and_reads_updated_at() {
        let item = parse_line(
            &config(),
            Locator { file: "f", line: 1 },
            br#"{"id": 7, "text": "hi", "lang": "en", "updated_at": "1970-01-01T00:00:10Z"}"#,
        );
        let SourceItem::Record(r) = item else { panic!("{item:?}") };
        assert_eq!((r.id.as_str(), r.text.as_str(), r.updated_at), ("7", "hi", Some(10)));
        assert_eq!(r.fields.len(), 1);
        assert_eq!(r.fields["lang"], "en");
        assert_eq!(r.source, "jsonl");

        let item = parse_line(
            &config(),
            Locator { file: "f", line: 1 },
            br#"{"id": "a", "text": "hi", "updated_at": "soon"}"#,
        );
        let SourceItem::Record(r) = item else { panic!("{item:?}") };
        assert_eq!(r.updated_at, None);
        assert_eq!(r.fields["updated_at"], "soon");
    }

    #[test]
    fn bad_lines_are_typed() {
        let cases: [(&[u8], &str); 7] = [
            (b"{not json", "parse"),
            (b"[1, 2]", "parse"),
            (br#"{"text": "no id"}"#, "missing_field"),
            (br#"{"id": null, "text": "x"}"#, "missing_field"),
            (br#"{"id": [1], "text": "x"}"#, "missing_field"),
            (br#"{"id": 1, "text": 5}"#, "missing_field"),
            (b"{\"id\": 1, \"text\": \"\xff\"}", "encoding"),
        ];
        for (line, expected) in cases {
            match parse_line(&config(), Locator { file: "f.jsonl", line: 3 }, line) {
                SourceItem::Invalid { id, error_type, error, raw } => {
                    assert_eq!(id, "f.jsonl:3");
                    assert_eq!(error_type, expected, "{error}");
                    assert!(error.starts_with("f.jsonl:3: "), "{error}");
                    assert!(!raw.is_empty());
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
