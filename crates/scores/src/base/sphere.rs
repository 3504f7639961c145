//! The uniform base law on the sphere S^{d-1} in R^d, any d >= 2 (MATH.md section 2, "Sphere").
//!
//! With kappa = alpha |x| / sigma^2 the posterior over m is the von Mises-Fisher law with mean direction
//! x/|x| and concentration kappa, so
//!
//! - E[m | x] = A_d(kappa) x/|x|, A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa) (the mean resultant length),
//! - s_base(x) = (alpha E[m | x] - x) / sigma^2,
//! - log p_base(x) = -(|x|^2 + alpha^2)/(2 sigma^2) - (d/2) ln(2 pi sigma^2) + ln M_d(kappa), where
//!   M_d(kappa) = E_U exp(kappa <u, e>) = Gamma(d/2) (2/kappa)^{d/2-1} I_{d/2-1}(kappa) (M_d(0) = 1).
//!
//! Numerics:
//! - Per point (the f64 reference): A_d from [`geom::special::sphere_mean_resultant`], and the log-density
//!   written as -(|x| - alpha)^2/(2 sigma^2) - (d/2) ln(2 pi sigma^2) + (ln M_d(kappa) - kappa), where the last
//!   bracket is formed from the exponentially scaled Bessel function for kappa > 1, so that no two large
//!   terms cancel when |x| is close to alpha and kappa is large.
//! - Batched: everything is written in terms of g(kappa) = A_d(kappa)/kappa, which is analytic and even in
//!   kappa (g(0) = 1/d), so the score (alpha^2 g(kappa)/sigma^2 - 1) x/sigma^2 never divides by |x|
//!   for kappa < 1. For d = 3, g = (coth kappa - 1/kappa)/kappa with a ten-term Taylor series below 0.5;
//!   for other d, Perron's continued fraction
//!   I_{nu+1}(x)/I_nu(x) = x / (2v + x - (2v+1) x / (2v+1+2x - (2v+3) x / (2v+2+2x - ...))), v = nu + 1,
//!   evaluated backwards with a fixed number of terms (48 in f64, 24 in lower precision: relative
//!   truncation error below 1e-16 and 1e-9 for every nu >= 0 and x >= 0; it converges fastest when x is large,
//!   so nothing overflows up to kappa = 1e30, beyond which kappa is clamped and A_d = 1 to working precision).

use crate::{BaseScore, Result, ScoreError};
use geom::check;
use geom::special;
use nalgebra::DVector;
use std::f64::consts::PI;
use tch::{Kind, Tensor};

/// Terms of Perron's continued fraction in f64 (truncation error below 1e-16 for every order, checked
/// against 30-digit references for nu in [0, 50] and x in [1e-1, 1e4]).
const CF_TERMS_F64: usize = 48;
/// Terms of Perron's continued fraction in f32 and lower precision (truncation error below 1e-9).
const CF_TERMS_LOW: usize = 24;
/// Concentrations above this are clamped in the batched code (A_d = 1 - (d-1)/(2 kappa) = 1 to working
/// precision there); keeps every intermediate of the continued fraction finite in f32.
const KAPPA_MAX: f64 = 1e30;
/// Below this concentration the d = 3 batched code uses the Taylor series of (coth k - 1/k)/k.
const LANGEVIN_TAYLOR_MAX: f64 = 0.5;
/// Taylor coefficients of (coth k - 1/k)/k in powers of k^2: 2^{2n} B_{2n} / (2n)!, n = 1..10.
const LANGEVIN_OVER_K: [f64; 10] = [
    1.0 / 3.0,
    -1.0 / 45.0,
    2.0 / 945.0,
    -1.0 / 4725.0,
    2.0 / 93555.0,
    -1382.0 / 638_512_875.0,
    4.0 / 18_243_225.0,
    -3617.0 / 162_820_783_125.0,
    87734.0 / 38_979_295_480_125.0,
    -349_222.0 / 1_531_329_465_290_625.0,
];

