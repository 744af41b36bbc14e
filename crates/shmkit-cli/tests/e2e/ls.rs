//! `ls` against the classic tools: `ipcs -m`, `ipcs -s`, `ipcs -q` (and
//! their `-p` forms) for System V objects made by C programs, `ipcmk` and
//! shmkit; `ls -la /dev/shm` for POSIX objects, POSIX semaphores and rings.

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

use super::{GcLock, Guard, Proc, by_name, ls_json, ring_ls_name, ring_target, run_ok, wait_for_holder};
use crate::util::{Cleanup, Running, TempDir, compile_c, run, shmkit, shmkit_with_input, sysv_target};

/// The rows of `ipcs ARGS…` (in the C locale) by the number in column
/// `id_col`, each row as its columns.
fn ipcs(args: &[&str], id_col: usize) -> HashMap<i64, Vec<String>> {
    let text = run_ok(Command::new("ipcs").args(args));
    let mut rows = HashMap::new();
    for line in text.lines() {
        let cols: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        // Skip the titles (`------ …`), the column headers and blank lines.
        let Some(id) = cols.get(id_col).and_then(|c| c.parse::<i64>().ok()) else { continue };
        if cols[0].starts_with('-') {
            continue;
        }
        assert!(rows.insert(id, cols).is_none(), "`ipcs {}` lists id {id} twice:\n{text}", args.join(" "));
    }
    rows
}

/// Runs `ipcmk ARGS…`, registers what it made with `guard` (`flag` is
/// `ipcrm`'s `-m`, `-s` or `-q`) and returns its id.
fn ipcmk(guard: &mut Guard, flag: &'static str, args: &[&str]) -> i64 {
    let text = run_ok(Command::new("ipcmk").args(args));
    // "Shared memory id: 32769", "Semaphore id: 5", "Message queue id: 3"
    let id: i64 = text
        .split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("`ipcmk {}` printed no id: {text:?}", args.join(" ")));
    guard.ipc(flag, id);
    id
}

/// The `ls --json` objects of one kind, by id.
fn by_id(objects: &[Value], kind: &str) -> HashMap<i64, Vec<Value>> {
    let mut map: HashMap<i64, Vec<Value>> = HashMap::new();
    for v in objects.iter().filter(|v| v["kind"] == kind) {
        let id = v["id"].as_i64().unwrap_or_else(|| panic!("a {kind} without an integer id: {v}"));
        map.entry(id).or_default().push(v.clone());
    }
    map
}

fn octal(text: &str) -> u32 {
    u32::from_str_radix(text, 8).unwrap_or_else(|e| panic!("{text:?} is not octal: {e}"))
}

fn number(v: &Value, field: &str) -> i64 {
    v[field].as_i64().unwrap_or_else(|| panic!("no integer {field} in {v}"))
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_else(|| panic!("no string {field} in {v}"))
}

/// `ipcs` prints at most 10 characters of a user name.
fn ipcs_owner(v: &Value) -> String {
    text(v, "owner").chars().take(10).collect()
}

/// The one `ls` object of `kind` with `id`, checked against the `ipcs` row:
/// the key (column 0), owner (2) and perms (3) agree.
fn agreeing<'a>(ls: &'a HashMap<i64, Vec<Value>>, row: Option<&Vec<String>>, kind: &str, id: i64) -> &'a Value {
    let row = row.unwrap_or_else(|| panic!("ipcs does not list {kind} {id}"));
    let found = ls.get(&id).map_or(&[][..], Vec::as_slice);
    assert_eq!(found.len(), 1, "`shmkit ls` should list {kind} {id} exactly once: {found:?}");
    let v = &found[0];
    assert_eq!(text(v, "key"), row[0], "key of {kind} {id}");
    assert_eq!(text(v, "name"), row[0], "name of {kind} {id}");
    assert_eq!(ipcs_owner(v), row[2], "owner of {kind} {id}");
    assert_eq!(octal(text(v, "perms")), octal(&row[3]), "perms of {kind} {id}");
    v
}

