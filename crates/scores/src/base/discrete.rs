//! The base law on a finite set {m_1..m_K} of R^n with weights p_k (MATH.md section 2, "Discrete set").
//!
//! The noised base law is the Gaussian mixture sum_k p_k N(alpha m_k, sigma^2 I); the posterior weights are
//! w = softmax(logits) with
//!
//!   logits_k = alpha <x, m_k>/sigma^2 - alpha^2 |m_k|^2/(2 sigma^2) + ln p_k,
//!
//! E[m | x] = sum_k w_k m_k and s_base = (alpha E[m | x] - x)/sigma^2.
//! The x-independent part b_k = ln p_k - alpha^2 |m_k|^2/(2 sigma^2) is shifted by its maximum before it is
//! added (softmax does not see the shift), so that for points of equal norm and weight it is exactly 0 and
//! the logits carry only the rounding of alpha <x, m_k>/sigma^2; the batched code forms that term with the
//! matrix product [B, n] x [n, K].
//! Where every |u_k| = alpha |<x, m_k>|/sigma^2 is at most 1 (x near the origin or sigma large), the posterior
//! mean is formed as (sum_k q_k m_k + sum_k q_k expm1(u_k) m_k) / (1 + sum_k q_k expm1(u_k)) with the prior
//! weights q = softmax(b): E[m | x] - sum_k q_k m_k is then accurate relative to its own size (a plain softmax holds
//! the weights only to an ulp of 1/K, which is all of E[m | x] for a symmetric set at small x).
//! The log-density is the log-sum-exp of the log-joint ln p_k + ln N(x; alpha m_k, sigma^2 I), formed with
//! |x - alpha m_k|^2 so that it stays accurate next to a point at small sigma.
//!
//! In f32, a logit carries an absolute rounding error of about 1e-7 alpha |x| |m_k| / sigma^2; where that is
//! not small the posterior weights between two nearly tied points are only as accurate as that.

use super::sphere::{assert_args, assert_batch_args};
use crate::{BaseScore, Result};
use geom::DiscreteSet;
use nalgebra::DVector;
use std::f64::consts::PI;
use tch::Tensor;

/// The exact base score of a finite set with weights (those of the wrapped [`DiscreteSet`], uniform unless
/// it was built with weights).
///
/// ```
/// use geom::DiscreteSet;
/// use nalgebra::DVector;
/// use scores::base::discrete::DiscreteBase;
/// use scores::BaseScore;
///
/// let base = DiscreteBase::new(DiscreteSet::two_points());
/// let x = DVector::from_vec(vec![0.5, 0.0]);
/// // Posterior weights of (1, 0) and (-1, 0): softmax of +-alpha x_1 / sigma^2, so E[m | x] = tanh(0.5).
/// let m = base.posterior_mean(&x, 1.0, 1.0);
/// assert!((m[0] - 0.5f64.tanh()).abs() < 1e-15);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteBase {
    set: DiscreteSet,
    log_weights: Vec<f64>,
}

impl DiscreteBase {
    /// The base law with the set's weights.
    pub fn new(set: DiscreteSet) -> Self {
        let log_weights = set.log_weights();
        Self { set, log_weights }
    }

    /// The base law on `points` with optional `weights` (uniform if `None`), validated as by
    /// [`DiscreteSet::new`]: errors name `points` or `weights`.
    pub fn from_points(points: Vec<DVector<f64>>, weights: Option<Vec<f64>>) -> Result<Self> {
        Ok(Self::new(DiscreteSet::new(points, weights)?))
    }

    /// The underlying set.
    pub fn set(&self) -> &DiscreteSet {
        &self.set
    }

