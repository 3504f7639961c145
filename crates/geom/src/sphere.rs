//! The unit sphere S^{d-1} in R^d (any d >= 2) with the induced metric (`shared/design/MATH.md` 1).
//!
//! Formulas: project(x) = x/|x|; tangent_project(x, v) = v - <x,v> x;
//! exp_x(v) = cos|v| x + sin|v| v/|v|; log_x(y) = theta w/|w| with w = y - <x,y> x;
//! dist(x, y) = theta = atan2(|w|, <x,y>) in every dimension (|w| = sin theta is the sine of the angle
//! computed stably, without arccos).
//!
//! Conventions, shared by the per-point and the batched code so that both agree:
//! - Below a dtype-dependent threshold (eps^(1/4), about 1.2e-4 in f64 and 1.9e-2 in f32) sin(t)/t,
//!   cos(t) and t/sin(t) are replaced by their Taylor expansions.
//! - The cut locus: when |w| < eps^(1/2) and <x,y> <= 0, `log` returns theta u, where u is the unit
//!   tangent vector e_j - x_j x (normalised) built from the first coordinate axis j least aligned with x
//!   (smallest |x_j|). It is one of the minimising geodesics to -x.
//! - `exp` renormalises its result, so it stays on the sphere despite rounding.
//! - Per-point `project` errors on the zero vector; batched `project_t` maps every row whose largest
//!   |coordinate| is below the dtype's smallest normal number to e_1 = (1, 0, .., 0), with gradient 0.
//!   Rows are scaled by their largest |coordinate| first, so tiny and huge vectors project accurately.

use crate::check;
use crate::euclidean::{assert_point, check_len, dot, eps_of, from_flat_checked, norm_keepdim};
use crate::{GeomError, Manifold, Result, TensorManifold, TensorUniformSampler, UniformSampler};
use nalgebra::DVector;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::f64::consts::PI;
use tch::{Device, Kind, Tensor};

/// The unit sphere S^{d-1} = {x in R^d : |x| = 1}, intrinsic dimension d - 1.
///
/// ```
/// use geom::{Manifold, Sphere};
/// use nalgebra::DVector;
///
/// let s1 = Sphere::new(2).unwrap();
/// let x = DVector::from_vec(vec![1.0, 0.0]);
/// let y = DVector::from_vec(vec![0.0, 1.0]);
/// assert!((s1.dist(&x, &y) - std::f64::consts::FRAC_PI_2).abs() < 1e-15);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sphere {
    d: usize,
}

impl Sphere {
    /// S^{d-1} in R^d; errors (naming `d`) unless `d >= 2`.
    pub fn new(d: usize) -> Result<Self> {
        if d < 2 {
            return Err(GeomError::invalid("d", d, "an ambient dimension >= 2"));
        }
        Ok(Self { d })
    }

    /// The ambient dimension d.
    pub fn d(&self) -> usize {
        self.d
    }

    #[track_caller]
    fn assert_rows(&self, op: &str, a: (&str, &Tensor), b: (&str, &Tensor)) {
        check::assert_batch_shape(op, a.0, a.1, &[self.d as i64]);
        check::assert_batch_shape(op, b.0, b.1, &[self.d as i64]);
        check::assert_same_shape(op, a.1, b.1);
    }
}

impl Manifold for Sphere {
    type Point = DVector<f64>;

