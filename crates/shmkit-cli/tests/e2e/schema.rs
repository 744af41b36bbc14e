//! The JSON of `ls --json` and `gc --json` against the documented schema,
//! `tests/ls.schema.json`, with a small validator for the subset of JSON
//! Schema (draft 2020-12) the schema uses.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{Value, json};

use super::{GcLock, Guard, Proc, by_name, ls_json, ring_ls_name, run_ok, wait_for_holder};
use crate::util::{Cleanup, TempDir, compile_c, run, shmkit, shmkit_with_input, sysv_target};

/// The schema, and a validator for the keywords it uses: `type` (a name or
/// a list of names), `enum`, `const`, `required`, `properties`,
/// `additionalProperties` (`false` or a schema), `items`, `minimum`,
/// `anyOf`, `oneOf`, `allOf`, `if`/`then`/`else` and local `$ref`s.
/// Annotations (`title`, `description`, …) are ignored; any other keyword
/// fails the test, so the schema cannot promise more than is checked.
#[derive(Debug)]
pub(crate) struct Schema {
    root: Value,
}

const ANNOTATIONS: [&str; 7] = ["$schema", "$id", "$defs", "$comment", "title", "description", "examples"];

fn type_matches(name: &str, v: &Value) -> bool {
    match name {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("the schema names an unknown type {other:?}"),
    }
}

impl Schema {
    pub(crate) fn load() -> Schema {
        let text = include_str!("../ls.schema.json");
        let root = serde_json::from_str(text).unwrap_or_else(|e| panic!("tests/ls.schema.json is not JSON: {e}"));
        Schema { root }
    }

    /// The schema at `#/$defs/NAME`.
    fn def(&self, name: &str) -> &Value {
        self.root.pointer(&format!("/$defs/{name}")).unwrap_or_else(|| panic!("the schema has no $defs/{name}"))
    }

    /// Panics, naming every violation, unless `v` is a valid `ls --json` line.
    #[track_caller]
    pub(crate) fn check_ls(&self, v: &Value) {
        let errors = self.errors(&self.root, v, "");
        assert!(
            errors.is_empty(),
            "`ls --json` object does not match tests/ls.schema.json:\n  {}\n{v}",
            errors.join("\n  ")
        );
    }

    /// Panics unless `v` is a valid `gc --json` object.
    #[track_caller]
    pub(crate) fn check_gc(&self, v: &Value) {
        let errors = self.errors(self.def("gc"), v, "");
        assert!(errors.is_empty(), "`gc --json` does not match $defs/gc:\n  {}\n{v}", errors.join("\n  "));
    }

