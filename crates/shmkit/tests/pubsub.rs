//! Tests of `shmkit::channel::pubsub` (being written).

/// Child roles of this module: `Some(exit code)` if `role` is one of them.
pub fn child(role: &str, args: &[String]) -> Option<i32> {
    let _ = (role, args);
    None
}
