//! A Monte Carlo base score for any manifold with a uniform sampler: the independent check of the exact
//! base scores, and a fallback for spaces without a closed form.
//!
//! N uniform draws m_1..m_N are made once at construction (seeded) and reused for every evaluation, so the
//! estimator is a deterministic function of (x, alpha, sigma): the noised base law is replaced by the
//! mixture (1/N) sum_i N(alpha m_i, sigma^2 I). Its posterior weights
//! w_i = softmax_i(alpha <x, m_i>/sigma^2 - alpha^2 |m_i|^2/(2 sigma^2)) are the self-normalised importance
//! weights of the uniform proposal (the logits are formed as for
//! [`DiscreteBase`](super::discrete::DiscreteBase), with the x-independent part shifted by its maximum), and
//!
//! - E[m | x] ~ sum_i w_i m_i, with delta-method standard error sqrt(sum_i w_i^2 (m_i - E)^2) per coordinate,
//! - log p_base(x) ~ ln((1/N) sum_i N(x; alpha m_i, sigma^2 I)), with standard error (of the log, by the
//!   delta method) sqrt((N sum_i w_i^2 - 1)/N),
//! - s_base = (alpha E - x)/sigma^2, which is exactly the gradient of the log-density estimate.
//!
//! The estimates are only trustworthy when the effective sample size 1/sum_i w_i^2 is large, i.e. when sigma
//! is not small compared with the spacing of the draws.

use super::sphere::{assert_batch_args, assert_scalars};
use crate::{BaseScore, Result, ScoreError};
use geom::{check, UniformSampler};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::f64::consts::PI;
use tch::Tensor;

/// Monte Carlo estimates at one point, with their standard errors.
#[derive(Debug, Clone, PartialEq)]
pub struct McEstimate<P> {
    /// The self-normalised estimate of E[m | x].
    pub posterior_mean: P,
    /// Standard error of each coordinate of `posterior_mean`, flat row-major (as `Manifold::to_flat`).
    pub posterior_mean_se: Vec<f64>,
    /// The estimate of log p_base(x) w.r.t. Lebesgue measure on the ambient space.
    pub log_density: f64,
    /// Standard error of `log_density`.
    pub log_density_se: f64,
    /// The effective sample size 1 / sum_i w_i^2, between 1 and N.
    pub ess: f64,
}

/// Self-normalised importance sampling over a fixed set of uniform draws on the manifold `M`.
///
/// ```
/// use geom::Sphere;
/// use nalgebra::DVector;
/// use scores::base::monte_carlo::MonteCarloBase;
///
/// let mc = MonteCarloBase::new(Sphere::new(3).unwrap(), 4000, 7).unwrap();
/// let est = mc.estimate(&DVector::from_vec(vec![0.0, 0.0, 1.0]), 1.0, 1.0);
/// // A_3(1) = coth(1) - 1 = 0.3130...
/// assert!((est.posterior_mean[2] - 0.3130).abs() < 5.0 * est.posterior_mean_se[2] + 1e-3);
/// ```
#[derive(Debug, Clone)]
pub struct MonteCarloBase<M: UniformSampler> {
    manifold: M,
    /// The draws, flat row-major: `n_samples` rows of `n_ambient` coordinates.
    draws: Vec<f64>,
    /// |m_i|^2, one per draw.
    sq_norms: Vec<f64>,
    n_samples: usize,
    n_ambient: usize,
}

impl<M: UniformSampler> MonteCarloBase<M> {
    /// `n_samples` uniform draws on `manifold` from a ChaCha8 generator seeded with `seed` (reproducible across
    /// platforms and rand versions); errors naming `n_samples` unless it is >= 2.
    pub fn new(manifold: M, n_samples: usize, seed: u64) -> Result<Self> {
        Self::from_rng(manifold, n_samples, &mut ChaCha8Rng::seed_from_u64(seed))
    }

    /// As [`MonteCarloBase::new`], drawing from a caller-supplied generator.
    pub fn from_rng<R: Rng + ?Sized>(manifold: M, n_samples: usize, rng: &mut R) -> Result<Self> {
        if n_samples < 2 {
            return Err(ScoreError::invalid("n_samples", n_samples, "at least 2 draws"));
        }
        let n_ambient = manifold.ambient_shape().iter().product::<i64>() as usize;
        let mut draws = Vec::with_capacity(n_samples * n_ambient);
        for _ in 0..n_samples {
            draws.extend(manifold.to_flat(&manifold.sample_uniform(rng)));
        }
        let sq_norms = draws.chunks(n_ambient).map(|m| m.iter().map(|v| v * v).sum()).collect();
        Ok(Self { manifold, draws, sq_norms, n_samples, n_ambient })
    }

