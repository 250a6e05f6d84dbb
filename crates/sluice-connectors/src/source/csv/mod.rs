//! CSV files with a header row: one record per row, one partition per file.
//!
//! `id_column` is the record id, the `text_columns` (in order, empty ones
//! left out) joined by a blank line are its text, `updated_at_column` (when
//! set) its change time, and every other column a string field. Quoting,
//! embedded newlines, CRLF and a UTF-8 BOM are the `csv` crate's. Pages are
//! resumable by row: see [`reader`]. A row whose field count differs from the
//! header's (`parse`), that is not UTF-8 (`encoding`) or has an empty id
//! (`missing_field`) becomes a `SourceItem::Invalid` with id `<file>:<line>`.
//! Records are upserted by (source, id): a repeated id overwrites the earlier row.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_core::{Context, Page, Source, SourceError};

use self::columns::Wanted;
use self::reader::{Cursor, ReadSettings};
use crate::ConfigError;
use crate::util::paths::match_files;
use crate::util::validate::{check_not_empty, check_range};

mod columns;
mod reader;
mod row;

fn default_delimiter() -> String {
    ",".to_string()
}

fn default_page_size() -> usize {
    500
}

fn default_name() -> String {
    "csv".to_string()
}

fn default_max_row_bytes() -> usize {
    16 * 1024 * 1024
}

/// `[source] kind = "csv"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// A file, or a glob (`data/*.csv`) matching one or more files.
    pub path: String,
    /// The column holding the record id (must not be empty in a row).
    pub id_column: String,
    /// The columns joined, in this order, into the record's text.
    pub text_columns: Vec<String>,
    /// The field separator: one ASCII character (`,` `;` `\t` `|` ...).
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// The column holding the row's change time: seconds since 1970 or RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_column: Option<String>,
    /// Rows per page (1..=100000).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Source name stored with every record.
    #[serde(default = "default_name")]
    pub name: String,
    /// The longest row, in bytes, quotes and line end included (1024..=1073741824).
    /// A longer one (often an unclosed quote) stops the run, naming its line.
    #[serde(default = "default_max_row_bytes")]
    pub max_row_bytes: usize,
}

impl CsvConfig {
    pub fn new(path: impl Into<String>, id_column: impl Into<String>, text_columns: Vec<String>) -> Self {
        Self {
            path: path.into(),
            id_column: id_column.into(),
            text_columns,
            delimiter: default_delimiter(),
            updated_at_column: None,
            page_size: default_page_size(),
            name: default_name(),
            max_row_bytes: default_max_row_bytes(),
        }
    }
}

/// Reads CSV files: see the module docs.
#[derive(Debug)]
pub struct CsvSource {
    settings: Arc<ReadSettings>,
    /// (partition name, file), sorted by name.
    files: Vec<(String, PathBuf)>,
}

impl CsvSource {
    /// Checks every setting and every matched file's header (an empty file is
    /// fine: it has no rows).
    pub fn new(config: CsvConfig) -> Result<Self, ConfigError> {
        let settings = check(&config)?;
        let files = match_files("csv.path", "csv", &config.path)?;
        for (name, path) in &files {
            reader::check_header(name, path, &settings).map_err(ConfigError)?;
        }
        Ok(Self { settings: Arc::new(settings), files })
    }

    /// The matched files, as partition names.
    pub fn files(&self) -> Vec<String> {
        self.files.iter().map(|(name, _)| name.clone()).collect()
    }
}

/// The settings, checked, as the reader takes them.
fn check(config: &CsvConfig) -> Result<ReadSettings, ConfigError> {
    check_not_empty("csv.path", &config.path)?;
    check_range("csv.page_size", config.page_size, 1, 100_000)?;
    check_range("csv.max_row_bytes", config.max_row_bytes, 1024, 1 << 30)?;
    check_not_empty("csv.name", &config.name)?;
    check_not_empty("csv.id_column", &config.id_column)?;
    let delimiter = match config.delimiter.as_bytes() {
        [b] if b.is_ascii() && !matches!(b, b'"' | b'\n' | b'\r') => *b,
        _ => {
            return Err(ConfigError(format!(
                "csv.delimiter = {:?} must be one ASCII character other than a quote or a line end (e.g. \",\", \";\", \"\\t\", \"|\")",
                config.delimiter
            )));
        }
    };
    if config.text_columns.is_empty() {
        return Err(ConfigError("csv.text_columns = [] must name at least one column".into()));
    }
    for (i, column) in config.text_columns.iter().enumerate() {
        check_not_empty("csv.text_columns", column)?;
        if config.text_columns[..i].contains(column) {
            return Err(ConfigError(format!("csv.text_columns names {column:?} twice")));
        }
        if *column == config.id_column {
            return Err(ConfigError(format!(
                "csv.text_columns names {column:?}, which is csv.id_column; the id is not part of the text"
            )));
        }
    }
    if let Some(column) = &config.updated_at_column {
        check_not_empty("csv.updated_at_column", column)?;
        if *column == config.id_column || config.text_columns.contains(column) {
            return Err(ConfigError(format!(
                "csv.updated_at_column = {column:?} is already csv.id_column or one of csv.text_columns"
            )));
        }
    }
    Ok(ReadSettings {
        source_name: config.name.clone(),
        delimiter,
        page_size: config.page_size,
        max_row_bytes: config.max_row_bytes as u64,
        wanted: Wanted {
            id: config.id_column.clone(),
            text: config.text_columns.clone(),
            updated_at: config.updated_at_column.clone(),
        },
    })
}

#[async_trait]
impl Source for CsvSource {
    fn name(&self) -> &str {
        &self.settings.source_name
    }

    async fn partitions(&self) -> Result<Vec<String>, SourceError> {
        Ok(self.files())
    }

    async fn fetch(&self, _ctx: &Context, partition: &str, cursor: Option<&str>) -> Result<Page, SourceError> {
        let Some((name, path)) = self.files.iter().find(|(name, _)| name == partition) else {
            return Err(SourceError::fatal(format!("csv: unknown partition {partition:?}")));
        };
        let start = Cursor::parse("csv", cursor)?;
        let (settings, name, path) = (self.settings.clone(), name.clone(), path.clone());
        tokio::task::spawn_blocking(move || reader::read_page(&settings, &name, &path, start))
            .await
            .map_err(|e| SourceError::fatal(format!("csv: reading {partition} panicked: {e}")))?
    }
}

/// `kind = "csv"`.
impl crate::kind::SourceKind for CsvConfig {
    fn build(&self) -> Result<Arc<dyn Source>, ConfigError> {
        Ok(Arc::new(CsvSource::new(self.clone())?))
    }
}
