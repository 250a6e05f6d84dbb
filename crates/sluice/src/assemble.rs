//! Builds a runnable pipeline from a pipeline file and an opened store.

use std::sync::Arc;

use sluice_connectors::phase::build_phases;
use sluice_connectors::registry::{build_source, build_stage, open_store};
use sluice_connectors::store::InspectStore;
use sluice_core::{Pipeline, Store};

use crate::cli::StoreArgs;
use crate::config::{ConfigError, PipelineFile, resolve_store};
use crate::error::CliError;

/// A relative date range (`days`) is resolved once, so source, settings and
/// the saved configuration name the same dates. A `[sink]` is written before
/// each commit of the store.
pub fn build_pipeline(file: &PipelineFile, store: Arc<dyn Store>) -> Result<Pipeline, ConfigError> {
    let mut file = file.clone();
    file.source.pin_date_range()?;
    let settings = file.settings();
    let source = build_source(&file.source)?;
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

pub fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// Opens the store named by `--db`, else `DATABASE_URL`, else the file's
/// `[store]`, else `sluice.db`.
pub fn open_store_for(db: Option<&str>, file: Option<&PipelineFile>) -> Result<Arc<dyn InspectStore>, CliError> {
    let config = match db {
        Some(url) => sluice_connectors::registry::StoreConfig::from_url(url)?,
        None => resolve_store(file, &env_var)?,
    };
    Ok(open_store(&config)?)
}

/// For the read-only commands: the store of `--db`/`DATABASE_URL`/`-c FILE`.
pub fn open_store_args(args: &StoreArgs) -> Result<Arc<dyn InspectStore>, CliError> {
    let file = match &args.config {
        Some(path) => Some(PipelineFile::load(path)?),
        None => None,
    };
    open_store_for(args.db.as_deref(), file.as_ref())
}
