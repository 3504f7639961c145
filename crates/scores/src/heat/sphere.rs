//! The heat kernel of the unit sphere S^d in R^{d+1} (MATH.md section 4), for any d >= 2.
//!
//! # Convention
//!
//! Brownian motion with generator the Laplace-Beltrami operator Delta (dX = sqrt(2) dB, so that at small
//! t the kernel looks like a Gaussian of variance 2t per dimension). Densities are with respect to the
//! uniform *probability* measure of S^d (the uniform law has density 1 and log-density 0); to get the density
//! with respect to the area measure, subtract log|S^d| (log 4 pi on S^2). The kernel depends on x, y only
//! through the geodesic angle theta = dist(x, y) in [0, pi]; as a function of theta it is even about 0 and pi.
//!
//! # Representations and switch points
//!
//! - **Series** (all d): k_t(theta) = sum_l exp(-l(l+d-1)t) (2l+d-1)/(d-1) C_l^{((d-1)/2)}(cos theta), with
//!   the Gegenbauer three-term recurrence; the derivative uses d/dtheta C_l^lam(cos theta) =
//!   -2 lam sin(theta) C_{l-1}^{lam+1}(cos theta). Terms are summed until exp(-l(l+d-1)t) (2l+d)^d < e^-40.
//!   The sum has absolute rounding error about 1e-16 k_t(0), so its relative accuracy is about
//!   1e-16 exp(theta^2/4t): it is used at large t (t >= 1 on S^2, 0.5 on S^3, 0.2 for d >= 4), and at smaller
//!   t only where theta^2/4t is small (<= 10 on S^2 for t >= 0.02, <= 30 for d >= 4).
//! - **S^3, exact images** (t < 0.5): Poisson summation of the series (C_l^1(cos theta) = sin((l+1)theta)/sin
//!   theta) gives the closed form k_t(theta) = e^t sqrt(pi)/(4 t^{3/2}) sum_{n in Z} (theta + 2 pi n)
//!   exp(-(theta + 2 pi n)^2/4t) / sin(theta). Images are paired (n, -n) for theta <= pi/2 (cosh/sinh forms,
//!   stable at theta = 0) and (n, -1-n) for theta > pi/2, where the pair (0, -1) cancels at the antipode and is
//!   evaluated through expm1 and atanh so that the relative accuracy holds up to theta = pi.
//! - **S^2, exact fibre integral** (t < 1): S^2 = SO(3)/SO(2) and the angle metric of SO(3) makes R -> R e_3 a
//!   Riemannian submersion with geodesic fibres, so the S^2 kernel is the SO(3) kernel averaged over a fibre:
//!   k_t(theta) = (2/pi) int_0^{pi/2} k^{SO(3)}_t(s(phi)) dphi with cos(s/2) = cos(phi) cos(theta/2) (this is
//!   the Mehler-Dirichlet formula for P_l). With the exact image form of the SO(3) kernel (see
//!   [`super::so3`]) and the substitution s^2 = theta^2 + 4 t v^2 the integrand becomes e^{-v^2} times a smooth
//!   positive function, integrated by a 24-point Gauss-Legendre rule on [0, min(V, 7)], V^2 = (pi^2 -
//!   theta^2)/4t. It is exact up to quadrature error (about 1e-14 relative; checked against 400-digit series
//!   during development and against the series in the tests) for every theta, including the antipode. Where
//!   they are as accurate and cheaper, `Auto` uses the series (see above) or the parametrix (theta <= 1.5).
//! - **Parametrix, any d** (used by `Auto` for d >= 4 at t < 0.2, and on S^2 for theta <= 1.5): the
//!   Minakshisundaram expansion k_t(theta) = |S^d| (4 pi t)^{-d/2} e^{-theta^2/4t} (theta/sin theta)^a e^{a^2 t}
//!   sum_j t^j V_j(theta), a = (d-1)/2, V_0 = 1, with the transport recursion
//!   r V_j' + j V_j = V_{j-1}'' + (2a/r) V_{j-1}' + a(1-a)(1/sin^2 r - 1/r^2) V_{j-1}, solved exactly in power
//!   series of r^2 (250 terms; 1/sin^2 r - 1/r^2 = sum_i 2(2i+1) zeta(2i+2) r^{2i}/pi^{2i+2}). For odd d the sum
//!   over j terminates (j < a) and is exact up to the images; for even d it is asymptotic and truncated at its
//!   smallest term. It is trusted where theta <= 2.85, pi (pi - theta)/t >= 36 and the last term is below
//!   1e-13 of the sum; there it agrees with the exact S^2 and S^3 forms to 1e-13 relative (tests).
//! - **d >= 4, antipodal cap**: where neither the parametrix nor the series is trusted (theta within about
//!   max(36 t/pi, 0.3) of pi at t < 0.08), log k is continued from the last trusted angle theta_b with the
//!   leading conjugate-point behaviour G(psi) = -(pi^2 + psi^2)/4t + ln(I_nu(x)/x^nu), psi = pi - theta,
//!   x = pi psi/2t, nu = (d-2)/2 (the two images meeting at the antipode; sinh(x)/x on S^3), plus a quadratic
//!   term matching dlog/dtheta at theta_b and keeping it 0 at pi. Measured against 400-digit series on S^4 and
//!   S^5 for t in [1e-3, 0.03]: absolute error of log k below 0.1 (the density within 10%) on values of log k
//!   below -60, and relative error of dlog/dtheta below 3e-2. The density there is below e^{-theta_b^2/4t}
//!   relative to its maximum. For d >= 4 and t in [0.03, 0.2] near the antipode the series is used with a
//!   relative error up to about 1e-8.
//!
//! Accuracy (measured by `tests/heat.rs` and printed there): the angle's density integrates to 1 within 1e-14
//! for t in [1e-5, 1e2] on S^2, S^3, S^5; the series and short-time forms agree to 4e-13 in log k in their
//! overlap; scores agree with central finite differences to 1e-9. Per-point cost (release, one core): S^3 and
//! SO(3) about 0.1 us, S^2 0.1 to 4 us (fibre integral), S^d with d >= 4 up to about 5 us.
//!
//! # Batched evaluation
//!
//! The tensor functions evaluate the one-dimensional function of theta per element in f64 on the CPU (rayon),
//! then move the result to the input's dtype and device: exact to f64 rounding whatever the input dtype, at
//! the price of a host round trip. `log_density_t` and `log_density_angle_t` are differentiable in the
//! points (or the angle) through a first-order term dlog/dtheta (theta - theta.detach()); `t` carries no
//! gradient and second derivatives are not provided.
//!
//! # Sampling
//!
//! The angle is drawn from its law k_t(theta) sin^{d-1}(theta) / int_0^pi sin^{d-1} by inverting its CDF: a
//! table of 128 panels (8-point Gauss-Legendre each) on [0, min(pi, sqrt(2t)(sqrt(d) + 9))] is built once per t
//! and cached, and each draw solves F(theta) = u inside its panel by safeguarded Newton steps to 1e-14 of the
//! panel width. The direction is uniform in the unit tangent sphere at x.

