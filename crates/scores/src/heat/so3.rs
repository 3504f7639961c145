//! The heat kernel of SO(3) with the angle metric (IGSO(3), MATH.md section 4).
//!
//! # Convention
//!
//! Brownian motion with generator the Laplace-Beltrami operator Delta of the *angle metric*
//! <U, V> = tr(U^T V)/2 (dX = sqrt(2) dB; eigenvalues -l(l+1)), so that dist(R, Q) is the rotation angle
//! omega of R^T Q. Densities are with respect to the Haar *probability* measure (the uniform law has
//! log-density 0); to get the density w.r.t. the Riemannian volume (total 8 pi^2) subtract log(8 pi^2).
//! The kernel depends on (R, Q) only through omega in [0, pi].
//!
//! # Representations and switch point
//!
//! - **Series** (t >= 1): k_t(omega) = sum_l (2l+1) e^{-l(l+1)t} sin((l+1/2) omega)/sin(omega/2), the ratio
//!   by the recurrence f_{l+1} = 2 cos(omega) f_l - f_{l-1} (stable at omega = 0, where f_l = 2l+1), summed
//!   until e^{-l(l+1)t} (2l+1)^2 < e^-40.
//! - **Exact images** (t < 1): with m = l + 1/2, l(l+1) = m^2 - 1/4, and Poisson summation over the
//!   half-integers (which brings the sign (-1)^n),
//!   k_t(omega) = e^{t/4} sqrt(pi) / (2 t^{3/2}) sum_{n in Z} (-1)^n (omega + 2 pi n) e^{-(omega + 2 pi n)^2/4t}
//!   / sin(omega/2).
//!   Equivalently SO(3) = S^3/{+-1} where S^3 has radius 2 (the rotation by omega is the unit quaternion at
//!   angle omega/2 from +-1), so k^{SO(3)}_t(omega) = [k^{S^3}_{t/4}(omega/2) + k^{S^3}_{t/4}(pi - omega/2)]/2;
//!   the S^3 kernel is the closed form of [`super::sphere`]. The term n = 0 is the Varadhan/parametrix
//!   leading term sqrt(pi)/t^{3/2} (omega/2)/sin(omega/2) e^{-omega^2/4t} (times e^{t/4}), which is all that
//!   remains at tiny t; the images n = +-1, .., +-4 are paired (n, -n) and evaluated in cosh/sinh form near
//!   omega = 0. Near omega = pi the images n = 0 and n = -1 add (no cancellation), so the relative accuracy is
//!   uniform on [0, pi].
//!
//! Accuracy (measured by `tests/heat.rs`): the two forms agree to about 1e-14 relative for t in [0.05, 2];
//! the density integrates to 1 within 1e-12 for t in [1e-5, 1e2].
//!
//! Batched functions evaluate the function of omega per element in f64 on the CPU (rayon), as for the
//! sphere (see [`super::sphere`]); sampling inverts the CDF of the angle's law k_t(omega)(1 - cos omega)/pi
//! with a cached table per t, and draws the axis uniformly on S^2.

use super::sphere::{
    assert_angle_time, assert_time, attach_first_order, check_time, ln_sinc, map_angle_t, one_over_minus_cot,
    reduce_angle, score_factor, tensor_to_vec, AngleLogDensity, AngleTable, KernelForm, TableCache,
};
use crate::Result;
use geom::so3::{expm, expm_t};
use geom::{Manifold, So3, TensorManifold};
use nalgebra::{Matrix3, Vector3};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::f64::consts::PI;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// Time at or above which the SO(3) kernel uses its series.
const T_SERIES_SO3: f64 = 1.0;
/// Image pairs kept in the image sums (enough for t < 1 on SO(3) and t < 0.5 on S^3).
const IMAGE_PAIRS: usize = 4;

