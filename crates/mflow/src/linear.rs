//! Linear layers: LU-parametrised invertible maps, fixed permutations and ActNorm.

use crate::transform::Transform;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::{nn, Tensor};

fn batch_logdet(x: &Tensor, per_row: &Tensor) -> Tensor {
    per_row.expand([x.size()[0]], false)
}

/// `x = W z + b` with `W = L U`: `L` unit lower triangular, `U` upper triangular with diagonal
/// `softplus(s) + 1e-3 > 0`, so `W` is invertible by construction and `log|det W| = sum log diag U`.
///
/// Starts at the identity (`L = U = I`, `b = 0`). The inverse is two triangular solves.
#[derive(Debug)]
pub struct LuLinear {
    dim: i64,
    lower: Tensor,
    upper: Tensor,
    diag_raw: Tensor,
    bias: Tensor,
}

/// Floor of the diagonal of `U`.
const DIAG_EPS: f64 = 1e-3;

impl LuLinear {
    /// The identity map on `R^dim`, with variables under `p`.
    pub fn new(p: &nn::Path, dim: i64) -> LuLinear {
        let raw = ((1.0 - DIAG_EPS).exp() - 1.0).ln();
        LuLinear {
            dim,
            lower: p.zeros("lower", &[dim, dim]),
            upper: p.zeros("upper", &[dim, dim]),
            diag_raw: p.var("diag", &[dim], nn::Init::Const(raw)),
            bias: p.zeros("bias", &[dim]),
        }
    }

    fn diag(&self) -> Tensor {
        self.diag_raw.softplus() + DIAG_EPS
    }

    /// `(L, U)`, `[dim, dim]` each.
    fn factors(&self) -> (Tensor, Tensor) {
        let eye = Tensor::eye(self.dim, (self.lower.kind(), self.lower.device()));
        let l = self.lower.tril(-1) + &eye;
        let u = self.upper.triu(1) + self.diag().diag_embed(0, -2, -1);
        (l, u)
    }

    /// The matrix `W = L U`, `[dim, dim]`.
    pub fn weight(&self) -> Tensor {
        let (l, u) = self.factors();
        l.matmul(&u)
    }

    fn logdet(&self, x: &Tensor) -> Tensor {
        batch_logdet(x, &self.diag().log().sum(self.diag_raw.kind()))
    }
}

impl Transform for LuLinear {
    fn dim(&self) -> i64 {
        self.dim
    }

    fn forward(&self, z: &Tensor) -> (Tensor, Tensor) {
        (z.matmul(&self.weight().tr()) + &self.bias, self.logdet(z))
    }

    fn inverse(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (l, u) = self.factors();
        // Solve L U z^T = (x - b)^T column by column of the batch.
        let rhs = (x - &self.bias).tr();
        let y = l.linalg_solve_triangular(&rhs, false, true, true);
        let z = u.linalg_solve_triangular(&y, true, true, false).tr();
        (z, -self.logdet(x))
    }

    fn forward_jvp(&self, z: &Tensor, t: &Tensor) -> (Tensor, Tensor, Tensor) {
        let w = self.weight();
        (z.matmul(&w.tr()) + &self.bias, self.logdet(z), t.matmul(&w.tr()))
    }
}

/// A fixed permutation of the coordinates: `x_i = z_{perm_i}`; `log|det| = 0`.
///
/// The indices are kept as a (non-trainable) floating-point tensor, so that a permutation registered in a
/// var store ([`Permutation::stored`]) travels with the weights in checkpoints.
#[derive(Debug)]
pub struct Permutation {
    perm: Tensor,
}

fn check_perm(perm: &[i64]) {
    let mut seen = vec![false; perm.len()];
    for &p in perm {
        assert!(p >= 0 && (p as usize) < perm.len() && !seen[p as usize], "not a permutation: {perm:?}");
        seen[p as usize] = true;
    }
}

impl Permutation {
    /// The permutation `perm` (a rearrangement of `0..perm.len()`), not registered anywhere.
    ///
    /// # Panics
    /// If `perm` is not a permutation.
    pub fn new(perm: &[i64]) -> Permutation {
        check_perm(perm);
        Permutation { perm: Tensor::from_slice(perm).to_kind(tch::Kind::Double) }
    }

