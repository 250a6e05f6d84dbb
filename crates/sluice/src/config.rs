//! The pipeline file (TOML) and the environment variables that override it.
//! Every bad value is refused at start with the key, the value and what is
//! allowed; a resumed run reads its original settings back from the store.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sluice_connectors::phase::PhasesConfig;
use sluice_connectors::registry::{SinkConfig, SourceConfig, StageEntry, StoreConfig};
use sluice_core::pipeline::{DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE, MIN_BATCH_SIZE};
use sluice_core::{Mode, RunLabels, RunWindow, Settings};

/// The pipeline file, as written by the user.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Runs are resumed by pipeline name; defaults to the file's stem.
    pub name: Option<String>,
    pub mode: Option<Mode>,
    pub batch_size: Option<usize>,
    pub max_batch_bytes: Option<usize>,
    pub max_records: Option<u64>,
    pub per_document_events: Option<bool>,
    pub partition_concurrency: Option<usize>,
    pub phase: Option<String>,
    /// Run story creation after theme extraction (the runbook's flag).
    pub auto_create_stories: Option<bool>,
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
}

/// A configuration error, shown to the user as is.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<sluice_connectors::ConfigError> for ConfigError {
    fn from(e: sluice_connectors::ConfigError) -> Self {
        ConfigError(e.0)
    }
}

impl PipelineFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read pipeline file {}: {e}", path.display())))?;
        let mut file: PipelineFile =
            toml::from_str(&text).map_err(|e| ConfigError(format!("invalid pipeline file {}: {e}", path.display())))?;
        if file.name.is_none() {
            file.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        file.validate(&format!(" in {}", path.display()))?;
        Ok(file)
    }

    /// The settings as they were saved with a run.
    pub fn from_saved(value: &serde_json::Value) -> Result<Self, ConfigError> {
        serde_json::from_value(value.clone())
            .map_err(|e| ConfigError(format!("the run's saved configuration cannot be read: {e}")))
    }

    /// Applies `PIPELINE_MODE`, `PIPELINE_STREAMING_BATCH`,
    /// `PIPELINE_STREAMING_BATCH_SIZE` and `EMBEDDING_BATCH_SIZE` from `env`.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let mode = env("PIPELINE_MODE").map(|v| parse_mode(&v)).transpose()?;
        let flag = env("PIPELINE_STREAMING_BATCH").map(|v| parse_flag(&v)).transpose()?;
        match (mode, flag) {
            (Some(mode), Some(flag)) if (mode == Mode::Streaming) != flag => {
                return Err(ConfigError(format!(
                    "PIPELINE_MODE={} contradicts PIPELINE_STREAMING_BATCH={flag}: set one of them",
                    mode.as_str()
                )));
            }
            (Some(mode), _) => self.mode = Some(mode),
            (None, Some(true)) => self.mode = Some(Mode::Streaming),
            (None, Some(false)) => self.mode = Some(Mode::Batch),
            (None, None) => {}
        }
        if let Some(value) = env("PIPELINE_STREAMING_BATCH_SIZE") {
            self.batch_size = Some(parse_in_range(
                "PIPELINE_STREAMING_BATCH_SIZE",
                &value,
                MIN_BATCH_SIZE as u64,
                MAX_BATCH_SIZE as u64,
            )? as usize);
        }
        if let Some(value) = env("EMBEDDING_BATCH_SIZE") {
            let size = parse_in_range("EMBEDDING_BATCH_SIZE", &value, 1, 2048)? as usize;
            for entry in &mut self.stages {
                if let sluice_connectors::registry::StageConfig::Embed(embed) = &mut entry.stage {
                    embed.batch_size = size;
                }
            }
            if let Some(embed) = self.phases.embed_mut() {
                embed.batch_size = size;
            }
        }
        self.validate("")
    }

    /// Checks the values; `origin` (e.g. ` in pipeline.toml`) ends each message.
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
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
        if self.max_records == Some(0) {
            return refuse("max_records = 0 would fetch nothing (allowed: at least 1, or leave it out)".into());
        }
        if let Some(n) = self.partition_concurrency
            && !(1..=64).contains(&n)
        {
            return refuse(format!("partition_concurrency = {n} is out of range (allowed: 1-64)"));
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
        self.validate("")
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

fn parse_mode(value: &str) -> Result<Mode, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "streaming" => Ok(Mode::Streaming),
        "batch" => Ok(Mode::Batch),
        _ => Err(ConfigError(format!("PIPELINE_MODE={value} is not a mode (allowed: streaming, batch)"))),
    }
}

