//! One function per verb; [`run`] dispatches.

mod limits;
mod segment;

use crate::cli::Command;

/// Runs one verb. Errors are printed by `main` with their context chain.
pub(crate) fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Create(args) => segment::create(args),
        Command::Write(args) => segment::write(args),
        Command::Read(args) => segment::read(args),
        Command::Info(args) => segment::info(args),
        Command::Rm(args) => segment::rm(args),
        Command::Limits(args) => limits::limits(args),
    }
}
