//! Probability laws on manifolds, per point in f64: sampling and exact log-densities.
//!
//! Every law implements [`ManifoldDistribution`]. The reference measure of `log_prob` is fixed per space
//! (`shared/design/MATH.md` section 0) and restated on each type:
//! - on the sphere S^{d-1}: the surface-area measure of the unit sphere (total 2 pi^{d/2} / Gamma(d/2),
//!   4 pi on S^2), so the uniform law has log-density -ln(4 pi) = -2.531 on S^2;
//! - on SO(3): the Haar *probability* measure, so the uniform law has log-density 0 (a density w.r.t. the
//!   Riemannian volume of the angle metric, total 8 pi^2, is this one minus ln(8 pi^2)).
//!
//! Laws: [`VonMisesFisher`] on S^{d-1} (any d >= 2), [`WrappedNormalSo3`] on SO(3), and finite
//! [`Mixture`]s of either (with [`random_vmf_mixture`] and [`random_wrapped_normal_mixture`] as ready-made
//! test data).
//!
//! ```
//! use geom::distributions::{ManifoldDistribution, VonMisesFisher};
//! use nalgebra::DVector;
//! use rand::SeedableRng;
//!
//! let vmf = VonMisesFisher::new(DVector::from_vec(vec![0.0, 0.0, 1.0]), 0.0).unwrap();
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let x = vmf.sample(&mut rng);
//! // kappa = 0 is the uniform law on S^2: density 1/(4 pi) w.r.t. area.
//! assert!((vmf.log_prob(&x) + (4.0 * std::f64::consts::PI).ln()).abs() < 1e-14);
//! ```

mod mixture;
mod vmf;
mod wrapped_normal;

pub use mixture::{random_vmf_mixture, random_wrapped_normal_mixture, Mixture};
pub use vmf::VonMisesFisher;
pub use wrapped_normal::WrappedNormalSo3;

use rand::Rng;

/// A probability law on a manifold with an exact sampler and an exact log-density.
///
/// The reference measure of [`ManifoldDistribution::log_prob`] is the one of the space (see the
/// [module documentation](self)): surface area on spheres, Haar probability on SO(3).
pub trait ManifoldDistribution {
    /// The ambient representation of a point (`DVector<f64>` on spheres, `Matrix3<f64>` on SO(3)).
    type Point: Clone + std::fmt::Debug;

    /// One exact sample.
    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Self::Point;

    /// The log-density at `x` w.r.t. the space's reference measure.
    ///
    /// `x` is assumed to lie on the manifold (this is not checked: validate inputs with
    /// [`crate::Manifold::check_point`] at boundaries). Panics if `x` has the wrong dimension.
    fn log_prob(&self, x: &Self::Point) -> f64;

    /// `n_samples` independent samples.
    fn sample_n<R: Rng + ?Sized>(&self, n_samples: usize, rng: &mut R) -> Vec<Self::Point> {
        (0..n_samples).map(|_| self.sample(rng)).collect()
    }
}

/// ln sum_i exp(v_i), exact for empty input (-inf), for all -inf (-inf) and when some v_i = +inf (+inf).
pub(crate) fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}
