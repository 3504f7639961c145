//! Shared helpers for the benches: seeded inputs in both faces (per-point nalgebra values and one batched
//! tensor holding the same numbers), timing and array export for the peer harness, and its MAD workloads
//! ([`mad`]).

use geom::{Manifold, UniformSampler};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// Seeded inputs for a binary operation on a manifold: points `x`, `y` and tangent vectors `v` at `x`,
/// per point and as `[n, ..ambient]` Double tensors on the CPU.
pub struct Inputs<P> {
    /// Base points.
    pub x: Vec<P>,
    /// Second points.
    pub y: Vec<P>,
    /// Tangent vectors at `x` (the tangent projection of `log(x, y)` scaled by 0.5).
    pub v: Vec<P>,
    /// `x` as a tensor.
    pub xt: Tensor,
    /// `y` as a tensor.
    pub yt: Tensor,
    /// `v` as a tensor.
    pub vt: Tensor,
    /// Ambient (unprojected) perturbations of `x`, for `project`.
    pub noisy: Vec<P>,
    /// `noisy` as a tensor.
    pub noisyt: Tensor,
}

/// Packs points into one `[n, ..ambient]` tensor of `kind` on `device`.
pub fn to_tensor<M: Manifold>(m: &M, pts: &[M::Point], kind: Kind, device: Device) -> Tensor {
    let flat: Vec<f64> = pts.iter().flat_map(|p| m.to_flat(p)).collect();
    let mut shape = vec![pts.len() as i64];
    shape.extend(m.ambient_shape());
    Tensor::from_slice(&flat).reshape(shape).to_kind(kind).to_device(device)
}

/// `n` seeded inputs on `m`.
pub fn inputs<M: UniformSampler>(m: &M, n: usize, seed: u64) -> Inputs<M::Point> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<M::Point> = (0..n).map(|_| m.sample_uniform(&mut rng)).collect();
    let y: Vec<M::Point> = (0..n).map(|_| m.sample_uniform(&mut rng)).collect();
    let v: Vec<M::Point> = x
        .iter()
        .zip(&y)
        .map(|(a, b)| {
            let l = m.to_flat(&m.log(a, b));
            m.from_flat(&l.iter().map(|c| 0.5 * c).collect::<Vec<_>>()).expect("same shape")
        })
        .collect();
    let noisy: Vec<M::Point> = x
        .iter()
        .zip(&v)
        .map(|(a, b)| {
            let f: Vec<f64> = m.to_flat(a).iter().zip(m.to_flat(b)).map(|(p, q)| 1.1 * p + 0.1 * q).collect();
            m.from_flat(&f).expect("same shape")
        })
        .collect();
    let dev = Device::Cpu;
    Inputs {
        xt: to_tensor(m, &x, Kind::Double, dev),
        yt: to_tensor(m, &y, Kind::Double, dev),
        vt: to_tensor(m, &v, Kind::Double, dev),
        noisyt: to_tensor(m, &noisy, Kind::Double, dev),
        x,
        y,
        v,
        noisy,
    }
}

pub mod mad;

/// Runs `f` until `min_seconds` have passed (at least twice, after a warm-up call); returns seconds per call.
pub fn time_per_call(mut f: impl FnMut(), min_seconds: f64) -> f64 {
    f();
    let (start, mut n) = (std::time::Instant::now(), 0u32);
    loop {
        f();
        n += 1;
        let el = start.elapsed().as_secs_f64();
        if el >= min_seconds && n >= 2 {
            return el / n as f64;
        }
    }
}

/// Writes `t` (any float dtype, CPU) as little-endian f64 to `dir/name.f64` and returns its manifest entry
/// `{"file": .., "shape": [..]}` (f32 values convert to f64 exactly, so the peer reads back the same bits).
/// Panics when the file cannot be written (a bench binary has nothing better to do).
pub fn write_array(dir: &std::path::Path, name: &str, t: &Tensor) -> String {
    let t = t.detach().to_kind(Kind::Double).contiguous();
    let values = Vec::<f64>::try_from(t.flatten(0, -1)).expect("a Double tensor converts to Vec<f64>");
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let file = format!("{name}.f64");
    std::fs::write(dir.join(&file), bytes)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", dir.join(&file).display()));
    format!("{{\"file\": \"{file}\", \"shape\": {:?}}}", t.size())
}
