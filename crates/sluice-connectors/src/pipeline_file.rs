//! The pipeline file (TOML): what a run reads, fetches, computes and keeps,
//! and how it becomes a runnable [`Pipeline`]. Every bad value is refused at
//! start with the key, the value and what is allowed; a resumed run reads its
//! original settings back from the store ([`PipelineFile::from_saved`]).
//! Environment variables and command-line flags are the binary's: it applies
//! them to a loaded file through the setters here.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_core::pipeline::{DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE, MIN_BATCH_SIZE, MIN_MAX_RECORD_BYTES};
use sluice_core::{Mode, Pipeline, RunLabels, RunWindow, Settings, Store};

use crate::ConfigError;
use crate::phase::{PhasesConfig, build_phases};
use crate::registry::{SinkConfig, SourceConfig, StageConfig, StageEntry, StoreConfig, build_stage};
use crate::remote::endpoint::OpenAiEndpoint;

/// The pipeline file, as written by the user.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Runs are resumed by pipeline name; defaults to the file's stem.
    pub name: Option<String>,
    pub mode: Option<Mode>,
    pub batch_size: Option<usize>,
    pub max_batch_bytes: Option<usize>,
    /// A bigger record is a failure (docs/limits.md); default 16 MiB.
    pub max_record_bytes: Option<usize>,
    pub max_records: Option<u64>,
    pub per_document_events: Option<bool>,
    pub partition_concurrency: Option<usize>,
    pub phase: Option<String>,
    /// Run story creation after theme extraction (the runbook's flag).
    pub auto_create_stories: Option<bool>,
    /// Distributed runs: the id ranges each per-document later phase is cut
    /// into (default: as many as the source has partitions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_ranges: Option<usize>,
    pub source: SourceConfig,
    #[serde(default)]
    pub stages: Vec<StageEntry>,
    /// `[phases.*]`: what runs after the stages, over the stored documents.
    #[serde(default, skip_serializing_if = "PhasesConfig::is_empty")]
    pub phases: PhasesConfig,
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// Where documents are also written, e.g. `[sink] kind = "items"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkConfig>,
    /// `[prices."MODEL"]`: what a model costs per million tokens, to price
    /// a run's tokens (defaults exist for common OpenAI models).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub prices: std::collections::BTreeMap<String, ModelPrice>,
}

/// `[prices."MODEL"]`: US dollars per million tokens sent and received.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_1m: f64,
    #[serde(default)]
    pub output_per_1m: f64,
}