    /// ln p_k + ln N(x; alpha m_k, sigma^2 I), one per point: the log-joint of (k, x), whose log-sum-exp
    /// is the log-density and whose softmax is the posterior.
    ///
    /// Panics as [`DiscreteBase::posterior_mean`] does.
    pub fn log_joint(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> Vec<f64> {
        assert_args("DiscreteBase::log_joint", x, self.set.ambient_dim(), alpha, sigma);
        self.log_joint_unchecked(x, alpha, sigma)
    }

    /// The posterior weights w_k = P(k | x), summing to 1; panics as [`DiscreteBase::posterior_mean`] does.
    pub fn posterior_weights(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> Vec<f64> {
        assert_args("DiscreteBase::posterior_weights", x, self.set.ambient_dim(), alpha, sigma);
        softmax(&self.logits(x, alpha, sigma))
    }

    /// Batched posterior weights: `x: [B, n]`, `alpha, sigma: [B]` (same float dtype and device) ->
    /// `[B, K]` in the dtype and device of `x`; differentiable. Panics naming the argument on a shape
    /// mismatch.
    pub fn posterior_weights_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        assert_batch_args("DiscreteBase::posterior_weights_t", x, &[self.set.ambient_dim() as i64], alpha, sigma);
        self.weights_t(x, alpha, sigma, &self.set.points_tensor(x.kind(), x.device()))
    }

    fn log_joint_unchecked(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> Vec<f64> {
        let norm = -0.5 * self.set.ambient_dim() as f64 * ((2.0 * PI).ln() + 2.0 * sigma.ln());
        self.set
            .points()
            .iter()
            .zip(&self.log_weights)
            .map(|(m, lw)| {
                let d2 = x.iter().zip(m.iter()).map(|(xi, mi)| (xi - alpha * mi).powi(2)).sum::<f64>();
                lw - 0.5 * d2 / (sigma * sigma) + norm
            })
            .collect()
    }

    /// The two parts of the logits (module doc): u_k = alpha <x, m_k>/sigma^2 and b_k - max_j b_j.
    fn logit_parts(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> (Vec<f64>, Vec<f64>) {
        let s2 = sigma * sigma;
        let pts = self.set.points();
        let bias: Vec<f64> = pts
            .iter()
            .zip(&self.log_weights)
            .map(|(m, lw)| lw - alpha * alpha * m.norm_squared() / (2.0 * s2))
            .collect();
        let b_max = bias.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (pts.iter().map(|m| alpha * x.dot(m) / s2).collect(), bias.iter().map(|b| b - b_max).collect())
    }

    /// The posterior logits u_k + b_k - max_j b_j.
    fn logits(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> Vec<f64> {
        let (u, c) = self.logit_parts(x, alpha, sigma);
        u.iter().zip(&c).map(|(u, c)| u + c).collect()
    }

    /// The posterior mean, arguments already checked (module doc for the small-logit form).
    fn posterior(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> DVector<f64> {
        let (u, c) = self.logit_parts(x, alpha, sigma);
        if u.iter().all(|v| v.abs() <= 1.0) {
            let q = softmax(&c);
            let em: Vec<f64> = u.iter().map(|v| v.exp_m1()).collect();
            let t: f64 = q.iter().zip(&em).map(|(q, e)| q * e).sum();
            let qe: Vec<f64> = q.iter().zip(&em).map(|(q, e)| q * e).collect();
            (self.mean_of(&q) + self.mean_of(&qe)) / (1.0 + t)
        } else {
            self.mean_of(&softmax(&self.logits(x, alpha, sigma)))
        }
    }

    /// sum_k w_k m_k (terms with w_k = 0 skipped).
    fn mean_of(&self, w: &[f64]) -> DVector<f64> {
        let mut out = DVector::zeros(self.set.ambient_dim());
        for (m, wk) in self.set.points().iter().zip(w) {
            if *wk != 0.0 {
                out.axpy(*wk, m, 1.0);
            }
        }
        out
    }

    /// `[B, K]` tensors u = alpha <x, m_k>/sigma^2 and b - max b (module doc), given the points `[K, n]` in
    /// the dtype and device of `x`.
    fn logit_parts_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor, points: &Tensor) -> (Tensor, Tensor) {
        let a = alpha.unsqueeze(-1);
        let s2 = sigma.unsqueeze(-1).square();
        let log_w = Tensor::from_slice(&self.log_weights).to_kind(x.kind()).to_device(x.device());
        let sq = points.square().sum_dim_intlist([-1i64].as_slice(), false, None);
        let bias = log_w.unsqueeze(0) - sq.unsqueeze(0) * (a.square() / (&s2 * 2.0));
        let bias = &bias - bias.amax([-1i64].as_slice(), true);
        (x.matmul(&points.transpose(0, 1)) * (&a / &s2), bias)
    }

    /// `[B, K]` posterior weights given the points tensor `[K, n]` in the dtype and device of `x`.
    fn weights_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor, points: &Tensor) -> Tensor {
        let (u, c) = self.logit_parts_t(x, alpha, sigma, points);
        (u + c).softmax(-1, x.kind())
    }

    /// `[B, n]` posterior mean, with the small-logit form where every |u_k| <= 1 (module doc).
    fn posterior_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor, points: &Tensor) -> Tensor {
        let (u, c) = self.logit_parts_t(x, alpha, sigma, points);
        let plain = (&u + &c).softmax(-1, x.kind()).matmul(points);
        let small = u.abs().amax([-1i64].as_slice(), true).le(1.0);
        // expm1 of a clamped argument, so that the branch not taken stays finite (values and gradients).
        let em = u.clamp(-1.0, 1.0).expm1();
        let q = c.softmax(-1, x.kind());
        let qe = &q * em;
        let t = qe.sum_dim_intlist([-1i64].as_slice(), true, None);
        let expm1_form = (q.matmul(points) + qe.matmul(points)) / (t + 1.0);
        expm1_form.where_self(&small, &plain)
    }
}

/// softmax of a vector with entries that may be -inf (but not all).
fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|v| v / total).collect()
}

