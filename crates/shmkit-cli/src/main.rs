//! `shmkit`: the command-line tool over the shmkit library.
//!
//! This crate is glue: it parses arguments (`cli`), calls the library, and
//! prints (`cmd::*`, `output`). Exit status: 0 on success, 1 when an
//! operation fails, 2 for bad usage (clap's own errors).

mod cli;
mod cmd;
mod output;

use std::io;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed pipe downstream (`shmkit read … | head`) is not an
            // error of ours.
            if err.chain().any(|e| e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe))
            {
                return ExitCode::SUCCESS;
            }
            // shmkit's errors already say what the OS said; print them alone.
            // Other errors carry context that `{:#}` joins.
            if let Some(err) = err.downcast_ref::<shmkit::Error>() {
                eprintln!("shmkit: {err}");
            } else {
                eprintln!("shmkit: {err:#}");
            }
            ExitCode::from(1)
        }
    }
}