use super::so3::{image_ratio, log_c_so3};
use crate::quadrature::GaussLegendre;
use crate::{Result, ScoreError};
use geom::{Manifold, Sphere, TensorManifold};
use nalgebra::DVector;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::f64::consts::PI;
use std::sync::{Arc, Mutex};
use tch::{Device, Kind, Tensor};

/// Time at or above which the S^2 kernel uses its series.
const T_SERIES_S2: f64 = 1.0;
/// Time at or above which the S^3 kernel uses its series.
const T_SERIES_S3: f64 = 0.5;
/// Time at or above which the S^d kernel, d >= 4, uses its series everywhere.
const T_SERIES_GENERAL: f64 = 0.2;
/// Gauss-Legendre nodes of the S^2 fibre integral (24 give about 2e-14 relative, checked against 128).
const FIBRE_NODES: usize = 24;
/// Upper cut of the fibre integral in v (e^{-49} is below f64 resolution).
const FIBRE_V_CUT: f64 = 7.0;
/// Terms of the parametrix power series in r^2.
const PARAMETRIX_K: usize = 250;
/// Largest order of the parametrix series in t for even d.
const PARAMETRIX_J_EVEN: usize = 24;
/// Largest angle at which the parametrix power series is trusted.
const PARAMETRIX_THETA_MAX: f64 = 2.85;
/// Smallest pi (pi - theta)/t at which the parametrix (which omits the images) is trusted.
const PARAMETRIX_IMAGE_EXPONENT: f64 = 36.0;
/// On S^2 at t < 1, the series is used where t >= this and theta^2/4t <= [`S2_SERIES_EXPONENT`].
const S2_SERIES_MIN_T: f64 = 0.02;
/// See [`S2_SERIES_MIN_T`].
const S2_SERIES_EXPONENT: f64 = 10.0;
/// On S^2 at small t, the parametrix is used up to this angle where trusted (cheaper than the fibre integral).
const S2_PARAMETRIX_THETA_MAX: f64 = 1.5;
/// Largest theta^2/4t at which the series is used in the fallback region of d >= 4.
const SERIES_FALLBACK_EXPONENT: f64 = 30.0;

/// Which representation of a heat kernel to evaluate (the default `Auto` picks the accurate one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KernelForm {
    /// The representation the kernel uses by default at this (angle, time): see the module docs.
    #[default]
    Auto,
    /// The eigenfunction series, at any time (inaccurate where the kernel is far below its maximum).
    Series,
    /// The short-time form used by `Auto` at small t: exact image/fibre forms for S^2, S^3 and SO(3), the
    /// parametrix for S^d with d >= 4 (`None` where it is not trusted).
    ShortTime,
    /// The Minakshisundaram parametrix (sphere only, any d), `None` where it is not trusted. For d = 2, 3 it
    /// is an independent check of the exact forms.
    Parametrix,
}

/// log k_t at one angle, with its derivative in the angle.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AngleLogDensity {
    /// log k_t(theta), w.r.t. the uniform probability (or Haar probability) measure.
    pub log_density: f64,
    /// d/dtheta log k_t(theta).
    pub dlog_dangle: f64,
}

impl AngleLogDensity {
    /// (log density, derivative) as a pair.
    pub fn pair(self) -> (f64, f64) {
        (self.log_density, self.dlog_dangle)
    }
}

/// The heat kernel of S^d (the sphere in R^{d+1}), d >= 2, for Brownian motion with generator the
/// Laplace-Beltrami operator (dX = sqrt(2) dB), as a density w.r.t. the uniform probability measure.
///
/// See the [module documentation](self) for the formulas, switch points and accuracy.
///
/// ```
/// use scores::heat::sphere::SphereHeatKernel;
///
/// let s2 = SphereHeatKernel::new(2).unwrap();
/// // At large t the kernel tends to the uniform density 1.
/// assert!(s2.log_density_angle(1.0, 50.0).abs() < 1e-12);
/// // At small t it is the Euclidean heat kernel times the area 4 pi near theta = 0.
/// let t = 1e-4;
/// let gauss = (4.0 * std::f64::consts::PI).ln() - (4.0 * std::f64::consts::PI * t).ln();
/// assert!((s2.log_density_angle(0.0, t) - gauss).abs() < 1e-3);
/// ```
#[derive(Debug, Clone)]
pub struct SphereHeatKernel {
    d: usize,
    space: Sphere,
    parametrix: Parametrix,
    tables: TableCache,
}

impl SphereHeatKernel {
    /// The heat kernel of S^d; errors (naming `d`) unless d >= 2.
    pub fn new(d: usize) -> Result<Self> {
        if d < 2 {
            return Err(ScoreError::invalid("d", d, "an intrinsic dimension d >= 2 (S^d in R^{d+1})"));
        }
        let space = Sphere::new(d + 1)?;
        Ok(SphereHeatKernel { d, space, parametrix: Parametrix::new(d), tables: TableCache::default() })
    }

    /// The intrinsic dimension d (the ambient dimension is d + 1).
    pub fn d(&self) -> usize {
        self.d
    }

    /// The geometry of S^d (a `geom::Sphere` in R^{d+1}).
    pub fn space(&self) -> &Sphere {
        &self.space
    }

    /// Errors (naming `t`) unless t is finite and positive.
    pub fn check_time(&self, t: f64) -> Result<()> {
        check_time(t)
    }

    /// log k_t(theta) as a function of the geodesic angle theta (any real; reduced to [0, pi] by evenness
    /// and 2 pi-periodicity), w.r.t. the uniform probability measure, generator Delta.
    ///
    /// Panics naming the argument if `theta` is not finite or `t` is not finite and positive.
    pub fn log_density_angle(&self, theta: f64, t: f64) -> f64 {
        assert_angle_time("SphereHeatKernel::log_density_angle", "theta", theta, t);
        self.eval(theta, t).log_density
    }

    /// d/dtheta log k_t(theta) (generator Delta); zero at theta = 0 and theta = pi.
    ///
    /// Panics naming the argument if `theta` is not finite or `t` is not finite and positive.
    pub fn dlog_density_dtheta(&self, theta: f64, t: f64) -> f64 {
        assert_angle_time("SphereHeatKernel::dlog_density_dtheta", "theta", theta, t);
        self.eval(theta, t).dlog_dangle
    }

    /// log k_t(theta) and its derivative in one call (generator Delta, uniform probability measure).
    ///
    /// Panics naming the argument if `theta` is not finite or `t` is not finite and positive.
    pub fn log_density_angle_and_derivative(&self, theta: f64, t: f64) -> AngleLogDensity {
        assert_angle_time("SphereHeatKernel::log_density_angle_and_derivative", "theta", theta, t);
        self.eval(theta, t)
    }

