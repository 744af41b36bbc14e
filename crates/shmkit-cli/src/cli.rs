//! The command line, as clap sees it: every verb, flag and its help.

use clap::{Args, Parser, Subcommand};
use shmkit::Target;

/// See, create, read, write and remove shared-memory objects on Linux.
///
/// A TARGET names a segment:
///   sysv:KEY      System V segment by key (decimal or 0x hex, or IPC_PRIVATE)
///   sysv-id:ID    System V segment by shmid
///   posix:NAME    POSIX object in /dev/shm (leading slash optional)
///   file:PATH     an ordinary file mapped shared
///
/// `read`, `write`, `info`, `ls` and `rm` work on objects of any owner and
/// mode that the kernel lets this user reach: unlike the library's default,
/// they open objects owned by another user or writable by group or others.
///
/// Exit status: 0 success, 1 a failed operation, 2 bad usage.
#[derive(Debug, Parser)]
#[command(name = "shmkit", version, about, long_about, verbatim_doc_comment, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a segment; it stays until `shmkit rm`
    #[command(
        after_help = "Examples:\n  shmkit create posix:/frames --size 1M\n  shmkit create sysv:0x1234 --size 4097 --mode 0640\n  shmkit create file:/tmp/data --size 64k"
    )]
    Create(CreateArgs),
    /// Copy standard input (or --text) into a segment
    #[command(
        after_help = "Examples:\n  echo hello | shmkit write posix:/frames\n  shmkit write sysv:0x1234 --text 'hello' --nul --offset 16"
    )]
    Write(WriteArgs),
    /// Copy bytes of a segment to standard output
    #[command(after_help = "Examples:\n  shmkit read posix:/frames --len 64 | xxd\n  shmkit read sysv:0x1234 --cstr")]
    Read(ReadArgs),
    /// Show what the kernel reports about a segment (IPC_STAT, fstat)
    #[command(after_help = "Examples:\n  shmkit info sysv:0x1234\n  shmkit info posix:/frames --json")]
    Info(InfoArgs),
    /// Remove segments (IPC_RMID, shm_unlink, unlink)
    #[command(after_help = "Examples:\n  shmkit rm posix:/frames sysv:0x1234\n  shmkit rm sysv-id:32769")]
    Rm(RmArgs),
    /// Show the kernel's shared-memory limits and current usage
    #[command(after_help = "Examples:\n  shmkit limits\n  shmkit limits --json | jq .shmmax")]
    Limits(LimitsArgs),
    /// List every IPC object on the host: System V segments, semaphores and queues, POSIX objects, shmkit's own
    #[command(
        after_help = "Examples:\n  shmkit ls\n  shmkit ls --kind shmkit --stale\n  shmkit ls --json | jq 'select(.kind == \"sysv-shm\")'"
    )]
    Ls(LsArgs),
    /// Remove stale shmkit objects (creator dead, nobody holding or mapping them); never touches others
    #[command(after_help = "Examples:\n  shmkit gc --dry-run\n  shmkit gc")]
    Gc(GcArgs),
    /// Stream standard input into the ring NAME (like a named pipe; `recv` reads it)
    #[command(
        after_help = "Examples:\n  tar c dir | shmkit send backup        # in one terminal\n  shmkit recv backup | tar x             # in another; either may start first"
    )]
    Send(SendArgs),
    /// Write what arrives on the ring NAME to standard output, until the sender ends the stream
    #[command(
        after_help = "Examples:\n  shmkit recv backup > backup.tar\n  shmkit recv backup --timeout 5 | head -c 100"
    )]
    Recv(RecvArgs),
    /// Measure shmkit against every classic IPC mechanism on this machine
    #[command(
        after_help = "Examples:\n  shmkit bench --quick\n  shmkit bench --json > results.json\n  shmkit bench --only ring,pubsub --size 8,4k\n  shmkit bench --svg bench.svg --with-peers bench/peers/target/release/shmkit-peers"
    )]
    Bench(BenchArgs),
    /// Print a shell completion script
    #[command(
        after_help = "Examples:\n  shmkit completions bash > /etc/bash_completion.d/shmkit\n  shmkit completions zsh > ~/.zfunc/_shmkit"
    )]
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The segment to create (it must not exist yet)
    #[arg(value_parser = parse_target)]
    pub(crate) target: Target,
    /// Size in bytes; suffixes k, M, G (powers of 1024) are accepted
    #[arg(long, short, value_parser = parse_size)]
    pub(crate) size: usize,
    /// Permission bits, in octal
    #[arg(long, short, default_value = "0600", value_parser = parse_mode)]
    pub(crate) mode: u32,
    /// Print the result as JSON
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct WriteArgs {
    /// The segment to write into
    #[arg(value_parser = parse_target)]
    pub(crate) target: Target,
    /// Byte offset to start at
    #[arg(long, short, default_value = "0", value_parser = parse_size_or_zero)]
    pub(crate) offset: usize,
    /// Write this text instead of standard input
    #[arg(long, short)]
    pub(crate) text: Option<String>,
    /// Append a NUL byte, so C programs can print the text as a string
    #[arg(long)]
    pub(crate) nul: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ReadArgs {
    /// The segment to read from
    #[arg(value_parser = parse_target)]
    pub(crate) target: Target,
    /// Byte offset to start at
    #[arg(long, short, default_value = "0", value_parser = parse_size_or_zero)]
    pub(crate) offset: usize,
    /// Bytes to read (default: to the end of the segment)
    #[arg(long, short, value_parser = parse_size_or_zero)]
    pub(crate) len: Option<usize>,
    /// Stop at the first NUL byte and end with a newline, as C's printf("%s\n")
    #[arg(long)]
    pub(crate) cstr: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    /// The segment to describe (it is not attached, so nattch is unchanged)
    #[arg(value_parser = parse_target)]
    pub(crate) target: Target,
    /// Print JSON instead of a table
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RmArgs {
    /// The segments to remove
    #[arg(required = true, value_parser = parse_target)]
    pub(crate) targets: Vec<Target>,
    /// Remove even if live processes still use it (a System V segment is then
    /// freed by the kernel at its last detach)
    #[arg(long, short)]
    pub(crate) force: bool,
}

/// Which objects `ls` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LsKind {
    /// System V shared-memory segments
    Sysv,
    /// POSIX shared-memory objects (not shmkit's)
    Posix,
    /// System V semaphore sets and POSIX named semaphores
    Sem,
    /// System V message queues
    Msg,
    /// shmkit's own objects (rings, services)
    Shmkit,
}

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Show only objects of this kind
    #[arg(long, value_enum)]
    pub(crate) kind: Option<LsKind>,
    /// Show only stale shmkit objects (what `gc` would remove)
    #[arg(long)]
    pub(crate) stale: bool,
    /// One JSON object per IPC object, one per line
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    /// Say what would be removed, remove nothing
    #[arg(long, short = 'n')]
    pub(crate) dry_run: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The channel's name (the ring lives in /dev/shm/shmkit.ring.NAME)
    pub(crate) name: String,
    /// Ring capacity if this side creates it (a power of two)
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    pub(crate) capacity: usize,
}

