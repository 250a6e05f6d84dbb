//! Errors of the command line, each with the exit code scripts can rely on.

use std::fmt;

/// Exit codes: 0 completed, 1 the run failed or an error at run time,
/// 2 bad input (arguments, configuration, files), 3 the run stopped before
/// the end (resumable), 4 another run is active on the store, 5 the run
/// completed with failed records and `--fail-on-failures` was given, 130
/// aborted by a second signal (resumable from the last committed checkpoint).
pub mod code {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const STOPPED: u8 = 3;
    pub const BUSY: u8 = 4;
    /// `--fail-on-failures`: the run ended, but records failed in some phase.
    pub const RECORDS_FAILED: u8 = 5;
    pub const ABORTED: u8 = 130;
}

#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        Self { code: code::USAGE, message: message.into() }
    }

    pub fn runtime(message: impl Into<String>) -> Self {
        Self { code: code::FAILED, message: message.into() }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<sluice_connectors::ConfigError> for CliError {
    fn from(e: sluice_connectors::ConfigError) -> Self {
        CliError::usage(e.0)
    }
}

impl From<sluice_core::StoreError> for CliError {
    fn from(e: sluice_core::StoreError) -> Self {
        match e {
            sluice_core::StoreError::Busy { active_run_id } => Self {
                code: code::BUSY,
                message: format!(
                    "run {active_run_id} is already active on this store; stop it or wait for it to finish"
                ),
            },
            other => CliError::runtime(other.to_string()),
        }
    }
}

impl From<sluice_core::EngineError> for CliError {
    fn from(e: sluice_core::EngineError) -> Self {
        match e {
            sluice_core::EngineError::Store(store) => store.into(),
            sluice_core::EngineError::Invalid(message) => CliError::usage(message),
            other => CliError::runtime(other.to_string()),
        }
    }
}
