//! Micro-benchmark of the store's chunk sealing and opening: [`seal_chunk`] and [`open_chunk`]
//! of one full 1 MiB chunk ([`CHUNK_SIZE`]), on one core.
//!
//! Every byte the store keeps goes through these two functions, so their throughput bounds how
//! fast an object can be written or read. What one iteration measures is the whole per-chunk
//! cost the store pays: building the chunk's identity (associated data), a fresh random DEK,
//! AES-256-GCM over 1 MiB, sealing the DEK under the KEK, and allocating the output (for
//! `open_chunk`, also opening the DEK and wiping the plaintext when it is dropped).
//!
//! The goal (from the issue): at least 80 % of `openssl speed -evp aes-256-gcm` on 16 KiB blocks
//! on the same machine, i.e. the envelope around AES-256-GCM costs little next to the cipher
//! itself. `bench/aead.sh` runs both and prints the ratio.
//!
//! ```text
//! cargo bench -p keyhold-cmek --bench envelope
//! KEYHOLD_BENCH_SECONDS=0.2 cargo bench -p keyhold-cmek --bench envelope   # smoke run
//! ```
//!
//! `KEYHOLD_BENCH_SECONDS` sets the measurement time per benchmark (default 3 s, after 1 s of
//! warm-up). Below 1 s it is a smoke run: 0.1 s of warm-up and 10 samples. Sampling is flat
//! (the same iteration count in every sample) so that the time asked for is the time taken,
//! even on a slow or busy machine: one iteration is about a millisecond.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use keyhold_cmek::envelope::{CHUNK_SIZE, ChunkId, Kek, open_chunk, seal_chunk};

/// A chunk in the middle of a large object: full size, not the last one.
const ID: ChunkId<'static> = ChunkId {
    resource: "projects/bench/locations/global/instances/bench",
    object: "objects/large.bin",
    generation: 1,
    index: 3,
    last: false,
};

fn envelope(c: &mut Criterion) {
    let kek = Kek::generate().expect("random KEK");
    // Not all zeros, not that it matters to AES-GCM.
    let data: Vec<u8> = (0..CHUNK_SIZE).map(|i| (i % 251) as u8).collect();
    let sealed = seal_chunk(&kek, &ID, &data).expect("seal");
    assert_eq!(open_chunk(&kek, &ID, &sealed).expect("open").expose(), &data[..]);

    let mut group = c.benchmark_group("envelope");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(CHUNK_SIZE as u64));
    group.bench_function("seal_1MiB", |b| {
        b.iter(|| seal_chunk(black_box(&kek), black_box(&ID), black_box(&data)).expect("seal"))
    });
    group.bench_function("open_1MiB", |b| {
        b.iter(|| open_chunk(black_box(&kek), black_box(&ID), black_box(&sealed)).expect("open"))
    });
    group.finish();
}

/// Measurement time from `KEYHOLD_BENCH_SECONDS` (default 3 s); under 1 s, a smoke run.
fn config() -> Criterion {
    let seconds = match std::env::var("KEYHOLD_BENCH_SECONDS") {
        Ok(s) => match s.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => v,
            _ => panic!("KEYHOLD_BENCH_SECONDS must be a positive number of seconds, got {s:?}"),
        },
        Err(_) => 3.0,
    };
    let config = Criterion::default().measurement_time(Duration::from_secs_f64(seconds));
    if seconds < 1.0 {
        config.warm_up_time(Duration::from_millis(100)).sample_size(10)
    } else {
        config.warm_up_time(Duration::from_secs(1))
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = envelope
}
criterion_main!(benches);
