#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! The closed-form spectral score estimators of operator-informed score matching (`scores::oism`): fit on
//! 10,000 data points and query at 65,536 points.
//!
//! - Hermite (Euclidean OU / VP), D = 2, degree 8, projection (MATH.md 6) and Mehler expansion; queries at
//!   one shared noise level and at a distinct VP noise level per row (as in training, where the projection
//!   solves one 8 x 8 system per row and coordinate), and at a training batch of 256 rows in f32
//!   (evaluated serially: below `scores::base::so3::PARALLEL_MIN_ROWS`).
//! - S^2 spectral score (heat time t = 0.1, degree 40) with and without shrinkage.
//!
//! Run with `cargo xtask bench -- oism` (or `cargo bench -p benches --bench oism_ops`).

use benches::to_tensor;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use geom::distributions::{random_vmf_mixture, ManifoldDistribution};
use geom::Sphere;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use scores::oism::hermite::{HermiteConfig, HermiteMethod, HermiteScore};
use scores::oism::sphere::SphereSpectralScore;
use scores::oism::sphere_base::SphereSpectralBase;
use scores::smoother::spectral::SpectralConfig;
use scores::smoother::SmootherDensity;
use scores::BaseScore;
use std::hint::black_box;
use tch::{Device, Kind, Tensor};

const N_DATA: usize = 10_000;
const N_QUERY: usize = 65_536;
const DIM: usize = 2;

/// `n` rows of a two-component Gaussian mixture in R^2 (centres +-(0.8, -0.4), std 0.5).
fn mixture(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut v = Vec::with_capacity(n * DIM);
    for _ in 0..n {
        let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
        for c in [0.8, -0.4] {
            let e: f64 = StandardNormal.sample(rng);
            v.push(sign * c + 0.5 * e);
        }
    }
    v
}

