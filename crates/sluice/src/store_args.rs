//! Opens the store a command works on, from its flags, the environment and
//! the pipeline file. (The pipeline itself is built by
//! [`sluice_connectors::build_pipeline`].)

use std::path::PathBuf;
use std::sync::Arc;

use sluice_connectors::PipelineFile;
use sluice_connectors::registry::{StoreConfig, open_store};
use sluice_connectors::store::InspectStore;

use crate::cli::StoreArgs;
use crate::env::{StoreOrigin, env_var, store_config};
use crate::error::CliError;

/// Opens the store named by `--db`, else `SLUICE_DATABASE_URL`, else
/// `DATABASE_URL`, else the file's `[store]`, else `sluice.db`.
pub fn open_store_for(db: Option<&str>, file: Option<&PipelineFile>) -> Result<Arc<dyn InspectStore>, CliError> {
    Ok(open_store(&resolve(db, file)?.0)?)
}

/// The store's configuration, and where it came from.
pub fn resolve(db: Option<&str>, file: Option<&PipelineFile>) -> Result<(StoreConfig, StoreOrigin), CliError> {
    Ok(match db {
        Some(url) => (StoreConfig::from_url(url)?, StoreOrigin::Flag),
        None => store_config(file, &env_var)?,
    })
}

/// For the read-only commands (`status`, `runs`, `failures`, `events`): the
/// store of `--db`/the environment/`-c FILE`, which must exist already: a
/// mistyped SQLite path is refused, never created.
pub fn open_store_args(args: &StoreArgs) -> Result<Arc<dyn InspectStore>, CliError> {
    let file = match &args.config {
        Some(path) => Some(PipelineFile::load(path)?),
        None => None,
    };
    let (config, origin) = resolve(args.db.as_deref(), file.as_ref())?;
    if let Some(path) = sqlite_path(&config)
        && !path.exists()
    {
        return Err(CliError::usage(format!(
            "no database at {} (the store of {}): check the path; this command never creates one",
            path.display(),
            origin.describe()
        )));
    }
    Ok(open_store(&config)?)
}

/// The file of a SQLite store (whatever the build's features).
fn sqlite_path(config: &StoreConfig) -> Option<PathBuf> {
    let value = serde_json::to_value(config).ok()?;
    (value["kind"] == "sqlite").then(|| value["path"].as_str().map(PathBuf::from)).flatten()
}