    fn name(&self) -> String {
        format!("S^{}", self.d - 1)
    }
    fn ambient_shape(&self) -> Vec<i64> {
        vec![self.d as i64]
    }
    fn dim(&self) -> usize {
        self.d - 1
    }
    fn injectivity_radius(&self) -> f64 {
        PI
    }
    /// x/|x|; errors naming `x` on a wrong length, a non-finite coordinate or the zero vector.
    fn project(&self, x: &DVector<f64>) -> Result<DVector<f64>> {
        check_len("x", x, self.d)?;
        check::check_finite("x", x.as_slice())?;
        normalize_vec(x).ok_or_else(|| GeomError::Undefined {
            op: "Sphere::project".into(),
            arg: "x".into(),
            reason: "the zero vector has no closest point on the sphere".into(),
        })
    }
    fn tangent_project(&self, x: &DVector<f64>, v: &DVector<f64>) -> DVector<f64> {
        assert_point("Sphere::tangent_project", "x", x, self.d);
        assert_point("Sphere::tangent_project", "v", v, self.d);
        v - x * x.dot(v)
    }
    fn exp(&self, x: &DVector<f64>, v: &DVector<f64>) -> DVector<f64> {
        assert_point("Sphere::exp", "x", x, self.d);
        assert_point("Sphere::exp", "v", v, self.d);
        exp_vec(x, v)
    }
    fn log(&self, x: &DVector<f64>, y: &DVector<f64>) -> DVector<f64> {
        assert_point("Sphere::log", "x", x, self.d);
        assert_point("Sphere::log", "y", y, self.d);
        log_vec(x, y)
    }
    fn dist(&self, x: &DVector<f64>, y: &DVector<f64>) -> f64 {
        assert_point("Sphere::dist", "x", x, self.d);
        assert_point("Sphere::dist", "y", y, self.d);
        angle_parts_vec(x, y).3
    }
    fn inner(&self, x: &DVector<f64>, u: &DVector<f64>, v: &DVector<f64>) -> f64 {
        assert_point("Sphere::inner", "x", x, self.d);
        assert_point("Sphere::inner", "u", u, self.d);
        assert_point("Sphere::inner", "v", v, self.d);
        u.dot(v)
    }
    /// | |x| - 1 |.
    fn distance_to_manifold(&self, x: &DVector<f64>) -> Result<f64> {
        check_len("x", x, self.d)?;
        check::check_finite("x", x.as_slice())?;
        Ok((x.norm() - 1.0).abs())
    }
    fn check_point(&self, arg: &str, x: &DVector<f64>, tol: f64) -> Result<()> {
        check_len(arg, x, self.d)?;
        check::check_finite(arg, x.as_slice())?;
        let distance = (x.norm() - 1.0).abs();
        check::check_distance(arg, &self.name(), "point", distance, tol)
    }
    fn to_flat(&self, x: &DVector<f64>) -> Vec<f64> {
        x.as_slice().to_vec()
    }
    fn from_flat(&self, flat: &[f64]) -> Result<DVector<f64>> {
        from_flat_checked(flat, self.d)
    }
}

impl UniformSampler for Sphere {
    /// A normalised standard Gaussian vector.
    fn sample_uniform<R: Rng + ?Sized>(&self, rng: &mut R) -> DVector<f64> {
        loop {
            let g = DVector::from_fn(self.d, |_, _| StandardNormal.sample(rng));
            if let Some(x) = normalize_vec(&g) {
                return x;
            }
        }
    }
    /// log |S^{d-1}| = log(2 pi^{d/2} / Gamma(d/2)), e.g. log(4 pi) for S^2.
    fn log_volume(&self) -> f64 {
        crate::special::ln_sphere_area(self.d)
    }
}

