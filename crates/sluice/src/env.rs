//! The environment variables that override a pipeline file: the legacy
//! aliases of the runbooks (`PIPELINE_MODE`, `PIPELINE_STREAMING_BATCH`,
//! `PIPELINE_STREAMING_BATCH_SIZE`, `EMBEDDING_BATCH_SIZE`) and the store's
//! `SLUICE_DATABASE_URL` / `DATABASE_URL`. Each bad value is refused with the variable, the value
//! and what is allowed.

use sluice_connectors::registry::StoreConfig;
use sluice_connectors::{ConfigError, PipelineFile, resolve_store};
use sluice_core::Mode;
use sluice_core::pipeline::{MAX_BATCH_SIZE, MIN_BATCH_SIZE};

/// The process environment, as the lookups below take it.
pub fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// Applies `PIPELINE_MODE`, `PIPELINE_STREAMING_BATCH`,
/// `PIPELINE_STREAMING_BATCH_SIZE` and `EMBEDDING_BATCH_SIZE` from `env` to `file`.
pub fn apply_env(file: &mut PipelineFile, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let mode = env("PIPELINE_MODE").map(|v| parse_mode(&v)).transpose()?;
    let flag = env("PIPELINE_STREAMING_BATCH").map(|v| parse_flag(&v)).transpose()?;
    match (mode, flag) {
        (Some(mode), Some(flag)) if (mode == Mode::Streaming) != flag => {
            return Err(ConfigError(format!(
                "PIPELINE_MODE={} contradicts PIPELINE_STREAMING_BATCH={flag}: set one of them",
                mode.as_str()
            )));
        }
        (Some(mode), _) => file.mode = Some(mode),
        (None, Some(true)) => file.mode = Some(Mode::Streaming),
        (None, Some(false)) => file.mode = Some(Mode::Batch),
        (None, None) => {}
    }
    if let Some(value) = env("PIPELINE_STREAMING_BATCH_SIZE") {
        file.batch_size =
            Some(
                parse_in_range("PIPELINE_STREAMING_BATCH_SIZE", &value, MIN_BATCH_SIZE as u64, MAX_BATCH_SIZE as u64)?
                    as usize,
            );
    }
    if let Some(value) = env("EMBEDDING_BATCH_SIZE") {
        file.set_embed_batch_size(parse_in_range("EMBEDDING_BATCH_SIZE", &value, 1, 2048)? as usize);
    }
    file.validate()
}

/// Where the store a command uses was named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOrigin {
    /// `--db`.
    Flag,
    /// An environment variable (`SLUICE_DATABASE_URL` or `DATABASE_URL`).
    Env(&'static str),
    /// The pipeline file's `[store]`, or the default `sluice.db`.
    File,
}

impl StoreOrigin {
    pub fn describe(self) -> String {
        match self {
            StoreOrigin::Flag => "--db".into(),
            StoreOrigin::Env(var) => format!("${var}"),
            StoreOrigin::File => "the pipeline file's [store], or the default sluice.db".into(),
        }
    }
}

/// Variables naming the store, the first set winning: `SLUICE_DATABASE_URL`
/// is sluice's own, so it beats the generic `DATABASE_URL` many apps' `.env` set.
const STORE_VARS: [&str; 2] = ["SLUICE_DATABASE_URL", "DATABASE_URL"];

/// The store to use: `SLUICE_DATABASE_URL`, else `DATABASE_URL`, else the
/// file's `[store]`, else `sluice.db`; and where it was named.
pub fn store_config(
    file: Option<&PipelineFile>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(StoreConfig, StoreOrigin), ConfigError> {
    for var in STORE_VARS {
        if let Some(url) = env(var).filter(|u| !u.trim().is_empty()) {
            let config = resolve_store(file, Some(&url)).map_err(|e| ConfigError(e.0.replace("DATABASE_URL", var)))?;
            return Ok((config, StoreOrigin::Env(var)));
        }
    }
    Ok((resolve_store(file, None)?, StoreOrigin::File))
}

fn parse_mode(value: &str) -> Result<Mode, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "streaming" => Ok(Mode::Streaming),
        "batch" => Ok(Mode::Batch),
        _ => Err(ConfigError(format!("PIPELINE_MODE={value} is not a mode (allowed: streaming, batch)"))),
    }
}

fn parse_flag(value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError(format!("PIPELINE_STREAMING_BATCH={value} is not a boolean (allowed: true, false)"))),
    }
}

