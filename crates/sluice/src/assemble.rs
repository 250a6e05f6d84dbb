//! Builds a runnable pipeline from a pipeline file and an opened store.

use std::sync::Arc;

use sluice_connectors::phase::build_phases;
use sluice_connectors::registry::{OpenedStore, build_source_for, build_stage, open_store, source_stages, with_sink};
use sluice_core::{Pipeline, Store};

use crate::cli::StoreArgs;
use crate::config::{ConfigError, PipelineFile, resolve_store};
use crate::error::CliError;

/// The source is built for the resolved mode (the Intercom source filters
/// short conversations at page level in streaming mode, and a quality stage
/// does it first in batch mode), and a relative date range (`days`) is
/// resolved once, so source, settings and the saved configuration name the
/// same dates. A `[sink]` is put in front of the store.
pub fn build_pipeline(file: &PipelineFile, store: Arc<dyn Store>) -> Result<Pipeline, ConfigError> {
    let mut file = file.clone();
    file.source.kind_mut().pin()?;
    let settings = file.settings();
    let mode = settings.mode;
    let source = build_source_for(&file.source, mode)?;
    // The sink sees every batch the store commits, before the store does.
    let store = match &file.sink {
        Some(sink) => with_sink(store, sink)?,
        None => store,
    };
    let mut pipeline = Pipeline::new(source, store).settings(settings);
    for spec in source_stages(&file.source, mode) {
        pipeline = pipeline.stage(spec);
    }
    for entry in &file.stages {
        pipeline = pipeline.stage(build_stage(entry)?);
    }
    for phase in build_phases(&file.phases, file.auto_create_stories.unwrap_or(false))? {
        pipeline = pipeline.phase(phase);
    }
    Ok(pipeline)
}

pub fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// Opens the store named by `--db`, else `DATABASE_URL`, else the file's
/// `[store]`, else `sluice.db`.
pub fn open_store_for(db: Option<&str>, file: Option<&PipelineFile>) -> Result<OpenedStore, CliError> {
    let config = match db {
        Some(url) => sluice_connectors::registry::StoreConfig::from_url(url)?,
        None => resolve_store(file, &env_var)?,
    };
    Ok(open_store(&config)?)
}

/// For the read-only commands: the store of `--db`/`DATABASE_URL`/`-c FILE`.
pub fn open_store_args(args: &StoreArgs) -> Result<OpenedStore, CliError> {
    let file = match &args.config {
        Some(path) => Some(PipelineFile::load(path)?),
        None => None,
    };
    open_store_for(args.db.as_deref(), file.as_ref())
}