    /// The permutation `perm` as a non-trainable variable `perm` under `p` (saved with the weights).
    ///
    /// # Panics
    /// If `perm` is not a permutation.
    pub fn stored(p: &nn::Path, perm: &[i64]) -> Permutation {
        check_perm(perm);
        let mut v = p.zeros_no_train("perm", &[perm.len() as i64]);
        tch::no_grad(|| v.copy_(&Tensor::from_slice(perm)));
        Permutation { perm: v }
    }

    /// A uniformly random permutation of `0..dim`, stored under `p`.
    pub fn random(p: &nn::Path, dim: i64, rng: &mut ChaCha8Rng) -> Permutation {
        let mut perm: Vec<i64> = (0..dim).collect();
        perm.shuffle(rng);
        Permutation::stored(p, &perm)
    }

    /// The reversal `dim-1, .., 0`.
    pub fn reverse(dim: i64) -> Permutation {
        Permutation::new(&(0..dim).rev().collect::<Vec<_>>())
    }

    fn index(&self) -> Tensor {
        self.perm.to_kind(tch::Kind::Int64)
    }
}

fn zeros_per_row(x: &Tensor) -> Tensor {
    Tensor::zeros([x.size()[0]], (x.kind(), x.device()))
}

impl Transform for Permutation {
    fn dim(&self) -> i64 {
        self.perm.size()[0]
    }

    fn forward(&self, z: &Tensor) -> (Tensor, Tensor) {
        (z.index_select(-1, &self.index()), zeros_per_row(z))
    }

    fn inverse(&self, x: &Tensor) -> (Tensor, Tensor) {
        let inv = self.index().argsort(0, false);
        (x.index_select(-1, &inv), zeros_per_row(x))
    }

    fn forward_jvp(&self, z: &Tensor, t: &Tensor) -> (Tensor, Tensor, Tensor) {
        let idx = self.index();
        (z.index_select(-1, &idx), zeros_per_row(z), t.index_select(-1, &idx))
    }
}

/// `x = exp(s) * z + b` per coordinate, `log|det| = sum s`; starts at the identity.
///
/// [`ActNorm::initialize`] sets `s` and `b` so that a batch comes out with zero mean and unit variance
/// per coordinate (Kingma and Dhariwal 2018, in the encoding direction).
#[derive(Debug)]
pub struct ActNorm {
    log_scale: Tensor,
    bias: Tensor,
}

impl ActNorm {
    /// The identity on `R^dim`, with variables under `p`.
    pub fn new(p: &nn::Path, dim: i64) -> ActNorm {
        ActNorm { log_scale: p.zeros("log_scale", &[dim]), bias: p.zeros("bias", &[dim]) }
    }

    /// Data-dependent initialisation from a batch `x` (`[B, dim]`, B >= 2) in the *data* space of this
    /// layer: afterwards `inverse(x)` has zero mean and unit standard deviation per coordinate.
    pub fn initialize(&mut self, x: &Tensor) {
        tch::no_grad(|| {
            let mean = x.mean_dim(0, false, x.kind());
            let std = x.std_dim(0, true, false).clamp_min(1e-6);
            self.log_scale.copy_(&std.log());
            self.bias.copy_(&mean);
        });
    }
}

impl Transform for ActNorm {
    fn dim(&self) -> i64 {
        self.log_scale.size()[0]
    }

    fn forward(&self, z: &Tensor) -> (Tensor, Tensor) {
        let ld = batch_logdet(z, &self.log_scale.sum(self.log_scale.kind()));
        (z * self.log_scale.exp() + &self.bias, ld)
    }

    fn inverse(&self, x: &Tensor) -> (Tensor, Tensor) {
        let ld = batch_logdet(x, &self.log_scale.sum(self.log_scale.kind()));
        ((x - &self.bias) * (-&self.log_scale).exp(), -ld)
    }

    fn forward_jvp(&self, z: &Tensor, t: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (x, ld) = self.forward(z);
        (x, ld, t * self.log_scale.exp())
    }
}
