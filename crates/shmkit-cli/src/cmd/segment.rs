//! `create`, `write`, `read`, `info` and `rm`: the verbs on one segment.

use std::io::{self, Read, Write};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use shmkit::segment::{self, Info, Kind};
use shmkit::{Lifetime, Segment, Target};

use crate::cli::{CreateArgs, InfoArgs, ReadArgs, RmArgs, WriteArgs};
use crate::output::{group_name, human_size, out, pid_alive, print_pairs, time, user_name};

fn pages(bytes: u64) -> u64 {
    bytes.div_ceil(shmkit::limits::page_size() as u64)
}

/// `1 page`, `2 pages`.
fn pages_text(bytes: u64) -> String {
    match pages(bytes) {
        1 => "1 page".into(),
        n => format!("{n} pages"),
    }
}

/// `1 byte`, `2 bytes`.
fn bytes_text(bytes: u64) -> String {
    if bytes == 1 { "1 byte".into() } else { format!("{bytes} bytes") }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Sysv => "sysv",
        Kind::Posix => "posix",
        Kind::File => "file",
        Kind::Anonymous => "anonymous",
        Kind::Memfd => "memfd",
        _ => "other",
    }
}

pub(crate) fn create(args: CreateArgs) -> anyhow::Result<()> {
    let seg = Segment::options().size(args.size).mode(args.mode).lifetime(Lifetime::Persistent).create(&args.target)?;
    let info = seg.info()?;
    let page = shmkit::limits::page_size() as u64;
    if args.json {
        let mut v = json!({
            "target": seg.name(),
            "kind": kind_name(seg.kind()),
            "size": info.size,
            "pages": pages(info.size),
            "mapped_size": pages(info.size) * page,
            "mode": format!("{:04o}", info.mode),
        });
        if let Some(id) = seg.sysv_id() {
            v["shmid"] = json!(id);
        }
        out!("{v}");
    } else {
        let id = seg.sysv_id().map(|id| format!(" (shmid {id})")).unwrap_or_default();
        out!(
            "created {}{id}: {}, {} ({} bytes mapped), mode {:04o}",
            seg.name(),
            bytes_text(info.size),
            pages_text(info.size),
            pages(info.size) * page,
            info.mode
        );
    }
    Ok(())
}

pub(crate) fn write(args: WriteArgs) -> anyhow::Result<()> {
    let mut data = match args.text {
        Some(text) => text.into_bytes(),
        None => {
            let mut buf = Vec::new();
            io::stdin().lock().read_to_end(&mut buf).context("cannot read standard input")?;
            buf
        }
    };
    if args.nul {
        data.push(0);
    }
    // An operator's tool: objects of other users, or writable by others,
    // are what it is for (the kernel's permissions still apply).
    let mut seg = Segment::options().allow_untrusted(true).open(&args.target)?;
    seg.write_at(args.offset, &data)?;
    eprintln!("wrote {} bytes to {} at offset {}", data.len(), seg.name(), args.offset);
    Ok(())
}