    /// log k_t(theta) and its derivative in a chosen representation (for tests and diagnostics);
    /// `None` where that representation is not available or not trusted (see [`KernelForm`]).
    ///
    /// Panics naming the argument if `theta` is not finite or `t` is not finite and positive.
    pub fn log_density_angle_form(&self, theta: f64, t: f64, form: KernelForm) -> Option<AngleLogDensity> {
        assert_angle_time("SphereHeatKernel::log_density_angle_form", "theta", theta, t);
        let (theta, sign) = reduce_angle(theta);
        let v = match form {
            KernelForm::Auto => Some(self.eval_reduced(theta, t)),
            KernelForm::Series => series_sphere(self.d, theta, t),
            KernelForm::ShortTime => match self.d {
                2 => Some(fibre_s2(theta, t)),
                3 => Some(images_s3(theta, t)),
                _ => self.parametrix.eval(theta, t),
            },
            KernelForm::Parametrix => self.parametrix.eval(theta, t),
        }?;
        Some(AngleLogDensity { log_density: v.log_density, dlog_dangle: sign * v.dlog_dangle })
    }

    /// The density of the angle theta = dist(x, X_t) on [0, pi] w.r.t. dtheta:
    /// k_t(theta) sin^{d-1}(theta) / int_0^pi sin^{d-1} (generator Delta).
    ///
    /// Panics naming the argument if `theta` is not finite or `t` is not finite and positive.
    pub fn angle_density(&self, theta: f64, t: f64) -> f64 {
        assert_angle_time("SphereHeatKernel::angle_density", "theta", theta, t);
        self.log_angle_density(theta, t).exp()
    }

    /// log k_t(x, y) w.r.t. the uniform probability measure (generator Delta).
    ///
    /// Panics naming the argument on non-finite or wrongly sized points, or a non-finite or non-positive `t`.
    pub fn log_density(&self, x: &DVector<f64>, y: &DVector<f64>, t: f64) -> f64 {
        assert_time("SphereHeatKernel::log_density", t);
        let theta = self.space.dist(x, y);
        self.eval(theta, t).log_density
    }

    /// The intrinsic score grad_x log k_t(x, y), a tangent vector at x (generator Delta):
    /// dlog k/dtheta * grad_x theta with grad_x theta = -log_x(y)/theta. It is 0 at y = x and at y = -x.
    ///
    /// Panics naming the argument on non-finite or wrongly sized points, or a non-finite or non-positive `t`.
    pub fn score(&self, x: &DVector<f64>, y: &DVector<f64>, t: f64) -> DVector<f64> {
        assert_time("SphereHeatKernel::score", t);
        let log = self.space.log(x, y);
        let theta = log.norm();
        if theta == 0.0 {
            return DVector::zeros(x.len());
        }
        let g = self.eval(theta, t).dlog_dangle;
        log * (-g / theta)
    }

    /// One exact draw of X_t given X_0 = x (generator Delta): the angle from its law (cached inverse-CDF
    /// table per t, see the module docs), the direction uniform in the tangent space at x.
    ///
    /// Panics naming the argument on a non-finite or wrongly sized `x`, or a non-finite or non-positive `t`.
    pub fn sample<R: Rng + ?Sized>(&self, x: &DVector<f64>, t: f64, rng: &mut R) -> DVector<f64> {
        assert_time("SphereHeatKernel::sample", t);
        geom::check::assert_finite("SphereHeatKernel::sample", "x", x.as_slice());
        assert!(x.len() == self.d + 1, "SphereHeatKernel::sample: `x` has length {}, expected {}", x.len(), self.d + 1);
        let table = self.table(t);
        let theta = table.sample(rng.random::<f64>(), |th| self.log_angle_density(th, t).exp());
        loop {
            let g = DVector::from_fn(x.len(), |_, _| -> f64 { StandardNormal.sample(rng) });
            if let Some(y) = rotate_towards(x, &g, theta) {
                return y;
            }
        }
    }

    /// One draw of the angle theta = dist(x, X_t) from its law (see [`Self::angle_density`]).
    ///
    /// Panics naming `t` if it is not finite and positive.
    pub fn sample_angle<R: Rng + ?Sized>(&self, t: f64, rng: &mut R) -> f64 {
        assert_time("SphereHeatKernel::sample_angle", t);
        let table = self.table(t);
        table.sample(rng.random::<f64>(), |th| self.log_angle_density(th, t).exp())
    }

    /// Batched log k_t(x_i, y_i) w.r.t. the uniform probability measure (generator Delta).
    ///
    /// `x, y: [B, d+1]` and `t: [B]` (or anything broadcastable to `[B]`), any float dtype and device;
    /// returns `[B]` with the dtype and device of `x`. Evaluated per point in f64 on the CPU (rayon);
    /// differentiable in `x` and `y` (first order, through theta), not in `t`. Non-positive or NaN times give
    /// NaN. Panics (naming the argument) on a shape mismatch.
    pub fn log_density_t(&self, x: &Tensor, y: &Tensor, t: &Tensor) -> Tensor {
        let theta = self.space.dist_t(x, y);
        let (v, g) = map_angle_t(&theta, t, |th, tt| self.eval_unchecked(th, tt).pair());
        attach_first_order(&v, &g, &theta)
    }

    /// Batched intrinsic score grad_x log k_t(x_i, y_i), tangent at x_i (generator Delta).
    ///
    /// `x, y: [B, d+1]`, `t: [B]`, any float dtype and device; returns `[B, d+1]` with the dtype and device
    /// of `x`. The factor (dlog k/dtheta)/theta is computed per point in f64 on the CPU (rayon) and multiplies
    /// -log_x(y) computed by `geom` on the input's device; no gradient flows through the factor.
    pub fn score_t(&self, x: &Tensor, y: &Tensor, t: &Tensor) -> Tensor {
        let log = self.space.log_t(x, y);
        let theta = self.space.dist_t(x, y);
        let (factor, _) =
            map_angle_t(&theta, t, |th, tt| (score_factor(self.eval_unchecked(th, tt).dlog_dangle, th), 0.0));
        log * (-factor).unsqueeze(-1)
    }

    /// Batched log k_t(theta) as a function of the angle (generator Delta, uniform probability measure).
    ///
    /// `theta` of any shape and float dtype, `t` broadcastable against it (pass `Tensor::from(t)` for one
    /// time); returns the broadcast shape with the dtype and device of `theta`. Evaluated per element in f64
    /// on the CPU (rayon); differentiable in `theta` (first order), not in `t`.
    pub fn log_density_angle_t(&self, theta: &Tensor, t: &Tensor) -> Tensor {
        let (v, g) = map_angle_t(theta, t, |th, tt| self.eval_unchecked(th, tt).pair());
        attach_first_order(&v, &g, theta)
    }