fn parse_in_range(key: &str, value: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n: u64 = value
        .trim()
        .parse()
        .map_err(|_| ConfigError(format!("{key}={value} is not a whole number (allowed: {min}-{max})")))?;
    if !(min..=max).contains(&n) {
        return Err(ConfigError(format!("{key}={value} is out of range (allowed: {min}-{max})")));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const MINIMAL: &str = "[source]\nkind = \"generate\"\ncount = 10\n";

    fn file(text: &str) -> Result<PipelineFile, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        PipelineFile::load(&path)
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |key| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string())
    }

    #[test]
    fn env_overrides_and_refuses_bad_values() {
        let mut f = file(MINIMAL).unwrap();
        apply_env(&mut f, &env_of(&[("PIPELINE_STREAMING_BATCH_SIZE", "120"), ("PIPELINE_MODE", "batch")])).unwrap();
        assert_eq!(f.settings().batch_size, 120);
        assert_eq!(f.settings().mode, Mode::Batch);

        let mut f = file(MINIMAL).unwrap();
        apply_env(&mut f, &env_of(&[("PIPELINE_STREAMING_BATCH", "false")])).unwrap();
        assert_eq!(f.settings().mode, Mode::Batch);

        for (pairs, needle) in [
            (
                &[("PIPELINE_STREAMING_BATCH_SIZE", "501")][..],
                "PIPELINE_STREAMING_BATCH_SIZE=501 is out of range (allowed: 10-500)",
            ),
            (
                &[("PIPELINE_STREAMING_BATCH_SIZE", "lots")][..],
                "PIPELINE_STREAMING_BATCH_SIZE=lots is not a whole number",
            ),
            (&[("PIPELINE_MODE", "fast")][..], "PIPELINE_MODE=fast is not a mode"),
            (&[("PIPELINE_STREAMING_BATCH", "maybe")][..], "PIPELINE_STREAMING_BATCH=maybe is not a boolean"),
            (&[("PIPELINE_MODE", "batch"), ("PIPELINE_STREAMING_BATCH", "true")][..], "contradicts"),
            (&[("EMBEDDING_BATCH_SIZE", "0")][..], "EMBEDDING_BATCH_SIZE=0 is out of range"),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = Box::leak(pairs.to_vec().into_boxed_slice());
            let mut f = file(MINIMAL).unwrap();
            let err = apply_env(&mut f, &env_of(pairs)).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should contain {needle}");
        }
    }

    #[test]
    fn an_env_mode_is_checked_against_a_watching_source() {
        let dir = tempfile::tempdir().unwrap();
        let files = format!("[source]\nkind = \"files\"\npath = {:?}\n", dir.path().display().to_string());
        let mut f = file(&format!("{files}watch = true\n")).unwrap();
        let err = apply_env(&mut f, &env_of(&[("PIPELINE_MODE", "batch")])).unwrap_err().to_string();
        assert!(err.contains("watch = true needs mode = streaming"), "{err}");
    }

    #[test]
    fn database_url_beats_the_file() {
        let f = file(&format!("{MINIMAL}[store]\nkind = \"sqlite\"\npath = \"a.db\"\n")).unwrap();
        let (store, origin) = store_config(Some(&f), &env_of(&[("DATABASE_URL", "sqlite:b.db")])).unwrap();
        assert!(matches!(store, StoreConfig::Sqlite(c) if c.path == Path::new("b.db")));
        assert_eq!(origin, StoreOrigin::Env("DATABASE_URL"));
        let (store, origin) = store_config(Some(&f), &env_of(&[])).unwrap();
        assert!(matches!(store, StoreConfig::Sqlite(c) if c.path == Path::new("a.db")));
        assert_eq!(origin, StoreOrigin::File);
    }

    #[test]
    fn sluice_database_url_beats_database_url() {
        let f = file(MINIMAL).unwrap();
        let both = env_of(&[("DATABASE_URL", "sqlite:app.db"), ("SLUICE_DATABASE_URL", "sqlite:mine.db")]);
        let (store, origin) = store_config(Some(&f), &both).unwrap();
        assert!(matches!(store, StoreConfig::Sqlite(c) if c.path == Path::new("mine.db")));
        assert_eq!(origin, StoreOrigin::Env("SLUICE_DATABASE_URL"));
        let err = store_config(Some(&f), &env_of(&[("SLUICE_DATABASE_URL", "sqlite:")])).unwrap_err().to_string();
        assert!(err.contains("SLUICE_DATABASE_URL is empty"), "{err}");
    }
}