    /// The manifold.
    pub fn manifold(&self) -> &M {
        &self.manifold
    }

    /// The number of draws N.
    pub fn n_samples(&self) -> usize {
        self.n_samples
    }

    /// The draws as a tensor `[N, ..ambient]` of Kind::Double on the CPU.
    pub fn draws_tensor(&self) -> Tensor {
        let mut shape = vec![self.n_samples as i64];
        shape.extend(self.manifold.ambient_shape());
        Tensor::from_slice(&self.draws).reshape(shape)
    }

    /// Every estimate at one point, with standard errors and the effective sample size.
    ///
    /// Panics naming the argument when `x` has the wrong number of coordinates or a non-finite one, or when
    /// `alpha` is negative or non-finite, or `sigma` is not a finite positive number.
    pub fn estimate(&self, x: &M::Point, alpha: f64, sigma: f64) -> McEstimate<M::Point> {
        let xf = self.flat_checked("MonteCarloBase::estimate", x, alpha, sigma);
        let w = self.weights(&xf, alpha, sigma);
        let mean = self.weighted_mean(&w);
        let mut var = vec![0.0; self.n_ambient];
        let mut sum_w2 = 0.0;
        for (m, wi) in self.draws.chunks(self.n_ambient).zip(&w) {
            sum_w2 += wi * wi;
            for j in 0..self.n_ambient {
                var[j] += wi * wi * (m[j] - mean[j]).powi(2);
            }
        }
        let n = self.n_samples as f64;
        McEstimate {
            posterior_mean: self.to_point(&mean),
            posterior_mean_se: var.iter().map(|v| v.sqrt()).collect(),
            log_density: self.log_density_flat(&xf, alpha, sigma),
            log_density_se: ((n * sum_w2 - 1.0).max(0.0) / n).sqrt(),
            ess: 1.0 / sum_w2,
        }
    }

    /// Flat coordinates of `x` after the argument checks.
    #[track_caller]
    fn flat_checked(&self, op: &str, x: &M::Point, alpha: f64, sigma: f64) -> Vec<f64> {
        let xf = self.manifold.to_flat(x);
        assert!(
            xf.len() == self.n_ambient,
            "{op}: argument `x` has {} coordinates, expected {}",
            xf.len(),
            self.n_ambient
        );
        check::assert_finite(op, "x", &xf);
        assert_scalars(op, alpha, sigma);
        xf
    }

    /// ln N(x; alpha m_i, sigma^2 I) - ln N for every draw, and their maximum.
    fn log_joint(&self, x: &[f64], alpha: f64, sigma: f64) -> (Vec<f64>, f64) {
        let norm = -0.5 * self.n_ambient as f64 * ((2.0 * PI).ln() + 2.0 * sigma.ln());
        let inv = 0.5 / (sigma * sigma);
        let log_joint: Vec<f64> = self
            .draws
            .chunks(self.n_ambient)
            .map(|m| norm - inv * x.iter().zip(m).map(|(xi, mi)| (xi - alpha * mi).powi(2)).sum::<f64>())
            .collect();
        let max = log_joint.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (log_joint, max)
    }

    /// ln((1/N) sum_i N(x; alpha m_i, sigma^2 I)).
    fn log_density_flat(&self, x: &[f64], alpha: f64, sigma: f64) -> f64 {
        let (log_joint, max) = self.log_joint(x, alpha, sigma);
        max + (log_joint.iter().map(|l| (l - max).exp()).sum::<f64>() / self.n_samples as f64).ln()
    }

