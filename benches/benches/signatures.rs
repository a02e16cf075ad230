//! ed25519 verification of signed ballots: one `SignedEnvelope::verify` per envelope against
//! one `verify_batch` over all of them, at 13 and 100 envelopes (pre-signed).

// A benchmark whose fixture cannot be built must stop loudly.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mabeam_benches::signed_envelopes;
use mabeam_protocol::verify_batch;

fn signatures(c: &mut Criterion) {
    let mut group = c.benchmark_group("signatures");
    for n in [13, 100] {
        let (envelopes, keys) = signed_envelopes(n).expect("signed envelopes");
        let items: Vec<_> = envelopes.iter().zip(&keys).collect();
        verify_batch(&items).expect("the fixture verifies");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("single", n), &items, |b, items| {
            b.iter(|| {
                for (envelope, key) in items {
                    black_box(envelope.verify(key)).expect("valid signature");
                }
            });
        });
        group.bench_with_input(BenchmarkId::new("batch", n), &items, |b, items| {
            b.iter(|| verify_batch(black_box(items)).expect("valid batch"));
        });
    }
    group.finish();
}

criterion_group!(benches, signatures);
criterion_main!(benches);