/// The heat kernel of SO(3) with the angle metric (IGSO(3)), for Brownian motion with generator the
/// Laplace-Beltrami operator (dX = sqrt(2) dB), as a density w.r.t. the Haar probability measure.
///
/// See the [module documentation](self) for the formulas, switch point and accuracy.
///
/// ```
/// use scores::heat::so3::So3HeatKernel;
///
/// let k = So3HeatKernel::new();
/// assert!(k.log_density_angle(2.0, 50.0).abs() < 1e-12);
/// // Small t: the Euclidean heat kernel in R^3 times the volume 8 pi^2 near omega = 0.
/// let t = 1e-4;
/// let gauss = (8.0 * std::f64::consts::PI.powi(2)).ln() - 1.5 * (4.0 * std::f64::consts::PI * t).ln();
/// assert!((k.log_density_angle(0.0, t) - gauss).abs() < 1e-3);
/// ```
#[derive(Debug, Clone, Default)]
pub struct So3HeatKernel {
    space: So3,
    tables: TableCache,
}

impl So3HeatKernel {
    /// The SO(3) heat kernel (it has no parameters).
    pub fn new() -> Self {
        So3HeatKernel::default()
    }

    /// Errors (naming `t`) unless t is finite and positive.
    pub fn check_time(&self, t: f64) -> Result<()> {
        check_time(t)
    }

    /// log k_t(omega) as a function of the rotation angle omega (any real; reduced to [0, pi] by evenness and
    /// 2 pi-periodicity), w.r.t. the Haar probability measure, generator Delta of the angle metric.
    ///
    /// Panics naming the argument if `omega` is not finite or `t` is not finite and positive.
    pub fn log_density_angle(&self, omega: f64, t: f64) -> f64 {
        assert_angle_time("So3HeatKernel::log_density_angle", "omega", omega, t);
        self.eval(omega, t).log_density
    }

    /// d/domega log k_t(omega) (generator Delta, angle metric); zero at omega = 0 and omega = pi.
    ///
    /// Panics naming the argument if `omega` is not finite or `t` is not finite and positive.
    pub fn dlog_density_domega(&self, omega: f64, t: f64) -> f64 {
        assert_angle_time("So3HeatKernel::dlog_density_domega", "omega", omega, t);
        self.eval(omega, t).dlog_dangle
    }

    /// log k_t(omega) and its derivative in a chosen representation (for tests and diagnostics);
    /// `None` for [`KernelForm::Parametrix`] (not implemented for SO(3)) or where the series is not positive.
    ///
    /// Panics naming the argument if `omega` is not finite or `t` is not finite and positive.
    pub fn log_density_angle_form(&self, omega: f64, t: f64, form: KernelForm) -> Option<AngleLogDensity> {
        assert_angle_time("So3HeatKernel::log_density_angle_form", "omega", omega, t);
        let (w, sign) = reduce_angle(omega);
        let v = match form {
            KernelForm::Auto => Some(eval_reduced(w, t)),
            KernelForm::Series => series_so3(w, t),
            KernelForm::ShortTime => Some(images_so3(w, t)),
            KernelForm::Parametrix => None,
        }?;
        Some(AngleLogDensity { log_density: v.log_density, dlog_dangle: sign * v.dlog_dangle })
    }

    /// The density of the angle omega = dist(R, X_t) on [0, pi] w.r.t. domega: k_t(omega)(1 - cos omega)/pi.
    ///
    /// Panics naming the argument if `omega` is not finite or `t` is not finite and positive.
    pub fn angle_density(&self, omega: f64, t: f64) -> f64 {
        assert_angle_time("So3HeatKernel::angle_density", "omega", omega, t);
        log_angle_density(omega, t).exp()
    }

    /// log k_t(R, Q) w.r.t. the Haar probability measure (generator Delta, angle metric).
    ///
    /// Panics naming the argument on non-finite matrices or a non-finite or non-positive `t`.
    pub fn log_density(&self, r: &Matrix3<f64>, q: &Matrix3<f64>, t: f64) -> f64 {
        assert_time("So3HeatKernel::log_density", t);
        let omega = self.space.dist(r, q);
        self.eval(omega, t).log_density
    }

    /// The intrinsic score grad_R log k_t(R, Q) in the angle metric, a tangent vector R Omega at R:
    /// dlog k/domega * grad_R omega with grad_R omega = -log_R(Q)/omega. It is 0 at Q = R and at angle pi.
    ///
    /// Panics naming the argument on non-finite matrices or a non-finite or non-positive `t`.
    pub fn score(&self, r: &Matrix3<f64>, q: &Matrix3<f64>, t: f64) -> Matrix3<f64> {
        assert_time("So3HeatKernel::score", t);
        let log = self.space.log(r, q);
        let omega = self.space.dist(r, q);
        let g = self.eval(omega, t).dlog_dangle;
        log * (-score_factor(g, omega))
    }