fn parse_flag(value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError(format!("PIPELINE_STREAMING_BATCH={value} is not a boolean (allowed: true, false)"))),
    }
}

fn parse_in_range(key: &str, value: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n: u64 = value
        .trim()
        .parse()
        .map_err(|_| ConfigError(format!("{key}={value} is not a whole number (allowed: {min}-{max})")))?;
    if !(min..=max).contains(&n) {
        return Err(ConfigError(format!("{key}={value} is out of range (allowed: {min}-{max})")));
    }
    Ok(n)
}

/// The store to use: `DATABASE_URL` if set, else the file's `[store]`, else `sluice.db`.
pub fn resolve_store(
    file: Option<&PipelineFile>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StoreConfig, ConfigError> {
    if let Some(url) = env("DATABASE_URL").filter(|u| !u.trim().is_empty()) {
        return Ok(StoreConfig::from_url(&url)?);
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

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |key| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string())
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
    fn env_overrides_and_refuses_bad_values() {
        let mut f = file(MINIMAL).unwrap();
        f.apply_env(&env_of(&[("PIPELINE_STREAMING_BATCH_SIZE", "120"), ("PIPELINE_MODE", "batch")])).unwrap();
        assert_eq!(f.settings().batch_size, 120);
        assert_eq!(f.settings().mode, Mode::Batch);

        let mut f = file(MINIMAL).unwrap();
        f.apply_env(&env_of(&[("PIPELINE_STREAMING_BATCH", "false")])).unwrap();
        assert_eq!(f.settings().mode, Mode::Batch);

        for (pairs, needle) in [
            (
                &[("PIPELINE_STREAMING_BATCH_SIZE", "501")][..],
                "PIPELINE_STREAMING_BATCH_SIZE=501 is out of range (allowed: 10-500)",
            ),
            (
                &[("PIPELINE_STREAMING_BATCH_SIZE", "lots")][..],
                "PIPELINE_STREAMING_BATCH_SIZE=lots is not a whole number",
            ),
            (&[("PIPELINE_MODE", "fast")][..], "PIPELINE_MODE=fast is not a mode"),
            (&[("PIPELINE_STREAMING_BATCH", "maybe")][..], "PIPELINE_STREAMING_BATCH=maybe is not a boolean"),
            (&[("PIPELINE_MODE", "batch"), ("PIPELINE_STREAMING_BATCH", "true")][..], "contradicts"),
            (&[("EMBEDDING_BATCH_SIZE", "0")][..], "EMBEDDING_BATCH_SIZE=0 is out of range"),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = Box::leak(pairs.to_vec().into_boxed_slice());
            let mut f = file(MINIMAL).unwrap();
            let err = f.apply_env(&env_of(pairs)).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should contain {needle}");
        }
    }

    #[test]
    fn saved_config_round_trips() {
        let f = file(&format!("batch_size = 20\n{MINIMAL}")).unwrap();
        let saved = f.settings().config;
        let back = PipelineFile::from_saved(&saved).unwrap();
        assert_eq!(back.settings().batch_size, 20);
        assert_eq!(back.name, f.name);
    }

    #[test]
    fn an_intercom_file_saves_its_range_as_dates_and_counts_conversations() {
        use sluice_connectors::source::intercom::dates::{format_date, today};
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
        let err = f.apply_env(&env_of(&[("PIPELINE_MODE", "batch")])).unwrap_err().to_string();
        assert!(err.contains("watch = true needs mode = streaming"), "{err}");
        let err = file(&format!("mode = \"batch\"\n{files}watch = true\n")).unwrap_err().to_string();
        assert!(err.contains("watch = true needs mode = streaming") && err.contains("p.toml"), "{err}");
    }

    #[test]
    fn database_url_beats_the_file() {
        let f = file(&format!("{MINIMAL}[store]\nkind = \"sqlite\"\npath = \"a.db\"\n")).unwrap();
        let store = resolve_store(Some(&f), &env_of(&[("DATABASE_URL", "sqlite:b.db")])).unwrap();
        assert!(matches!(store, StoreConfig::Sqlite { path } if path == Path::new("b.db")));
        let store = resolve_store(Some(&f), &env_of(&[])).unwrap();
        assert!(matches!(store, StoreConfig::Sqlite { path } if path == Path::new("a.db")));
    }
}
