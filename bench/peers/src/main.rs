//! Round trips through iceoryx2's publish/subscribe, measured the way shmkit's
//! own figures are (two processes pinned to two cores, busy-polling, one
//! sample out and one back), next to the cache-line round trip between the
//! same two cores in the same run. Round trips are timed one by one, as
//! `shmkit bench` times its own, and the median is reported.
//!
//! Run: `cd bench/peers && cargo run --release` (`-- --json` for one JSON
//! object per line). Kept out of the main workspace: iceoryx2 is a large
//! build and is needed only for this comparison.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use iceoryx2::prelude::*;

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, passed by pointer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn fork(f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the child runs `f` and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        pin(1);
        f();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    pid
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Cache-line round trip between the two pinned processes, ns.
fn cache_line_floor(rounds: u64, batches: usize) -> f64 {
    // SAFETY: MAP_SHARED|MAP_ANONYMOUS page, shared with the child.
    let shared = unsafe {
        libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0)
    };
    // SAFETY: two words on separate lines of the shared page, used atomically.
    let (ping, pong) = unsafe { (AtomicU64::from_ptr(shared.cast()), AtomicU64::from_ptr(shared.cast::<u8>().add(128).cast())) };
    let total = rounds * batches as u64 + 1000;
    let child = fork(|| {
        for i in 1..=total {
            while ping.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            pong.store(i, Ordering::Release);
        }
    });
    let mut n = 0;
    let mut round = || {
        n += 1;
        ping.store(n, Ordering::Release);
        while pong.load(Ordering::Acquire) != n {
            std::hint::spin_loop();
        }
    };
    for _ in 0..1000 {
        round();
    }
    let mut out = Vec::with_capacity(rounds as usize * batches);
    for _ in 0..rounds as usize * batches {
        let t = Instant::now();
        round();
        out.push(t.elapsed().as_nanos() as f64);
    }
    reap(child);
    median(out)
}

/// Opens (or creates) the publish/subscribe service `name` for `[u8; N]`.
fn service<const N: usize>(
    node: &Node<ipc::Service>,
    name: &str,
) -> iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8; N], ()> {
    node.service_builder(&name.try_into().unwrap()).publish_subscribe::<[u8; N]>().open_or_create().unwrap()
}

/// iceoryx2 publish/subscribe round trip with a payload of `N` bytes, ns.
fn iceoryx2_round_trip<const N: usize>(rounds: u64, batches: usize) -> f64 {
    let tag = std::process::id();
    let ping_name = format!("shmkit-bench/{tag}/{N}/ping");
    let pong_name = format!("shmkit-bench/{tag}/{N}/pong");
    let total = rounds * batches as u64 + 1000;
    let echo = {
        let (ping_name, pong_name) = (ping_name.clone(), pong_name.clone());
        fork(move || {
            let node = NodeBuilder::new().create::<ipc::Service>().unwrap();
            let (ping, pong) = (service::<N>(&node, &ping_name), service::<N>(&node, &pong_name));
            let sub = ping.subscriber_builder().create().unwrap();
            let publ = pong.publisher_builder().create().unwrap();
            let mut left = total;
            while left > 0 {
                if let Some(sample) = sub.receive().unwrap() {
                    let first = sample[0];
                    drop(sample);
                    let out = publ.loan_uninit().unwrap();
                    let mut payload = [0u8; N];
                    payload[0] = first;
                    out.write_payload(payload).send().unwrap();
                    left -= 1;
                }
            }
            // Let the parent receive the last sample before the ports go.
            std::thread::sleep(std::time::Duration::from_millis(100));
        })
    };
    let node = NodeBuilder::new().create::<ipc::Service>().unwrap();
    let (ping, pong) = (service::<N>(&node, &ping_name), service::<N>(&node, &pong_name));
    let publ = ping.publisher_builder().create().unwrap();
    let sub = pong.subscriber_builder().create().unwrap();
    // Wait until the echo process has connected both ports.
    let start = Instant::now();
    while ping.dynamic_config().number_of_subscribers() == 0 || pong.dynamic_config().number_of_publishers() == 0 {
        assert!(start.elapsed().as_secs() < 20, "the iceoryx2 echo process never connected");
        std::thread::yield_now();
    }
    let mut n = 0u8;
    let mut round = || {
        n = n.wrapping_add(1);
        let mut payload = [0u8; N];
        payload[0] = n;
        publ.loan_uninit().unwrap().write_payload(payload).send().unwrap();
        loop {
            if let Some(sample) = sub.receive().unwrap() {
                black_box(sample[0]);
                break;
            }
        }
    };
    for _ in 0..1000 {
        round();
    }
    // Timed per round trip, as `shmkit bench` times its own.
    let mut out = Vec::with_capacity(rounds as usize * batches);
    for _ in 0..rounds as usize * batches {
        let t = Instant::now();
        round();
        out.push(t.elapsed().as_nanos() as f64);
    }
    reap(echo);
    median(out)
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    pin(0);
    let (rounds, batches) = (20_000, 20);
    for size in [8usize, 4096] {
        let floor = cache_line_floor(rounds, batches);
        let ice = match size {
            8 => iceoryx2_round_trip::<8>(rounds, batches),
            _ => iceoryx2_round_trip::<4096>(rounds, batches),
        };
        if json {
            println!("{{\"peer\":\"iceoryx2\",\"pattern\":\"pubsub\",\"size\":{size},\"round_trip_ns\":{ice:.1},\"floor_ns\":{floor:.1}}}");
        } else {
            println!("{size:>5} B pub/sub round trip: iceoryx2 {ice:8.1} ns   cache-line floor {floor:7.1} ns   ratio {:.2}", ice / floor);
        }
    }
}
