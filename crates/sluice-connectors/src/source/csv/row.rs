//! One CSV row into a record, or into an invalid item that says what was wrong.

use csv::ByteRecord;
use serde_json::{Map, Value};
use sluice_core::{Record, SourceItem};

use super::columns::Columns;
use crate::util::time::parse_rfc3339;

/// What separates the values of `text_columns` in a record's text.
pub(super) const TEXT_SEPARATOR: &str = "\n\n";

/// Where a row is: `<file>:<line>`, the line its first field starts on.
#[derive(Clone, Copy, Debug)]
pub(super) struct Locator<'a> {
    pub file: &'a str,
    pub line: u64,
}

impl std::fmt::Display for Locator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A row that is not a record: `error_type` is `parse`, `encoding` or
/// `missing_field`; `reason` says what is wrong, without the locator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct BadRow {
    pub error_type: &'static str,
    pub reason: String,
}

/// Seconds since the Unix epoch from a cell: whole seconds or RFC 3339.
/// `Ok(None)` for an empty cell.
fn timestamp(cell: &str) -> Result<Option<i64>, ()> {
    let cell = cell.trim();
    if cell.is_empty() {
        return Ok(None);
    }
    cell.parse::<i64>().ok().or_else(|| parse_rfc3339(cell)).map(Some).ok_or(())
}

/// The row's cells as strings, checked for UTF-8 one by one so the error names the column.
fn cells<'r>(row: &'r ByteRecord, columns: &Columns) -> Result<Vec<&'r str>, BadRow> {
    row.iter()
        .enumerate()
        .map(|(i, raw)| {
            std::str::from_utf8(raw).map_err(|e| BadRow {
                error_type: "encoding",
                reason: format!("column {:?} is not valid UTF-8: {e}", columns.names[i]),
            })
        })
        .collect()
}

/// A row with as many fields as the header into a record, or what is wrong with it.
pub(super) fn to_record(source: &str, row: &ByteRecord, columns: &Columns) -> Result<Record, BadRow> {
    let cells = cells(row, columns)?;
    let id = cells[columns.id];
    if id.trim().is_empty() {
        return Err(BadRow {
            error_type: "missing_field",
            reason: format!("column {:?} (the id) is empty", columns.names[columns.id]),
        });
    }
    let updated_at = match columns.updated_at {
        None => None,
        Some(i) => timestamp(cells[i]).map_err(|()| BadRow {
            error_type: "parse",
            reason: format!(
                "column {:?} = {:?} is not a time (allowed: seconds since 1970, or RFC 3339 such as 2025-11-03T09:30:00Z)",
                columns.names[i], cells[i]
            ),
        })?,
    };
    let text =
        columns.text.iter().map(|&i| cells[i]).filter(|t| !t.is_empty()).collect::<Vec<_>>().join(TEXT_SEPARATOR);
    let fields: Map<String, Value> =
        columns.fields.iter().map(|&i| (columns.names[i].clone(), Value::String(cells[i].to_string()))).collect();
    Ok(Record { source: source.to_string(), id: id.to_string(), text, fields, updated_at })
}

/// The invalid item of a bad row, with its raw bytes for the failures table.
pub(super) fn invalid(at: Locator<'_>, raw: String, bad: BadRow) -> SourceItem {
    let error = format!("{at}: {}", bad.reason);
    SourceItem::Invalid { id: at.to_string(), raw, error_type: bad.error_type.to_string(), error }
}

#[cfg(test)]
mod tests {
    use super::super::columns::Wanted;
    use super::*;

    fn columns() -> Columns {
        let wanted =
            Wanted { id: "id".into(), text: vec!["title".into(), "body".into()], updated_at: Some("at".into()) };
        Columns::resolve("f.csv", &ByteRecord::from(vec!["id", "title", "body", "at", "lang"]), &wanted).unwrap()
    }

    #[test]
    fn a_row_becomes_a_record_with_string_fields() {
        let row = ByteRecord::from(vec!["7", "Hello", "World", "1700000000", "en"]);
        let r = to_record("csv", &row, &columns()).unwrap();
        assert_eq!((r.id.as_str(), r.text.as_str(), r.updated_at), ("7", "Hello\n\nWorld", Some(1_700_000_000)));
        assert_eq!(r.fields.len(), 1);
        assert_eq!(r.fields["lang"], Value::String("en".into()));

        let row = ByteRecord::from(vec!["8", "", "only body", "2024-05-01T12:30:00Z", "007"]);
        let r = to_record("csv", &row, &columns()).unwrap();
        assert_eq!((r.text.as_str(), r.updated_at), ("only body", Some(1_714_566_600)));
        assert_eq!(r.fields["lang"], Value::String("007".into()), "numbers stay strings");
        let row = ByteRecord::from(vec!["9", "t", "b", " ", "x"]);
        assert_eq!(to_record("csv", &row, &columns()).unwrap().updated_at, None);
    }

    #[test]
    fn bad_rows_say_what_and_where() {
        let bad = |cells: Vec<&[u8]>| to_record("csv", &ByteRecord::from(cells), &columns()).unwrap_err();
        let e = bad(vec![b" ", b"t", b"b", b"", b"x"]);
        assert_eq!((e.error_type, e.reason.as_str()), ("missing_field", "column \"id\" (the id) is empty"));
        let e = bad(vec![b"1", b"t", b"b\xff", b"", b"x"]);
        assert_eq!(e.error_type, "encoding");
        assert!(e.reason.starts_with("column \"body\" is not valid UTF-8"), "{}", e.reason);
        let e = bad(vec![b"1", b"t", b"b", b"last week", b"x"]);
        assert_eq!(e.error_type, "parse");
        assert!(e.reason.contains("\"at\" = \"last week\" is not a time"), "{}", e.reason);
        let item = invalid(Locator { file: "f.csv", line: 4 }, "raw".into(), e);
        let SourceItem::Invalid { id, error, .. } = item else { panic!("{item:?}") };
        assert_eq!(id, "f.csv:4");
        assert!(error.starts_with("f.csv:4: column \"at\""), "{error}");
    }
}