    /// Batched exact draws of X_t given X_0 = x_i, all at the same time `t` (generator Delta).
    ///
    /// `x: [B, d+1]`, any float dtype and device; returns `[B, d+1]` with the dtype and device of `x`. The
    /// randomness comes from libtorch's CPU generator (seed it with `tch::manual_seed`): uniforms for the
    /// angles, inverted per point in f64, and Gaussians for the directions. Panics naming `t` if it is not
    /// finite and positive.
    pub fn sample_t(&self, x: &Tensor, t: f64) -> Tensor {
        assert_time("SphereHeatKernel::sample_t", t);
        geom::check::assert_batch_shape("SphereHeatKernel::sample_t", "x", x, &[self.d as i64 + 1]);
        let (kind, device) = (x.kind(), x.device());
        let b = x.size()[0];
        let x64 = x.detach().to_kind(Kind::Double).to_device(Device::Cpu);
        let theta = self.sample_angles_t(b, t);
        let g = Tensor::randn([b, self.d as i64 + 1], (Kind::Double, Device::Cpu));
        let v = &g - (&g * &x64).sum_dim_intlist([-1i64].as_slice(), true, None) * &x64;
        let v = &v / v.norm_scalaropt_dim(2.0, [-1i64].as_slice(), true).clamp_min(1e-300);
        let y = &x64 * theta.cos().unsqueeze(-1) + v * theta.sin().unsqueeze(-1);
        let y = &y / y.norm_scalaropt_dim(2.0, [-1i64].as_slice(), true);
        y.to_kind(kind).to_device(device)
    }

    fn sample_angles_t(&self, b: i64, t: f64) -> Tensor {
        let u = tensor_to_vec(&Tensor::rand([b], (Kind::Double, Device::Cpu)));
        let table = self.table(t);
        let theta: Vec<f64> =
            u.par_iter().with_min_len(16).map(|&u| table.sample(u, |th| self.log_angle_density(th, t).exp())).collect();
        Tensor::from_slice(&theta)
    }

    fn table(&self, t: f64) -> Arc<AngleTable> {
        let hi = (2.0 * t).sqrt() * ((self.d as f64).sqrt() + 9.0);
        self.tables.get_or_build(t, || AngleTable::new(|th| self.log_angle_density(th, t).exp(), hi.min(PI)))
    }

    /// log of the angle's density w.r.t. dtheta.
    fn log_angle_density(&self, theta: f64, t: f64) -> f64 {
        let (th, _) = reduce_angle(theta);
        let s = th.sin();
        if s <= 0.0 {
            return f64::NEG_INFINITY;
        }
        self.eval_reduced(th, t).log_density + (self.d as f64 - 1.0) * s.ln() - log_angle_normaliser(self.d)
    }

    /// Evaluation without argument checks: NaN for a NaN angle or a non-positive time.
    fn eval_unchecked(&self, theta: f64, t: f64) -> AngleLogDensity {
        if theta.is_nan() || t.is_nan() || t <= 0.0 || theta.is_infinite() || t.is_infinite() {
            return AngleLogDensity { log_density: f64::NAN, dlog_dangle: f64::NAN };
        }
        self.eval(theta, t)
    }

    fn eval(&self, theta: f64, t: f64) -> AngleLogDensity {
        let (th, sign) = reduce_angle(theta);
        let v = self.eval_reduced(th, t);
        AngleLogDensity { log_density: v.log_density, dlog_dangle: sign * v.dlog_dangle }
    }

    /// The `Auto` representation on theta in [0, pi].
    fn eval_reduced(&self, theta: f64, t: f64) -> AngleLogDensity {
        match self.d {
            2 if t < T_SERIES_S2 => self.eval_s2_small_t(theta, t),
            3 if t < T_SERIES_S3 => images_s3(theta, t),
            2 | 3 => series_at_large_t(self.d, theta, t),
            _ if t >= T_SERIES_GENERAL => series_at_large_t(self.d, theta, t),
            _ => self.eval_general_small_t(theta, t),
        }
    }

    /// S^2 and t < 1: the exact fibre integral, with two cheaper forms where they are as accurate (checked
    /// against it by the tests): the series where theta^2/4t <= 10 and t >= 0.02, the parametrix for
    /// theta <= 1.5 where it is trusted.
    fn eval_s2_small_t(&self, theta: f64, t: f64) -> AngleLogDensity {
        if t >= S2_SERIES_MIN_T && theta * theta <= 4.0 * S2_SERIES_EXPONENT * t {
            if let Some(v) = series_sphere(2, theta, t) {
                return v;
            }
        }
        if theta <= S2_PARAMETRIX_THETA_MAX {
            if let Some(v) = self.parametrix.eval(theta, t) {
                return v;
            }
        }
        fibre_s2(theta, t)
    }

