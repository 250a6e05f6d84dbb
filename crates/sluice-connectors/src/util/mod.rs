//! Small helpers every kind of connector uses, kept apart so that no source
//! imports a stage (or the reverse) to share them.
//!
//! - [`secret`]: a credential that never prints, and URL password redaction.
//! - [`validate`]: the range and non-empty checks of configuration values.
//! - [`html`]: entity decoding and the "is this HTML?" test.
//! - [`text`]: UTF-8-safe truncation and the raw excerpt of a bad input.
//! - [`time`]: RFC 3339 timestamps and UTC calendar dates.
//! - [`hash`]: stable digests of texts (FNV-1a, SHA-256 prefixes).
//! - `line_cursor`: the `offset:line` cursor of the jsonl and csv sources.
//! - `paths`: the files a file source's `path` (a file or a glob) names.

pub mod hash;
pub mod html;
#[cfg(any(feature = "jsonl", feature = "csv"))]
pub(crate) mod line_cursor;
#[cfg(any(feature = "jsonl", feature = "csv"))]
pub(crate) mod paths;
pub mod secret;
pub mod text;
pub mod time;
pub mod validate;
