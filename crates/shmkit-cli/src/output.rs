//! Formatting helpers shared by the verbs: sizes, times, user names, and
//! two-column tables.

use std::time::{Duration, UNIX_EPOCH};

/// `1536` → `1.5 KiB`; exact byte counts below 1 KiB.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Seconds since the epoch as RFC 3339 in UTC; `-` for "never" (0 or none).
pub(crate) fn time(secs: Option<i64>) -> String {
    match secs {
        Some(s) if s > 0 => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s as u64)).to_string(),
        _ => "-".into(),
    }
}

/// The user name of `uid` from `/etc/passwd`, or the number.
pub(crate) fn user_name(uid: u32) -> String {
    lookup_name("/etc/passwd", uid).unwrap_or_else(|| uid.to_string())
}

/// The group name of `gid` from `/etc/group`, or the number.
pub(crate) fn group_name(gid: u32) -> String {
    lookup_name("/etc/group", gid).unwrap_or_else(|| gid.to_string())
}

fn lookup_name(file: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let num = fields.nth(1)?.parse::<u32>().ok()?;
        (num == id).then(|| name.to_string())
    })
}

/// Whether a process with this pid exists (zombies count as gone).
pub(crate) fn pid_alive(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(|pid| shmkit::registry::ProcessId { pid, start: 0 }.is_alive())
}

/// `println!` that returns the write error (a closed pipe downstream)
/// instead of panicking; `main` turns `BrokenPipe` into a quiet exit 0.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}
pub(crate) use out;

/// Prints rows of `key: value`, keys padded to one width.
pub(crate) fn print_pairs(rows: &[(&str, String)]) -> std::io::Result<()> {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        out!("{key:<width$}  {value}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(1 << 30), "1.0 GiB");
    }

    #[test]
    fn never_is_a_dash() {
        assert_eq!(time(Some(0)), "-");
        assert_eq!(time(None), "-");
        assert_eq!(time(Some(1)), "1970-01-01T00:00:01Z");
    }

    #[test]
    fn this_process_is_alive() {
        assert!(pid_alive(std::process::id() as i32));
        assert!(!pid_alive(0));
    }
}