pub(crate) fn read(args: ReadArgs) -> anyhow::Result<()> {
    let seg = Segment::options().read_only().allow_untrusted(true).open(&args.target)?;
    let len = args.len.unwrap_or_else(|| seg.len().saturating_sub(args.offset));
    // Checks the whole range before printing anything.
    seg.read_at(args.offset.saturating_add(len), &mut []).and_then(|()| seg.read_at(args.offset, &mut [])).map_err(
        |_| {
            anyhow::anyhow!(
                "cannot read {}: bytes {}..{} are outside the segment of {} bytes",
                seg.name(),
                args.offset,
                args.offset.saturating_add(len),
                seg.len()
            )
        },
    )?;
    let mut out = io::stdout().lock();
    let mut buf = vec![0u8; len.min(1 << 20)];
    let mut done = 0;
    while done < len {
        let n = buf.len().min(len - done);
        seg.read_at(args.offset + done, &mut buf[..n])?;
        if let Some(nul) = buf[..n].iter().position(|&b| b == 0).filter(|_| args.cstr) {
            out.write_all(&buf[..nul])?;
            break;
        }
        out.write_all(&buf[..n])?;
        done += n;
    }
    if args.cstr {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// The stable JSON form of [`Info`]; documented in the README.
fn info_json(target: &Target, info: &Info) -> Value {
    let page = shmkit::limits::page_size() as u64;
    let mut v = json!({
        "target": target.to_string(),
        "kind": kind_name(info.kind),
        "size": info.size,
        "pages": pages(info.size),
        "mapped_size": pages(info.size) * page,
        "mode": format!("{:04o}", info.mode),
        "uid": info.uid,
        "owner": user_name(info.uid),
        "gid": info.gid,
        "group": group_name(info.gid),
        "atime": info.atime,
        "mtime": info.mtime,
        "ctime": info.ctime,
    });
    if let Some(s) = &info.sysv {
        v["sysv"] = json!({
            "key": format!("{:#010x}", s.key as u32),
            "shmid": s.id,
            "nattch": s.nattch,
            "cpid": s.cpid,
            "cpid_alive": pid_alive(s.cpid),
            "lpid": s.lpid,
            "lpid_alive": pid_alive(s.lpid),
            "attach_time": (s.atime != 0).then_some(s.atime),
            "detach_time": (s.dtime != 0).then_some(s.dtime),
            "change_time": s.ctime,
            "cuid": s.cuid,
            "cgid": s.cgid,
            "marked_for_removal": s.marked_for_removal,
            "locked": s.locked,
        });
    }
    v
}

pub(crate) fn info(args: InfoArgs) -> anyhow::Result<()> {
    let info = segment::stat(&args.target)?;
    let shmkit_object = match &args.target {
        Target::Posix(name) if name.as_str().starts_with(&format!("/{}", shmkit::registry::PREFIX)) => {
            let users = super::ls::live_users(name.as_str());
            Some(super::ls::shmkit_json(name.as_str(), &users).0)
        }
        _ => None,
    };
    if args.json {
        let mut v = info_json(&args.target, &info);
        v["shmkit"] = shmkit_object.unwrap_or(Value::Null);
        out!("{v}");
        return Ok(());
    }
    let page = shmkit::limits::page_size() as u64;
    let mut rows = vec![
        ("target", args.target.to_string()),
        ("kind", kind_name(info.kind).to_string()),
        (
            "size",
            format!(
                "{} ({}), {} = {} bytes mapped",
                bytes_text(info.size),
                human_size(info.size),
                pages_text(info.size),
                pages(info.size) * page
            ),
        ),
        ("owner", format!("{} ({}), group {} ({})", user_name(info.uid), info.uid, group_name(info.gid), info.gid)),
        ("perms", format!("{:04o}", info.mode)),
    ];
    let alive = |pid: i32| if pid_alive(pid) { "alive" } else { "gone" };
    match &info.sysv {
        Some(s) => rows.extend([
            ("key", format!("{:#010x}", s.key as u32)),
            ("shmid", s.id.to_string()),
            ("nattch", s.nattch.to_string()),
            ("creator pid", format!("{} ({})", s.cpid, alive(s.cpid))),
            ("last pid", format!("{} ({})", s.lpid, alive(s.lpid))),
            ("creator", format!("{} ({}), group {} ({})", user_name(s.cuid), s.cuid, group_name(s.cgid), s.cgid)),
            ("attached", time(Some(s.atime))),
            ("detached", time(Some(s.dtime))),
            ("changed", time(Some(s.ctime))),
            ("status", {
                let mut flags = Vec::new();
                if s.marked_for_removal {
                    flags.push("marked for removal (freed at last detach)");
                }
                if s.locked {
                    flags.push("locked in memory");
                }
                if flags.is_empty() { "-".to_string() } else { flags.join(", ") }
            }),
        ]),
        None => {
            rows.extend([("accessed", time(info.atime)), ("modified", time(info.mtime)), ("changed", time(info.ctime))])
        }
    }
    if let Some(k) = &shmkit_object {
        let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
        let alive = |v: &Value| if *v == true { "alive" } else { "dead" };
        rows.push(("shmkit type", text(&k["type"])));
        rows.push(("init state", text(&k["state"])));
        rows.push(("layout version", text(&k["version"])));
        rows.push(("creator", format!("pid {} ({})", k["creator_pid"], alive(&k["creator_alive"]))));
        rows.push(("created", time(k["created"].as_i64())));
        for h in k["holders"].as_array().into_iter().flatten() {
            rows.push(("holder", format!("{} pid {} ({})", text(&h["role"]), h["pid"], alive(&h["alive"]))));
        }
        if let Some(d) = k["details"].as_object() {
            let mut details: Vec<(&str, String)> = d.iter().map(|(key, v)| (key.as_str(), text(v))).collect();
            details.sort();
            rows.extend(details);
        }
        rows.push(("stale", text(&k["stale"])));
        if let Some(e) = k.get("error") {
            rows.push(("error", text(e)));
        }
    }
    print_pairs(&rows)?;
    Ok(())
}

/// Why `rm` should not remove `target` without `--force`: the live
/// processes that still use it. `None` if nobody does (or it cannot tell).
fn in_use(target: &Target) -> Option<String> {
    match target {
        Target::Sysv(_) | Target::SysvId(_) => {
            let info = segment::stat(target).ok()?;
            let s = info.sysv?;
            (s.nattch > 0).then(|| {
                format!(
                    "{} process(es) attached (last attach/detach by pid {}{})",
                    s.nattch,
                    s.lpid,
                    if pid_alive(s.lpid) { ", alive" } else { "" }
                )
            })
        }
        Target::Posix(name) => {
            let users = super::ls::live_users(name.as_str());
            if !users.is_empty() {
                return Some(format!("mapped by live process(es) {users:?}"));
            }
            if name.as_str().starts_with(&format!("/{}", shmkit::registry::PREFIX)) {
                let (info, stale) = super::ls::shmkit_json(name.as_str(), &[]);
                if !stale && info.get("error").is_none() {
                    if info["creator_alive"] == true {
                        return Some(format!("its creator (pid {}) is alive", info["creator_pid"]));
                    }
                    if let Some(h) = info["holders"].as_array().and_then(|h| h.iter().find(|h| h["alive"] == true)) {
                        return Some(format!(
                            "its {} (pid {}) is alive",
                            h["role"].as_str().unwrap_or("holder"),
                            h["pid"]
                        ));
                    }
                }
            }
            None
        }
        _ => None,
    }
}

pub(crate) fn rm(args: RmArgs) -> anyhow::Result<()> {
    let mut failed = 0;
    for target in &args.targets {
        if let Some(why) = in_use(target).filter(|_| !args.force) {
            failed += 1;
            eprintln!("shmkit: not removing {target}: in use: {why}; use --force to remove it anyway");
            continue;
        }
        let attached = segment::stat(target).ok().and_then(|i| i.sysv).map_or(0, |s| s.nattch);
        match segment::remove(target) {
            Ok(()) if attached > 0 => {
                out!(
                    "marked {target} for removal: the kernel frees it when the last of {attached} attached processes detaches"
                )
            }
            Ok(()) => out!("removed {target}"),
            Err(err) => {
                failed += 1;
                let hint = match (err.kind(), target) {
                    (shmkit::ErrorKind::PermissionDenied { .. }, Target::Posix(_)) => {
                        "; /dev/shm is sticky (mode 1777), so only the owner (or root) may remove an object there"
                    }
                    _ => "",
                };
                eprintln!("shmkit: {err}{hint}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} targets were not removed", args.targets.len());
    }
    Ok(())
}
