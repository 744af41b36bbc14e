//! Integration tests of the shmkit library: one binary, real system calls,
//! real processes (this binary started again as a child, or `fork` where the
//! mechanism needs it).
//!
//! Every test uses unique names, removes what it creates through guards
//! that run also when it fails, and waits for children under a watchdog.

// Test helpers are `pub` for the sibling modules, not for users.
#![allow(unreachable_pub)]

mod children;
mod examples;
mod fork;
mod hardening;
mod hostile;
mod kill;
mod limits;
mod primitives;
mod pubsub;
mod reqrep;
mod ring;
mod segment;
mod sync_interop;
mod util;

/// Entry point of child processes: the parent starts this binary with
/// `child_entry --exact` and a role in the environment. Without a role
/// (an ordinary test run) it does nothing.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(util::CHILD_ROLE) else { return };
    let code = children::dispatch(&role, &util::child_args());
    std::process::exit(code);
}