/// Batched S^{d-1} on tensors `[B, d]` of any float dtype and device; every output keeps the input's
/// dtype and device and is differentiable, with finite gradients at x == y, y == -x, v == 0 and x == 0.
impl TensorManifold for Sphere {
    fn point_shape(&self) -> Vec<i64> {
        vec![self.d as i64]
    }
    /// `[B, d] -> [B, d]`, x/|x|; (near-)zero rows map to e_1 (see the module doc).
    fn project_t(&self, x: &Tensor) -> Tensor {
        check::assert_batch_shape("Sphere::project_t", "x", x, &[self.d as i64]);
        project_rows(x)
    }
    /// `[B, d] x [B, d] -> [B, d]`, v - <x,v> x.
    fn tangent_project_t(&self, x: &Tensor, v: &Tensor) -> Tensor {
        self.assert_rows("Sphere::tangent_project_t", ("x", x), ("v", v));
        tangent_project_rows(x, v)
    }
    /// `[B, d] x [B, d] -> [B, d]`, exp_x(v), renormalised.
    fn exp_t(&self, x: &Tensor, v: &Tensor) -> Tensor {
        self.assert_rows("Sphere::exp_t", ("x", x), ("v", v));
        exp_rows(x, v)
    }
    /// `[B, d] x [B, d] -> [B, d]`, log_x(y), with the cut-locus convention of the module doc.
    fn log_t(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.assert_rows("Sphere::log_t", ("x", x), ("y", y));
        log_rows(x, y)
    }
    /// `[B, d] x [B, d] -> [B]`, atan2(|y - <x,y> x|, <x,y>).
    fn dist_t(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.assert_rows("Sphere::dist_t", ("x", x), ("y", y));
        dist_rows(x, y)
    }
    /// `[B, d] -> [B]`, | |x| - 1 |.
    fn distance_to_manifold_t(&self, x: &Tensor) -> Tensor {
        check::assert_batch_shape("Sphere::distance_to_manifold_t", "x", x, &[self.d as i64]);
        distance_to_manifold_rows(x)
    }
    fn validate(&self, arg: &str, x: &Tensor, tol: Option<f64>) -> Result<()> {
        check::validate_batch(arg, &self.name(), x, &[self.d as i64], tol, distance_to_manifold_rows)
    }
}

impl TensorUniformSampler for Sphere {
    /// `[n, d]` of `kind` on `device`: normalised standard Gaussians from libtorch's generator.
    fn sample_uniform_t(&self, n: i64, kind: Kind, device: Device) -> Tensor {
        project_rows(&Tensor::randn([n, self.d as i64], (kind, device)))
    }
}

// ---- per-point kernels (f64), shared with the torus ----

/// x/|x| after scaling by the largest |coordinate|; `None` for the zero vector.
pub(crate) fn normalize_vec(x: &DVector<f64>) -> Option<DVector<f64>> {
    let m = x.amax();
    if m == 0.0 {
        return None;
    }
    let xs = x / m;
    let n = xs.norm();
    Some(xs / n)
}

/// (c, w, s, theta): c = <x,y>, w the tangent part of y at x (projected twice), s = |w|, theta the angle.
fn angle_parts_vec(x: &DVector<f64>, y: &DVector<f64>) -> (f64, DVector<f64>, f64, f64) {
    let c = x.dot(y);
    let w0 = y - x * c;
    let w = &w0 - x * x.dot(&w0);
    let s = w.norm();
    (c, w, s, s.atan2(c))
}

pub(crate) fn dist_vec(x: &DVector<f64>, y: &DVector<f64>) -> f64 {
    angle_parts_vec(x, y).3
}

pub(crate) fn exp_vec(x: &DVector<f64>, v: &DVector<f64>) -> DVector<f64> {
    let eps = eps_of(Kind::Double);
    let n = v.norm();
    let sq = n * n;
    let (cos, sinc) = if n < eps.small {
        (1.0 - sq / 2.0 + sq * sq / 24.0, 1.0 - sq / 6.0 + sq * sq / 120.0)
    } else {
        (n.cos(), n.sin() / n)
    };
    let y = x * cos + v * sinc;
    normalize_vec(&y).unwrap_or_else(|| e1_vec(x.len()))
}

pub(crate) fn log_vec(x: &DVector<f64>, y: &DVector<f64>) -> DVector<f64> {
    let eps = eps_of(Kind::Double);
    let (c, w, s, theta) = angle_parts_vec(x, y);
    if s < eps.anti && c <= 0.0 {
        let j = x.iter().enumerate().fold(0, |j, (i, xi)| if xi.abs() < x[j].abs() { i } else { j });
        let mut u = x * (-x[j]);
        u[j] += 1.0;
        let n = u.norm();
        return u * (theta / n);
    }
    let factor = if s < eps.small && c > 0.0 {
        let t2 = theta * theta;
        1.0 + t2 / 6.0 + 7.0 * t2 * t2 / 360.0
    } else {
        theta / s
    };
    w * factor
}

