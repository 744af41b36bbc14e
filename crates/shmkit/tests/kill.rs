//! Kill loops: real processes killed with SIGKILL at random points (owned by the kill-loop work).

/// Child roles of this module; `None` if `role` is not one of them.
pub fn child(role: &str, args: &[String]) -> Option<i32> {
    let _ = (role, args);
    None
}
