//! In-process micro-benchmarks of the channels (criterion): the instruction
//! cost of a ring push + pop and of a pub/sub loan + publish + receive, in
//! one thread, so no cache line travels between cores. The cross-process
//! figures are `shmkit bench`'s.
//!
//! Run: `cargo bench -p shmkit --bench channels`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use shmkit::channel::pubsub::{PubSubOptions, Publisher, Subscriber};
use shmkit::channel::ring::{Receiver, RingOptions, Sender};

fn name(tag: &str) -> String {
    format!("microbench-{}-{tag}", std::process::id())
}

fn ring(c: &mut Criterion) {
    let ring = name("ring");
    let mut opts = RingOptions::new();
    opts.capacity(1 << 20);
    let mut tx = Sender::open_or_create(&ring, &opts).unwrap();
    let mut rx = Receiver::open(&ring).unwrap();
    let mut buf = Vec::with_capacity(64);
    for size in [8usize, 64] {
        let msg = vec![7u8; size];
        c.bench_function(&format!("ring push+pop {size} B"), |b| {
            b.iter(|| {
                tx.try_send(black_box(&msg)).unwrap();
                rx.try_recv(&mut buf).unwrap();
            })
        });
    }
    c.bench_function("ring push+pop 8 B, batches of 256", |b| {
        b.iter_batched(
            || (),
            |()| {
                for i in 0..256u64 {
                    tx.try_send(&i.to_le_bytes()).unwrap();
                }
                for _ in 0..256 {
                    rx.try_recv(&mut buf).unwrap();
                }
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("ring loan+commit+recv_ref 8 B (zero-copy)", |b| {
        b.iter(|| {
            let mut loan = tx.try_loan(8).unwrap();
            loan.write(0, &1u64).unwrap();
            loan.commit();
            let msg = rx.try_recv_ref().unwrap();
            black_box(msg.read::<u64>(0).unwrap());
        })
    });
}

fn pubsub(c: &mut Criterion) {
    let service = name("pubsub");
    let mut opts = PubSubOptions::new();
    opts.max_sample(64).slots(64);
    let mut publisher = Publisher::open_or_create(&service, &opts).unwrap();
    let mut subscriber = Subscriber::open_or_create(&service, &opts).unwrap();
    c.bench_function("pub/sub loan+publish+receive 8 B (zero-copy)", |b| {
        b.iter(|| {
            let mut loan = publisher.loan().unwrap();
            loan.set_len(8).unwrap();
            loan.write(0, &1u64).unwrap();
            loan.publish();
            let sample = subscriber.receive().unwrap();
            let mut head = [0u8; 8];
            black_box(sample.read_at(0, &mut head).unwrap());
        })
    });
}

criterion_group!(benches, ring, pubsub);
criterion_main!(benches);