impl PipelineFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read pipeline file {}: {e}", path.display())))?;
        let mut file: PipelineFile = toml::from_str(&text)
            .map_err(|e| ConfigError(format!("invalid pipeline file {}: {}", path.display(), locate(&text, &e))))?;
        if file.name.is_none() {
            file.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        file.validate_in(&format!(" in {}", path.display()))?;
        Ok(file)
    }

    /// The settings as they were saved with a run.
    pub fn from_saved(value: &serde_json::Value) -> Result<Self, ConfigError> {
        serde_json::from_value(value.clone())
            .map_err(|e| ConfigError(format!("the run's saved configuration cannot be read: {e}")))
    }

    /// The OpenAI-compatible APIs the file's stages and phases call, each with
    /// the part that calls it (`classify`, `embed`, `embedding_generation`), in
    /// file order: what `sluice check` probes, with the key each part uses
    /// (an inline `api_key` is not in the saved or printed settings).
    pub fn openai_endpoints(&self) -> Vec<(&'static str, &OpenAiEndpoint)> {
        let mut found = Vec::new();
        for entry in &self.stages {
            match &entry.stage {
                #[cfg(feature = "openai")]
                StageConfig::Classify(crate::stage::classify::ClassifyConfig::Llm(llm)) => {
                    found.push(("classify", &llm.endpoint))
                }
                StageConfig::Embed(embed) if embed.provider == "openai" => found.push(("embed", &embed.endpoint)),
                _ => {}
            }
        }
        if let Some(embed) = self.phases.embedding_generation.as_ref().filter(|e| e.provider == "openai") {
            found.push(("embedding_generation", &embed.endpoint));
        }
        found
    }

    /// Sets the batch size of every embedder the file has (the embed stages'
    /// and the embedding phase's), e.g. from `EMBEDDING_BATCH_SIZE`.
    pub fn set_embed_batch_size(&mut self, size: usize) {
        for entry in &mut self.stages {
            if let StageConfig::Embed(embed) = &mut entry.stage {
                embed.batch_size = size;
            }
        }
        if let Some(embed) = self.phases.embed_mut() {
            embed.batch_size = size;
        }
    }

    /// Checks the values again, after the file was changed (e.g. by the environment).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in("")
    }

    /// Checks the values; `origin` (e.g. ` in pipeline.toml`) ends each message.
    fn validate_in(&self, origin: &str) -> Result<(), ConfigError> {
        let refuse = |message: String| Err(ConfigError(format!("{message}{origin}")));
        if let Some(size) = self.batch_size
            && !(MIN_BATCH_SIZE..=MAX_BATCH_SIZE).contains(&size)
        {
            return refuse(format!("batch_size = {size} is out of range (allowed: {MIN_BATCH_SIZE}-{MAX_BATCH_SIZE})"));
        }
        if let Some(bytes) = self.max_batch_bytes
            && bytes < 1024
        {
            return refuse(format!("max_batch_bytes = {bytes} is too small (allowed: at least 1024)"));
        }
        if let Some(bytes) = self.max_record_bytes
            && bytes < MIN_MAX_RECORD_BYTES
        {
            return refuse(format!(
                "max_record_bytes = {bytes} is too small (allowed: at least {MIN_MAX_RECORD_BYTES})"
            ));
        }
        if self.max_records == Some(0) {
            return refuse("max_records = 0 would fetch nothing (allowed: at least 1, or leave it out)".into());
        }
        if let Some(n) = self.partition_concurrency
            && !(1..=64).contains(&n)
        {
            return refuse(format!("partition_concurrency = {n} is out of range (allowed: 1-64)"));
        }
        if let Some(n) = self.phase_ranges
            && !(1..=1024).contains(&n)
        {
            return refuse(format!("phase_ranges = {n} is out of range (allowed: 1-1024)"));
        }
        if let Some(name) = &self.name
            && name.trim().is_empty()
        {
            return refuse("name is empty".into());
        }
        if self.watches() && self.mode == Some(Mode::Batch) {
            // Batch mode stores nothing before the source ends, and a watch never ends.
            return refuse("watch = true needs mode = streaming (batch mode would store nothing until stopped)".into());
        }
        Ok(())
    }

    /// Whether the source keeps running for new data until stopped (`files` with `watch = true`).
    pub fn watches(&self) -> bool {
        // The facet is reached through `&mut`; a clone of the settings is cheap.
        self.source.clone().kind_mut().watchable().is_some_and(|w| w.watching())
    }

    /// Whether the source has a watch switch (`files`).
    pub fn can_watch(&mut self) -> bool {
        self.source.kind_mut().watchable().is_some()
    }

    /// Sets `[source] watch = true`: the source keeps running for new and changed data.
    pub fn enable_watch(&mut self) -> Result<(), ConfigError> {
        let tag = self.source.tag();
        let Some(watch) = self.source.kind_mut().watchable() else {
            return Err(ConfigError(format!(
                "[source] kind = {tag:?} cannot watch (watch = true is a setting of the files source)"
            )));
        };
        watch.set_watching(true);
        self.validate()
    }

    pub fn store_config(&self) -> StoreConfig {
        self.store.clone().unwrap_or_default()
    }

    /// The engine settings this file describes; `config` is saved with the run.
    ///
    /// A source's date range (Intercom) becomes `date_from`/`date_to`, and a
    /// relative one (`days = N`) is saved as the dates it means today, so a
    /// resume on a later day reads the same range. A source's own limit
    /// (`max_conversations`) is `max_records` when the file sets none; an
    /// Intercom run counts "conversations" and its phase defaults to
    /// `classification`.
    pub fn settings(&self) -> Settings {
        let defaults = Settings::default();
        let mut saved = self.clone();
        // A bad range stays as written: building the source refuses it with the reason.
        let _ = saved.source.kind_mut().pin();
        let window =
            saved.source.kind_mut().dated().and_then(|d| d.range().ok()).map(|(from, to)| RunWindow { from, to });
        let source = self.source.kind().run_defaults();
        Settings {
            name: self.name.clone().unwrap_or_else(|| "default".into()),
            mode: self.mode.unwrap_or_default(),
            batch_size: self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
            max_batch_bytes: self.max_batch_bytes.unwrap_or(defaults.max_batch_bytes),
            max_record_bytes: self.max_record_bytes.unwrap_or(defaults.max_record_bytes),
            max_records: self.max_records.or(source.max_records),
            partition_concurrency: self.partition_concurrency.unwrap_or(defaults.partition_concurrency),
            per_document_events: self.per_document_events.unwrap_or(true),
            phase: self.phase.clone().or_else(|| source.phase.map(str::to_string)).unwrap_or(defaults.phase.clone()),
            config: serde_json::to_value(&saved).unwrap_or_default(),
            labels: RunLabels { noun: source.noun.to_string(), window },
            ..defaults
        }
    }
}

