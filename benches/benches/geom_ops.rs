#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! project / exp / log / dist on S^2 and SO(3) at 65,536 points: the batched tch path (Double and Float)
//! against the per-point nalgebra path parallelised with rayon.
//!
//! Run with `cargo xtask bench -- geom`; throughput is reported in points per second.

use benches::{inputs, Inputs};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use geom::{Manifold, So3, Sphere, TensorManifold, UniformSampler};
use rayon::prelude::*;
use std::hint::black_box;
use tch::{Kind, Tensor};

const N: usize = 65_536;

fn bench_manifold<M>(c: &mut Criterion, name: &str, m: &M)
where
    M: Manifold + UniformSampler + TensorManifold,
{
    let inp: Inputs<M::Point> = inputs(m, N, 7);
    let mut group = c.benchmark_group(format!("geom/{name}"));
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(10);

    type PerPoint<M> = fn(&M, &<M as Manifold>::Point, &<M as Manifold>::Point) -> f64;
    let ops: [(&str, PerPoint<M>); 4] = [
        ("project", |m, a, _| m.to_flat(&m.project(a).expect("finite input"))[0]),
        ("exp", |m, a, v| m.to_flat(&m.exp(a, v))[0]),
        ("log", |m, a, b| m.to_flat(&m.log(a, b))[0]),
        ("dist", |m, a, b| m.dist(a, b)),
    ];
    for (op, f) in ops {
        let (first, second) = match op {
            "project" => (&inp.noisy, &inp.y),
            "exp" => (&inp.x, &inp.v),
            _ => (&inp.x, &inp.y),
        };
        group.bench_function(BenchmarkId::new(op, "nalgebra+rayon"), |b| {
            b.iter(|| {
                let s: f64 = first.par_iter().zip(second.par_iter()).map(|(a, q)| f(m, a, q)).sum();
                black_box(s)
            })
        });
        for kind in [Kind::Double, Kind::Float] {
            let (a, q) = match op {
                "project" => (inp.noisyt.to_kind(kind), inp.yt.to_kind(kind)),
                "exp" => (inp.xt.to_kind(kind), inp.vt.to_kind(kind)),
                _ => (inp.xt.to_kind(kind), inp.yt.to_kind(kind)),
            };
            group.bench_function(BenchmarkId::new(op, format!("tch-{kind:?}")), |b| {
                b.iter(|| {
                    let out: Tensor = match op {
                        "project" => m.project_t(&a),
                        "exp" => m.exp_t(&a, &q),
                        "log" => m.log_t(&a, &q),
                        _ => m.dist_t(&a, &q),
                    };
                    black_box(out)
                })
            });
        }
    }
    group.finish();
}

fn geom_ops(c: &mut Criterion) {
    tch::set_num_threads(rayon::current_num_threads() as i32);
    bench_manifold(c, "sphere2", &Sphere::new(3).expect("d = 3 is valid"));
    bench_manifold(c, "so3", &So3);
}

criterion_group!(benches, geom_ops);
criterion_main!(benches);
