//! A Euclidean Gaussian base law N(mean, std^2 I) on R^n: the base of plain Euclidean diffusion models,
//! and an exact test case in which every quantity has a closed form.
//!
//! With m ~ N(mu, s^2 I) and x = alpha m + sigma eps, x ~ N(alpha mu, v I) with v = alpha^2 s^2 + sigma^2, and
//!
//! - E[m | x] = (sigma^2 mu + alpha s^2 x) / v,
//! - s_base(x) = (alpha E[m | x] - x) / sigma^2 = (alpha mu - x) / v,
//! - log p_base(x) = -|x - alpha mu|^2 / (2 v) - (n/2) ln(2 pi v).

use super::sphere::{assert_args, assert_batch_args};
use crate::{BaseScore, Result, ScoreError};
use nalgebra::DVector;
use std::f64::consts::PI;
use tch::Tensor;

/// The exact base score of the isotropic Gaussian base N(mean, std^2 I) on R^dim.
///
/// ```
/// use nalgebra::DVector;
/// use scores::base::gaussian::GaussianBase;
/// use scores::BaseScore;
///
/// let g = GaussianBase::standard(2).unwrap();
/// let x = DVector::from_vec(vec![1.0, -2.0]);
/// // alpha = 0.6, sigma = 0.8: x ~ N(0, I), whose score is -x.
/// assert!((g.base_score(&x, 0.6, 0.8) + &x).norm() < 1e-14);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianBase {
    dim: usize,
    mean: DVector<f64>,
    std: f64,
}

impl GaussianBase {
    /// N(mean, std^2 I) on R^dim. Errors naming `dim` unless it is >= 1, `mean` unless it has length `dim`
    /// and finite coordinates, and `std` unless it is finite and > 0.
    pub fn new(dim: usize, mean: DVector<f64>, std: f64) -> Result<Self> {
        if dim == 0 {
            return Err(ScoreError::invalid("dim", dim, "a dimension >= 1"));
        }
        if mean.len() != dim {
            return Err(ScoreError::invalid("mean", format!("a vector of length {}", mean.len()), "length `dim`"));
        }
        if let Some(i) = mean.iter().position(|m| !m.is_finite()) {
            return Err(ScoreError::invalid("mean", format!("{} at coordinate {i}", mean[i]), "finite coordinates"));
        }
        if !(std.is_finite() && std > 0.0) {
            return Err(ScoreError::invalid("std", std, "a finite number > 0"));
        }
        Ok(Self { dim, mean, std })
    }

    /// The standard normal N(0, I) on R^dim; errors naming `dim` unless it is >= 1.
    pub fn standard(dim: usize) -> Result<Self> {
        Self::new(dim, DVector::zeros(dim), 1.0)
    }

    /// The dimension n.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The mean mu.
    pub fn mean(&self) -> &DVector<f64> {
        &self.mean
    }

    /// The standard deviation s of each coordinate.
    pub fn std(&self) -> f64 {
        self.std
    }

    /// The variance v = alpha^2 s^2 + sigma^2 of each coordinate of x.
    fn variance(&self, alpha: f64, sigma: f64) -> f64 {
        (alpha * self.std).powi(2) + sigma * sigma
    }
}

impl BaseScore for GaussianBase {
    type Point = DVector<f64>;

    /// (sigma^2 mu + alpha s^2 x) / (alpha^2 s^2 + sigma^2).
    ///
    /// Panics naming the argument when `x` has the wrong length or a non-finite coordinate, or when
    /// `alpha` is negative or non-finite, or `sigma` is not a finite positive number.
    fn posterior_mean(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> DVector<f64> {
        assert_args("GaussianBase::posterior_mean", x, self.dim, alpha, sigma);
        let v = self.variance(alpha, sigma);
        (&self.mean * (sigma * sigma) + x * (alpha * self.std * self.std)) / v
    }

    /// (alpha mu - x) / (alpha^2 s^2 + sigma^2); panics as [`GaussianBase::posterior_mean`] does.
    fn base_score(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> DVector<f64> {
        assert_args("GaussianBase::base_score", x, self.dim, alpha, sigma);
        (&self.mean * alpha - x) / self.variance(alpha, sigma)
    }

    /// -|x - alpha mu|^2 / (2 v) - (n/2) ln(2 pi v) w.r.t. Lebesgue measure on R^n; panics as
    /// [`GaussianBase::posterior_mean`] does.
    fn log_density(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> f64 {
        assert_args("GaussianBase::log_density", x, self.dim, alpha, sigma);
        let v = self.variance(alpha, sigma);
        -(x - &self.mean * alpha).norm_squared() / (2.0 * v) - 0.5 * self.dim as f64 * (2.0 * PI * v).ln()
    }

    /// `x: [B, dim]`, `alpha, sigma: [B]` (same float dtype and device) -> `[B, dim]` in the dtype and device
    /// of `x`; differentiable. Panics naming the argument on a shape mismatch; values are not checked.
    fn base_score_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        assert_batch_args("GaussianBase::base_score_t", x, &[self.dim as i64], alpha, sigma);
        let mean = Tensor::from_slice(self.mean.as_slice()).to_kind(x.kind()).to_device(x.device());
        let a = alpha.unsqueeze(-1);
        let v = (&a * self.std).square() + sigma.unsqueeze(-1).square();
        (mean.unsqueeze(0) * &a - x) / v
    }
}
