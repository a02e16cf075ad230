//! Whole sessions driven in-process with pre-signed ballots: start the session, deliver the
//! envelopes, drain every effect up to the decision.
//!
//! - `session/majority/<n>`: a majority vote of n agents, one `handle_envelopes` batch.
//! - `session/byzantine_<n>/{batched,one_by_one}`: one byzantine round: n prepares, then the
//!   2f+1 commits that decide, delivered as two `handle_envelopes` waves or envelope by
//!   envelope with `handle_envelope`.

// A benchmark whose fixture cannot be built must stop loudly.
#![allow(clippy::expect_used)]

use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use mabeam_benches::{byzantine_fixture, drive, majority_fixture, Delivery, SIZES};
use mabeam_protocol::Status;

fn majority(c: &mut Criterion) {
    let mut group = c.benchmark_group("session/majority");
    group.sampling_mode(SamplingMode::Flat).sample_size(30);
    for n in SIZES {
        let fixture = majority_fixture(n).expect("majority fixture");
        let decision = drive(
            fixture.init.clone(),
            vec![fixture.ballots.clone()],
            Delivery::Batched,
        )
        .expect("session starts")
        .expect("session finishes");
        assert_eq!(
            decision.status,
            Status::Decided,
            "majority of {n}: {decision:?}"
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || (fixture.init.clone(), vec![fixture.ballots.clone()]),
                |(init, waves)| drive(init, waves, Delivery::Batched),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn byzantine(c: &mut Criterion) {
    for n in [13, 100] {
        let fixture = byzantine_fixture(n).expect("byzantine fixture");
        let mut group = c.benchmark_group(format!("session/byzantine_{n}"));
        group.sampling_mode(SamplingMode::Flat).sample_size(30);
        group.throughput(Throughput::Elements(
            (fixture.prepares.len() + fixture.commits.len()) as u64,
        ));
        for (label, delivery) in [
            ("batched", Delivery::Batched),
            ("one_by_one", Delivery::OneByOne),
        ] {
            let waves = vec![fixture.prepares.clone(), fixture.commits.clone()];
            let decision = drive(fixture.init.clone(), waves.clone(), delivery)
                .expect("session starts")
                .expect("session finishes");
            assert_eq!(
                decision.status,
                Status::Decided,
                "byzantine {n} {label}: {decision:?}"
            );
            assert!(decision.certificate.is_some());
            group.bench_function(label, |b| {
                b.iter_batched(
                    || (fixture.init.clone(), waves.clone()),
                    |(init, waves)| drive(init, waves, delivery),
                    BatchSize::SmallInput,
                );
            });
        }
        group.finish();
    }
}

criterion_group!(benches, majority, byzantine);
criterion_main!(benches);
