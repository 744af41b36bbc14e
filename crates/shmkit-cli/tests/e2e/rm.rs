//! `rm` refuses objects that live processes use, unless `--force`: a System
//! V segment a C program has attached, a POSIX object a C program maps, a
//! ring a running `recv` holds.

use std::io::Write;
use std::process::Command;

use super::{GcLock, Guard, Proc, ls_json, ring_exists, ring_target, wait_for_holder};
use crate::util::{Cleanup, Running, TempDir, compile_c, ipcs_row, posix_exists, shmkit, sysv_exists, sysv_target};

/// `ipcs -m`'s row for the segment with `shmid`: key shmid owner perms
/// bytes nattch status.
fn ipcs_by_id(shmid: i64) -> Option<Vec<String>> {
    let text = super::run_ok(Command::new("ipcs").arg("-m"));
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cols| cols.len() >= 6 && cols[1] == shmid.to_string())
}

#[test]
fn rm_refuses_an_attached_segment_and_force_marks_it_for_removal() {
    // `ls` opens every shmkit object for a moment, which makes them look in
    // use to a `gc` running at the same time: stay out of the gc test's way.
    let _lock = GcLock::shared();
    let mut clean = Cleanup::new();
    let dir = TempDir::new();
    let attach = compile_c(&dir, "sysv_attach");
    let key = clean.sysv_key();
    let target = sysv_target(key);
    let created = shmkit(&["create", &target, "--size", "4096", "--json"]).ok().json();
    let shmid = created["shmid"].as_i64().expect("shmid");
    let by_id = format!("sysv-id:{shmid}");

    let mut c = Running::spawn(Command::new(&attach).arg(format!("{key:#x}")));
    assert_eq!(c.line(), format!("attached {shmid}"));

    // Refused, by key and by id: exit 1, the message says it is in use.
    for t in [&target, &by_id] {
        let out = shmkit(&["rm", t]);
        out.fails(1);
        assert!(out.stderr.contains("in use"), "rm {t}: {}", out.stderr);
        assert!(out.stderr.contains("--force"), "the message says how to go on: {}", out.stderr);
        assert!(sysv_exists(key), "rm {t} without --force removed it");
    }
    let row = ipcs_row(key).expect("still listed under its key");
    assert_eq!((row.nattch, row.status.as_str()), (1, ""));

    // --force marks it: IPC_PRIVATE shown in place of the key, nattch 1,
    // "dest", and shmget no longer finds the key.
    let out = shmkit(&["rm", &target, "--force"]);
    out.ok();
    assert!(out.out().contains("marked"), "rm --force says what happened: {}", out.out());
    assert!(!sysv_exists(key), "the key is released at once");
    assert!(ipcs_row(key).is_none(), "ipcs still lists key {key:#010x}");
    let row = ipcs_by_id(shmid).unwrap_or_else(|| panic!("ipcs -m no longer lists {shmid} while it is attached"));
    assert_eq!(row[0], "0x00000000", "ipcs shows IPC_PRIVATE: {row:?}");
    assert_eq!(row[5], "1", "{row:?}");
    assert_eq!(row.get(6).map(String::as_str), Some("dest"), "{row:?}");

    let info = shmkit(&["info", &by_id, "--json"]).ok().json();
    assert_eq!(info["sysv"]["marked_for_removal"], true, "{info}");
    assert_eq!(info["sysv"]["nattch"], 1, "{info}");
    assert_eq!(info["sysv"]["key"], "0x00000000", "{info}");
    let human = shmkit(&["info", &by_id]).ok().out();
    assert!(human.contains("marked for removal"), "{human}");
    let ls = ls_json(&["--kind", "sysv"]);
    let v = ls.iter().find(|v| v["id"] == shmid).unwrap_or_else(|| panic!("ls does not list {shmid}"));
    assert_eq!((&v["marked_for_removal"], &v["nattch"], &v["key"]), (&true.into(), &1.into(), &"0x00000000".into()));

    // The C program still sees the segment and can use it.
    c.stdin().write_all(b"show\n").expect("write to the C program");
    assert_eq!(c.line(), "", "the segment is still mapped (and empty)");

    // Its detach frees it.
    assert_eq!(c.finish().code(), Some(0));
    let out = shmkit(&["info", &by_id]);
    out.fails(1);
    assert!(ipcs_by_id(shmid).is_none(), "ipcs still lists {shmid} after the last detach");
    assert!(!ls_json(&["--kind", "sysv"]).iter().any(|v| v["id"] == shmid));
}

#[test]
fn rm_refuses_a_posix_object_a_live_process_maps() {
    let mut clean = Cleanup::new();
    let dir = TempDir::new();
    let hold = compile_c(&dir, "posix_hold");
    let name = clean.posix_name();
    let target = format!("posix:/{name}");
    shmkit(&["create", &target, "--size", "4096"]).ok();

    let mut c = Running::spawn(Command::new(&hold).arg(format!("/{name}")));
    assert_eq!(c.line(), "mapped 4096");
    let out = shmkit(&["rm", &target]);
    out.fails(1);
    assert!(out.stderr.contains("in use"), "{}", out.stderr);
    assert!(out.stderr.contains(&c.id().to_string()), "the message names the process: {}", out.stderr);
    assert!(posix_exists(&name), "rm without --force removed it");

    shmkit(&["rm", &target, "--force"]).ok();
    assert!(!posix_exists(&name), "rm --force left it");
    // The mapping outlives the name.
    assert_eq!(c.finish().code(), Some(0));

    // Once nobody maps it, plain rm works.
    shmkit(&["create", &target, "--size", "4096"]).ok();
    let mut c = Running::spawn(Command::new(&hold).arg(format!("/{name}")));
    assert_eq!(c.line(), "mapped 4096");
    assert_eq!(c.finish().code(), Some(0));
    shmkit(&["rm", &target]).ok();
    assert!(!posix_exists(&name));
}

#[test]
fn rm_refuses_a_ring_in_use() {
    let mut guard = Guard::new();
    let ring = guard.ring();
    let mut recv = Proc::shmkit(&["recv", &ring, "--capacity", "4k"]);
    wait_for_holder(&ring, "consumer", recv.id());

    let out = shmkit(&["rm", &ring_target(&ring)]);
    out.fails(1);
    assert!(out.stderr.contains("in use"), "{}", out.stderr);
    assert!(ring_exists(&ring));

    shmkit(&["rm", &ring_target(&ring), "--force"]).ok();
    assert!(!ring_exists(&ring));
    // The receiver waits on a ring nobody can find any more; end it.
    assert!(recv.running(), "recv does not notice the name going");
    recv.kill();
}