#[test]
fn ls_agrees_with_ipcs_on_every_system_v_object() {
    // `ls` opens every shmkit object for a moment, which makes them look in
    // use to a `gc` running at the same time: stay out of the gc test's way.
    let _lock = GcLock::shared();
    let mut clean = Cleanup::new();
    let mut guard = Guard::new();
    let dir = TempDir::new();
    let writer = compile_c(&dir, "sysv_writer");
    let attach = compile_c(&dir, "sysv_attach");
    let sem_msg = compile_c(&dir, "sysv_sem_msg");

    // Segments: two from a C program (one kept attached by another), one
    // from ipcmk, one from shmkit.
    let (k1, k2, k4) = (clean.sysv_key(), clean.sysv_key(), clean.sysv_key());
    let mut c_pids = HashMap::new();
    let mut c_segment = |key: u32| {
        let c = run(Command::new(&writer).arg(format!("{key:#x}")).arg("from C"), None);
        c.ok();
        let id: i64 = c.out().trim().parse().expect("sysv_writer prints the shmid");
        c_pids.insert(id, c.pid);
        id
    };
    let id1 = c_segment(k1);
    let id2 = c_segment(k2);
    let mut attached = Running::spawn(Command::new(&attach).arg(format!("{k1:#x}")));
    assert_eq!(attached.line(), format!("attached {id1}"));
    let id3 = ipcmk(&mut guard, "-m", &["-M", "5000", "-p", "0640"]);
    let created = shmkit(&["create", &sysv_target(k4), "--size", "4097", "--mode", "0604", "--json"]).ok().json();
    let id4 = created["shmid"].as_i64().expect("create --json prints the shmid");
    let shm_ids = [id1, id2, id3, id4];

    // Semaphore sets and queues: from a C program (3 messages of 100 bytes
    // wait in its queue) and from ipcmk.
    let (sem_key, msg_key) = (clean.sysv_key(), clean.sysv_key());
    let c =
        run(Command::new(&sem_msg).args([&format!("{sem_key:#x}"), "4", &format!("{msg_key:#x}"), "3", "100"]), None);
    c.ok();
    let printed: HashMap<String, i64> = c
        .out()
        .lines()
        .filter_map(|l| l.split_once(' ').and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?))))
        .collect();
    let (sem1, msg1) = (printed["semid"], printed["msqid"]);
    guard.ipc("-s", sem1);
    guard.ipc("-q", msg1);
    let sem2 = ipcmk(&mut guard, "-s", &["-S", "3", "-p", "0600"]);
    let msg2 = ipcmk(&mut guard, "-q", &["-Q", "-p", "0620"]);

    let ls = ls_json(&[]);
    let shm_rows = ipcs(&["-m"], 1);
    let shm_pids = ipcs(&["-m", "-p"], 0);
    let sem_rows = ipcs(&["-s"], 1);
    let msg_rows = ipcs(&["-q"], 1);
    let msg_pids = ipcs(&["-q", "-p"], 0);
    let (ls_shm, ls_sem, ls_msg) = (by_id(&ls, "sysv-shm"), by_id(&ls, "sysv-sem"), by_id(&ls, "sysv-msg"));

    // key shmid owner perms bytes nattch status; shmid owner cpid lpid
    for id in shm_ids {
        let row = shm_rows.get(&id);
        let v = agreeing(&ls_shm, row, "segment", id);
        let row = row.expect("checked");
        assert_eq!(number(v, "bytes").to_string(), row[4], "bytes of segment {id}");
        assert_eq!(number(v, "nattch").to_string(), row[5], "nattch of segment {id}");
        let dest = row.get(6).is_some_and(|s| s == "dest");
        assert_eq!(v["marked_for_removal"], dest, "segment {id}: ipcs status {:?}", row.get(6));
        assert_eq!(text(v, "target"), format!("sysv-id:{id}"));
        let pids = shm_pids.get(&id).unwrap_or_else(|| panic!("`ipcs -m -p` does not list {id}"));
        assert_eq!(number(v, "cpid").to_string(), pids[2], "cpid of segment {id}");
        assert_eq!(number(v, "lpid").to_string(), pids[3], "lpid of segment {id}");
    }
    // What the objects are known to be, beyond agreeing with ipcs.
    let shm = |id: i64| &ls_shm[&id][0];
    assert_eq!(text(shm(id1), "key"), format!("{k1:#010x}"));
    assert_eq!(number(shm(id1), "nattch"), 1, "sysv_attach is attached");
    assert_eq!(number(shm(id1), "lpid"), i64::from(attached.id()), "sysv_attach attached last");
    assert_eq!(shm(id1)["lpid_alive"], true);
    for id in [id1, id2] {
        assert_eq!(number(shm(id), "cpid"), i64::from(c_pids[&id]), "the C program created {id}");
        assert_eq!(shm(id)["cpid_alive"], false, "the C program has exited");
        assert_eq!((number(shm(id), "bytes"), text(shm(id), "perms")), (4096, "0600"));
    }
    assert_eq!(number(shm(id2), "nattch"), 0);
    assert_eq!((number(shm(id3), "bytes"), text(shm(id3), "perms")), (5000, "0640"));
    assert_eq!((number(shm(id4), "bytes"), text(shm(id4), "perms")), (4097, "0604"));
    assert_eq!(text(shm(id4), "key"), format!("{k4:#010x}"));

    // key semid owner perms nsems
    for (id, nsems, perms) in [(sem1, 4, "0640"), (sem2, 3, "0600")] {
        let row = sem_rows.get(&id);
        let v = agreeing(&ls_sem, row, "semaphore set", id);
        assert_eq!(number(v, "nsems").to_string(), row.expect("checked")[4], "nsems of set {id}");
        assert_eq!((number(v, "nsems"), text(v, "perms")), (nsems, perms));
    }
    assert_eq!(text(&ls_sem[&sem1][0], "key"), format!("{sem_key:#010x}"));

    // key msqid owner perms used-bytes messages; msqid owner lspid lrpid
    for (id, bytes, messages, perms) in [(msg1, 300, 3, "0600"), (msg2, 0, 0, "0620")] {
        let row = msg_rows.get(&id);
        let v = agreeing(&ls_msg, row, "queue", id);
        let row = row.expect("checked");
        assert_eq!(number(v, "bytes").to_string(), row[4], "used-bytes of queue {id}");
        assert_eq!(number(v, "messages").to_string(), row[5], "messages of queue {id}");
        assert_eq!((number(v, "bytes"), number(v, "messages"), text(v, "perms")), (bytes, messages, perms));
        let pids = msg_pids.get(&id).unwrap_or_else(|| panic!("`ipcs -q -p` does not list {id}"));
        assert_eq!(number(v, "cpid").to_string(), pids[2], "lspid of queue {id}");
        assert_eq!(number(v, "lpid").to_string(), pids[3], "lrpid of queue {id}");
    }
    assert_eq!(number(&ls_msg[&msg1][0], "cpid"), i64::from(c.pid), "the C program sent last");
    assert_eq!(text(&ls_msg[&msg1][0], "key"), format!("{msg_key:#010x}"));

    // Each listing counts exactly the objects made here, each once.
    let mine = |ids: &[i64], ls: &HashMap<i64, Vec<Value>>, rows: &HashMap<i64, Vec<String>>| {
        let in_ls: usize = ids.iter().map(|id| ls.get(id).map_or(0, Vec::len)).sum();
        let in_ipcs = ids.iter().filter(|id| rows.contains_key(id)).count();
        (in_ls, in_ipcs)
    };
    assert_eq!(mine(&shm_ids, &ls_shm, &shm_rows), (4, 4));
    assert_eq!(mine(&[sem1, sem2], &ls_sem, &sem_rows), (2, 2));
    assert_eq!(mine(&[msg1, msg2], &ls_msg, &msg_rows), (2, 2));

    // --kind selects.
    for (kind, want, ids) in
        [("sysv", "sysv-shm", &shm_ids[..]), ("sem", "sysv-sem", &[sem1, sem2]), ("msg", "sysv-msg", &[msg1, msg2])]
    {
        let some = ls_json(&["--kind", kind]);
        let allowed: &[&str] = if kind == "sem" { &["sysv-sem", "posix-sem"] } else { &[want] };
        for v in &some {
            assert!(allowed.contains(&text(v, "kind")), "`ls --kind {kind}` lists {v}");
        }
        let listed = by_id(&some, want);
        for id in ids {
            assert!(listed.contains_key(id), "`ls --kind {kind}` misses {want} {id}");
        }
    }

    // The table says the same: KIND NAME ID OWNER PERMS …
    let table = shmkit(&["ls"]).ok().out();
    for (kind, id, key) in [
        ("sysv-shm", id1, format!("{k1:#010x}")),
        ("sysv-shm", id4, format!("{k4:#010x}")),
        ("sysv-sem", sem1, format!("{sem_key:#010x}")),
        ("sysv-msg", msg1, format!("{msg_key:#010x}")),
    ] {
        let line = table
            .lines()
            .find(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 2 && cols[0] == kind && cols[2] == id.to_string()
            })
            .unwrap_or_else(|| panic!("`shmkit ls` has no {kind} row for id {id}:\n{table}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], key, "{line}");
    }
    let row1 = table
        .lines()
        .find(|l| l.starts_with("sysv-shm") && l.split_whitespace().nth(2) == Some(&id1.to_string()))
        .expect("found above");
    assert!(row1.contains("1 attached"), "{row1}");

    let status = attached.finish();
    assert_eq!(status.code(), Some(0), "sysv_attach: {status:?}");
    for (flag, id) in [("-m", id1), ("-m", id2), ("-m", id3), ("-m", id4), ("-s", sem1), ("-s", sem2)] {
        run_ok(Command::new("ipcrm").args([flag, &id.to_string()]));
    }
    for id in [msg1, msg2] {
        run_ok(Command::new("ipcrm").args(["-q", &id.to_string()]));
    }
    // Gone from both listings.
    let ls = ls_json(&[]);
    let (shm_rows, sem_rows, msg_rows) = (ipcs(&["-m"], 1), ipcs(&["-s"], 1), ipcs(&["-q"], 1));
    let gone = |kind: &str, id: i64, rows: &HashMap<i64, Vec<String>>| {
        assert!(!rows.contains_key(&id), "ipcs still lists {kind} {id}");
        assert!(!by_id(&ls, kind).contains_key(&id), "`shmkit ls` still lists {kind} {id}");
    };
    for id in shm_ids {
        gone("sysv-shm", id, &shm_rows);
    }
    for id in [sem1, sem2] {
        gone("sysv-sem", id, &sem_rows);
    }
    for id in [msg1, msg2] {
        gone("sysv-msg", id, &msg_rows);
    }
}