/// The exact base score of the uniform law on S^{d-1} in R^d (von Mises-Fisher posterior).
///
/// ```
/// use nalgebra::DVector;
/// use scores::base::sphere::SphereBase;
/// use scores::BaseScore;
///
/// let s2 = SphereBase::new(3).unwrap();
/// let x = DVector::from_vec(vec![0.0, 0.0, 2.0]);
/// // kappa = 1 * 2 / 1 = 2, A_3(2) = coth(2) - 1/2.
/// let m = s2.posterior_mean(&x, 1.0, 1.0);
/// assert!((m[2] - (1.0 / 2f64.tanh() - 0.5)).abs() < 1e-14);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SphereBase {
    d: usize,
}

impl SphereBase {
    /// The uniform base on S^{d-1} in R^d; errors naming `d` unless `d >= 2`.
    pub fn new(d: usize) -> Result<Self> {
        if d < 2 {
            return Err(ScoreError::invalid("d", d, "an ambient dimension >= 2"));
        }
        Ok(Self { d })
    }

    /// The ambient dimension d.
    pub fn d(&self) -> usize {
        self.d
    }

    /// The mean resultant length A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa), per point, for kappa >= 0.
    ///
    /// Panics naming `kappa` if it is negative or NaN.
    #[track_caller]
    pub fn mean_resultant(&self, kappa: f64) -> f64 {
        assert!(kappa >= 0.0, "SphereBase::mean_resultant: argument `kappa` = {kappa} must be >= 0");
        special::sphere_mean_resultant(self.d, kappa)
    }

    /// ln M_d(kappa) = ln E_U exp(kappa <u, e>) (U uniform on S^{d-1}, e a unit vector), per point, for
    /// kappa >= 0; 0 at kappa = 0 and about kappa^2/(2d) for small kappa, with full relative accuracy there.
    ///
    /// Panics naming `kappa` if it is negative or NaN.
    #[track_caller]
    pub fn log_mgf(&self, kappa: f64) -> f64 {
        assert!(kappa >= 0.0, "SphereBase::log_mgf: argument `kappa` = {kappa} must be >= 0");
        special::log_bessel_i_normalized(self.nu(), kappa)
    }

    /// Batched A_d: `kappa` of any shape, float dtype and device (entries >= 0) -> the same shape, dtype
    /// and device; differentiable, with a finite gradient at kappa = 0 (A_d'(0) = 1/d).
    pub fn mean_resultant_t(&self, kappa: &Tensor) -> Tensor {
        let kc = kappa.clamp_max(KAPPA_MAX);
        a_over_kappa_t(self.d, &kc) * kc
    }

    /// The Bessel order d/2 - 1 of the normalising constant.
    fn nu(&self) -> f64 {
        0.5 * self.d as f64 - 1.0
    }
}

impl BaseScore for SphereBase {
    type Point = DVector<f64>;

