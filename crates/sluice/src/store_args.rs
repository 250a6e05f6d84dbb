//! Opens the store a command works on, from its flags, the environment and
//! the pipeline file. (The pipeline itself is built by
//! [`sluice_connectors::build_pipeline`].)

use std::sync::Arc;

use sluice_connectors::PipelineFile;
use sluice_connectors::registry::open_store;
use sluice_connectors::store::InspectStore;

use crate::cli::StoreArgs;
use crate::env::{env_var, store_config};
use crate::error::CliError;

/// Opens the store named by `--db`, else `DATABASE_URL`, else the file's
/// `[store]`, else `sluice.db`.
pub fn open_store_for(db: Option<&str>, file: Option<&PipelineFile>) -> Result<Arc<dyn InspectStore>, CliError> {
    let config = match db {
        Some(url) => sluice_connectors::registry::StoreConfig::from_url(url)?,
        None => store_config(file, &env_var)?,
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
