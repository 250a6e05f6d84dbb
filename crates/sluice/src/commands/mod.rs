pub mod check;
pub mod completions;
pub mod events;
pub mod failures;
pub mod init;
pub mod output;
pub mod remote;
pub mod run;
pub mod runs;
pub mod worker;

use crate::cli::Command;
use crate::error::CliError;

pub async fn dispatch(command: Command) -> Result<u8, CliError> {
    match command {
        Command::Run(args) => run::run(args).await,
        Command::Runs(args) => runs::list(args).await,
        Command::Status(args) => runs::status(args).await,
        Command::Events(args) => events::summarize(args),
        Command::Failures(args) => failures::failures(args).await,
        Command::Serve(args) => crate::serve::serve(args).await,
        Command::Stop(args) => remote::stop(args).await,
        Command::Init(args) => init::init(args),
        Command::Check(args) => check::check(args).await,
        Command::Worker(args) => worker::worker(args).await,
        Command::Completions(args) => completions::completions(args),
        Command::Man => completions::man(),
    }
}
