#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! The `d x n` decoder Jacobian of an M-flow: `n` forward-mode Jacobian-vector products in one pass
//! ([`ManifoldFlow::decoder_jacobian`]) against one autograd backward pass per output coordinate
//! ([`ManifoldFlow::decoder_jacobian_autograd`], the original code's approach), and the full manifold
//! log-density built on the former. Ratios, not absolute times, are the figure.
//!
//! `cargo bench -p mflow --bench jacobian`; one libtorch thread.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mflow::{ManifoldFlow, ModelConfig, ModelKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use tch::Device;

fn jacobian(c: &mut Criterion) {
    tch::set_num_threads(1);
    let mut group = c.benchmark_group("decoder_jacobian");
    group.sample_size(20);
    for (d, n) in [(2, 1), (3, 2), (16, 2)] {
        let mut config = ModelConfig::new(ModelKind::MFlow, d, n);
        config.outer.layers = 4;
        config.outer.hidden = 32;
        let model = ManifoldFlow::new(&config, 0, Device::Cpu).expect("valid config");
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let v = mflow::nets::uniform(&mut rng, &[256, n], 2.0).to_kind(model.tensor_kind());
        let id = format!("d{d}_n{n}_b256");
        group.bench_with_input(BenchmarkId::new("forward_mode_jvp", &id), &v, |b, v| {
            b.iter(|| black_box(tch::no_grad(|| model.decoder_jacobian(v))))
        });
        group.bench_with_input(BenchmarkId::new("autograd_per_element", &id), &v, |b, v| {
            b.iter(|| black_box(model.decoder_jacobian_autograd(v)))
        });
    }
    group.finish();
}

criterion_group!(benches, jacobian);
criterion_main!(benches);
