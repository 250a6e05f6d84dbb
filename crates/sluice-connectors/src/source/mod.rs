//! Sources: where records come from. Each implements [`sluice_core::Source`].
//!
//! - [`jsonl::JsonlSource`]: JSON lines files (one partition per file).
//! - [`csv::CsvSource`]: CSV files with a header row (one partition per file, resumable by row).
//! - [`files::FilesSource`]: a directory of text, markdown, HTML and JSON files.
//!   [`files::watch`] keeps it running to pick up new and changed files (`watch = true`).
//! - [`generate::GenerateSource`]: deterministic synthetic records for tests and benchmarks.
//! - [`intercom::IntercomSource`]: Intercom conversations by `updated_at` date range.
//! - [`crawl::CrawlSource`]: a polite, resumable web crawl (the checkpoint is the frontier).
//!
//! Each but `generate` is behind the cargo feature of its name (`watch` for
//! watching a files source).

#[cfg(feature = "crawl")]
pub mod crawl;
#[cfg(feature = "csv")]
pub mod csv;
#[cfg(feature = "files")]
pub mod files;
pub mod generate;
#[cfg(feature = "intercom")]
pub mod intercom;
#[cfg(feature = "jsonl")]
pub mod jsonl;
