//! The uniform base law on the flat torus T^k = S^1 x .. x S^1 in R^{2k} (coordinates (cos, sin) pairs, as
//! in [`geom::Torus`]).
//!
//! The uniform law on T^k is the product of the uniform laws on the circles and the Gaussian noise is
//! isotropic, so the noised law, the posterior and the score factorise circle by circle: on circle i, with
//! x_i = (x_{2i}, x_{2i+1}), everything is the sphere base of [`super::sphere`] for d = 2:
//!
//! - E[m_i | x] = A_2(kappa_i) x_i/|x_i|, A_2 = I_1/I_0, kappa_i = alpha |x_i| / sigma^2,
//! - log p_base(x) = sum_i [-(|x_i|^2 + alpha^2)/(2 sigma^2) - ln(2 pi sigma^2) + ln I_0(kappa_i)].

use super::sphere::{assert_args, assert_batch_args, base_score_rows, log_density_vec, posterior_mean_vec};
use crate::{BaseScore, Result, ScoreError};
use nalgebra::DVector;
use tch::Tensor;

/// The exact base score of the uniform law on the torus of `k` circles, embedded in R^{2k}.
///
/// ```
/// use geom::Torus;
/// use scores::base::torus::TorusBase;
/// use scores::BaseScore;
///
/// let t2 = TorusBase::new(2).unwrap();
/// let x = Torus::from_angles(&[0.3, -1.0]) * 1.5;
/// let m = t2.posterior_mean(&x, 1.0, 0.01);
/// // Small noise: each circle's posterior mean is close to the projection (cos, sin).
/// assert!((m - Torus::from_angles(&[0.3, -1.0])).norm() < 1e-3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TorusBase {
    k: usize,
}

impl TorusBase {
    /// The uniform base on T^k in R^{2k}; errors naming `k` unless `k >= 1`.
    pub fn new(k: usize) -> Result<Self> {
        if k == 0 {
            return Err(ScoreError::invalid("k", k, "a number of circles >= 1"));
        }
        Ok(Self { k })
    }

    /// The number of circles k.
    pub fn k(&self) -> usize {
        self.k
    }

    fn circle(x: &DVector<f64>, i: usize) -> DVector<f64> {
        x.rows(2 * i, 2).into_owned()
    }

    /// The posterior mean, arguments already checked.
    fn posterior(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> DVector<f64> {
        let mut out = DVector::zeros(2 * self.k);
        for i in 0..self.k {
            out.rows_mut(2 * i, 2).copy_from(&posterior_mean_vec(2, &Self::circle(x, i), alpha, sigma));
        }
        out
    }
}

impl BaseScore for TorusBase {
    type Point = DVector<f64>;

    /// Circle by circle A_2(kappa_i) x_i/|x_i| (0 on a circle whose pair is (0, 0)).
    ///
    /// Panics naming the argument when `x` does not have length 2k or has a non-finite coordinate, or when
    /// `alpha` is negative or non-finite, or `sigma` is not a finite positive number.
    fn posterior_mean(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> DVector<f64> {
        assert_args("TorusBase::posterior_mean", x, 2 * self.k, alpha, sigma);
        self.posterior(x, alpha, sigma)
    }

    /// (alpha E[m | x] - x) / sigma^2; panics as [`TorusBase::posterior_mean`] does.
    fn base_score(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> DVector<f64> {
        assert_args("TorusBase::base_score", x, 2 * self.k, alpha, sigma);
        (self.posterior(x, alpha, sigma) * alpha - x) / (sigma * sigma)
    }

    /// log p_base(x) w.r.t. Lebesgue measure on R^{2k}: the sum of the circles' log-densities; panics as
    /// [`TorusBase::posterior_mean`] does.
    fn log_density(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> f64 {
        assert_args("TorusBase::log_density", x, 2 * self.k, alpha, sigma);
        (0..self.k).map(|i| log_density_vec(2, &Self::circle(x, i), alpha, sigma)).sum()
    }

    /// `x: [B, 2k]`, `alpha, sigma: [B]` (same float dtype and device, sigma^2 a positive normal number of
    /// that dtype) -> `[B, 2k]` in the dtype and device of `x`; differentiable, with finite gradients where
    /// a circle's pair is (0, 0). Panics naming the argument on a shape mismatch; values are not checked.
    fn base_score_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        let k = self.k as i64;
        assert_batch_args("TorusBase::base_score_t", x, &[2 * k], alpha, sigma);
        let b = x.size()[0];
        let circles = x.reshape([b, k, 2]);
        let a = alpha.reshape([b, 1, 1]);
        let s = sigma.reshape([b, 1, 1]);
        base_score_rows(2, &circles, &a, &s).reshape([b, 2 * k])
    }
}
