//! What crashed programs leave behind: `ls --stale`, `gc --dry-run` and `gc`
//! find and remove exactly the stale shmkit objects, and leave alone rings a
//! live process holds or maps, and every foreign object.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;

use serde_json::Value;

use super::schema::Schema;
use super::{GcLock, Guard, Proc, by_name, ls_json, ring_exists, ring_info, ring_ls_name, wait_for_holder, wait_until};
use crate::util::{
    Cleanup, Running, TempDir, compile_c, ipcs_row, posix_exists, shmkit, shmkit_with_input, sysv_exists, sysv_target,
};

/// The names in a `gc --json` list (`removed` or `kept`) that are among `mine`.
fn names_in(gc: &Value, list: &str, mine: &BTreeSet<String>) -> BTreeSet<String> {
    gc[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} array in {gc}"))
        .iter()
        .map(|v| v["name"].as_str().unwrap_or_else(|| panic!("an entry without a name: {v}")).to_string())
        .filter(|n| mine.contains(n))
        .collect()
}

fn set(names: &[&String]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// The reason `gc --json` gives for keeping `name`.
fn reason<'a>(gc: &'a Value, name: &str) -> &'a str {
    gc["kept"]
        .as_array()
        .and_then(|kept| kept.iter().find(|k| k["name"] == name))
        .and_then(|k| k["reason"].as_str())
        .unwrap_or_else(|| panic!("gc did not keep {name} with a reason: {gc}"))
}

