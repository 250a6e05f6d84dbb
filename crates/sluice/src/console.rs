//! Printing that never panics: a reader that went away (`sluice runs | head`)
//! or a closed terminal is not an error of ours. `println!` panics on a
//! broken pipe because Rust ignores SIGPIPE; these drop what cannot be written.

use std::fmt;
use std::io::Write;

/// `println!` that drops its line when stdout is closed.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::console::out(format_args!($($arg)*)) };
}

/// `eprintln!` that drops its line when stderr is closed.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::console::err(format_args!($($arg)*)) };
}

pub fn out(line: fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush());
}

pub fn err(line: fmt::Arguments) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(line).and_then(|_| err.write_all(b"\n"));
}