    /// d >= 4 and t < 0.2: parametrix, else series where accurate, else continuation into the antipodal cap.
    fn eval_general_small_t(&self, theta: f64, t: f64) -> AngleLogDensity {
        if let Some(v) = self.parametrix.eval(theta, t) {
            return v;
        }
        if theta * theta / (4.0 * t) <= SERIES_FALLBACK_EXPONENT {
            if let Some(v) = series_sphere(self.d, theta, t) {
                return v;
            }
        }
        // The last trusted angle theta_b (independent of theta): where the parametrix's own limits end if it is
        // trusted there, else by bisection between the series limit theta_s and that candidate.
        let theta_s = (4.0 * SERIES_FALLBACK_EXPONENT * t).sqrt().min(PI);
        let candidate = PARAMETRIX_THETA_MAX.min(PI - PARAMETRIX_IMAGE_EXPONENT * t / PI) * (1.0 - 1e-12);
        let lo = if self.parametrix.eval(candidate, t).is_some() {
            candidate
        } else {
            let (mut lo, mut hi) = (theta_s, candidate.max(theta_s));
            for _ in 0..40 {
                let mid = 0.5 * (lo + hi);
                if self.parametrix.eval(mid, t).is_some() {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            lo
        };
        let base = self
            .parametrix
            .eval(lo, t)
            .or_else(|| series_sphere(self.d, lo, t))
            .unwrap_or(AngleLogDensity { log_density: 0.0, dlog_dangle: 0.0 });
        continue_to_antipode(base, self.d, lo, theta, t)
    }
}

/// Extends log k beyond the last trusted angle `theta_b` into the antipodal cap with the model
/// G(psi) = -(pi^2 + psi^2)/4t + ln(I_nu(x)/x^nu), x = pi psi/2t, nu = (d-2)/2, psi = pi - theta: the leading
/// short-time behaviour near the conjugate point (the two images meeting at the antipode, with the focusing
/// of the (d-1)-sphere of geodesics; it is exact to leading order for odd d, e.g. sinh(x)/x on S^3), plus a
/// term c (psi_b^2 - psi^2)/(2 psi_b) that matches the derivative at theta_b and keeps dlog/dtheta = 0 at pi.
fn continue_to_antipode(base: AngleLogDensity, d: usize, theta_b: f64, theta: f64, t: f64) -> AngleLogDensity {
    let (psi_b, psi) = (PI - theta_b, PI - theta);
    if psi_b <= 0.0 {
        return base;
    }
    let nu = 0.5 * (d as f64 - 2.0);
    // (G(psi), dG/dpsi), up to a constant.
    let model = |psi: f64| {
        let x = PI * psi / (2.0 * t);
        let (log_i, ratio) = log_bessel_i_scaled(nu, x);
        (-(PI * PI + psi * psi) / (4.0 * t) + log_i, -psi / (2.0 * t) + PI / (2.0 * t) * ratio)
    };
    let (g_b, dg_b) = model(psi_b);
    let (g, dg) = model(psi);
    // d/dtheta = -d/dpsi.
    let c = base.dlog_dangle + dg_b;
    AngleLogDensity {
        log_density: base.log_density + (g - g_b) + c * (psi_b * psi_b - psi * psi) / (2.0 * psi_b),
        dlog_dangle: -dg + c * psi / psi_b,
    }
}

/// (ln(I_nu(x)/x^nu) + const, I_{nu+1}(x)/I_nu(x)) for nu >= 0 a multiple of 1/2 and x >= 0: the power series
/// for moderate x, the large-argument expansion beyond. The constant is nu ln 2 + ln Gamma(nu + 1).
fn log_bessel_i_scaled(nu: f64, x: f64) -> (f64, f64) {
    let switch = 40.0 + nu * nu;
    if x <= switch {
        // T_mu = sum_k (x^2/4)^k Gamma(mu+1)/(k! Gamma(k+mu+1)), so that I_mu(x) = (x/2)^mu T_mu / Gamma(mu+1).
        let series = |mu: f64| {
            let q = 0.25 * x * x;
            let (mut term, mut sum) = (1.0, 1.0);
            for k in 1..400 {
                let kf = k as f64;
                term *= q / (kf * (kf + mu));
                sum += term;
                if term < 1e-17 * sum {
                    break;
                }
            }
            sum
        };
        let (t0, t1) = (series(nu), series(nu + 1.0));
        (t0.ln(), x * t1 / (2.0 * (nu + 1.0) * t0))
    } else {
        // I_mu(x) ~ e^x / sqrt(2 pi x) sum_k (-1)^k a_k(mu) / x^k.
        let asym = |mu: f64| {
            let m4 = 4.0 * mu * mu;
            let (mut term, mut sum) = (1.0, 1.0);
            for k in 1..60 {
                let kf = k as f64;
                let next = -term * (m4 - (2.0 * kf - 1.0).powi(2)) / (8.0 * kf * x);
                if next.abs() > term.abs() {
                    break;
                }
                term = next;
                sum += term;
                if term.abs() < 1e-17 * sum.abs() {
                    break;
                }
            }
            sum
        };
        let (a0, a1) = (asym(nu), asym(nu + 1.0));
        let log_i = x - 0.5 * (2.0 * PI * x).ln() + a0.ln() - nu * x.ln();
        let constant = nu * std::f64::consts::LN_2 + ln_gamma_half((2.0 * nu + 2.0).round() as usize);
        (log_i + constant, a1 / a0)
    }
}

/// The series at large t, where it is accurate for every angle.
fn series_at_large_t(d: usize, theta: f64, t: f64) -> AngleLogDensity {
    series_sphere(d, theta, t).unwrap_or(AngleLogDensity { log_density: f64::NEG_INFINITY, dlog_dangle: 0.0 })
}

// ---------------------------------------------------------------------------------------------------------
// Argument checks and small shared helpers.
// ---------------------------------------------------------------------------------------------------------

/// Errors (naming `t`) unless t is finite and positive.
pub(crate) fn check_time(t: f64) -> Result<()> {
    if t.is_finite() && t > 0.0 {
        Ok(())
    } else {
        Err(ScoreError::invalid("t", t, "a finite time t > 0"))
    }
}

#[track_caller]
pub(crate) fn assert_time(op: &str, t: f64) {
    assert!(t.is_finite() && t > 0.0, "{op}: argument `t` = {t} must be finite and positive");
}

#[track_caller]
pub(crate) fn assert_angle_time(op: &str, name: &str, angle: f64, t: f64) {
    assert!(angle.is_finite(), "{op}: argument `{name}` = {angle} must be finite");
    assert_time(op, t);
}

/// Reduces an angle to [0, pi] by 2 pi-periodicity and evenness; the sign maps derivatives back.
pub(crate) fn reduce_angle(theta: f64) -> (f64, f64) {
    if (0.0..=PI).contains(&theta) {
        return (theta, 1.0);
    }
    let r = theta.rem_euclid(2.0 * PI);
    if r <= PI {
        (r, 1.0)
    } else {
        (2.0 * PI - r, -1.0)
    }
}

/// (dlog k/dtheta)/theta, the factor of -log_x(y) in the score (0 at theta = 0, where log_x(y) = 0).
pub(crate) fn score_factor(g: f64, theta: f64) -> f64 {
    if theta > 0.0 {
        g / theta
    } else {
        0.0
    }
}

/// The point at angle `theta` from x in the direction of the tangent part of `g`; `None` if that part is tiny.
fn rotate_towards(x: &DVector<f64>, g: &DVector<f64>, theta: f64) -> Option<DVector<f64>> {
    let v = g - x * x.dot(g);
    let n = v.norm();
    if n < 1e-8 {
        return None;
    }
    let y = x * theta.cos() + v * (theta.sin() / n);
    let ny = y.norm();
    Some(y / ny)
}

/// ln Gamma(n/2) for an integer n >= 1.
fn ln_gamma_half(n: usize) -> f64 {
    geom::special::ln_gamma(0.5 * n as f64)
}

/// log |S^d| = log(2 pi^{(d+1)/2} / Gamma((d+1)/2)).
fn log_volume(d: usize) -> f64 {
    geom::special::ln_sphere_area(d + 1)
}

/// log int_0^pi sin^{d-1} = log(sqrt(pi) Gamma(d/2) / Gamma((d+1)/2)).
fn log_angle_normaliser(d: usize) -> f64 {
    0.5 * PI.ln() + ln_gamma_half(d) - ln_gamma_half(d + 1)
}

/// 1/x - cot x, with a Taylor branch near 0.
pub(crate) fn one_over_minus_cot(x: f64) -> f64 {
    if x.abs() < 0.1 {
        let x2 = x * x;
        x * (1.0 / 3.0 + x2 * (1.0 / 45.0 + x2 * (2.0 / 945.0 + x2 * (1.0 / 4725.0 + x2 * 2.0 / 93555.0))))
    } else {
        1.0 / x - 1.0 / x.tan()
    }
}

/// ln(sin x / x) for |x| < pi, with a Taylor branch near 0.
pub(crate) fn ln_sinc(x: f64) -> f64 {
    if x.abs() < 1e-3 {
        let x2 = x * x;
        -x2 / 6.0 - x2 * x2 / 180.0
    } else {
        (x.sin() / x).ln()
    }
}

/// sin x / x (a polynomial for |x| < 1/2, error below 1e-16).
fn sinc(x: f64) -> f64 {
    if x.abs() < 0.5 {
        let x2 = x * x;
        1.0 - x2 / 6.0
            * (1.0 - x2 / 20.0 * (1.0 - x2 / 42.0 * (1.0 - x2 / 72.0 * (1.0 - x2 / 110.0 * (1.0 - x2 / 156.0)))))
    } else {
        x.sin() / x
    }
}

/// expm1(u)/u.
fn expm1_over(u: f64) -> f64 {
    if u.abs() < 1e-5 {
        1.0 + u * (0.5 + u / 6.0)
    } else {
        u.exp_m1() / u
    }
}

/// d/du log(expm1(u)/u) = 1/(1 - e^{-u}) - 1/u.
fn dlog_expm1_over(u: f64) -> f64 {
    if u.abs() < 0.1 {
        let u2 = u * u;
        0.5 + u * (1.0 / 12.0 - u2 * (1.0 / 720.0 - u2 * (1.0 / 30240.0 - u2 / 1209600.0)))
    } else {
        -1.0 / (-u).exp_m1() - 1.0 / u
    }
}

/// artanh(z)/z and its derivative, for 0 <= z <= 1/2.
fn atanh_over(z: f64) -> (f64, f64) {
    if z < 0.1 {
        let z2 = z * z;
        let (mut v, mut dv, mut p) = (1.0, 0.0, 1.0);
        for k in 1..=9 {
            let kf = k as f64;
            dv += 2.0 * kf * p * z / (2.0 * kf + 1.0);
            p *= z2;
            v += p / (2.0 * kf + 1.0);
        }
        (v, dv)
    } else {
        let a = z.atanh();
        (a / z, (z / (1.0 - z * z) - a) / (z * z))
    }
}

// ---------------------------------------------------------------------------------------------------------
// The series.
// ---------------------------------------------------------------------------------------------------------

/// The Gegenbauer series and its derivative on theta in [0, pi]; `None` where it is not positive.
fn series_sphere(d: usize, theta: f64, t: f64) -> Option<AngleLogDensity> {
    let df = d as f64;
    let lam = 0.5 * (df - 1.0);
    let x = theta.cos();
    // C_l^lam and C_{l-1}^{lam+1} at l = 1.
    let (mut c_prev, mut c) = (1.0, 2.0 * lam * x);
    let (mut e_prev, mut e) = (0.0, 1.0);
    let (mut sum, mut dsum) = (1.0, 0.0);
    let mut l = 1usize;
    loop {
        let lf = l as f64;
        let exponent = lf * (lf + df - 1.0) * t;
        let w = (-exponent).exp();
        sum += w * (2.0 * lf + df - 1.0) / (df - 1.0) * c;
        dsum += w * (2.0 * lf + df - 1.0) * e;
        if exponent > 40.0 + df * (2.0 * lf + df).ln() {
            break;
        }
        // C_{l+1}^lam and C_l^{lam+1} by the three-term recurrences.
        let c_next = (2.0 * (lf + lam) * x * c - (lf + 2.0 * lam - 1.0) * c_prev) / (lf + 1.0);
        let m = lf - 1.0; // e = C_m^{lam+1}
        let e_next = (2.0 * (m + lam + 1.0) * x * e - (m + 2.0 * lam + 1.0) * e_prev) / (m + 1.0);
        c_prev = c;
        c = c_next;
        e_prev = e;
        e = e_next;
        l += 1;
    }
    if sum > 0.0 && sum.is_finite() {
        Some(AngleLogDensity { log_density: sum.ln(), dlog_dangle: -theta.sin() * dsum / sum })
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------------------
// S^3: the exact image form.
// ---------------------------------------------------------------------------------------------------------

/// Number of image pairs kept (enough for t < 0.5: the next pair is below e^-150).
const S3_PAIRS: usize = 3;

/// log k and dlog/dtheta on S^3 from the image sum, theta in [0, pi].
fn images_s3(theta: f64, t: f64) -> AngleLogDensity {
    let log_c = t + 0.5 * PI.ln() - 4f64.ln() - 1.5 * t.ln();
    let gauss = -theta * theta / (4.0 * t);
    if theta <= 0.5 * PI {
        // k = C e^{-theta^2/4t} (theta / sin theta) N(theta), N = 1 + sum of (n, -n) pairs.
        let (n, dn) = image_ratio(theta, PI - theta, t, false);
        AngleLogDensity {
            log_density: log_c + gauss - ln_sinc(theta) + n.ln(),
            dlog_dangle: -theta / (2.0 * t) + one_over_minus_cot(theta) + dn / n,
        }
    } else {
        // psi = pi - theta; k = C e^{-theta^2/4t} (psi / sin psi) sum_n A_n with the pairs (n, -1-n).
        let psi = PI - theta;
        let (mut a_sum, mut da_sum) = (0.0, 0.0);
        for n in 0..=S3_PAIRS {
            let c = (2 * n + 1) as f64 * PI;
            let log_e = -(c - PI) * (c + PI - 2.0 * psi) / (4.0 * t);
            if log_e < -700.0 {
                break;
            }
            let (q, dq) = atanh_over(psi / c);
            let alpha = 2.0 / c * q - c / t;
            let dalpha = 2.0 / (c * c) * dq;
            let u = psi * alpha;
            let a = (c - psi) * log_e.exp() * (-alpha) * expm1_over(u);
            let dlog_a =
                -1.0 / (c - psi) + (c - PI) / (2.0 * t) + dalpha / alpha + dlog_expm1_over(u) * (alpha + psi * dalpha);
            a_sum += a;
            da_sum += a * dlog_a;
        }
        AngleLogDensity {
            log_density: log_c + gauss - ln_sinc(psi) + a_sum.ln(),
            dlog_dangle: -theta / (2.0 * t) - one_over_minus_cot(psi) - da_sum / a_sum,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// S^2: the exact fibre integral of the SO(3) kernel.
// ---------------------------------------------------------------------------------------------------------

/// The Gauss-Legendre rule of the fibre integral on [-1, 1].
fn fibre_rule() -> &'static GaussLegendre {
    static RULE: std::sync::OnceLock<GaussLegendre> = std::sync::OnceLock::new();
    RULE.get_or_init(|| GaussLegendre::new(FIBRE_NODES))
}

/// log k and dlog/dtheta on S^2 from k_t(theta) = (2/pi) int_0^{pi/2} k^{SO(3)}_t(s(phi)) dphi.
fn fibre_s2(theta: f64, t: f64) -> AngleLogDensity {
    let psi = PI - theta;
    let pre = (2.0 / PI).ln() + log_c_so3(t) - theta * theta / (4.0 * t);
    // pi^2 - theta^2, written through psi so that everything near the antipode uses the same psi.
    let gap = psi * (2.0 * PI - psi);
    if gap <= 0.0 {
        // theta = pi: the fibre collapses onto the rotations by pi, k^{S^2}(pi) = k^{SO(3)}(pi).
        let (n, _) = image_ratio(PI, 0.0, t, true);
        return AngleLogDensity {
            log_density: log_c_so3(t) - PI * PI / (4.0 * t) + PI.ln() + n.ln(),
            dlog_dangle: 0.0,
        };
    }
    let v_max = (gap / (4.0 * t)).sqrt().min(FIBRE_V_CUT);
    let rule = fibre_rule();
    let half = 0.5 * v_max;
    let tan_half_theta = (0.5 * theta).tan();
    let (mut total, mut weighted) = (0.0, 0.0);
    for (node, weight) in rule.nodes().iter().zip(rule.weights()) {
        let v = half * (node + 1.0);
        let w4 = 4.0 * t * v * v;
        let s = (theta * theta + w4).sqrt();
        let psi_s = ((gap - w4) / (PI + s)).max(0.0);
        let x = w4 / (2.0 * (s + theta));
        let jac = (2.0 * t * (s + theta) / (sinc(x) * (0.5 * (psi + psi_s)).sin())).sqrt();
        let (n, dn) = image_ratio(s, psi_s, t, true);
        let f = weight * half * (-v * v).exp() * n * jac;
        // d/ds log k^{SO(3)}(s) = -s/2t + 1/s - cot(s/2)/2 + dn/n, and ds/dtheta at fixed phi =
        // tan(theta/2)/tan(s/2).
        let half_s = 0.5 * s;
        let (g, ratio) = if theta <= 0.5 * PI {
            let tan_half_s = half_s.tan();
            let c1 = if half_s < 0.1 { 0.5 * one_over_minus_cot(half_s) } else { 1.0 / s - 0.5 / tan_half_s };
            (-s / (2.0 * t) + c1 + dn / n, tan_half_theta / tan_half_s)
        } else {
            let g = -s / (2.0 * t) + 0.5 * one_over_minus_cot(half_s) + dn / n;
            (g, (0.5 * psi_s).tan() / (0.5 * psi).tan())
        };
        total += f;
        weighted += f * g * ratio;
    }
    AngleLogDensity { log_density: pre + total.ln(), dlog_dangle: weighted / total }
}

// ---------------------------------------------------------------------------------------------------------
// The parametrix (Minakshisundaram expansion), any d.
// ---------------------------------------------------------------------------------------------------------

/// Power-series coefficients of the transport functions V_j(r) = sum_k v[j][k] r^{2k} (after the factor
/// e^{a^2 t}), for the expansion k = |S^d| (4 pi t)^{-d/2} e^{-r^2/4t} (r/sin r)^a e^{a^2 t} sum_j t^j V_j(r).
#[derive(Debug, Clone)]
struct Parametrix {
    d: usize,
    coef: Vec<Vec<f64>>,
    log_volume: f64,
}

impl Parametrix {
    fn new(d: usize) -> Self {
        let a = 0.5 * (d as f64 - 1.0);
        // Odd d: V_j = 0 for j >= a (the expansion terminates). Even d: asymptotic, truncated later.
        let j_max = if d % 2 == 1 { (d - 1) / 2 - 1 } else { PARAMETRIX_J_EVEN };
        let len = PARAMETRIX_K + j_max + 2;
        // h(r) = 1/sin^2 r - 1/r^2 = sum_i 2 (2i+1) zeta(2i+2) r^{2i} / pi^{2i+2}.
        let mut h = Vec::with_capacity(len);
        let mut pow = 1.0;
        for i in 0..len {
            pow /= PI * PI;
            h.push(2.0 * (2 * i + 1) as f64 * zeta_even(2 * i + 2) * pow);
        }
        let mut coef = vec![vec![0.0; len]; j_max + 1];
        coef[0][0] = 1.0;
        for j in 1..=j_max {
            for k in 0..len - j {
                let kf = k as f64;
                let mut s = (2.0 * kf + 2.0) * (2.0 * kf + 1.0 + 2.0 * a) * coef[j - 1][k + 1];
                let conv: f64 = (0..=k).map(|i| h[i] * coef[j - 1][k - i]).sum();
                s += a * (1.0 - a) * conv;
                coef[j][k] = s / (2.0 * kf + j as f64);
            }
        }
        Parametrix { d, coef, log_volume: log_volume(d) }
    }

    /// log k and dlog/dtheta, `None` where the expansion is not trusted (see the module docs).
    fn eval(&self, theta: f64, t: f64) -> Option<AngleLogDensity> {
        if theta > PARAMETRIX_THETA_MAX || PI * (PI - theta) / t < PARAMETRIX_IMAGE_EXPONENT {
            return None;
        }
        let r2 = theta * theta;
        // Terms needed for (theta/pi)^{2k} to fall far below rounding.
        let k_eff =
            if theta < 1e-3 { 8 } else { ((12.0 + 60.0 / (2.0 * (PI / theta).ln())) as usize).min(PARAMETRIX_K) };
        let (mut w, mut dw, mut tj) = (0.0, 0.0, 1.0);
        let mut last = f64::INFINITY;
        let mut converged = self.coef.len() == 1;
        for (j, row) in self.coef.iter().enumerate() {
            let (mut v, mut dv) = (0.0, 0.0);
            for k in (0..=k_eff).rev() {
                v = v * r2 + row[k];
            }
            for k in (1..=k_eff).rev() {
                dv = dv * r2 + 2.0 * k as f64 * row[k];
            }
            dv *= theta;
            let term = tj * v;
            if j > 0 && term.abs() > last {
                break; // the asymptotic series starts to diverge
            }
            w += term;
            dw += tj * dv;
            last = term.abs();
            if j + 1 == self.coef.len() && self.d % 2 == 1 {
                converged = true;
            }
            if last <= 1e-17 * w.abs() {
                converged = true;
                break;
            }
            tj *= t;
        }
        if !(converged || last <= 1e-13 * w.abs()) || w <= 0.0 {
            return None;
        }
        let a = 0.5 * (self.d as f64 - 1.0);
        let df = self.d as f64;
        Some(AngleLogDensity {
            log_density: self.log_volume - 0.5 * df * (4.0 * PI * t).ln() - r2 / (4.0 * t) + a * a * t
                - a * ln_sinc(theta)
                + w.ln(),
            dlog_dangle: -theta / (2.0 * t) + a * one_over_minus_cot(theta) + dw / w,
        })
    }
}

/// zeta(s) for an even s >= 2.
fn zeta_even(s: usize) -> f64 {
    match s {
        2 => PI * PI / 6.0,
        4 => PI.powi(4) / 90.0,
        _ => {
            let sf = s as f64;
            let n = 20usize;
            let head: f64 = (1..=n).map(|k| (k as f64).powf(-sf)).sum();
            let nf = n as f64;
            // Euler-Maclaurin tail.
            head + nf.powf(1.0 - sf) / (sf - 1.0) - 0.5 * nf.powf(-sf) + sf * nf.powf(-sf - 1.0) / 12.0
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Inverse-CDF sampling of an angle on [0, pi].
// ---------------------------------------------------------------------------------------------------------

/// Panels of an angle table.
const TABLE_PANELS: usize = 128;

/// A CDF table of an angle density on [0, hi]: panel edges, cumulative masses and a Gauss-Legendre rule.
#[derive(Debug)]
pub(crate) struct AngleTable {
    edges: Vec<f64>,
    cdf: Vec<f64>,
    rule: GaussLegendre,
}

impl AngleTable {
    /// Tabulates the CDF of `density` (w.r.t. dtheta) on [0, hi].
    pub(crate) fn new(density: impl Fn(f64) -> f64 + Sync, hi: f64) -> Self {
        let rule = GaussLegendre::new(8);
        let edges: Vec<f64> = (0..=TABLE_PANELS).map(|i| hi * i as f64 / TABLE_PANELS as f64).collect();
        let masses: Vec<f64> =
            (0..TABLE_PANELS).into_par_iter().map(|i| rule.integrate(&density, edges[i], edges[i + 1])).collect();
        let mut cdf = Vec::with_capacity(TABLE_PANELS + 1);
        cdf.push(0.0);
        for m in masses {
            let last = *cdf.last().unwrap_or(&0.0);
            cdf.push(last + m.max(0.0));
        }
        AngleTable { edges, cdf, rule }
    }

    /// The angle theta with F(theta) = u F(hi), by safeguarded Newton steps inside the panel.
    pub(crate) fn sample(&self, u: f64, density: impl Fn(f64) -> f64) -> f64 {
        let total = self.cdf[TABLE_PANELS];
        let target = u.clamp(0.0, 1.0) * total;
        let i = (self.cdf.partition_point(|&c| c <= target).max(1) - 1).min(TABLE_PANELS - 1);
        let (a, b) = (self.edges[i], self.edges[i + 1]);
        let mass = self.cdf[i + 1] - self.cdf[i];
        let r = target - self.cdf[i];
        if mass <= 0.0 {
            return 0.5 * (a + b);
        }
        let (mut lo, mut hi) = (a, b);
        let mut theta = a + (b - a) * (r / mass).clamp(0.0, 1.0);
        for _ in 0..60 {
            let f = self.rule.integrate(&density, a, theta) - r;
            if f > 0.0 {
                hi = theta;
            } else {
                lo = theta;
            }
            let p = density(theta);
            let mut next = if p > 0.0 { theta - f / p } else { f64::NAN };
            if !(next > lo && next < hi) {
                next = 0.5 * (lo + hi);
            }
            if (next - theta).abs() <= 1e-14 * (b - a) {
                return next;
            }
            theta = next;
        }
        theta
    }
}

/// A small cache of angle tables keyed by the time (bitwise).
#[derive(Default)]
pub(crate) struct TableCache(Mutex<Vec<(u64, Arc<AngleTable>)>>);

impl TableCache {
    const CAPACITY: usize = 16;

    pub(crate) fn get_or_build(&self, t: f64, build: impl FnOnce() -> AngleTable) -> Arc<AngleTable> {
        let key = t.to_bits();
        if let Some((_, table)) = self.lock().iter().find(|(k, _)| *k == key) {
            return Arc::clone(table);
        }
        let table = Arc::new(build());
        let mut cache = self.lock();
        if cache.len() >= Self::CAPACITY {
            cache.remove(0);
        }
        cache.push((key, Arc::clone(&table)));
        table
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Arc<AngleTable>)>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clone for TableCache {
    /// A fresh, empty cache.
    fn clone(&self) -> Self {
        TableCache::default()
    }
}

impl std::fmt::Debug for TableCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TableCache({} tables)", self.lock().len())
    }
}

// ---------------------------------------------------------------------------------------------------------
// Tensor helpers.
// ---------------------------------------------------------------------------------------------------------

/// The values of a tensor as a flat f64 vector (detached, on the CPU).
pub(crate) fn tensor_to_vec(x: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(x.detach().to_kind(Kind::Double).to_device(Device::Cpu).contiguous().view([-1]))
        .expect("heat kernel: tensor to Vec<f64>")
}

/// Evaluates `f(theta, t)` per element (broadcast) in f64 on the CPU with rayon; returns the two outputs
/// (value, derivative) with the broadcast shape and the dtype and device of `theta`, detached.
pub(crate) fn map_angle_t(theta: &Tensor, t: &Tensor, f: impl Fn(f64, f64) -> (f64, f64) + Sync) -> (Tensor, Tensor) {
    let (kind, device) = (theta.kind(), theta.device());
    let b = Tensor::broadcast_tensors(&[theta.detach(), t.detach().to_device(device)]);
    let shape = b[0].size();
    let th = tensor_to_vec(&b[0]);
    let tv = tensor_to_vec(&b[1]);
    let out: Vec<(f64, f64)> = th.par_iter().zip(tv.par_iter()).with_min_len(64).map(|(&a, &s)| f(a, s)).collect();
    let (v, g): (Vec<f64>, Vec<f64>) = out.into_iter().unzip();
    let back = |x: Vec<f64>| Tensor::from_slice(&x).view(shape.as_slice()).to_kind(kind).to_device(device);
    (back(v), back(g))
}

/// `value + g (theta - theta.detach())`: the value, with first derivative g through `theta` when it
/// requires grad.
pub(crate) fn attach_first_order(value: &Tensor, g: &Tensor, theta: &Tensor) -> Tensor {
    if theta.requires_grad() {
        value + g * (theta - theta.detach())
    } else {
        value.shallow_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bessel_ratio_is_continuous_across_its_switch() {
        for nu in [0.5, 1.0, 1.5, 3.0] {
            let x0 = 40.0 + nu * nu;
            let (a, ra) = log_bessel_i_scaled(nu, x0 * (1.0 - 1e-12));
            let (b, rb) = log_bessel_i_scaled(nu, x0 * (1.0 + 1e-12));
            assert!((a - b).abs() < 1e-10 && (ra - rb).abs() < 1e-12, "nu = {nu}: {a} {b} {ra} {rb}");
        }
        // I_{1/2}(x)/x^{1/2} is proportional to sinh(x)/x, and I_{3/2}/I_{1/2} = coth(x) - 1/x.
        let (l, r) = log_bessel_i_scaled(0.5, 2.0);
        let expected = (2.0f64.sinh() / 2.0).ln();
        assert!((l - expected).abs() < 1e-14 && (r - (1.0 / 2.0f64.tanh() - 0.5)).abs() < 1e-14);
    }

    #[test]
    fn image_ratio_branches_agree() {
        for t in [0.05, 0.3, 0.9] {
            for n in 1..=2 {
                // x = pi n a / t = 1 is the switch between the cosh/sinh and exponential forms.
                let a = t / (PI * n as f64);
                for alternating in [true, false] {
                    let lo = image_ratio(a * (1.0 - 1e-9), PI - a, t, alternating);
                    let hi = image_ratio(a * (1.0 + 1e-9), PI - a, t, alternating);
                    assert!((lo.0 - hi.0).abs() < 1e-12 && (lo.1 - hi.1).abs() < 1e-9, "{lo:?} {hi:?}");
                }
            }
        }
    }

    #[test]
    fn angles_reduce_to_zero_pi() {
        assert_eq!(reduce_angle(1.0), (1.0, 1.0));
        let (r, s) = reduce_angle(-1.0);
        assert!((r - 1.0).abs() < 1e-15 && s == -1.0);
        let (r, s) = reduce_angle(2.0 * PI - 0.5);
        assert!((r - 0.5).abs() < 1e-15 && s == -1.0);
    }
}
