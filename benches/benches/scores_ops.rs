#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! Base scores on S^2 and SO(3) at 65,536 points (batched tch path against the per-point f64 reference
//! parallelised with rayon), and the S^2 heat-kernel smoother with 10,000 data points and 10,000 queries
//! (direct form against spectral form).
//!
//! Run with `cargo xtask bench -- scores`.

use benches::to_tensor;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use geom::distributions::{random_vmf_mixture, ManifoldDistribution};
use geom::{So3, Sphere, UniformSampler};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use scores::base::so3::So3Base;
use scores::base::sphere::SphereBase;
use scores::smoother::spectral::{SpectralConfig, SphereSpectralSmoother};
use scores::smoother::sphere::SphereSmoother;
use scores::smoother::SmootherDensity;
use scores::BaseScore;
use std::hint::black_box;
use tch::{Device, Kind, Tensor};

const N: usize = 65_536;

/// Noised points x = alpha m + sigma eps around uniform m, with sigma log-uniform in [1e-3, 1e2].
fn noised<M: UniformSampler>(m: &M, n: usize, seed: u64) -> (Vec<M::Point>, Vec<f64>, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut xs, mut alphas, mut sigmas) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let p = m.to_flat(&m.sample_uniform(&mut rng));
        let alpha: f64 = 1.0 - rng.random::<f64>();
        let sigma = 10f64.powf(-3.0 + 5.0 * rng.random::<f64>());
        let x: Vec<f64> = p
            .iter()
            .map(|c| {
                let eps: f64 = StandardNormal.sample(&mut rng);
                alpha * c + sigma * eps
            })
            .collect();
        xs.push(m.from_flat(&x).expect("same shape"));
        alphas.push(alpha);
        sigmas.push(sigma);
    }
    (xs, alphas, sigmas)
}

fn bench_base<M, B>(c: &mut Criterion, name: &str, m: &M, base: &B)
where
    M: UniformSampler,
    B: BaseScore<Point = M::Point>,
{
    let (xs, alphas, sigmas) = noised(m, N, 5);
    let x = to_tensor(m, &xs, Kind::Double, Device::Cpu);
    let (a, s) = (Tensor::from_slice(&alphas), Tensor::from_slice(&sigmas));
    let mut group = c.benchmark_group(format!("base_score/{name}"));
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("per_point", "rayon"), |b| {
        b.iter(|| {
            let out: Vec<M::Point> = xs
                .par_iter()
                .zip(alphas.par_iter().zip(sigmas.par_iter()))
                .map(|(x, (a, s))| base.base_score(x, *a, *s))
                .collect();
            black_box(out)
        })
    });
    for kind in [Kind::Double, Kind::Float] {
        let (xk, ak, sk) = (x.to_kind(kind), a.to_kind(kind), s.to_kind(kind));
        group.bench_function(BenchmarkId::new("batched", format!("tch-{kind:?}")), |b| {
            b.iter(|| black_box(base.base_score_t(&xk, &ak, &sk)))
        });
    }
    group.finish();
}

fn bench_smoother(c: &mut Criterion) {
    let s2 = Sphere::new(3).expect("d = 3 is valid");
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let law = random_vmf_mixture(3, 8, 30.0, &mut rng).expect("valid mixture");
    let sample = |n: usize, rng: &mut ChaCha8Rng| to_tensor(&s2, &law.sample_n(n, rng), Kind::Double, Device::Cpu);
    let (data, queries) = (sample(10_000, &mut rng), sample(10_000, &mut rng));
    let t = 0.01;
    let direct = SphereSmoother::new(&data).expect("valid data");
    let spectral = SphereSpectralSmoother::new(&data, SpectralConfig::new(60)).expect("valid data");
    let mut group = c.benchmark_group("smoother/sphere2_10k_data");
    group.throughput(Throughput::Elements(10_000));
    group.sample_size(10);
    group.bench_function("direct/log_density", |b| b.iter(|| black_box(direct.log_density_t(&queries, t))));
    group.bench_function("direct/score", |b| b.iter(|| black_box(direct.score_at(&queries, t))));
    group.bench_function("spectral_L60/log_density", |b| b.iter(|| black_box(spectral.log_density_t(&queries, t))));
    group.bench_function("spectral_L60/score", |b| b.iter(|| black_box(spectral.score_at(&queries, t))));
    group.finish();
}

fn scores_ops(c: &mut Criterion) {
    tch::set_num_threads(rayon::current_num_threads() as i32);
    bench_base(c, "sphere2", &Sphere::new(3).expect("d = 3 is valid"), &SphereBase::new(3).expect("d = 3"));
    bench_base(c, "so3", &So3, &So3Base::new());
    bench_smoother(c);
}

criterion_group!(benches, scores_ops);
criterion_main!(benches);
