#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! The NDSM drift: the score of a fitted Gaussian mixture (full covariances) on 65,536 points in R^2 and
//! R^16, batched tch path (f64 and f32) against the per-point f64 reference parallelised with rayon.
//!
//! Run with `cargo xtask bench -- gmm`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use scores::gmm::GaussianMixture;
use std::hint::black_box;
use tch::{Device, Kind, Tensor};

const N: usize = 65_536;

/// A `k`-component mixture in R^`d` with random means (scale 3) and random SPD covariances.
fn mixture(d: usize, k: usize, rng: &mut ChaCha8Rng) -> GaussianMixture {
    let mut normal = |n: usize| DVector::from_fn(n, |_, _| StandardNormal.sample(rng));
    let means: Vec<DVector<f64>> = (0..k).map(|_| normal(d) * 3.0).collect();
    let covs: Vec<DMatrix<f64>> = (0..k)
        .map(|_| {
            let a = DMatrix::from_column_slice(d, d, normal(d * d).as_slice());
            &a * a.transpose() / d as f64 + DMatrix::identity(d, d) * 0.1
        })
        .collect();
    GaussianMixture::new(vec![1.0; k], means, covs).expect("valid mixture")
}

fn bench_drift(c: &mut Criterion, d: usize, k: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let gmm = mixture(d, k, &mut rng);
    let xs = gmm.sample(N, &mut rng);
    let flat: Vec<f64> = xs.iter().flat_map(|x| x.iter().cloned().collect::<Vec<_>>()).collect();
    let x = Tensor::from_slice(&flat).reshape([N as i64, d as i64]);
    let mut group = c.benchmark_group(format!("gmm_score/d{d}_k{k}_65536"));
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("per_point", "rayon"), |b| {
        b.iter(|| black_box(xs.par_iter().map(|x| gmm.score(x)).collect::<Vec<_>>()))
    });
    for kind in [Kind::Double, Kind::Float] {
        let xk = x.to_kind(kind).to_device(Device::Cpu);
        group.bench_function(BenchmarkId::new("batched", format!("tch-{kind:?}")), |b| {
            b.iter(|| black_box(gmm.score_t(&xk)))
        });
    }
    group.finish();
}

fn gmm_ops(c: &mut Criterion) {
    tch::set_num_threads(rayon::current_num_threads() as i32);
    // Raise glibc's mmap and trim thresholds once (as `train::ScoreMlp` does): without it every
    // megabyte-sized intermediate of the batched path is mapped afresh and page-faulted on each call.
    drop(black_box(vec![0u8; 31 << 20]));
    bench_drift(c, 2, 8);
    bench_drift(c, 16, 8);
}

criterion_group!(benches, gmm_ops);
criterion_main!(benches);