    /// The normalised posterior weights, from alpha <x, m_i>/sigma^2 + b_i - max_j b_j with
    /// b_i = -alpha^2 |m_i|^2/(2 sigma^2).
    fn weights(&self, x: &[f64], alpha: f64, sigma: f64) -> Vec<f64> {
        let s2 = sigma * sigma;
        let c = alpha * alpha / (2.0 * s2);
        let min_sq = self.sq_norms.iter().copied().fold(f64::INFINITY, f64::min);
        let logits: Vec<f64> = self
            .draws
            .chunks(self.n_ambient)
            .zip(&self.sq_norms)
            .map(|(m, sq)| alpha * x.iter().zip(m).map(|(xi, mi)| xi * mi).sum::<f64>() / s2 - c * (sq - min_sq))
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = e.iter().sum();
        e.iter().map(|v| v / total).collect()
    }

    fn weighted_mean(&self, w: &[f64]) -> Vec<f64> {
        let mut mean = vec![0.0; self.n_ambient];
        for (m, wi) in self.draws.chunks(self.n_ambient).zip(w) {
            for j in 0..self.n_ambient {
                mean[j] += wi * m[j];
            }
        }
        mean
    }

    fn posterior_flat(&self, x: &[f64], alpha: f64, sigma: f64) -> Vec<f64> {
        self.weighted_mean(&self.weights(x, alpha, sigma))
    }

    fn to_point(&self, flat: &[f64]) -> M::Point {
        self.manifold.from_flat(flat).expect("a flat vector of the ambient length")
    }
}

impl<M: UniformSampler> BaseScore for MonteCarloBase<M> {
    type Point = M::Point;

    /// sum_i w_i m_i over the stored draws.
    ///
    /// Panics naming the argument when `x` has the wrong number of coordinates or a non-finite one, or when
    /// `alpha` is negative or non-finite, or `sigma` is not a finite positive number.
    fn posterior_mean(&self, x: &M::Point, alpha: f64, sigma: f64) -> M::Point {
        let xf = self.flat_checked("MonteCarloBase::posterior_mean", x, alpha, sigma);
        self.to_point(&self.posterior_flat(&xf, alpha, sigma))
    }

    /// (alpha E - x) / sigma^2 with the estimate E; panics as [`MonteCarloBase::posterior_mean`] does.
    fn base_score(&self, x: &M::Point, alpha: f64, sigma: f64) -> M::Point {
        let xf = self.flat_checked("MonteCarloBase::base_score", x, alpha, sigma);
        let mean = self.posterior_flat(&xf, alpha, sigma);
        let s2 = sigma * sigma;
        let score: Vec<f64> = mean.iter().zip(&xf).map(|(m, xi)| (alpha * m - xi) / s2).collect();
        self.to_point(&score)
    }

    /// ln((1/N) sum_i N(x; alpha m_i, sigma^2 I)); panics as [`MonteCarloBase::posterior_mean`] does.
    fn log_density(&self, x: &M::Point, alpha: f64, sigma: f64) -> f64 {
        let xf = self.flat_checked("MonteCarloBase::log_density", x, alpha, sigma);
        self.log_density_flat(&xf, alpha, sigma)
    }

    /// `x: [B, ..ambient]`, `alpha, sigma: [B]` (same float dtype and device) -> `[B, ..ambient]` in the
    /// dtype and device of `x`; differentiable. The stored draws are copied to a `[N, n]` tensor of that
    /// dtype and device on every call (logits `[B, N]` by one matrix product, then a softmax). Panics naming
    /// the argument on a shape mismatch; values are not checked.
    fn base_score_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        assert_batch_args("MonteCarloBase::base_score_t", x, &self.manifold.ambient_shape(), alpha, sigma);
        let shape = x.size();
        let b = shape[0];
        let xf = x.reshape([b, self.n_ambient as i64]);
        let draws = Tensor::from_slice(&self.draws)
            .reshape([self.n_samples as i64, self.n_ambient as i64])
            .to_kind(x.kind())
            .to_device(x.device());
        let sq = Tensor::from_slice(&self.sq_norms).to_kind(x.kind()).to_device(x.device());
        let a = alpha.unsqueeze(-1);
        let s2 = sigma.unsqueeze(-1).square();
        let min_sq = self.sq_norms.iter().copied().fold(f64::INFINITY, f64::min);
        let logits =
            xf.matmul(&draws.transpose(0, 1)) * (&a / &s2) - (sq.unsqueeze(0) - min_sq) * (a.square() / (&s2 * 2.0));
        let mean = logits.softmax(-1, x.kind()).matmul(&draws);
        ((mean * &a - xf) / s2).reshape(shape)
    }
}
