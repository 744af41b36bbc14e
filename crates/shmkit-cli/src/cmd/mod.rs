//! One function per verb; [`run`] dispatches.

pub(crate) mod bench;
mod limits;
mod ls;
mod segment;
mod stream;

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
        Command::Ls(args) => ls::ls(args),
        Command::Bench(args) => bench::bench(args),
        Command::Gc(args) => ls::gc(args),
        Command::Send(args) => stream::send(args),
        Command::Recv(args) => stream::recv(args),
        Command::Completions(args) => {
            use clap::CommandFactory;
            let mut cmd = crate::cli::Cli::command();
            clap_complete::generate(args.shell, &mut cmd, "shmkit", &mut std::io::stdout());
            Ok(())
        }
    }
}