    /// One exact draw of X_t given X_0 = R (generator Delta): the angle from its law (cached inverse-CDF
    /// table per t), the axis uniform on S^2; returns R expm(omega axis).
    ///
    /// Panics naming the argument on a non-finite `r`, or a non-finite or non-positive `t`.
    pub fn sample<R: Rng + ?Sized>(&self, r: &Matrix3<f64>, t: f64, rng: &mut R) -> Matrix3<f64> {
        assert_time("So3HeatKernel::sample", t);
        geom::check::assert_finite("So3HeatKernel::sample", "r", r.as_slice());
        let omega = self.sample_angle(t, rng);
        loop {
            let g = Vector3::from_fn(|_, _| -> f64 { StandardNormal.sample(rng) });
            let n = g.norm();
            if n > 1e-8 {
                return r * expm(&(g * (omega / n)));
            }
        }
    }

    /// One draw of the rotation angle omega = dist(R, X_t) from its law (see [`Self::angle_density`]).
    ///
    /// Panics naming `t` if it is not finite and positive.
    pub fn sample_angle<R: Rng + ?Sized>(&self, t: f64, rng: &mut R) -> f64 {
        assert_time("So3HeatKernel::sample_angle", t);
        self.table(t).sample(rng.random::<f64>(), |w| log_angle_density(w, t).exp())
    }

    /// Batched log k_t(R_i, Q_i) w.r.t. the Haar probability measure (generator Delta, angle metric).
    ///
    /// `r, q: [B, 3, 3]` and `t: [B]` (or broadcastable to `[B]`), any float dtype and device; returns `[B]`
    /// with the dtype and device of `r`. Evaluated per point in f64 on the CPU (rayon); differentiable in
    /// `r` and `q` (first order, through the angle), not in `t`. Non-positive or NaN times give NaN.
    pub fn log_density_t(&self, r: &Tensor, q: &Tensor, t: &Tensor) -> Tensor {
        let omega = self.space.dist_t(r, q);
        let (v, g) = map_angle_t(&omega, t, |w, s| eval_unchecked(w, s).pair());
        attach_first_order(&v, &g, &omega)
    }

    /// Batched intrinsic score grad_R log k_t(R_i, Q_i) in the angle metric, tangent at R_i.
    ///
    /// `r, q: [B, 3, 3]`, `t: [B]`, any float dtype and device; returns `[B, 3, 3]` with the dtype and device
    /// of `r`. The factor (dlog k/domega)/omega is computed per point in f64 on the CPU (rayon) and multiplies
    /// -log_R(Q) computed by `geom` on the input's device; no gradient flows through the factor.
    pub fn score_t(&self, r: &Tensor, q: &Tensor, t: &Tensor) -> Tensor {
        let log = self.space.log_t(r, q);
        let omega = self.space.dist_t(r, q);
        let (factor, _) = map_angle_t(&omega, t, |w, s| (score_factor(eval_unchecked(w, s).dlog_dangle, w), 0.0));
        log * (-factor).unsqueeze(-1).unsqueeze(-1)
    }

    /// Batched log k_t(omega) as a function of the angle (generator Delta, Haar probability measure).
    ///
    /// `omega` of any shape and float dtype, `t` broadcastable against it (pass `Tensor::from(t)` for one
    /// time); returns the broadcast shape with the dtype and device of `omega`. Evaluated per element in f64
    /// on the CPU (rayon); differentiable in `omega` (first order), not in `t`.
    pub fn log_density_angle_t(&self, omega: &Tensor, t: &Tensor) -> Tensor {
        let (v, g) = map_angle_t(omega, t, |w, s| eval_unchecked(w, s).pair());
        attach_first_order(&v, &g, omega)
    }