/// One line of `ls -la`: mode bits, owner and size.
#[derive(Debug)]
struct LsLa {
    perms: u32,
    owner: String,
    size: u64,
}

/// `ls -la /dev/shm`, by file name.
fn ls_la() -> HashMap<String, LsLa> {
    // An object removed by another test between readdir and lstat makes ls
    // complain and exit 1; what it printed is still right.
    let out = run(Command::new("ls").args(["-la", "/dev/shm"]).env("LC_ALL", "C"), None);
    assert!(matches!(out.code(), 0 | 1), "ls -la /dev/shm: {:?}\n{}", out.status, out.stderr);
    let mut files = HashMap::new();
    for line in out.out().lines() {
        // -rw-r--r-- 1 owner group size month day time name
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 9 || !cols[0].starts_with('-') {
            continue;
        }
        let bits = cols[0].as_bytes();
        let perms = (1..10).fold(0u32, |acc, i| acc << 1 | u32::from(bits[i] != b'-'));
        let size = cols[4].parse().unwrap_or_else(|e| panic!("size in {line:?}: {e}"));
        files.insert(cols[8..].join(" "), LsLa { perms, owner: cols[2].to_string(), size });
    }
    files
}

#[test]
fn ls_agrees_with_ls_la_on_posix_objects() {
    // `ls` opens every shmkit object for a moment, which makes them look in
    // use to a `gc` running at the same time: stay out of the gc test's way.
    let _lock = GcLock::shared();
    let mut clean = Cleanup::new();
    let mut guard = Guard::new();
    let dir = TempDir::new();
    let writer = compile_c(&dir, "posix_writer");
    let sem = compile_c(&dir, "posix_sem");
    let hold = compile_c(&dir, "posix_hold");

    let (n1, n2, n3, n4) = (clean.posix_name(), clean.posix_name(), clean.posix_name(), clean.posix_name());
    shmkit(&["create", &format!("posix:/{n1}"), "--size", "1", "--mode", "0600"]).ok();
    shmkit(&["create", &format!("posix:/{n2}"), "--size", "4097", "--mode", "0644"]).ok();
    run(Command::new(&writer).arg(format!("/{n3}")).arg("from C"), None).ok();
    let sem_file = format!("sem.{n4}");
    guard.shm_file(&sem_file);
    run(Command::new(&sem).arg(format!("/{n4}")), None).ok();
    let ring = guard.ring();
    let ring_file = format!("shmkit.ring.{ring}");
    let mut recv = Proc::shmkit(&["recv", &ring, "--capacity", "64k"]);
    wait_for_holder(&ring, "consumer", recv.id());
    let mut holder = Running::spawn(Command::new(&hold).arg(format!("/{n2}")));
    assert_eq!(holder.line(), "mapped 4097");

    let ls = by_name(&ls_json(&[]));
    let la = ls_la();
    for (file, kind, target) in [
        (&n1, "posix-shm", Some(format!("posix:/{n1}"))),
        (&n2, "posix-shm", Some(format!("posix:/{n2}"))),
        (&n3, "posix-shm", Some(format!("posix:/{n3}"))),
        (&sem_file, "posix-sem", None),
        (&ring_file, "shmkit", Some(ring_target(&ring))),
    ] {
        let v = ls.get(&format!("/{file}")).unwrap_or_else(|| panic!("`shmkit ls` does not list /{file}"));
        let row = la.get(file.as_str()).unwrap_or_else(|| panic!("`ls -la /dev/shm` does not list {file}"));
        assert_eq!(text(v, "kind"), kind, "{v}");
        assert_eq!(text(v, "owner"), row.owner, "owner of {file}");
        assert_eq!(octal(text(v, "perms")), row.perms, "perms of {file}");
        assert_eq!(v["bytes"].as_u64(), Some(row.size), "size of {file}");
        assert_eq!(v["target"].as_str(), target.as_deref(), "target of {file}");
        for field in ["key", "id", "nattch", "nsems", "messages", "cpid", "lpid", "marked_for_removal"] {
            assert!(v[field].is_null(), "{field} of {file} does not apply: {v}");
        }
    }
    let get = |file: &str| &ls[&format!("/{file}")];
    assert_eq!((get(&n1)["bytes"].as_u64(), text(get(&n1), "perms")), (Some(1), "0600"));
    assert_eq!((get(&n2)["bytes"].as_u64(), text(get(&n2), "perms")), (Some(4097), "0644"));
    assert_eq!(get(&n2)["users"], serde_json::json!([holder.id()]), "posix_hold maps it");
    assert_eq!(get(&n1)["users"], serde_json::json!([]), "nobody maps it");
    assert_eq!(get(&n3)["users"], serde_json::json!([]), "the C program has exited");
    // (Another shmkit process may be looking at the ring at the same time.)
    let users = get(&ring_file)["users"].as_array().expect("users").clone();
    assert!(users.contains(&recv.id().into()), "recv maps its ring: {users:?}");
    assert_eq!(get(&ring_file)["shmkit"]["type"], "ring");
    assert!(get(&n1)["shmkit"].is_null());

    // --kind selects.
    let names = |kind: &str| -> Vec<String> {
        ls_json(&["--kind", kind]).iter().map(|v| text(v, "name").trim_start_matches('/').to_string()).collect()
    };
    let posix = names("posix");
    assert!(posix.contains(&n1) && posix.contains(&n2) && posix.contains(&n3), "{posix:?}");
    assert!(!posix.contains(&sem_file) && !posix.contains(&ring_file), "{posix:?}");
    assert!(names("sem").contains(&sem_file));
    let rings = names("shmkit");
    assert!(rings.contains(&ring_file) && !rings.contains(&n1), "{rings:?}");

    // The table: the ring is live, n2 has one process mapping it.
    let table = shmkit(&["ls"]).ok().out();
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("`shmkit ls` has no row for {name}:\n{table}"))
            .to_string()
    };
    assert!(line(&format!("/{n2}")).contains("1 mapping"), "{table}");
    let ring_line = line(&ring_ls_name(&ring));
    assert!(ring_line.starts_with("shmkit/ring") && ring_line.ends_with("live"), "{ring_line}");

    assert_eq!(holder.finish().code(), Some(0));
    // An empty stream ends recv; the ring goes with it.
    shmkit_with_input(&["send", &ring], b"").ok();
    recv.expect_exit(0);
    assert!(!super::ring_exists(&ring), "the ring is removed once both ends closed");
    shmkit(&["rm", &format!("posix:/{n1}"), &format!("posix:/{n2}"), &format!("posix:/{n3}")]).ok();
    std::fs::remove_file(format!("/dev/shm/{sem_file}")).expect("remove the semaphore");
    let la = ls_la();
    for file in [&n1, &n2, &n3, &sem_file, &ring_file] {
        assert!(!la.contains_key(file.as_str()), "{file} is still in /dev/shm");
    }
}
