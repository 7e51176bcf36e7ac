//! Producer benchmarks: a single `send`, a set-based `send_batch` and a `copy`, each on a fresh
//! queue of a private PostgreSQL cluster (pgq-testkit). Run: `cargo bench --bench produce`.
//! The side-by-side ratios against raw `psql \copy` are printed by `scripts/bench-produce`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pgq::core::{NewEvent, QueueName};
use pgq::producer::Producer;
use pgq_testkit::TestDb;

/// An event with a 100-byte payload.
fn event(i: u64) -> NewEvent {
    NewEvent::new("bench", format!("{i:0>100}"))
}

fn produce(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let db = rt.block_on(TestDb::new());
    let pool = db.pool().clone();
    let queue = QueueName::new("bench").expect("queue name");
    rt.block_on(pgq::core::create_queue(&pool, &queue))
        .expect("create queue");
    let producer = Producer::new(queue);

    let mut group = c.benchmark_group("produce");
    group.throughput(Throughput::Elements(1));
    group.bench_function("send", |b| {
        b.to_async(&rt).iter(|| async {
            producer.send(&pool, &event(1)).await.expect("send");
        })
    });

    const BATCH: u64 = 1000;
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("send_batch_1000", |b| {
        b.to_async(&rt).iter_batched(
            || (0..BATCH).map(event).collect::<Vec<_>>(),
            |events| async {
                let events = events;
                producer
                    .send_batch(&pool, &events)
                    .await
                    .expect("send_batch");
            },
            BatchSize::SmallInput,
        )
    });

    const COPY: u64 = 10_000;
    group.throughput(Throughput::Elements(COPY));
    group.bench_function("copy_10000", |b| {
        b.to_async(&rt).iter(|| async {
            let mut tx = pool.begin().await.expect("begin");
            producer
                .copy_iter(&mut tx, (0..COPY).map(event))
                .await
                .expect("copy");
            tx.commit().await.expect("commit");
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = produce
}
criterion_main!(benches);
