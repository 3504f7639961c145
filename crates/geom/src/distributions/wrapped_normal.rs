//! The wrapped normal law on SO(3); see [`WrappedNormalSo3`] for its density.

use super::ManifoldDistribution;
use crate::so3::{expm, project_to_so3, rotation_angle};
use crate::{GeomError, Manifold, Result, So3};
use nalgebra::{Matrix3, Vector3};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::f64::consts::PI;

/// Tolerance on the distance of `mean` to SO(3) accepted by [`WrappedNormalSo3::new`].
const MEAN_TOL: f64 = 1e-9;

/// The wrapped normal law on SO(3): R = mean Expm(hat(sigma eps)) with eps ~ N(0, I_3).
///
/// `log_prob` is w.r.t. the Haar probability measure (the uniform law has log-density 0); subtract
/// ln(8 pi^2) for a density w.r.t. the Riemannian volume of the angle metric.
///
/// Density. Write w in [0, pi] for the rotation angle of mean^T R. The rotation vectors v with
/// Expm(hat(v)) = Exp(w a) are v = (w + 2 pi n) a, n in Z, of length |w + 2 pi n|. In exponential coordinates
/// the Riemannian volume of the angle metric is dvol = 2 (1 - cos|v|) / |v|^2 dv (it integrates to 8 pi^2
/// over the ball |v| <= pi), so the push-forward of N(0, sigma^2 I_3) has the density w.r.t. dvol
///
///   p_vol(R) = sum_{n in Z} N_3(|w + 2 pi n|; sigma) (w + 2 pi n)^2 / (2 (1 - cos w)),
///   N_3(r; sigma) = (2 pi sigma^2)^{-3/2} exp(-r^2 / (2 sigma^2)),
///
/// and w.r.t. the Haar probability measure p(R) = 8 pi^2 p_vol(R). The law is invariant under conjugation,
/// so it is the same whether the noise multiplies the mean on the left or on the right. Its angle marginal
/// on [0, pi] is p(w) (1 - cos w) / pi = 4 pi sum_n N_3(|w + 2 pi n|; sigma) (w + 2 pi n)^2.
///
/// The identity w = 0: the n = 0 term tends to N_3(0; sigma) (its ratio (w/2)^2 / sin^2(w/2) -> 1), but
/// the terms n != 0 do *not* have a finite limit: Expm folds the whole sphere |v| = 2 pi |n| onto the
/// identity, so the density has an integrable singularity of order w^{-2} there (the angle marginal stays
/// finite, 4 pi sum_{n != 0} N_3(2 pi |n|) (2 pi n)^2 > 0 at w = 0, while the Haar angle law vanishes like
/// w^2 / (2 pi)). `log_prob` is therefore +inf exactly at the mean, and for small sigma the singular terms
/// matter only at angles far below rounding (for sigma = 0.3 below w ~ 1e-47).
///
/// Evaluation: log-sum-exp over n in [-N, N] with N = ceil((12 sigma + pi) / (2 pi)) + 1 (the omitted terms
/// are below e^{-70} relative), with 2 (1 - cos w) = 4 sin^2(w/2) and the n = 0 ratio written as
/// ((w/2) / sin(w/2))^2. The cost is O(1 + sigma) per point.
///
/// ```
/// use geom::distributions::{ManifoldDistribution, WrappedNormalSo3};
/// use nalgebra::Matrix3;
/// use rand::SeedableRng;
///
/// let wn = WrappedNormalSo3::new(Matrix3::identity(), 0.3).unwrap();
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
/// let r = wn.sample(&mut rng);
/// assert!(wn.log_prob(&r).is_finite());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WrappedNormalSo3 {
    mean: Matrix3<f64>,
    sigma: f64,
    /// Terms n in [-n_wrap, n_wrap] of the sum over preimages.
    n_wrap: i64,
}

impl WrappedNormalSo3 {
    /// The wrapped normal with mean rotation `mean` and scale `sigma` (the standard deviation of each
    /// coordinate of the rotation vector, in radians).
    ///
    /// Errors: `sigma` not finite or not positive; `mean` not finite or farther than 1e-9 (Frobenius) from
    /// SO(3) (within that tolerance it is projected onto SO(3)).
    pub fn new(mean: Matrix3<f64>, sigma: f64) -> Result<Self> {
        if !sigma.is_finite() || sigma <= 0.0 {
            return Err(GeomError::invalid("sigma", sigma, "a finite scale > 0"));
        }
        So3::new().check_point("mean", &mean, MEAN_TOL)?;
        let n_wrap = ((12.0 * sigma + PI) / (2.0 * PI)).ceil() as i64 + 1;
        Ok(Self { mean: project_to_so3(&mean), sigma, n_wrap })
    }

    /// The mean rotation.
    pub fn mean(&self) -> &Matrix3<f64> {
        &self.mean
    }

    /// The scale sigma > 0.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// The log-density w.r.t. the Haar probability measure at any rotation whose angle from the mean is
    /// `angle` in [0, pi] (the law depends on R only through that angle); +inf at `angle` = 0.
    ///
    /// # Panics
    /// If `angle` is NaN.
    pub fn log_prob_angle(&self, angle: f64) -> f64 {
        assert!(!angle.is_nan(), "WrappedNormalSo3::log_prob_angle: `angle` is NaN");
        let w = angle.abs();
        let s2 = self.sigma * self.sigma;
        let log_gauss_norm = -1.5 * (2.0 * PI * s2).ln();
        let half_sin = (0.5 * w).sin();
        // ln(2 (1 - cos w)) = 2 ln(2 sin(w/2)); -inf at w = 0.
        let log_jac = 2.0 * (2.0 * half_sin).ln();
        let n0 = if w == 0.0 { 0.0 } else { 2.0 * ((0.5 * w) / half_sin).ln() };
        let terms = (-self.n_wrap..=self.n_wrap).map(|n| {
            if n == 0 {
                -w * w / (2.0 * s2) + n0
            } else {
                let r = (w + 2.0 * PI * n as f64).abs();
                -r * r / (2.0 * s2) + 2.0 * r.ln() - log_jac
            }
        });
        log_gauss_norm + super::log_sum_exp(terms) + (8.0 * PI * PI).ln()
    }
}

impl ManifoldDistribution for WrappedNormalSo3 {
    type Point = Matrix3<f64>;

    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Matrix3<f64> {
        let eps = Vector3::from_fn(|_, _| StandardNormal.sample(rng));
        self.mean * expm(&(eps * self.sigma))
    }

    /// ln p(R) w.r.t. the Haar probability measure, through the angle of mean^T R; +inf at R = mean.
    fn log_prob(&self, x: &Matrix3<f64>) -> f64 {
        self.log_prob_angle(rotation_angle(&(self.mean.transpose() * x)))
    }
}
