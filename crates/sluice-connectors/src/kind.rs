//! What a component's configuration can do, as traits its config type
//! implements in the component's own file: a source config builds its
//! source and says what a run of it defaults to; a stage config builds its
//! stage. The registry only dispatches to them, so what one source needs
//! (a date range, a watch switch) lives with that source and nowhere else.

use std::sync::Arc;

use sluice_core::{Source, Stage};

use crate::ConfigError;

/// A `[source]` configuration.
pub trait SourceKind {
    /// The source these settings describe; refuses bad values with the key,
    /// the value and what is allowed.
    fn build(&self) -> Result<Arc<dyn Source>, ConfigError>;

    /// What a run of this source uses where the pipeline file says nothing.
    fn run_defaults(&self) -> RunDefaults {
        RunDefaults::default()
    }

    /// Replaces settings that mean something else tomorrow (a range of "the
    /// last N days") by what they mean today, so the settings saved with a
    /// run name the same data whenever it is resumed.
    fn pin(&mut self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// The source's date range, for sources that read one.
    fn dated(&mut self) -> Option<&mut dyn DateRanged> {
        None
    }

    /// The source's watch switch, for sources that can keep running for new data.
    fn watchable(&mut self) -> Option<&mut dyn Watchable> {
        None
    }

    /// The source's incremental settings, for sources that read by `updated_at`.
    fn incremental(&mut self) -> Option<&mut dyn Incremental> {
        None
    }
}

/// What a run of a source uses where the pipeline file says nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDefaults {
    /// The word for the source's records in log lines.
    pub noun: &'static str,
    /// The phase a run starts in (else the engine's `ingest`).
    pub phase: Option<&'static str>,
    /// A record limit the source's own settings give.
    pub max_records: Option<u64>,
}

impl Default for RunDefaults {
    fn default() -> Self {
        Self { noun: "records", phase: None, max_records: None }
    }
}

/// A source that reads a range of days (UTC, `YYYY-MM-DD`, both included).
pub trait DateRanged {
    /// The range as of today; an invalid one is refused with the reason.
    fn range(&self) -> Result<(String, String), ConfigError>;

    /// Reads `date_from..=date_to` instead of what the settings say (e.g. the
    /// range an HTTP request asked for).
    fn set_range(&mut self, date_from: &str, date_to: &str) -> Result<(), ConfigError>;
}

/// A source that can keep running for new and changed data until stopped.
pub trait Watchable {
    fn watching(&self) -> bool;

    fn set_watching(&mut self, on: bool);
}

/// A source whose runs can start from the pipeline's high-water mark
/// (see [`crate::incremental`]).
pub trait Incremental {
    /// `incremental = true`: every new run is incremental.
    fn incremental(&self) -> bool;

    fn set_incremental(&mut self, on: bool);

    /// Seconds before the high-water mark that are read again.
    fn overlap_secs(&self) -> u64;

    /// The `source` its documents are stored under.
    fn record_source(&self) -> &str;

    /// Reads exactly `start <= updated_at < end` (epoch seconds).
    fn set_span(&mut self, start: i64, end: i64) -> Result<(), ConfigError>;
}

/// A `[[stages]]` entry's configuration.
pub trait StageKind {
    /// The stage these settings describe; refuses bad values with the key,
    /// the value and what is allowed.
    fn build(&self) -> Result<Arc<dyn Stage>, ConfigError>;
}