#[test]
fn gc_removes_exactly_what_crashed_programs_left() {
    // Whatever is stale while this runs is gc's to take, and whatever another
    // `shmkit ls` has open for a moment looks in use: keep the tests that
    // need a stale-looking ring (send before recv), and those that run `ls`,
    // out of the way.
    let _lock = GcLock::exclusive();
    let schema = Schema::load();
    let mut clean = Cleanup::new();
    let mut guard = Guard::new();
    let dir = TempDir::new();
    let hold = compile_c(&dir, "posix_hold");

    // 1. A sender killed mid-stream (its standard input still open): the
    //    ring keeps a dead producer and what it sent.
    let killed_sender = guard.ring();
    let mut send = Proc::shmkit(&["send", &killed_sender, "--capacity", "64k"]);
    let mut stdin = send.stdin();
    stdin.write_all(&[7u8; 1000]).expect("write to send");
    stdin.flush().expect("flush");
    wait_for_holder(&killed_sender, "producer", send.id());
    wait_until("the 1000 bytes to be in the ring", || {
        let fill = ring_info(&killed_sender).map(|k| k["details"]["fill"].clone()).unwrap_or_default();
        fill.as_str().and_then(|f| f.split(' ').next()).and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= 1000)
    });
    send.kill();
    drop(stdin);

    // 2. A receiver killed while it waited for a sender: only a dead consumer.
    let killed_receiver = guard.ring();
    let mut recv = Proc::shmkit(&["recv", &killed_receiver, "--capacity", "64k"]);
    wait_for_holder(&killed_receiver, "consumer", recv.id());
    recv.kill();

    // 3. A sender that finished before any receiver came (documented as
    //    stale: nobody holds it any more).
    let finished = guard.ring();
    shmkit_with_input(&["send", &finished, "--capacity", "64k"], b"nobody came").ok();
    assert!(ring_exists(&finished), "the data waits in the ring");

    // 4. A live receiver: its ring is in use.
    let live = guard.ring();
    let mut live_recv = Proc::shmkit(&["recv", &live, "--capacity", "64k"]);
    wait_for_holder(&live, "consumer", live_recv.id());

    // 5. Creator dead, a live holder: a receiver created it and was killed,
    //    a sender still holds the other end.
    let held = guard.ring();
    let mut creator = Proc::shmkit(&["recv", &held, "--capacity", "64k"]);
    wait_for_holder(&held, "consumer", creator.id());
    let mut held_send = Proc::shmkit(&["send", &held]);
    wait_for_holder(&held, "producer", held_send.id());
    creator.kill();

    // 6. No live holder, but a live process maps it.
    let mapped = guard.ring();
    let mut send = Proc::shmkit(&["send", &mapped, "--capacity", "64k"]);
    wait_for_holder(&mapped, "producer", send.id());
    let mut mapper = Running::spawn(Command::new(&hold).arg(ring_ls_name(&mapped)));
    assert!(mapper.line().starts_with("mapped "), "posix_hold mapped the ring");
    send.kill();

    // 7. Foreign objects: a plain POSIX object, a System V segment.
    let foreign = clean.posix_name();
    shmkit(&["create", &format!("posix:/{foreign}"), "--size", "4096"]).ok();
    let key = clean.sysv_key();
    shmkit(&["create", &sysv_target(key), "--size", "4096"]).ok();

    let stale = set(&[&ring_ls_name(&killed_sender), &ring_ls_name(&killed_receiver), &ring_ls_name(&finished)]);
    let kept = set(&[&ring_ls_name(&live), &ring_ls_name(&held), &ring_ls_name(&mapped)]);
    let mine: BTreeSet<String> = stale.union(&kept).cloned().chain([format!("/{foreign}")]).collect();

    // What `ls` says about each.
    let all = ls_json(&[]);
    for v in &all {
        schema.check_ls(v);
    }
    let all = by_name(&all);
    let shmkit_of = |name: &String| -> &Value {
        &all.get(name.as_str()).unwrap_or_else(|| panic!("`shmkit ls` does not list {name}"))["shmkit"]
    };
    for name in &mine {
        let k = shmkit_of(name);
        if name == &format!("/{foreign}") {
            assert!(k.is_null(), "a foreign object has no shmkit part: {k}");
            continue;
        }
        assert_eq!(k["type"], "ring", "{name}: {k}");
        assert_eq!(k["state"], "ready", "{name}: {k}");
        assert_eq!(k["stale"], stale.contains(name), "{name}: {k}");
    }
    let holders = |name: &String| -> Vec<(String, bool)> {
        let k = shmkit_of(name);
        let list = k["holders"].as_array().unwrap_or_else(|| panic!("{name}: no holders: {k}"));
        let mut list: Vec<(String, bool)> =
            list.iter().map(|h| (h["role"].as_str().unwrap_or("?").to_string(), h["alive"] == true)).collect();
        list.sort();
        list
    };
    let h = |role: &str, alive: bool| (role.to_string(), alive);
    assert_eq!(holders(&ring_ls_name(&killed_sender)), [h("producer", false)]);
    assert_eq!(holders(&ring_ls_name(&killed_receiver)), [h("consumer", false)]);
    assert_eq!(holders(&ring_ls_name(&finished)), []);
    assert_eq!(holders(&ring_ls_name(&live)), [h("consumer", true)]);
    assert_eq!(holders(&ring_ls_name(&held)), [h("consumer", false), h("producer", true)]);
    assert_eq!(holders(&ring_ls_name(&mapped)), [h("producer", false)]);
    assert_eq!(shmkit_of(&ring_ls_name(&live))["creator_alive"], true);
    for name in [&killed_sender, &killed_receiver, &finished, &held, &mapped] {
        assert_eq!(shmkit_of(&ring_ls_name(name))["creator_alive"], false, "{name}");
    }
    let users = all[&ring_ls_name(&mapped)]["users"].as_array().expect("users").clone();
    assert!(users.contains(&mapper.id().into()), "posix_hold maps the ring: {users:?}");

    // ls --stale lists exactly the stale ones among these.
    let listed: BTreeSet<String> = ls_json(&["--stale"])
        .iter()
        .inspect(|v| schema.check_ls(v))
        .map(|v| v["name"].as_str().expect("a name").to_string())
        .filter(|n| mine.contains(n))
        .collect();
    assert_eq!(listed, stale, "ls --stale");
    let listed: BTreeSet<String> = ls_json(&["--stale", "--kind", "shmkit"])
        .iter()
        .map(|v| v["name"].as_str().expect("a name").to_string())
        .filter(|n| mine.contains(n))
        .collect();
    assert_eq!(listed, stale, "ls --stale --kind shmkit");
    let table = shmkit(&["ls", "--stale"]).ok().out();
    for name in &stale {
        assert!(table.lines().any(|l| l.contains(name.as_str()) && l.ends_with("stale")), "{name}:\n{table}");
    }

    // gc --dry-run would remove exactly those, and removes nothing.
    let dry = shmkit(&["gc", "--dry-run", "--json"]).ok().json();
    schema.check_gc(&dry);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(names_in(&dry, "removed", &mine), stale, "gc --dry-run: {dry}");
    assert_eq!(names_in(&dry, "kept", &mine), kept, "gc --dry-run: {dry}");
    assert!(reason(&dry, &ring_ls_name(&live)).contains(&live_recv.id().to_string()), "{dry}");
    assert!(reason(&dry, &ring_ls_name(&held)).contains(&held_send.id().to_string()), "{dry}");
    assert!(reason(&dry, &ring_ls_name(&mapped)).contains("map"), "{dry}");
    for name in [&killed_sender, &killed_receiver, &finished, &live, &held, &mapped] {
        assert!(ring_exists(name), "gc --dry-run removed {name}");
    }
    let text = shmkit(&["gc", "--dry-run"]).ok().out();
    for name in &stale {
        assert!(text.lines().any(|l| l.starts_with("would remove") && l.contains(name.as_str())), "{name}:\n{text}");
    }
    for name in &kept {
        assert!(text.lines().any(|l| l.starts_with("kept") && l.contains(name.as_str())), "{name}:\n{text}");
    }

    // gc removes exactly those.
    let done = shmkit(&["gc", "--json"]).ok().json();
    schema.check_gc(&done);
    assert_eq!(done["dry_run"], false);
    assert_eq!(names_in(&done, "removed", &mine), stale, "gc: {done}");
    assert_eq!(names_in(&done, "kept", &mine), kept, "gc: {done}");
    for name in [&killed_sender, &killed_receiver, &finished] {
        assert!(!ring_exists(name), "gc left {name}");
    }
    for name in [&live, &held, &mapped] {
        assert!(ring_exists(name), "gc removed {name}, which is in use");
    }
    assert!(posix_exists(&foreign), "gc removed a foreign POSIX object");
    assert!(sysv_exists(key), "gc removed a System V segment");
    assert!(ipcs_row(key).is_some(), "ipcs no longer lists the segment");
    // The live ring still works: an empty stream ends the receiver cleanly.
    shmkit_with_input(&["send", &live], b"").ok();
    live_recv.expect_exit(0);
    assert!(!ring_exists(&live), "the live ring is removed when its ends close");
    let after = by_name(&ls_json(&["--stale"]));
    for name in &stale {
        assert!(!after.contains_key(name), "ls --stale still lists {name}");
    }

    // Once their last users go, the others become stale too, and gc takes
    // them; foreign objects are removed by hand.
    // Its consumer is dead, not closed: the end marker fits, and it exits 0.
    held_send.expect_exit(0);
    assert_eq!(mapper.finish().code(), Some(0));
    wait_until("the rings to become stale", || {
        [&held, &mapped].iter().all(|n| ring_info(n).is_none_or(|k| k["stale"] == true))
    });
    let done = shmkit(&["gc", "--json"]).ok().json();
    schema.check_gc(&done);
    for name in [&held, &mapped] {
        assert!(!ring_exists(name), "gc left {name} after its users went");
    }
    shmkit(&["rm", &format!("posix:/{foreign}"), &sysv_target(key)]).ok();
    let left = by_name(&ls_json(&[]));
    for name in &mine {
        assert!(!left.contains_key(name), "{name} is still listed");
    }
    assert!(!posix_exists(&foreign) && !sysv_exists(key) && ipcs_row(key).is_none());
}

#[test]
fn gc_leaves_a_ring_being_created_alone() {
    let _lock = GcLock::exclusive();
    let mut guard = Guard::new();
    let ring = guard.ring();
    let name = ring_ls_name(&ring);
    let mine = set(&[&name]);
    // A big ring: reserving its space takes a while, and all that time the
    // object is in /dev/shm, all zeros, mapped by nobody.
    let mut send = Proc::shmkit(&["send", &ring, "--capacity", "256M"]);
    let start = std::time::Instant::now();
    loop {
        let gc = shmkit(&["gc", "--json"]).ok().json();
        assert_eq!(names_in(&gc, "removed", &mine), BTreeSet::new(), "gc removed a ring its creator is making: {gc}");
        if !names_in(&gc, "kept", &mine).is_empty() {
            break;
        }
        assert!(send.running(), "send ended: {}", send.expect_exit(0));
        assert!(start.elapsed() < super::PATIENCE, "watchdog: the ring never became ready");
    }
    // The sender and a receiver still meet.
    let mut stdin = send.stdin();
    stdin.write_all(b"made it").expect("write to send");
    drop(stdin);
    send.expect_exit(0);
    assert_eq!(shmkit(&["recv", &ring, "--timeout", "5"]).ok().stdout, b"made it");
}
