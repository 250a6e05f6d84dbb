//! Which header column plays which part: the id, the text, the change time,
//! and every other column as a string field.

use csv::ByteRecord;

/// The column names the settings ask for.
#[derive(Clone, Debug)]
pub(super) struct Wanted {
    pub id: String,
    pub text: Vec<String>,
    pub updated_at: Option<String>,
}

/// Positions of the wanted columns in one file's header.
#[derive(Clone, Debug)]
pub(super) struct Columns {
    /// Every header name, in order.
    pub names: Vec<String>,
    pub id: usize,
    pub text: Vec<usize>,
    pub updated_at: Option<usize>,
    /// The other columns, in header order: they become the record's fields.
    pub fields: Vec<usize>,
}

impl Columns {
    /// Maps `wanted` onto the header of `file`, or says which column is
    /// missing (with the header's columns) or why the header is unusable.
    pub fn resolve(file: &str, header: &ByteRecord, wanted: &Wanted) -> Result<Columns, String> {
        let mut names = Vec::with_capacity(header.len());
        for (i, raw) in header.iter().enumerate() {
            let name = std::str::from_utf8(raw)
                .map_err(|e| format!("{file}: header column {} is not valid UTF-8: {e}", i + 1))?;
            if let Some(first) = names.iter().position(|n: &String| n == name) {
                return Err(format!(
                    "{file}: column {name:?} appears twice in the header (columns {} and {}); column names must be unique",
                    first + 1,
                    i + 1
                ));
            }
            names.push(name.to_string());
        }
        let find = |key: &str, column: &str| -> Result<usize, String> {
            names.iter().position(|n| n == column).ok_or_else(|| {
                let listed = names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
                let hint = match names.as_slice() {
                    [only] if only.contains([',', ';', '\t', '|']) => {
                        " (one column only: is csv.delimiter right for this file?)"
                    }
                    _ => "",
                };
                format!("csv.{key} = {column:?} is not a column of {file} (its header: {listed}){hint}")
            })
        };
        let id = find("id_column", &wanted.id)?;
        let text = wanted.text.iter().map(|c| find("text_columns", c)).collect::<Result<Vec<_>, _>>()?;
        let updated_at = wanted.updated_at.as_deref().map(|c| find("updated_at_column", c)).transpose()?;
        let fields = (0..names.len()).filter(|i| *i != id && !text.contains(i) && updated_at != Some(*i)).collect();
        Ok(Columns { names, id, text, updated_at, fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> Wanted {
        Wanted { id: "id".into(), text: vec!["title".into(), "body".into()], updated_at: Some("at".into()) }
    }

    #[test]
    fn resolves_parts_and_keeps_the_rest_as_fields() {
        let header = ByteRecord::from(vec!["body", "id", "lang", "at", "title", "tag"]);
        let c = Columns::resolve("f.csv", &header, &wanted()).unwrap();
        assert_eq!(
            (c.id, c.text.as_slice(), c.updated_at, c.fields.as_slice()),
            (1, &[4, 0][..], Some(3), &[2, 5][..])
        );
    }

    #[test]
    fn refuses_missing_duplicate_and_non_utf8_columns() {
        let error = Columns::resolve("f.csv", &ByteRecord::from(vec!["id", "body", "at"]), &wanted()).unwrap_err();
        assert_eq!(error, r#"csv.text_columns = "title" is not a column of f.csv (its header: "id", "body", "at")"#);
        let error = Columns::resolve("f.csv", &ByteRecord::from(vec!["id;title;body"]), &wanted()).unwrap_err();
        assert!(error.contains("csv.id_column") && error.contains("csv.delimiter"), "{error}");
        let error = Columns::resolve("f.csv", &ByteRecord::from(vec!["id", "x", "id"]), &wanted()).unwrap_err();
        assert!(error.contains("\"id\" appears twice") && error.contains("columns 1 and 3"), "{error}");
        let error = Columns::resolve("f.csv", &ByteRecord::from(vec![&b"id"[..], b"\xff"]), &wanted()).unwrap_err();
        assert!(error.contains("header column 2 is not valid UTF-8"), "{error}");
    }
}