fn bench_hermite(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let data = Tensor::from_slice(&mixture(N_DATA, &mut rng)).view([N_DATA as i64, DIM as i64]);
    // Queries x = alpha x_0 + sigma eps with a VP noise level per row (OU time log-uniform in [1e-2, 2]).
    let x0 = mixture(N_QUERY, &mut rng);
    let (mut x, mut alpha, mut sigma) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..N_QUERY {
        let t = 10f64.powf(-2.0 + 2.3 * rng.random::<f64>());
        let (a, s) = ((-t).exp(), (-(-2.0 * t).exp_m1()).sqrt());
        for j in 0..DIM {
            let e: f64 = StandardNormal.sample(&mut rng);
            x.push(a * x0[i * DIM + j] + s * e);
        }
        alpha.push(a);
        sigma.push(s);
    }
    let x = Tensor::from_slice(&x).view([N_QUERY as i64, DIM as i64]);
    let (alpha, sigma) = (Tensor::from_slice(&alpha), Tensor::from_slice(&sigma));
    let (alpha_shared, sigma_shared) = (alpha.ones_like() * 0.6, sigma.ones_like() * 0.8);
    let methods = [("projection", HermiteMethod::Projection), ("expansion", HermiteMethod::Expansion)];

    let mut group = c.benchmark_group("oism/hermite_fit_10k_2d");
    group.throughput(Throughput::Elements(N_DATA as u64));
    group.sample_size(10);
    for (name, method) in methods {
        let config = HermiteConfig { method, shrinkage: Some(0.1), ..HermiteConfig::new(8) };
        group.bench_function(BenchmarkId::new(name, "K8"), |b| {
            b.iter(|| black_box(HermiteScore::fit_config(&data, config).expect("valid data")))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("oism/hermite_query_65k_2d");
    group.throughput(Throughput::Elements(N_QUERY as u64));
    group.sample_size(10);
    for (name, method) in methods {
        let config = HermiteConfig { method, shrinkage: Some(0.1), ..HermiteConfig::new(8) };
        let est = HermiteScore::fit_config(&data, config).expect("valid data");
        group.bench_function(BenchmarkId::new(name, "per_row_alpha"), |b| {
            b.iter(|| black_box(est.base_score_t(&x, &alpha, &sigma)))
        });
        group.bench_function(BenchmarkId::new(name, "shared_alpha"), |b| {
            b.iter(|| black_box(est.base_score_t(&x, &alpha_shared, &sigma_shared)))
        });
        let xf = x.to_kind(Kind::Float);
        let (af, sf) = (alpha.to_kind(Kind::Float), sigma.to_kind(Kind::Float));
        group.bench_function(BenchmarkId::new(name, "per_row_alpha_f32"), |b| {
            b.iter(|| black_box(est.base_score_t(&xf, &af, &sf)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("oism/hermite_batch_256_2d");
    group.throughput(Throughput::Elements(256));
    let (xb, ab, sb) = (x.narrow(0, 0, 256), alpha.narrow(0, 0, 256), sigma.narrow(0, 0, 256));
    let (xb, ab, sb) = (xb.to_kind(Kind::Float), ab.to_kind(Kind::Float), sb.to_kind(Kind::Float));
    for (name, method) in methods {
        let config = HermiteConfig { method, shrinkage: Some(0.1), ..HermiteConfig::new(8) };
        let est = HermiteScore::fit_config(&data, config).expect("valid data");
        group.bench_function(BenchmarkId::new(name, "per_row_alpha_f32"), |b| {
            b.iter(|| black_box(est.base_score_t(&xb, &ab, &sb)))
        });
    }
    group.finish();
}

fn bench_sphere(c: &mut Criterion) {
    let s2 = Sphere::new(3).expect("d = 3 is valid");
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    let law = random_vmf_mixture(3, 8, 30.0, &mut rng).expect("valid mixture");
    let data = to_tensor(&s2, &law.sample_n(N_DATA, &mut rng), Kind::Double, Device::Cpu);
    let queries = to_tensor(&s2, &law.sample_n(N_QUERY, &mut rng), Kind::Double, Device::Cpu);
    let t = 0.1;
    let mut group = c.benchmark_group("oism/sphere2_spectral");
    group.sample_size(10);
    group.throughput(Throughput::Elements(N_DATA as u64));
    group.bench_function("fit_10k/L40", |b| {
        b.iter(|| black_box(SphereSpectralScore::fit(&data, 40, Some(0.1)).expect("valid data")))
    });
    group.throughput(Throughput::Elements(N_QUERY as u64));
    for (name, w) in [("no_shrinkage", None), ("shrinkage_0.1", Some(0.1))] {
        let est = SphereSpectralScore::fit(&data, 40, w).expect("valid data");
        group.bench_function(BenchmarkId::new("score_65k_L40", name), |b| {
            b.iter(|| black_box(est.score_at(&queries, t).expect("t suits L = 40")))
        });
    }
    group.finish();

    // The ambient-noise base of `oism-earth` (exact Funk-Hecke score), on noised queries: one training
    // batch of 512 rows (serial, as in training) and 65,536 rows (rayon).
    let est = SphereSpectralScore::fit_config(&data, SpectralConfig { degree: 40, truncation_tol: 1e-6 }, Some(0.01))
        .expect("valid data");
    let base = SphereSpectralBase::new(&est, est.min_time()).expect("tau = min_time is valid");
    let mut group = c.benchmark_group("oism/sphere2_ambient_base_L40");
    group.sample_size(10);
    for n in [512i64, N_QUERY as i64] {
        let x = &queries.narrow(0, 0, n) * 0.8 + Tensor::randn([n, 3], (Kind::Double, Device::Cpu)) * 0.3;
        let alpha = Tensor::full([n], 0.8, (Kind::Double, Device::Cpu));
        let sigma = Tensor::full([n], 0.3, (Kind::Double, Device::Cpu));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("base_score_t", n), |b| {
            b.iter(|| black_box(base.base_score_t(&x, &alpha, &sigma)))
        });
    }
    group.finish();
}

fn oism_ops(c: &mut Criterion) {
    tch::set_num_threads(rayon::current_num_threads() as i32);
    bench_hermite(c);
    bench_sphere(c);
}

criterion_group!(benches, oism_ops);
criterion_main!(benches);
