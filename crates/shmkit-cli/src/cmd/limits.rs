//! `limits`: the kernel's shared-memory limits next to current usage.

use serde_json::json;
use shmkit::Limits;

use crate::cli::LimitsArgs;
use crate::output::{human_size, out, print_pairs};

fn opt(value: Option<u64>) -> String {
    value.map_or_else(|| "unlimited".into(), |v| v.to_string())
}

pub(crate) fn limits(args: LimitsArgs) -> anyhow::Result<()> {
    let l = Limits::read()?;
    if args.json {
        let v = json!({
            "page_size": l.page_size,
            "shmmax": l.shmmax,
            "shmall": l.shmall,
            "shmall_bytes": l.shmall.saturating_mul(l.page_size),
            "shmmni": l.shmmni,
            "sysv_segments": l.sysv_segments,
            "sysv_bytes": l.sysv_bytes,
            "sysv_pages": l.sysv_pages,
            "dev_shm_size": l.dev_shm_size,
            "dev_shm_free": l.dev_shm_free,
            "nofile_soft": l.nofile_soft,
            "nofile_hard": l.nofile_hard,
            "open_fds": l.open_fds,
            "max_map_count": l.max_map_count,
            "map_count": l.map_count,
        });
        out!("{v:#}");
        return Ok(());
    }
    let shm = match (l.dev_shm_size, l.dev_shm_free) {
        (Some(size), Some(free)) => format!("{} total, {} free", human_size(size), human_size(free)),
        _ => "not mounted".into(),
    };
    print_pairs(&[
        ("page size", format!("{} bytes", l.page_size)),
        ("kernel.shmmax", format!("{} bytes ({}): largest System V segment", l.shmmax, human_size(l.shmmax))),
        (
            "kernel.shmall",
            format!(
                "{} pages ({}): all System V segments together",
                l.shmall,
                human_size(l.shmall.saturating_mul(l.page_size))
            ),
        ),
        ("kernel.shmmni", format!("{} segments at most", l.shmmni)),
        (
            "System V in use",
            format!("{} segments, {} ({} pages)", l.sysv_segments, human_size(l.sysv_bytes), l.sysv_pages),
        ),
        ("/dev/shm", shm),
        (
            "RLIMIT_NOFILE",
            format!("soft {}, hard {} ({} open here)", opt(l.nofile_soft), opt(l.nofile_hard), l.open_fds),
        ),
        ("vm.max_map_count", format!("{} mappings per process ({} here)", l.max_map_count, l.map_count)),
    ])?;
    Ok(())
}