    /// Batched exact draws of X_t given X_0 = R_i, all at time `t` (generator Delta, angle metric).
    ///
    /// `r: [B, 3, 3]`, any float dtype and device; returns `[B, 3, 3]` with the dtype and device of `r`. The
    /// randomness comes from libtorch's CPU generator (seed it with `tch::manual_seed`): uniforms for the
    /// angles, inverted per point in f64, and Gaussians for the axes. Panics naming `t` if it is not finite
    /// and positive.
    pub fn sample_t(&self, r: &Tensor, t: f64) -> Tensor {
        assert_time("So3HeatKernel::sample_t", t);
        geom::check::assert_batch_shape("So3HeatKernel::sample_t", "r", r, &[3, 3]);
        let (kind, device) = (r.kind(), r.device());
        let b = r.size()[0];
        let u = tensor_to_vec(&Tensor::rand([b], (Kind::Double, Device::Cpu)));
        let table = self.table(t);
        let omega: Vec<f64> =
            u.par_iter().with_min_len(16).map(|&u| table.sample(u, |w| log_angle_density(w, t).exp())).collect();
        let omega = Tensor::from_slice(&omega);
        let g = Tensor::randn([b, 3], (Kind::Double, Device::Cpu));
        let axis = &g / g.norm_scalaropt_dim(2.0, [-1i64].as_slice(), true).clamp_min(1e-300);
        let step = expm_t(&(axis * omega.unsqueeze(-1)));
        r.detach().to_kind(Kind::Double).to_device(Device::Cpu).matmul(&step).to_kind(kind).to_device(device)
    }

    fn table(&self, t: f64) -> Arc<AngleTable> {
        let hi = ((2.0 * t).sqrt() * (3f64.sqrt() + 9.0)).min(PI);
        self.tables.get_or_build(t, || AngleTable::new(|w| log_angle_density(w, t).exp(), hi))
    }

    fn eval(&self, omega: f64, t: f64) -> AngleLogDensity {
        let (w, sign) = reduce_angle(omega);
        let v = eval_reduced(w, t);
        AngleLogDensity { log_density: v.log_density, dlog_dangle: sign * v.dlog_dangle }
    }
}

/// Evaluation without argument checks: NaN for a non-finite angle or a non-positive or non-finite time.
fn eval_unchecked(omega: f64, t: f64) -> AngleLogDensity {
    if !omega.is_finite() || !t.is_finite() || t <= 0.0 {
        return AngleLogDensity { log_density: f64::NAN, dlog_dangle: f64::NAN };
    }
    let (w, sign) = reduce_angle(omega);
    let v = eval_reduced(w, t);
    AngleLogDensity { log_density: v.log_density, dlog_dangle: sign * v.dlog_dangle }
}

/// The `Auto` representation on omega in [0, pi].
fn eval_reduced(omega: f64, t: f64) -> AngleLogDensity {
    if t >= T_SERIES_SO3 {
        series_so3(omega, t).unwrap_or_else(|| images_so3(omega, t))
    } else {
        images_so3(omega, t)
    }
}

/// log of the angle's density k_t(omega)(1 - cos omega)/pi w.r.t. domega.
fn log_angle_density(omega: f64, t: f64) -> f64 {
    let (w, _) = reduce_angle(omega);
    let h = (0.5 * w).sin();
    if h <= 0.0 {
        return f64::NEG_INFINITY;
    }
    eval_reduced(w, t).log_density + (2.0 * h * h / PI).ln()
}

/// log of e^{t/4} sqrt(pi) / (2 t^{3/2}), the constant of the SO(3) image form.
pub(crate) fn log_c_so3(t: f64) -> f64 {
    0.25 * t + 0.5 * PI.ln() - std::f64::consts::LN_2 - 1.5 * t.ln()
}

/// The SO(3) kernel from its image sum, omega in [0, pi].
fn images_so3(omega: f64, t: f64) -> AngleLogDensity {
    let (n, dn) = image_ratio(omega, PI - omega, t, true);
    AngleLogDensity {
        log_density: log_c_so3(t) - omega * omega / (4.0 * t) + std::f64::consts::LN_2 - ln_sinc(0.5 * omega) + n.ln(),
        dlog_dangle: -omega / (2.0 * t) + 0.5 * one_over_minus_cot(0.5 * omega) + dn / n,
    }
}

