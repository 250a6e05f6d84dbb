//! `sluice completions <shell>` and `sluice man`: generated from the
//! command-line definition, so they never drift from `--help`.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};
use crate::error::{CliError, code};

pub fn completions(args: CompletionsArgs) -> Result<u8, CliError> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "sluice", &mut script);
    print(&script)
}

pub fn man() -> Result<u8, CliError> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(|e| CliError::runtime(format!("cannot render the man page: {e}")))?;
    print(&page)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a message.
fn print(bytes: &[u8]) -> Result<u8, CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Ok(()) => Ok(code::OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(code::OK),
        Err(e) => Err(CliError::runtime(format!("cannot write to stdout: {e}"))),
    }
}
