//! Residual MLPs: the conditioners of the spline couplings and the encoder of the M_e-flow.
//!
//! Weights are drawn from a [`ChaCha8Rng`] (not from libtorch's global generator), so the same seed gives
//! the same model whatever else runs in the process.

use crate::dual::Dual;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{nn, Kind, Tensor};

/// A tensor of shape `shape` (f64, CPU) with entries uniform on `[-bound, bound]`.
pub fn uniform(rng: &mut ChaCha8Rng, shape: &[i64], bound: f64) -> Tensor {
    let n: i64 = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..=1.0) * bound).collect();
    Tensor::from_slice(&v).reshape(shape)
}

/// A tensor of shape `shape` (f64, CPU) with standard normal entries.
pub fn normal(rng: &mut ChaCha8Rng, shape: &[i64]) -> Tensor {
    let n: i64 = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_slice(&v).reshape(shape)
}

/// A dense layer `x W^T + b` whose weights live in a var store.
#[derive(Debug)]
struct Dense {
    w: Tensor,
    b: Tensor,
}

impl Dense {
    /// PyTorch's default initialisation (uniform with bound `1/sqrt(fan_in)`) scaled by `scale`.
    fn new(p: &nn::Path, name: &str, inp: i64, out: i64, scale: f64, rng: &mut ChaCha8Rng) -> Dense {
        let bound = scale / (inp.max(1) as f64).sqrt();
        let p = p / name;
        let w = p.var_copy("weight", &uniform(rng, &[out, inp], bound));
        let b = p.var_copy("bias", &uniform(rng, &[out], bound));
        Dense { w, b }
    }

    fn dual(&self, x: &Dual) -> Dual {
        x.linear(&self.w, Some(&self.b))
    }
}

/// `x -> W_out h_L`, with `h_0 = W_in x` and residual blocks `h_{l+1} = h_l + W_2 relu(W_1 relu(h_l))`.
///
/// Shapes: `[B, in]` to `[B, out]`. The second linear map of each block starts near zero (bound 1e-3),
/// so every block starts near the identity; the output layer is scaled by `out_scale` (0 makes the
/// network output exactly zero at initialisation, which makes a spline coupling the identity).
#[derive(Debug)]
pub struct ResidualNet {
    input: Dense,
    blocks: Vec<(Dense, Dense)>,
    output: Dense,
}

impl ResidualNet {
    /// A new network with its variables under `p`, drawn from `rng`.
    pub fn new(
        p: &nn::Path,
        inp: i64,
        hidden: i64,
        out: i64,
        blocks: usize,
        out_scale: f64,
        rng: &mut ChaCha8Rng,
    ) -> ResidualNet {
        let input = Dense::new(p, "input", inp, hidden, 1.0, rng);
        let blocks = (0..blocks)
            .map(|i| {
                let a = Dense::new(p, &format!("block{i}_0"), hidden, hidden, 1.0, rng);
                let b = Dense::new(p, &format!("block{i}_1"), hidden, hidden, 1e-3 * (hidden as f64).sqrt(), rng);
                (a, b)
            })
            .collect();
        let output = Dense::new(p, "output", hidden, out, out_scale, rng);
        ResidualNet { input, blocks, output }
    }

    /// The network on a [`Dual`] (value and tangents).
    pub fn forward_dual(&self, x: &Dual) -> Dual {
        let mut h = self.input.dual(x);
        for (a, b) in &self.blocks {
            let r = b.dual(&a.dual(&h.relu()).relu());
            h = h.add(&r);
        }
        self.output.dual(&h)
    }

    /// The network on a plain tensor `[B, in]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_dual(&Dual::constant(x.shallow_clone())).v
    }
}

/// A standard-normal tensor `[n, dim]` of the given kind drawn from `rng` (CPU).
pub fn standard_normal(rng: &mut ChaCha8Rng, n: i64, dim: i64, kind: Kind) -> Tensor {
    normal(rng, &[n, dim]).to_kind(kind)
}