/// A TOML error, pointing at the key it is about. Errors inside a table read
/// through a tag (`[source]`, `[[stages]]`, `[store]`) carry the span of the
/// table's header only; the key is then looked for in the table's lines.
fn locate(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else { return error.to_string() };
    let header_line = text[..span.start.min(text.len())].matches('\n').count();
    let lines: Vec<&str> = text.lines().collect();
    let is_header = lines.get(header_line).is_some_and(|l| l.trim_start().starts_with('['));
    let key = quoted_after(message, "unknown field `", '`')
        .map(|k| Needle::Key(k.to_string()))
        .or_else(|| quoted_after(message, "string \"", '"').map(|v| Needle::Value(format!("\"{v}\""))))
        .or_else(|| quoted_after(message, "integer `", '`').map(|v| Needle::Value(v.to_string())));
    let found = match (is_header, key) {
        (true, Some(needle)) => lines
            .iter()
            .enumerate()
            .skip(header_line + 1)
            .take_while(|(_, l)| !l.trim_start().starts_with('['))
            .find(|(_, l)| needle.matches(l))
            .map(|(n, l)| (n, *l)),
        _ => None,
    };
    match found {
        Some((n, line)) => {
            let width = line.split('=').next().unwrap_or(line).trim_end().len().max(1);
            let pad = " ".repeat((n + 1).to_string().len());
            let table = lines[header_line].trim();
            format!(
                "line {}: {message} (in the {table} table at line {})\n{pad} |\n{} | {line}\n{pad} | {}",
                n + 1,
                header_line + 1,
                n + 1,
                "^".repeat(width)
            )
        }
        None => error.to_string(),
    }
}

/// What [`locate`] looks for in a table: a key, or a value as written.
enum Needle {
    Key(String),
    Value(String),
}

impl Needle {
    fn matches(&self, line: &str) -> bool {
        let Some((key, value)) = line.split_once('=') else { return false };
        match self {
            Needle::Key(k) => key.trim().trim_matches('"') == k,
            Needle::Value(v) => {
                let value = value.split(" #").next().unwrap_or(value).trim();
                value == v
            }
        }
    }
}

/// The text between `prefix` and the next `end` in `message`.
fn quoted_after<'a>(message: &'a str, prefix: &str, end: char) -> Option<&'a str> {
    let start = message.find(prefix)? + prefix.len();
    let len = message[start..].find(end)?;
    Some(&message[start..start + len])
}