/// sinh(x)/x and (x cosh x - sinh x)/x^3 for |x| <= 1, by their Taylor series.
fn shc_and_g(x: f64) -> (f64, f64) {
    let x2 = x * x;
    let (mut shc, mut g) = (1.0, 0.0);
    let mut p = 1.0; // x^{2k-2}
    let mut fact = 1.0; // (2k+1)!
    for k in 1..=11 {
        let kf = k as f64;
        fact *= (2.0 * kf) * (2.0 * kf + 1.0);
        g += 2.0 * kf * p / fact;
        p *= x2;
        shc += p / fact;
    }
    (shc, g)
}

/// The ratio N(a)/a of the image sum to its n = 0 term and its derivative, for the kernels
/// sum_{n in Z} s_n (a + 2 pi n) e^{-(a + 2 pi n)^2/4t} (s_n = (-1)^n on SO(3), 1 on S^3):
/// N(a)/a = 1 + sum_{n >= 1} s_n [(1 + 2 pi n/a) e^{-pi n (pi n + a)/t} + (1 - 2 pi n/a) e^{-pi n (pi n - a)/t}].
///
/// `psi` must be pi - a (passed separately so that callers near the antipode keep its full precision).
/// Pairs with x = pi n a/t <= 1 use the cosh/sinh form e^{-pi^2 n^2/t} [2 cosh x - 4 pi n (pi n/t) sinh(x)/x],
/// which is exact at a = 0.
pub(crate) fn image_ratio(a: f64, psi: f64, t: f64, alternating: bool) -> (f64, f64) {
    let (mut n_sum, mut dn_sum) = (1.0, 0.0);
    for n in 1..=IMAGE_PAIRS {
        let nf = n as f64;
        let sign = if alternating && n % 2 == 1 { -1.0 } else { 1.0 };
        // The larger of the two exponents, -pi n (pi (n - 1) + psi)/t.
        let log_a = -PI * nf * (PI * (nf - 1.0) + psi) / t;
        if log_a < -745.0 {
            break;
        }
        let b = PI * nf / t;
        let x = b * a;
        if x <= 1.0 {
            let e = (-PI * PI * nf * nf / t).exp();
            let (shc, g) = shc_and_g(x);
            let c = 4.0 * PI * nf * b;
            n_sum += sign * e * (2.0 * x.cosh() - c * shc);
            dn_sum += sign * e * (2.0 * b * x.sinh() - c * b * x * g);
        } else {
            let q = 2.0 * PI * nf / a;
            let ea = log_a.exp();
            let eb = (-PI * nf * (PI * nf + a) / t).exp();
            n_sum += sign * ((1.0 + q) * eb + (1.0 - q) * ea);
            dn_sum += sign * (eb * (-q / a - (1.0 + q) * b) + ea * (q / a + (1.0 - q) * b));
        }
    }
    (n_sum, dn_sum)
}

/// The series sum_l (2l+1) e^{-l(l+1)t} sin((l+1/2) omega)/sin(omega/2) and its derivative; `None` where the
/// sum is not positive.
fn series_so3(omega: f64, t: f64) -> Option<AngleLogDensity> {
    let (c, s) = (omega.cos(), omega.sin());
    let (mut f_prev, mut f) = (1.0, 1.0 + 2.0 * c);
    let (mut df_prev, mut df) = (0.0, -2.0 * s);
    let (mut sum, mut dsum) = (1.0, 0.0);
    let mut l = 1usize;
    loop {
        let lf = l as f64;
        let exponent = lf * (lf + 1.0) * t;
        let w = (2.0 * lf + 1.0) * (-exponent).exp();
        sum += w * f;
        dsum += w * df;
        if exponent > 40.0 + 2.0 * (2.0 * lf + 1.0).ln() {
            break;
        }
        let f_next = 2.0 * c * f - f_prev;
        let df_next = 2.0 * c * df - 2.0 * s * f - df_prev;
        f_prev = f;
        f = f_next;
        df_prev = df;
        df = df_next;
        l += 1;
    }
    if sum > 0.0 && sum.is_finite() {
        Some(AngleLogDensity { log_density: sum.ln(), dlog_dangle: dsum / sum })
    } else {
        None
    }
}
