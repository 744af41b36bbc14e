//! `shmkit bench --quick --json` end to end: the JSON has the documented
//! shape and every figure is positive and finite. No timing is asserted.
//!
//! Runs in release builds only (`cargo test --release`, as CI does): the
//! quick benchmark takes about 20 s there and several times that unoptimised.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

fn positive(v: &Value, what: &str) {
    let x = v.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x.is_finite() && x > 0.0, "{what} = {x}");
}

fn check_stats(v: &Value, what: &str) {
    assert!(v["samples"].as_u64().unwrap_or(0) > 0, "{what}: no samples");
    for key in ["median_ns", "p99_ns", "p999_ns", "min_ns", "max_ns", "mean_ns"] {
        positive(&v[key], &format!("{what}.{key}"));
    }
    assert!(v["median_ns"].as_f64() <= v["p99_ns"].as_f64(), "{what}: median above p99");
}

#[test]
#[cfg_attr(debug_assertions, ignore = "the benchmark runs in release builds (cargo test --release)")]
fn quick_json_has_the_documented_shape_and_sane_figures() {
    let (pid, output) = bench(&["--quick", "--json"]);
    assert!(output.status.success(), "bench failed: {:?}", output.status);
    let v: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");

    for key in ["cpu_model", "kernel", "idle_driver"] {
        assert!(v["machine"].get(key).is_some(), "machine.{key} missing");
    }
    assert!(v["machine"]["cores"].as_u64().unwrap_or(0) >= 1);
    positive(&v["elapsed_s"], "elapsed_s");
    let sizes: Vec<u64> = v["sizes"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect();
    assert_eq!(sizes, [8, 64, 4096, 65536, 1 << 20]);

    let floors = &v["floors"];
    check_stats(&floors["cache_line_round_trip"], "floors.cache_line_round_trip");
    check_stats(&floors["cache_line_round_trip_same_core"], "floors.cache_line_round_trip_same_core");
    check_stats(&floors["futex_round_trip"], "floors.futex_round_trip");
    let memcpy = floors["memcpy_bytes_per_s"].as_array().unwrap();
    assert_eq!(memcpy.len(), sizes.len());
    for m in memcpy {
        positive(&m["bytes_per_s"], "memcpy bytes_per_s");
    }

    let results = v["results"].as_array().unwrap();
    let mechanisms: std::collections::BTreeSet<&str> =
        results.iter().map(|r| r["mechanism"].as_str().unwrap()).collect();
    for expected in [
        "shmkit ring (spin)",
        "shmkit ring (blocking)",
        "pipe",
        "unix stream socket",
        "unix datagram socket",
        "POSIX message queue",
        "System V message queue",
        "TCP loopback",
    ] {
        assert!(mechanisms.contains(expected), "{expected} missing");
    }
    assert_eq!(results.len(), mechanisms.len() * sizes.len());
    for r in results {
        let what = format!("{} at {} bytes", r["mechanism"], r["size"]);
        assert!(r["error"].is_null(), "{what}: {}", r["error"]);
        if let Some(why) = r["unsupported"].as_str() {
            assert!(!why.is_empty());
            assert!(
                r["mechanism"].as_str().unwrap().contains("queue")
                    || r["mechanism"].as_str().unwrap().contains("datagram"),
                "{what}: {why}"
            );
            continue;
        }
        check_stats(&r["round_trip"], &format!("{what} round trip"));
        positive(&r["stream"]["messages_per_s"], &format!("{what} messages/s"));
        positive(&r["stream"]["bytes_per_s"], &format!("{what} bytes/s"));
        if r["size"].as_u64() <= Some(4096) {
            check_stats(&r["round_trip_same_core"], &format!("{what} same core"));
        }
    }
    // The benchmark cleans up after itself: its rings and POSIX queues are
    // named after its pid.
    let tag = format!("bench-{pid}-");
    let leftovers: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&tag))
        .collect();
    assert!(leftovers.is_empty(), "the benchmark left {leftovers:?}");
}

/// Runs `shmkit bench ARGS` with a watchdog (300 s); its pid and output.
fn bench(args: &[&str]) -> (u32, std::process::Output) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shmkit"))
        .arg("bench")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("watchdog: `shmkit bench {args:?}` still running after 300 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child.id(), child.wait_with_output().unwrap())
}

#[test]
#[cfg_attr(debug_assertions, ignore = "the benchmark runs in release builds (cargo test --release)")]
fn only_and_size_measure_just_the_cells_asked_for() {
    let (_, output) = bench(&["--quick", "--json", "--only", "ring,pubsub", "--size", "8,4k"]);
    assert!(output.status.success(), "bench failed: {}", String::from_utf8_lossy(&output.stderr));
    let v: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    let mut cells: Vec<(String, u64)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["mechanism"].as_str().unwrap().to_string(), r["size"].as_u64().unwrap()))
        .collect();
    cells.sort();
    assert_eq!(
        cells,
        [
            ("shmkit pub/sub (zero-copy)".to_string(), 8),
            ("shmkit pub/sub (zero-copy)".to_string(), 4096),
            ("shmkit ring (spin)".to_string(), 8),
            ("shmkit ring (spin)".to_string(), 4096),
        ]
    );
    for r in v["results"].as_array().unwrap() {
        check_stats(&r["round_trip"], "round trip");
    }
}

#[test]
fn a_size_the_benchmark_does_not_measure_is_a_usage_error() {
    let (_, output) = bench(&["--size", "7"]);
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("the benchmark measures"), "{err}");
    let (_, output) = bench(&["--only", "carrier-pigeon"]);
    assert_eq!(output.status.code(), Some(2));
}