    /// What is wrong with `v` against `schema`; `at` is where `v` is (a
    /// JSON pointer).
    pub(crate) fn errors(&self, schema: &Value, v: &Value, at: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let here = if at.is_empty() { "/" } else { at };
        let schema = match schema {
            Value::Bool(true) => return errors,
            Value::Bool(false) => return vec![format!("{here}: nothing is allowed here, found {v}")],
            Value::Object(map) => map,
            other => panic!("not a schema: {other}"),
        };
        for (keyword, s) in schema {
            match keyword.as_str() {
                k if ANNOTATIONS.contains(&k) => {}
                "$ref" => {
                    let target = s
                        .as_str()
                        .and_then(|r| r.strip_prefix('#'))
                        .and_then(|p| self.root.pointer(p))
                        .unwrap_or_else(|| panic!("unresolvable $ref {s}"));
                    errors.extend(self.errors(target, v, at));
                }
                "type" => {
                    let names: Vec<&str> = match s {
                        Value::String(name) => vec![name.as_str()],
                        Value::Array(list) => list.iter().map(|n| n.as_str().expect("type names")).collect(),
                        other => panic!("bad type {other}"),
                    };
                    if !names.iter().any(|n| type_matches(n, v)) {
                        errors.push(format!("{here}: {v} is not of type {}", names.join(" or ")));
                    }
                }
                "enum" => {
                    if !s.as_array().expect("enum is a list").contains(v) {
                        errors.push(format!("{here}: {v} is not one of {s}"));
                    }
                }
                "const" => {
                    if s != v {
                        errors.push(format!("{here}: {v} is not {s}"));
                    }
                }
                "required" => {
                    if let Some(object) = v.as_object() {
                        for key in s.as_array().expect("required is a list") {
                            let key = key.as_str().expect("required names");
                            if !object.contains_key(key) {
                                errors.push(format!("{here}: the key {key:?} is missing"));
                            }
                        }
                    }
                }
                "properties" => {
                    if let Some(object) = v.as_object() {
                        for (key, sub) in s.as_object().expect("properties is an object") {
                            if let Some(value) = object.get(key) {
                                errors.extend(self.errors(sub, value, &format!("{at}/{key}")));
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Some(object) = v.as_object() {
                        let known = schema.get("properties").and_then(Value::as_object);
                        for (key, value) in object {
                            if known.is_some_and(|k| k.contains_key(key)) {
                                continue;
                            }
                            if *s == Value::Bool(false) {
                                errors.push(format!("{here}: unexpected key {key:?}"));
                            } else {
                                errors.extend(self.errors(s, value, &format!("{at}/{key}")));
                            }
                        }
                    }
                }
                "items" => {
                    if let Some(list) = v.as_array() {
                        for (i, item) in list.iter().enumerate() {
                            errors.extend(self.errors(s, item, &format!("{at}/{i}")));
                        }
                    }
                }
                "minimum" => {
                    let min = s.as_f64().expect("minimum is a number");
                    if v.as_f64().is_some_and(|n| n < min) {
                        errors.push(format!("{here}: {v} is less than {min}"));
                    }
                }
                "anyOf" | "oneOf" | "allOf" => {
                    let branches: Vec<Vec<String>> = s
                        .as_array()
                        .expect("a list of schemas")
                        .iter()
                        .enumerate()
                        .map(|(i, b)| {
                            self.errors(b, v, at).into_iter().map(|e| format!("[{keyword} {i}] {e}")).collect()
                        })
                        .collect();
                    let passed = branches.iter().filter(|e| e.is_empty()).count();
                    let ok = match keyword.as_str() {
                        "anyOf" => passed >= 1,
                        "oneOf" => passed == 1,
                        _ => passed == branches.len(),
                    };
                    if !ok {
                        errors.push(format!("{here}: {passed} of the {} {keyword} branches match", branches.len()));
                        errors.extend(branches.into_iter().flatten());
                    }
                }
                "if" => {
                    let branch = if self.errors(s, v, at).is_empty() { "then" } else { "else" };
                    if let Some(sub) = schema.get(branch) {
                        errors.extend(self.errors(sub, v, at));
                    }
                }
                "then" | "else" => assert!(schema.contains_key("if"), "{keyword} without if"),
                other => panic!("the validator does not support the keyword {other:?}; add it, or leave it out"),
            }
        }
        errors
    }
}

/// A copy of `v`, changed by `change`.
fn with(v: &Value, change: impl FnOnce(&mut Value)) -> Value {
    let mut v = v.clone();
    change(&mut v);
    v
}

fn sample_posix() -> Value {
    json!({
        "kind": "posix-shm", "name": "/x", "target": "posix:/x", "key": null, "id": null,
        "owner": "root", "uid": 0, "perms": "0600", "bytes": 1,
        "nattch": null, "nsems": null, "messages": null,
        "cpid": null, "cpid_alive": null, "lpid": null, "lpid_alive": null,
        "atime": null, "dtime": null, "ctime": 1, "mtime": 1,
        "marked_for_removal": null, "users": [12], "shmkit": null,
    })
}

#[test]
fn the_validator_rejects_what_the_schema_forbids() {
    let schema = Schema::load();
    let ok = sample_posix();
    assert_eq!(schema.errors(&schema.root, &ok, ""), Vec::<String>::new());
    let mut ring = ok.clone();
    ring["kind"] = json!("shmkit");
    ring["shmkit"] = json!({
        "type": "ring", "state": "ready", "version": 1, "created": 5, "creator_pid": 9, "creator_alive": false,
        "holders": [{"role": "producer", "pid": 10, "alive": false}], "stale": true, "details": {"fill": "0 bytes"},
    });
    assert_eq!(schema.errors(&schema.root, &ring, ""), Vec::<String>::new());
    let mut unreadable = ring.clone();
    unreadable["shmkit"] = json!({"error": "no shmkit magic", "stale": false});
    assert_eq!(schema.errors(&schema.root, &unreadable, ""), Vec::<String>::new());

    let broken: Vec<(&str, Value)> = vec![
        ("a missing key", with(&ok, |v| drop(v.as_object_mut().unwrap().remove("mtime")))),
        ("an extra key", with(&ok, |v| v["extra"] = json!(1))),
        ("a wrong type", with(&ok, |v| v["bytes"] = json!("1"))),
        ("an unknown kind", with(&ok, |v| v["kind"] = json!("sysv-pipe"))),
        ("a key that does not apply to the kind", with(&ok, |v| v["nattch"] = json!(0))),
        ("a System V kind without its System V keys", with(&ok, |v| v["kind"] = json!("sysv-shm"))),
        ("a negative pid", with(&ok, |v| v["users"] = json!([-1]))),
        ("a shmkit object without its header", with(&ring, |v| v["shmkit"] = json!(null))),
        ("a header missing a key", with(&ring, |v| drop(v["shmkit"].as_object_mut().unwrap().remove("stale")))),
        ("a header with an unknown state", with(&ring, |v| v["shmkit"]["state"] = json!("done"))),
        ("a holder with an extra key", with(&ring, |v| v["shmkit"]["holders"][0]["start"] = json!(1))),
        ("a detail that is not text", with(&ring, |v| v["shmkit"]["details"]["fill"] = json!(0))),
        ("a non-empty unreadable object called stale", with(&unreadable, |v| v["shmkit"]["stale"] = json!(true))),
    ];
    let abandoned = with(&unreadable, |v| {
        v["bytes"] = json!(0);
        v["shmkit"]["stale"] = json!(true);
    });
    assert_eq!(schema.errors(&schema.root, &abandoned, ""), Vec::<String>::new(), "an empty, abandoned object");
    for (what, v) in broken {
        assert!(!schema.errors(&schema.root, &v, "").is_empty(), "the schema accepts {what}: {v}");
    }

    let gc = json!({"dry_run": true, "removed": [{"name": "/shmkit.ring.x", "type": "ring", "creator_pid": 3}],
                    "kept": [{"name": "/shmkit.ring.y", "reason": "its creator (pid 4) is alive"}]});
    schema.check_gc(&gc);
    for bad in [
        json!({"dry_run": true, "removed": []}),
        json!({"dry_run": "yes", "removed": [], "kept": []}),
        json!({"dry_run": true, "removed": [{"name": "/a"}], "kept": []}),
        json!({"dry_run": true, "removed": [], "kept": [{"name": "/a", "reason": "x", "pid": 1}]}),
    ] {
        assert!(!schema.errors(schema.def("gc"), &bad, "").is_empty(), "$defs/gc accepts {bad}");
    }

    // Every kind has its own rules, and every key is required.
    let kinds: BTreeSet<&str> =
        schema.root["properties"]["kind"]["enum"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let ruled: BTreeSet<&str> = schema.root["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["if"]["properties"]["kind"]["const"].as_str())
        .collect();
    assert_eq!(kinds.len(), 6);
    assert_eq!(kinds, ruled);
    let keys: BTreeSet<&str> = schema.root["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    let required: BTreeSet<&str> =
        schema.root["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(keys, required);
}

/// Checks the formats the schema leaves as plain strings.
fn check_formats(v: &Value) {
    let perms = v["perms"].as_str().unwrap_or_default();
    assert!(perms.len() == 4 && perms.bytes().all(|b| (b'0'..=b'7').contains(&b)), "perms {perms:?}: {v}");
    if let Some(key) = v["key"].as_str() {
        let hex = key.strip_prefix("0x").unwrap_or_default();
        assert!(hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "key {key:?}: {v}");
        assert_eq!(v["name"], key, "a System V object is named by its key");
    }
    let name = v["name"].as_str().unwrap_or_default();
    if v["key"].is_null() {
        assert!(name.starts_with('/'), "a /dev/shm name starts with a slash: {v}");
    }
}

#[test]
fn ls_and_gc_json_match_the_schema() {
    // An empty shmkit object is stale: keep gc (of the tests here) off it;
    // and `ls`, which opens every shmkit object for a moment, off the gc
    // test's rings.
    let _lock = GcLock::shared();
    let schema = Schema::load();
    let mut clean = Cleanup::new();
    let mut guard = Guard::new();
    let dir = TempDir::new();
    let sem = compile_c(&dir, "posix_sem");

    // One object of every kind, and shmkit objects in every readable and
    // unreadable state.
    let key = clean.sysv_key();
    let shmid = shmkit(&["create", &sysv_target(key), "--size", "100", "--json"]).ok().json()["shmid"].clone();
    let semid: i64 =
        run_ok(Command::new("ipcmk").args(["-S", "2"])).split_whitespace().last().unwrap().parse().unwrap();
    guard.ipc("-s", semid);
    let msqid: i64 = run_ok(Command::new("ipcmk").arg("-Q")).split_whitespace().last().unwrap().parse().unwrap();
    guard.ipc("-q", msqid);
    let posix = clean.posix_name();
    shmkit(&["create", &format!("posix:/{posix}"), "--size", "100"]).ok();
    let sem_name = clean.posix_name();
    guard.shm_file(&format!("sem.{sem_name}"));
    run(Command::new(&sem).arg(format!("/{sem_name}")), None).ok();
    let ring = guard.ring();
    let mut recv = Proc::shmkit(&["recv", &ring, "--capacity", "4k"]);
    wait_for_holder(&ring, "consumer", recv.id());
    // Named like shmkit's, but never initialised (all zeros), too small for
    // a header, and marked ready without shmkit's magic.
    let [empty, small, alien] = ["empty", "small", "alien"].map(|tag| {
        let file = format!("shmkit.{}", super::unique(tag));
        guard.shm_file(&file);
        file
    });
    shmkit(&["create", &format!("posix:/{empty}"), "--size", "4096"]).ok();
    shmkit(&["create", &format!("posix:/{small}"), "--size", "16"]).ok();
    shmkit(&["create", &format!("posix:/{alien}"), "--size", "4096"]).ok();
    shmkit(&["write", &format!("posix:/{alien}"), "--text", "\u{2}"]).ok();

    let all = ls_json(&[]);
    assert!(!all.is_empty());
    for v in &all {
        schema.check_ls(v);
        check_formats(v);
    }
    let objects = by_name(&all);
    let of = |name: &str| objects.get(name).unwrap_or_else(|| panic!("`shmkit ls --json` does not list {name}"));
    let shm = all.iter().find(|v| v["kind"] == "sysv-shm" && v["id"] == shmid).expect("the segment is listed");
    assert_eq!(shm["key"], format!("{key:#010x}"));
    assert!(all.iter().any(|v| v["kind"] == "sysv-sem" && v["id"] == semid), "the semaphore set is listed");
    assert!(all.iter().any(|v| v["kind"] == "sysv-msg" && v["id"] == msqid), "the queue is listed");
    assert_eq!(of(&format!("/{posix}"))["kind"], "posix-shm");
    assert_eq!(of(&format!("/sem.{sem_name}"))["kind"], "posix-sem");
    let live = &of(&ring_ls_name(&ring))["shmkit"];
    assert_eq!((&live["type"], &live["state"], &live["stale"]), (&json!("ring"), &json!("ready"), &json!(false)));
    let empty_k = &of(&format!("/{empty}"))["shmkit"];
    assert_eq!(
        (&empty_k["state"], &empty_k["type"], &empty_k["version"]),
        (&json!("empty"), &Value::Null, &Value::Null)
    );
    for name in [&small, &alien] {
        let k = &of(&format!("/{name}"))["shmkit"];
        assert!(k["error"].is_string(), "{name} cannot be read as a shmkit object: {k}");
        assert_ne!(k["stale"], true, "{name}: unreadable is never stale");
    }

    // Every filter prints the same shape.
    for args in [
        &["--kind", "sysv"][..],
        &["--kind", "posix"],
        &["--kind", "sem"],
        &["--kind", "msg"],
        &["--kind", "shmkit"],
        &["--stale"],
    ] {
        for v in ls_json(args) {
            schema.check_ls(&v);
        }
    }

    // gc --dry-run: keeps the empty object (a young object whose header is
    // not written yet is being created, not abandoned), the live ring and
    // the unreadable ones.
    let dry = shmkit(&["gc", "--dry-run", "--json"]).ok().json();
    schema.check_gc(&dry);
    let removed = dry["removed"].as_array().expect("removed");
    assert!(!removed.iter().any(|r| r["name"] == format!("/{empty}")), "{dry}");
    let entry = dry["kept"]
        .as_array()
        .expect("kept")
        .iter()
        .find(|k| k["name"] == format!("/{empty}"))
        .unwrap_or_else(|| panic!("{dry}"));
    assert!(entry["reason"].as_str().unwrap_or("").contains("being created"), "{entry}");
    let kept: Vec<&str> = dry["kept"].as_array().expect("kept").iter().filter_map(|k| k["name"].as_str()).collect();
    for name in [ring_ls_name(&ring), format!("/{small}"), format!("/{alien}")] {
        assert!(kept.contains(&name.as_str()), "gc --dry-run should keep {name}: {dry}");
    }

    shmkit_with_input(&["send", &ring], b"").ok();
    recv.expect_exit(0);
    shmkit(&["rm", &sysv_target(key), &format!("posix:/{posix}")]).ok();
    for file in [&empty, &small, &alien] {
        shmkit(&["rm", &format!("posix:/{file}")]).ok();
    }
}