#[derive(Debug, Args)]
pub(crate) struct RecvArgs {
    /// The channel's name
    pub(crate) name: String,
    /// Give up (exit 1) if no data arrives for this many seconds, at the start or between chunks (default: wait)
    #[arg(long)]
    pub(crate) timeout: Option<f64>,
    /// Ring capacity if this side creates it (a power of two)
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    pub(crate) capacity: usize,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// A short run (under 30 s) for a first look and CI
    #[arg(long)]
    pub(crate) quick: bool,
    /// Print every statistic and the machine as JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// Also draw latency and throughput against message size into this SVG file
    #[arg(long)]
    pub(crate) svg: Option<std::path::PathBuf>,
    /// Run the peers' benchmark (iceoryx2; built with `cd bench/peers && cargo build --release`) and merge it
    #[arg(long, value_name = "BINARY")]
    pub(crate) with_peers: Option<std::path::PathBuf>,
    /// Measure only these mechanisms (repeat or separate with commas); all by default
    #[arg(long, value_enum, value_delimiter = ',', value_name = "MECHANISM")]
    pub(crate) only: Vec<crate::cmd::bench::Mechanism>,
    /// Measure only these message sizes in bytes (8, 64, 4096, 65536, 1048576; k and M suffixes); all by default
    #[arg(long, value_delimiter = ',', value_parser = parse_bench_size, value_name = "BYTES")]
    pub(crate) size: Vec<usize>,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub(crate) struct LimitsArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub(crate) json: bool,
}

fn parse_target(text: &str) -> Result<Target, String> {
    text.parse::<Target>().map_err(|e| match e.kind() {
        shmkit::ErrorKind::InvalidArgument(why) => why.clone(),
        _ => e.to_string(),
    })
}

/// Parses `4096`, `4k`, `4K`, `4KiB`, `1M`, `2G`, `1T` into bytes.
pub(crate) fn parse_size_or_zero(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(format!(
            "{text:?} is not a size: use a non-negative number of bytes, optionally with k, M, G or T"
        ));
    }
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{text:?}: unknown size suffix {suffix:?}; use k, M, G or T")),
    };
    let value: u64 = num.parse().map_err(|_| format!("{text:?} is too large"))?;
    value
        .checked_mul(1u64 << shift)
        .filter(|&n| n <= isize::MAX as u64)
        .map(|n| n as usize)
        .ok_or_else(|| format!("{text:?} is too large for this machine"))
}

/// A message size the benchmark measures.
fn parse_bench_size(text: &str) -> Result<usize, String> {
    let sizes = crate::cmd::bench::SIZES;
    match parse_size(text)? {
        n if sizes.contains(&n) => Ok(n),
        n => Err(format!("the benchmark measures {sizes:?} bytes, not {n}")),
    }
}

pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    match parse_size_or_zero(text)? {
        0 => Err("the size must be at least 1 byte".into()),
        n => Ok(n),
    }
}

fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("{text:?} is not a mode: use octal permission bits such as 0600 or 0644")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        for bad in ["", "-1", "0", "k", "1x", "99999999999999999999", "9223372036854775808"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert!(parse_mode("0800").is_err());
        assert!(parse_mode("01777").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
