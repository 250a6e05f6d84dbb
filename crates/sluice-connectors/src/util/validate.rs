//! The checks configuration values go through, with messages that name the
//! key, the value and what is allowed.

use std::fmt::Display;

use crate::ConfigError;

/// Checks `min <= value <= max`, else names the key, the value and the range.
pub(crate) fn check_range<T: PartialOrd + Display>(key: &str, value: T, min: T, max: T) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError(format!("{key} = {value} is out of range (allowed: {min}..={max})")));
    }
    Ok(())
}

/// Checks that a string setting is not empty.
pub(crate) fn check_not_empty(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError(format!("{key} = {value:?} must not be empty")));
    }
    Ok(())
}