fn e1_vec(d: usize) -> DVector<f64> {
    let mut e = DVector::zeros(d);
    e[0] = 1.0;
    e
}

// ---- batched kernels on rows [N, d], shared with the torus (which reshapes to [B*k, 2]) ----

fn e1_row(x: &Tensor) -> Tensor {
    let d = *x.size().last().expect("rows have a last dimension");
    Tensor::eye(d, (x.kind(), x.device())).narrow(0, 0, 1)
}

pub(crate) fn project_rows(x: &Tensor) -> Tensor {
    let eps = eps_of(x.kind());
    // The scale is detached: x/|x| does not depend on it, so the gradient stays exact.
    let m = x.abs().amax([-1i64].as_slice(), true).detach();
    let nonzero = m.gt(eps.tiny);
    let xs = x / m.where_self(&nonzero, &m.ones_like());
    let sq = dot(&xs, &xs);
    let y = &xs / sq.where_self(&nonzero, &sq.ones_like()).sqrt();
    y.where_self(&nonzero, &e1_row(x))
}

pub(crate) fn tangent_project_rows(x: &Tensor, v: &Tensor) -> Tensor {
    v - dot(x, v) * x
}

pub(crate) fn exp_rows(x: &Tensor, v: &Tensor) -> Tensor {
    let eps = eps_of(x.kind());
    let sq = dot(v, v);
    let n = norm_keepdim(v);
    let small = n.lt(eps.small);
    let n_safe = n.where_self(&small.logical_not(), &n.ones_like());
    let sq2 = sq.square();
    let cos = (&sq * -0.5 + &sq2 / 24.0 + 1.0).where_self(&small, &n.cos());
    let sinc = (&sq / -6.0 + &sq2 / 120.0 + 1.0).where_self(&small, &(n.sin() / n_safe));
    project_rows(&(x * cos + v * sinc))
}

fn angle_parts_rows(x: &Tensor, y: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
    let c = dot(x, y);
    let w0 = y - &c * x;
    let w = &w0 - dot(x, &w0) * x;
    let s = norm_keepdim(&w);
    let theta = s.atan2(&c);
    (c, w, s, theta)
}

pub(crate) fn dist_rows(x: &Tensor, y: &Tensor) -> Tensor {
    angle_parts_rows(x, y).3.squeeze_dim(-1)
}

pub(crate) fn log_rows(x: &Tensor, y: &Tensor) -> Tensor {
    let eps = eps_of(x.kind());
    let (c, w, s, theta) = angle_parts_rows(x, y);
    let small = s.lt(eps.small).logical_and(&c.gt(0.0));
    let anti = s.lt(eps.anti).logical_and(&c.le(0.0));
    let s_safe = s.where_self(&small.logical_or(&anti).logical_not(), &s.ones_like());
    let t2 = theta.square();
    let factor = (&t2 / 6.0 + t2.square() * (7.0 / 360.0) + 1.0).where_self(&small, &(&theta / s_safe));
    let regular = w * factor;
    // Cut locus: the unit tangent vector built from the axis least aligned with x (|u| >= 1/sqrt(2)).
    let j = x.abs().argmin(-1, true);
    let u = x.zeros_like().scatter_value(-1, &j, 1.0) - x.gather(-1, &j, false) * x;
    let u = &u / norm_keepdim(&u).clamp_min(0.5);
    (u * theta).where_self(&anti, &regular)
}

pub(crate) fn distance_to_manifold_rows(x: &Tensor) -> Tensor {
    (norm_keepdim(x) - 1.0).abs().squeeze_dim(-1)
}

#[cfg(test)]
mod tests;