/// Builds the pipeline `file` describes, over `store`.
///
/// A relative date range (`days`) is resolved once, so source, settings and
/// the saved configuration name the same dates. A `[sink]` is written before
/// each commit of the store.
pub fn build_pipeline(file: &PipelineFile, store: Arc<dyn Store>) -> Result<Pipeline, ConfigError> {
    let mut file = file.clone();
    file.source.kind_mut().pin()?;
    // An incremental pipeline assigns new documents to the themes it has (see phase::themes).
    let incremental = file.source.kind_mut().incremental().is_some_and(|i| i.incremental());
    if let Some(themes) = file.phases.theme_extraction.as_mut() {
        themes.incremental = incremental;
    }
    let settings = file.settings();
    let source = file.source.kind().build()?;
    let mut pipeline = Pipeline::new(source, store).settings(settings);
    if let Some(sink) = &file.sink {
        pipeline = pipeline.sink(sink.build()?);
    }
    for entry in &file.stages {
        pipeline = pipeline.stage(build_stage(entry)?);
    }
    for phase in build_phases(&file.phases, file.auto_create_stories.unwrap_or(false))? {
        pipeline = pipeline.phase(phase);
    }
    Ok(pipeline)
}

/// The store to use: `database_url` (`DATABASE_URL`) if given and not
/// blank, else the file's `[store]`, else `sluice.db`.
pub fn resolve_store(file: Option<&PipelineFile>, database_url: Option<&str>) -> Result<StoreConfig, ConfigError> {
    if let Some(url) = database_url.filter(|u| !u.trim().is_empty()) {
        return StoreConfig::from_url(url);
    }
    Ok(file.map(PipelineFile::store_config).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[source]\nkind = \"generate\"\ncount = 10\n";

    fn file(text: &str) -> Result<PipelineFile, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        PipelineFile::load(&path)
    }

    #[test]
    fn name_defaults_to_file_stem_and_settings_default() {
        let f = file(MINIMAL).unwrap();
        assert_eq!(f.name.as_deref(), Some("p"));
        let s = f.settings();
        assert_eq!(s.batch_size, 50);
        assert_eq!(s.mode, Mode::Streaming);
    }

    #[test]
    fn bad_values_in_file_name_key_value_and_range() {
        let err = file(&format!("batch_size = 5\n{MINIMAL}")).unwrap_err().to_string();
        assert!(err.contains("batch_size") && err.contains('5') && err.contains("10-500"), "{err}");
        let err = file(&format!("batchsize = 50\n{MINIMAL}")).unwrap_err().to_string();
        assert!(err.contains("batchsize") && err.contains("line 1"), "{err}");
        let err = file("[source]\nkind = \"nope\"\n").unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("line"), "{err}");
    }

    #[test]
    fn an_error_inside_a_stage_names_the_key_and_its_line() {
        let stages = "[source]\nkind = \"generate\"\ncount = 10\n\n[[stages]]\nkind = \"normalize\"\n\n[[stages]]\nkind = \"chunk\"\n";
        let err = file(&format!("{stages}by = \"chars\"\nsizee = 500\n")).unwrap_err().to_string();
        assert!(err.contains("line 11: unknown field `sizee`") && err.contains("[[stages]] table at line 8"), "{err}");
        assert!(err.contains("11 | sizee = 500"), "{err}");
        let err = file(&format!("{stages}size = \"big\"\n")).unwrap_err().to_string();
        assert!(err.contains("line 10: invalid type: string \"big\"") && err.contains("10 | size = \"big\""), "{err}");
        let err = file("[source]\nkind = \"generate\"\n# c\ncounts = 10\n").unwrap_err().to_string();
        assert!(err.contains("line 4: unknown field `counts`") && err.contains("[source] table at line 1"), "{err}");
        // A key at the top level keeps TOML's own span.
        let err = file(&format!("batchsize = 50\n{MINIMAL}")).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn saved_config_round_trips() {
        let f = file(&format!("batch_size = 20\n{MINIMAL}")).unwrap();
        let saved = f.settings().config;
        let back = PipelineFile::from_saved(&saved).unwrap();
        assert_eq!(back.settings().batch_size, 20);
        assert_eq!(back.name, f.name);
    }

    #[cfg(feature = "intercom")]
    #[test]
    fn an_intercom_file_saves_its_range_as_dates_and_counts_conversations() {
        use crate::source::intercom::dates::{format_date, today};
        let f = file("[source]\nkind = \"intercom\"\ndays = 30\nmax_conversations = 500\n").unwrap();
        let s = f.settings();
        assert_eq!(
            (s.labels.noun.as_str(), s.phase.as_str(), s.max_records),
            ("conversations", "classification", Some(500))
        );
        let (from, to) = (format_date(today() - 30), format_date(today()));
        let dates = |s: &Settings| s.labels.window.clone().map(|w| (w.from, w.to));
        assert_eq!(dates(&s), Some((from.clone(), to.clone())));
        // The saved settings name the dates, not `days`: a resume tomorrow reads the same range.
        assert_eq!(s.config["source"]["date_from"], from.as_str());
        assert!(s.config["source"].get("days").is_none(), "{}", s.config);
        let saved = PipelineFile::from_saved(&s.config).unwrap().settings();
        assert_eq!(dates(&saved), Some((from, to)));

        // The file's own phase and limit win.
        let f = file("phase = \"backfill\"\nmax_records = 7\n[source]\nkind = \"intercom\"\ndate_from = \"2025-10-01\"\ndate_to = \"2025-12-30\"\n").unwrap();
        let s = f.settings();
        assert_eq!((s.phase.as_str(), s.max_records), ("backfill", Some(7)));
        assert_eq!(dates(&s), Some(("2025-10-01".into(), "2025-12-30".into())));
        // Other sources have no range and count records.
        let s = file(MINIMAL).unwrap().settings();
        assert_eq!((dates(&s), s.labels.noun.as_str()), (None, "records"));
    }

    #[cfg(feature = "files")]
    #[test]
    fn watch_needs_a_files_source_and_streaming_mode() {
        let dir = tempfile::tempdir().unwrap();
        let files = format!("[source]\nkind = \"files\"\npath = {:?}\n", dir.path().display().to_string());
        let mut f = file(&files).unwrap();
        assert!(!f.watches());
        f.enable_watch().unwrap();
        assert!(f.watches());
        assert!(PipelineFile::from_saved(&f.settings().config).unwrap().watches());

        let err = file(MINIMAL).unwrap().enable_watch().unwrap_err().to_string();
        // The library names the setting; `sluice run --watch` adds the flag (tests/watch.rs).
        assert!(err.contains("watch = true") && err.contains("generate") && !err.contains("--watch"), "{err}");

        let mut f = file(&format!("{files}watch = true\n")).unwrap();
        f.mode = Some(Mode::Batch);
        let err = f.validate().unwrap_err().to_string();
        assert!(err.contains("watch = true needs mode = streaming"), "{err}");
        let err = file(&format!("mode = \"batch\"\n{files}watch = true\n")).unwrap_err().to_string();
        assert!(err.contains("watch = true needs mode = streaming") && err.contains("p.toml"), "{err}");
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn database_url_beats_the_file() {
        let f = file(&format!("{MINIMAL}[store]\nkind = \"sqlite\"\npath = \"a.db\"\n")).unwrap();
        let store = resolve_store(Some(&f), Some("sqlite:b.db")).unwrap();
        assert!(matches!(store, StoreConfig::Sqlite(c) if c.path == Path::new("b.db")));
        let store = resolve_store(Some(&f), Some(" ")).unwrap();
        assert!(matches!(store, StoreConfig::Sqlite(c) if c.path == Path::new("a.db")));
        let store = resolve_store(Some(&f), None).unwrap();
        assert!(matches!(store, StoreConfig::Sqlite(c) if c.path == Path::new("a.db")));
    }
}
