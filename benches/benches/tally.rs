//! Cost of one `tally_single_round` call per single-round algorithm, at 5 to 500 agents, with
//! the ballots precomputed (one per agent).

// A benchmark whose fixture cannot be built must stop loudly.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use mabeam_benches::{tally_case, TallyAlgorithm, SIZES};
use mabeam_consensus::tally::{tally_single_round, TallyInput};
use rand_chacha::{rand_core::SeedableRng as _, ChaCha8Rng};

fn tallies(c: &mut Criterion) {
    for algorithm in TallyAlgorithm::ALL {
        let mut group = c.benchmark_group(format!("tally/{}", algorithm.label()));
        if algorithm == TallyAlgorithm::ConsistentHashing {
            // Building the ring hashes 64 points per agent: milliseconds at 500 agents.
            group.sampling_mode(SamplingMode::Flat).sample_size(20);
        }
        for n in SIZES {
            let case = tally_case(algorithm, n).expect("tally fixture");
            let input = TallyInput {
                votes: &case.votes,
                options: &case.options,
                electorate: &case.electorate,
            };
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let check = tally_single_round(&case.spec, &input, &mut rng).expect("single round");
            assert!(
                !check.history.is_empty(),
                "{} at {n}: no history",
                algorithm.label()
            );
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::from_parameter(n), &input, |b, input| {
                b.iter(|| tally_single_round(black_box(&case.spec), black_box(input), &mut rng));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, tallies);
criterion_main!(benches);