    /// A_d(kappa) x/|x| with kappa = alpha |x| / sigma^2 (0 at x = 0).
    ///
    /// Panics naming the argument when `x` has the wrong length or a non-finite coordinate, or when
    /// `alpha` is negative or non-finite, or `sigma` is not a finite positive number.
    fn posterior_mean(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> DVector<f64> {
        assert_args("SphereBase::posterior_mean", x, self.d, alpha, sigma);
        posterior_mean_vec(self.d, x, alpha, sigma)
    }

    /// (alpha E[m | x] - x) / sigma^2; panics as [`SphereBase::posterior_mean`] does.
    fn base_score(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> DVector<f64> {
        assert_args("SphereBase::base_score", x, self.d, alpha, sigma);
        (posterior_mean_vec(self.d, x, alpha, sigma) * alpha - x) / (sigma * sigma)
    }

    /// log p_base(x) w.r.t. Lebesgue measure on R^d (module doc); panics as
    /// [`SphereBase::posterior_mean`] does.
    fn log_density(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> f64 {
        assert_args("SphereBase::log_density", x, self.d, alpha, sigma);
        log_density_vec(self.d, x, alpha, sigma)
    }

    /// `x: [B, d]`, `alpha, sigma: [B]` (same float dtype and device, sigma^2 a positive normal number of
    /// that dtype) -> `[B, d]` in the dtype and device of `x`; differentiable in all three arguments, with
    /// finite gradients at x = 0. Panics naming the argument on a shape mismatch; values are not checked.
    fn base_score_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        assert_batch_args("SphereBase::base_score_t", x, &[self.d as i64], alpha, sigma);
        base_score_rows(self.d, x, &alpha.unsqueeze(-1), &sigma.unsqueeze(-1))
    }
}

/// Batched ratio I_{nu+1}(x) / I_nu(x) for nu >= 0 by Perron's continued fraction (module doc).
///
/// `x` of any shape, float dtype and device, entries in [0, 1e30] -> the same shape, dtype and device;
/// differentiable. Relative accuracy about 1e-15 in f64 and a few ulps in f32 (the truncation error is
/// below the rounding error).
///
/// Panics naming `nu` if it is negative or not finite.
#[track_caller]
pub fn bessel_ratio_t(nu: f64, x: &Tensor) -> Tensor {
    assert!(nu.is_finite() && nu >= 0.0, "bessel_ratio_t: argument `nu` = {nu} must be a finite number >= 0");
    perron_over_x_t(nu, x) * x
}

/// (I_{nu+1}(x) / I_nu(x)) / x by Perron's continued fraction: analytic at x = 0 (value 1/(2 nu + 2)),
/// about 1/x for large x. `x` of any shape, entries in [0, 1e30]; same shape, dtype and device.
fn perron_over_x_t(nu: f64, x: &Tensor) -> Tensor {
    let n_terms = if x.kind() == Kind::Double { CF_TERMS_F64 } else { CF_TERMS_LOW };
    let v = nu + 1.0;
    let two_x = x * 2.0;
    let mut tail = x.zeros_like();
    for k in (1..=n_terms).rev() {
        let k = k as f64;
        // t_k = (2v + 2k - 1) x / (2v + k + 2x - t_{k+1}). The tail is O(x) for small x and about v + k + 1/2
        // for large x, so every denominator stays positive.
        tail = x * (2.0 * v + 2.0 * k - 1.0) / (&two_x - &tail + (2.0 * v + k));
    }
    (x - tail + 2.0 * v).reciprocal()
}

/// (coth k - 1/k)/k = A_3(k)/k, any shape, entries in [0, 1e30]: Taylor series below 0.5, the closed form
/// above (with a safe argument in the branch not taken).
fn langevin_over_k_t(k: &Tensor) -> Tensor {
    let small = k.lt(LANGEVIN_TAYLOR_MAX);
    // Both branches see a safe argument: the Taylor polynomial would overflow at large k, and the
    // infinite gradient of the branch not taken would turn into NaN through `where`.
    let k2 = k.where_self(&small, &k.zeros_like()).square();
    let mut taylor = k.zeros_like() + LANGEVIN_OVER_K[LANGEVIN_OVER_K.len() - 1];
    for c in LANGEVIN_OVER_K.iter().rev().skip(1) {
        taylor = taylor * &k2 + *c;
    }
    let ks = k.where_self(&small.logical_not(), &k.ones_like());
    let direct = (ks.tanh().reciprocal() - ks.reciprocal()) / &ks;
    taylor.where_self(&small, &direct)
}

/// g(kappa) = A_d(kappa) / kappa, any shape, entries in [0, 1e30].
fn a_over_kappa_t(d: usize, kappa: &Tensor) -> Tensor {
    if d == 3 {
        langevin_over_k_t(kappa)
    } else {
        perron_over_x_t(0.5 * d as f64 - 1.0, kappa)
    }
}

/// |x| over the last dimension, keeping it: `[.., d] -> [.., 1]`; the gradient at exactly 0 is 0.
fn norm_last_keepdim(x: &Tensor) -> Tensor {
    let sq = x.square().sum_dim_intlist([-1i64].as_slice(), true, None);
    let zero = sq.le(0.0);
    let safe = sq.where_self(&zero.logical_not(), &sq.ones_like());
    safe.sqrt().where_self(&zero.logical_not(), &sq.zeros_like())
}

/// The base score on rows: `x: [.., d]`, `alpha, sigma: [.., 1]` broadcastable -> `[.., d]`.
///
/// Shared with the torus (d = 2 on each circle).
pub(crate) fn base_score_rows(d: usize, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
    let r = norm_last_keepdim(x);
    let s2 = sigma.square();
    let kappa = alpha * &r / &s2;
    let kc = kappa.clamp_max(KAPPA_MAX);
    let g = a_over_kappa_t(d, &kc);
    // coef = A_d(kappa) / |x|: as g alpha / sigma^2 at small kappa (no division by |x|, smooth at 0), as
    // A_d / |x| at large kappa (no overflow of alpha / sigma^2 when kappa is clamped).
    let small = kappa.lt(1.0);
    let coef_small = &g * alpha / &s2;
    let r_safe = r.where_self(&small.logical_not(), &r.ones_like());
    let coef_large = &g * &kc / r_safe;
    let coef = coef_small.where_self(&small, &coef_large);
    (coef * alpha - 1.0) * x / s2
}

/// Per-point posterior mean on S^{d-1} (arguments already checked).
pub(crate) fn posterior_mean_vec(d: usize, x: &DVector<f64>, alpha: f64, sigma: f64) -> DVector<f64> {
    let r = x.norm();
    if r == 0.0 {
        return DVector::zeros(x.len());
    }
    let kappa = (alpha / sigma) * (r / sigma);
    x * (special::sphere_mean_resultant(d, kappa) / r)
}

/// Per-point log-density on S^{d-1} (arguments already checked), see the module doc.
pub(crate) fn log_density_vec(d: usize, x: &DVector<f64>, alpha: f64, sigma: f64) -> f64 {
    let nu = 0.5 * d as f64 - 1.0;
    let r = x.norm();
    let kappa = (alpha / sigma) * (r / sigma);
    // ln M_d(kappa) - kappa, both ways exact; the second never forms ln M_d and kappa separately.
    let log_m_minus_kappa = if kappa <= 1.0 {
        special::log_bessel_i_normalized(nu, kappa) - kappa
    } else {
        special::ln_gamma(nu + 1.0) + nu * (2.0 / kappa).ln() + special::log_bessel_ie(nu, kappa)
    };
    let q = (r - alpha) / sigma;
    -0.5 * q * q - 0.5 * d as f64 * ((2.0 * PI).ln() + 2.0 * sigma.ln()) + log_m_minus_kappa
}

/// Panics naming the argument unless `x` has length `n` and finite coordinates, `alpha` is finite and
/// >= 0, and `sigma` is finite and > 0. Shared by the per-point base scores.
#[track_caller]
pub(crate) fn assert_args(op: &str, x: &DVector<f64>, n: usize, alpha: f64, sigma: f64) {
    assert!(x.len() == n, "{op}: argument `x` has length {}, expected {n}", x.len());
    check::assert_finite(op, "x", x.as_slice());
    assert_scalars(op, alpha, sigma);
}

/// Panics naming the argument unless `alpha` is finite and >= 0 and `sigma` is finite and > 0.
#[track_caller]
pub(crate) fn assert_scalars(op: &str, alpha: f64, sigma: f64) {
    check::assert_finite(op, "alpha", &[alpha]);
    check::assert_finite(op, "sigma", &[sigma]);
    assert!(alpha >= 0.0, "{op}: argument `alpha` = {alpha} must be >= 0");
    assert!(sigma > 0.0, "{op}: argument `sigma` = {sigma} must be > 0");
}

/// Panics naming the argument unless `x` is `[B, ..point_shape]` of a float dtype and `alpha`, `sigma` are
/// `[B]`. Shared by the batched base scores.
#[track_caller]
pub(crate) fn assert_batch_args(op: &str, x: &Tensor, point_shape: &[i64], alpha: &Tensor, sigma: &Tensor) {
    check::assert_batch_shape(op, "x", x, point_shape);
    let b = x.size()[0];
    for (name, t) in [("alpha", alpha), ("sigma", sigma)] {
        assert!(t.size() == [b], "{op}: argument `{name}` has shape {:?}, expected [{b}]", t.size());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn langevin_taylor_meets_closed_form_at_the_switch() {
        let k = Tensor::from_slice(&[0.499_999_999, 0.5, 0.500_000_001]).to_kind(Kind::Double);
        let g = langevin_over_k_t(&k);
        for i in 0..3 {
            let ki = k.double_value(&[i]);
            let exact = special::sphere_mean_resultant(3, ki) / ki;
            assert!((g.double_value(&[i]) / exact - 1.0).abs() < 1e-14, "k={ki}");
        }
    }

    #[test]
    fn perron_at_zero_is_the_small_kappa_limit() {
        let g = perron_over_x_t(1.5, &Tensor::zeros([1], (Kind::Double, tch::Device::Cpu)));
        assert!((g.double_value(&[0]) - 1.0 / 5.0).abs() < 1e-16);
    }
}
