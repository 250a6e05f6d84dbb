//! Stand-ins for the configuration of a component this build lacks (its
//! cargo feature is off). A stand-in accepts any table, so the pipeline file
//! still reads, and building it fails with the feature to turn on, instead of
//! serde's "unknown variant". The registry uses one where the real config is
//! not compiled; with every feature on, none is.

// Each macro arm and the message are unused when every feature is on.
#![allow(unused_macros, dead_code, unused_imports, reason = "used only by builds without some features")]

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sluice_core::{Source, Stage};

use crate::ConfigError;
use crate::kind::{SourceKind, StageKind};
use crate::store::{InspectStore, StoreKind};

/// `what` (e.g. `[source] kind = "intercom"`) needs `feature`.
pub(crate) fn needs(what: &str, feature: &str) -> ConfigError {
    ConfigError(format!(
        "{what} needs sluice-connectors built with the `{feature}` feature (cargo build --features {feature})"
    ))
}

/// Declares the stand-in `$name` for `[$section] kind = "$tag"`, which
/// needs `$feature`, with the component trait of its section.
macro_rules! lacking {
    ($name:ident: source $tag:literal needs $feature:literal) => {
        lacking!(@type $name, concat!("[source] kind = \"", $tag, "\""), $feature);
        impl SourceKind for $name {
            fn build(&self) -> Result<Arc<dyn Source>, ConfigError> {
                Err(self.error())
            }
        }
    };
    ($name:ident: stage $tag:literal needs $feature:literal) => {
        lacking!(@type $name, concat!("[[stages]] kind = \"", $tag, "\""), $feature);
        impl StageKind for $name {
            fn build(&self) -> Result<Arc<dyn Stage>, ConfigError> {
                Err(self.error())
            }
        }
    };
    ($name:ident: store $tag:literal needs $feature:literal) => {
        lacking!(@type $name, concat!("[store] kind = \"", $tag, "\""), $feature);
        impl StoreKind for $name {
            fn open(&self) -> Result<Arc<dyn InspectStore>, ConfigError> {
                Err(self.error())
            }
        }
    };
    (@type $name:ident, $what:expr, $feature:literal) => {
        #[doc = concat!("Stands in for `", stringify!($name), "`: ", $what, " needs the `", $feature, "` feature.")]
        #[derive(Clone, Debug, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Map<String, Value>);

        impl $name {
            fn error(&self) -> ConfigError {
                needs($what, $feature)
            }
        }
    };
}

#[cfg(not(feature = "jsonl"))]
lacking!(JsonlConfig: source "jsonl" needs "jsonl");
#[cfg(not(feature = "files"))]
lacking!(FilesConfig: source "files" needs "files");
#[cfg(not(feature = "csv"))]
lacking!(CsvConfig: source "csv" needs "csv");
#[cfg(not(feature = "intercom"))]
lacking!(IntercomConfig: source "intercom" needs "intercom");
#[cfg(not(feature = "crawl"))]
lacking!(CrawlConfig: source "crawl" needs "crawl");
#[cfg(not(feature = "crawl"))]
lacking!(ExtractHtmlConfig: stage "extract_html" needs "crawl");
#[cfg(not(feature = "test-faults"))]
lacking!(TestPanicConfig: stage "test_panic" needs "test-faults");
#[cfg(not(feature = "sqlite"))]
lacking!(SqliteConfig: store "sqlite" needs "sqlite");
#[cfg(not(feature = "postgres"))]
lacking!(PostgresConfig: store "postgres" needs "postgres");
