//! The files a file source's `path` names: one file, or a glob of them.

use std::path::{Path, PathBuf};

use crate::ConfigError;

/// The files `pattern` names: itself when it is an existing file, else the
/// files its glob matches, sorted by name. `key` names the setting in
/// messages (`jsonl.path`); `ext` is the extension a suggested glob uses.
pub(crate) fn match_files(key: &str, ext: &str, pattern: &str) -> Result<Vec<(String, PathBuf)>, ConfigError> {
    let plain = Path::new(pattern);
    if plain.is_file() {
        return Ok(vec![(pattern.to_string(), plain.to_path_buf())]);
    }
    if plain.is_dir() {
        return Err(ConfigError(format!(
            "{key} = {pattern:?} is a directory; give a file or a glob such as \"{}/*.{ext}\"",
            pattern.trim_end_matches('/')
        )));
    }
    let paths =
        glob::glob(pattern).map_err(|e| ConfigError(format!("{key} = {pattern:?} is not a valid glob: {e}")))?;
    let mut files: Vec<(String, PathBuf)> =
        paths.filter_map(Result::ok).filter(|p| p.is_file()).map(|p| (p.to_string_lossy().into_owned(), p)).collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files.dedup_by(|a, b| a.0 == b.0);
    if files.is_empty() {
        return Err(ConfigError(format!("{key} = {pattern:?}: no file matches this path or glob")));
    }
    Ok(files)
}