/// log-sum-exp of a vector with entries that may be -inf (but not all).
fn log_sum_exp(logits: &[f64]) -> f64 {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln()
}

impl BaseScore for DiscreteBase {
    type Point = DVector<f64>;

    /// sum_k w_k m_k with the posterior weights w.
    ///
    /// Panics naming the argument when `x` has the wrong length or a non-finite coordinate, or when
    /// `alpha` is negative or non-finite, or `sigma` is not a finite positive number.
    fn posterior_mean(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> DVector<f64> {
        assert_args("DiscreteBase::posterior_mean", x, self.set.ambient_dim(), alpha, sigma);
        self.posterior(x, alpha, sigma)
    }

    /// (alpha E[m | x] - x) / sigma^2; panics as [`DiscreteBase::posterior_mean`] does.
    fn base_score(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> DVector<f64> {
        assert_args("DiscreteBase::base_score", x, self.set.ambient_dim(), alpha, sigma);
        let mean = self.posterior(x, alpha, sigma);
        (mean * alpha - x) / (sigma * sigma)
    }

    /// ln sum_k p_k N(x; alpha m_k, sigma^2 I) w.r.t. Lebesgue measure on R^n; panics as
    /// [`DiscreteBase::posterior_mean`] does.
    fn log_density(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> f64 {
        assert_args("DiscreteBase::log_density", x, self.set.ambient_dim(), alpha, sigma);
        log_sum_exp(&self.log_joint_unchecked(x, alpha, sigma))
    }

    /// `x: [B, n]`, `alpha, sigma: [B]` (same float dtype and device) -> `[B, n]` in the dtype and device of
    /// `x`; differentiable. Panics naming the argument on a shape mismatch; values are not checked.
    fn base_score_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        assert_batch_args("DiscreteBase::base_score_t", x, &[self.set.ambient_dim() as i64], alpha, sigma);
        let points = self.set.points_tensor(x.kind(), x.device());
        let mean = self.posterior_t(x, alpha, sigma, &points);
        (mean * alpha.unsqueeze(-1) - x) / sigma.unsqueeze(-1).square()
    }
}
