//! What the commands print on stdout for scripts.

use crate::error::CliError;

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::runtime(e.to_string()))?;
    outln!("{text}");
    Ok(())
}
