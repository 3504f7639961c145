//! The rotation group SO(3) with the angle metric.
//!
//! Conventions (`shared/design/MATH.md` sections 0-1):
//! - a point is a 3x3 rotation matrix R (R^T R = I, det R = 1), stored as `Matrix3<f64>` per point and as
//!   `[B, 3, 3]` tensors in batches; flat coordinates are row-major;
//! - a tangent vector at R is an ambient 3x3 matrix R Omega with Omega skew-symmetric;
//! - the metric is the *angle metric* <U, V> = tr(U^T V) / 2 (half the Frobenius inner product), so that
//!   `dist(R, Q)` is the rotation angle of R^T Q, in [0, pi], |log_R(Q)| = dist(R, Q), the injectivity
//!   radius is pi and the total volume is 8 pi^2;
//! - a rotation vector w in R^3 stands for the rotation by the angle |w| about the axis w / |w|
//!   (right-hand rule): [`hat`] maps it to the skew matrix with `hat(w) v = w x v`, [`expm`] to the rotation
//!   matrix and [`logm`] back, with |logm(R)| in [0, pi];
//! - quaternions are `(w, x, y, z)` with the scalar part first.
//!
//! Every operation has a per-point f64 reference (free functions here and the [`Manifold`] impl of [`So3`])
//! and a batched, differentiable tensor twin (the `*_t` functions and the [`crate::TensorManifold`] impl).
//!
//! ```
//! use geom::so3::{expm, logm, So3};
//! use geom::Manifold;
//! use nalgebra::Vector3;
//!
//! let so3 = So3::new();
//! let r = expm(&Vector3::new(0.1, -0.2, 0.3));
//! let v = r * geom::so3::hat(&Vector3::new(0.0, 0.5, 0.0));
//! let q = so3.exp(&r, &v);
//! assert!((so3.dist(&r, &q) - 0.5).abs() < 1e-12);
//! assert!((so3.log(&r, &q) - v).norm() < 1e-12);
//! assert!((logm(&r) - Vector3::new(0.1, -0.2, 0.3)).norm() < 1e-12);
//! ```

mod batched;

pub use batched::{expm_t, hat_t, logm_t, project_to_so3_t, quaternion_to_matrix_t, rotation_angle_t, vee_t};

use crate::check::{assert_finite, check_distance, check_finite};
use crate::{GeomError, Manifold, Result, UniformSampler};
use nalgebra::{DMatrix, Matrix3, Vector3, Vector4};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::f64::consts::PI;

/// Below this rotation angle, exp and log use Taylor expansions (through order 6, exact to f64 rounding).
const SMALL_ANGLE: f64 = 1e-2;

/// The rotation group SO(3) as 3x3 rotation matrices with the angle metric <U, V> = tr(U^T V) / 2.
///
/// See the [module documentation](self) for the conventions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct So3;

impl So3 {
    /// The rotation group (it has no parameters).
    pub fn new() -> Self {
        So3
    }
}

/// The skew-symmetric matrix of a rotation vector: `hat(w) v = w x v`.
///
/// Panics if `w` is not finite.
pub fn hat(w: &Vector3<f64>) -> Matrix3<f64> {
    assert_finite("so3::hat", "w", w.as_slice());
    Matrix3::new(0.0, -w.z, w.y, w.z, 0.0, -w.x, -w.y, w.x, 0.0)
}

/// The rotation vector of the skew-symmetric part of `a`: `vee(hat(w)) = w`, and `vee(a) = vee((a - a^T)/2)`.
///
/// Panics if `a` is not finite.
pub fn vee(a: &Matrix3<f64>) -> Vector3<f64> {
    assert_finite("so3::vee", "a", a.as_slice());
    vee_unchecked(a)
}

fn vee_unchecked(a: &Matrix3<f64>) -> Vector3<f64> {
    Vector3::new(a[(2, 1)] - a[(1, 2)], a[(0, 2)] - a[(2, 0)], a[(1, 0)] - a[(0, 1)]) * 0.5
}

/// sin(t)/t and (1 - cos t)/t^2 as functions of t^2, with Taylor branches at small t.
fn rodrigues_coefficients(t2: f64) -> (f64, f64) {
    if t2 < SMALL_ANGLE * SMALL_ANGLE {
        let a = ((-t2 / 5040.0 + 1.0 / 120.0) * t2 - 1.0 / 6.0) * t2 + 1.0;
        let b = ((-t2 / 40320.0 + 1.0 / 720.0) * t2 - 1.0 / 24.0) * t2 + 0.5;
        (a, b)
    } else {
        let t = t2.sqrt();
        let h = (0.5 * t).sin();
        (t.sin() / t, 2.0 * h * h / t2)
    }
}

/// t / sin(t) by its Taylor series, accurate for t < [`SMALL_ANGLE`].
fn angle_over_sin_taylor(t2: f64) -> f64 {
    ((31.0 / 15120.0 * t2 + 7.0 / 360.0) * t2 + 1.0 / 6.0) * t2 + 1.0
}

/// The rotation by the angle |w| about the axis w / |w| (Rodrigues' formula, Taylor branch near 0).
///
/// Any w is accepted (|w| > pi wraps around). Panics if `w` is not finite.
pub fn expm(w: &Vector3<f64>) -> Matrix3<f64> {
    assert_finite("so3::expm", "w", w.as_slice());
    let (a, b) = rodrigues_coefficients(w.norm_squared());
    let k = hat(w);
    Matrix3::identity() + k * a + k * k * b
}

/// The rotation angle of `r`, in [0, pi], computed as atan2(|vee(r)|, (tr r - 1) / 2).
///
/// Stable near 0 and pi (unlike arccos alone). Panics if `r` is not finite.
pub fn rotation_angle(r: &Matrix3<f64>) -> f64 {
    assert_finite("so3::rotation_angle", "r", r.as_slice());
    vee_unchecked(r).norm().atan2(0.5 * (r.trace() - 1.0))
}

/// The rotation vector of a rotation matrix: `expm(logm(r)) = r`, |logm(r)| = rotation angle in [0, pi].
///
/// Branches: a Taylor expansion near angle 0; the regular formula angle * vee(r) / |vee(r)| up to pi/2;
/// beyond pi/2 the axis is read from the symmetric part, (r + r^T)/2 - cos(angle) I = (1 - cos) a a^T,
/// with its sign fixed by the skew part. At angle exactly pi both signs are minimising and either may be
/// returned. `r` is assumed to be a rotation (project first otherwise). Panics if `r` is not finite.
pub fn logm(r: &Matrix3<f64>) -> Vector3<f64> {
    assert_finite("so3::logm", "r", r.as_slice());
    let s = vee_unchecked(r);
    let c = 0.5 * (r.trace() - 1.0);
    let sn = s.norm();
    let theta = sn.atan2(c);
    if c >= 0.0 {
        if theta < SMALL_ANGLE {
            s * angle_over_sin_taylor(theta * theta)
        } else {
            s * (theta / sn)
        }
    } else {
        // For c < 0 the trace of b is (3 - tr r) / 2 > 1, so its largest diagonal entry exceeds 1/3.
        let b = (r + r.transpose()) * 0.5 - Matrix3::identity() * c;
        let k = b.diagonal().imax();
        let mut axis = b.column(k).normalize();
        if axis.dot(&s) < 0.0 {
            axis = -axis;
        }
        axis * theta
    }
}

/// The closest rotation to `x` in Frobenius norm: U diag(1, 1, det(U V^T)) V^T for the SVD x = U S V^T.
///
/// The sign flip goes to the singular vector of the smallest singular value. For rank-deficient `x` the
/// closest rotation is not unique and one of them is returned (the result is always a rotation; the zero
/// matrix maps to some rotation). Panics if `x` is not finite ([`Manifold::project`] returns an error
/// instead).
pub fn project_to_so3(x: &Matrix3<f64>) -> Matrix3<f64> {
    assert_finite("so3::project_to_so3", "x", x.as_slice());
    // The general Golub-Kahan path: nalgebra's special 3x3 SVD goes through the eigenvectors of x^T x.
    let svd = DMatrix::from_column_slice(3, 3, x.as_slice()).svd(true, true);
    let (Some(u), Some(v_t)) = (svd.u, svd.v_t) else { unreachable!("the SVD was asked for U and V^T") };
    let mut u = Matrix3::from_column_slice(u.as_slice());
    let v_t = Matrix3::from_column_slice(v_t.as_slice());
    if (u * v_t).determinant() < 0.0 {
        u.column_mut(svd.singular_values.imin()).neg_mut();
    }
    refine_polar(x, u * v_t)
}

/// Newton steps towards the closest rotation, from a nearby rotation `r`.
///
/// nalgebra's SVD leaves residuals around 1e-12 when singular values are close (as for noisy rotations);
/// these steps bring R^T x to symmetric within rounding. The step solves the linearised condition
/// skew((r expm(w))^T x) = 0: with M = r^T x and S its symmetric part, vee(skew M) = (tr(S) I - S) w / 2.
/// Where that matrix is singular (the closest rotation is not unique) `r` is returned as it is.
fn refine_polar(x: &Matrix3<f64>, mut r: Matrix3<f64>) -> Matrix3<f64> {
    for _ in 0..3 {
        let m = r.transpose() * x;
        let s = (m + m.transpose()) * 0.5;
        let g = vee_unchecked(&m);
        if g.norm() <= 1e-15 * s.norm() {
            break;
        }
        let Some(w) = (Matrix3::identity() * s.trace() - s).try_inverse().map(|inv| inv * g * 2.0) else { break };
        if !w.iter().all(|v| v.is_finite()) || w.norm() >= 1e-2 {
            break;
        }
        r *= expm(&w);
    }
    r
}

/// The rotation matrix of a quaternion `q = (w, x, y, z)`, normalised inside (q and -q give the same matrix).
///
/// The zero quaternion gives the identity. Panics if `q` is not finite.
pub fn quaternion_to_matrix(q: &Vector4<f64>) -> Matrix3<f64> {
    assert_finite("so3::quaternion_to_matrix", "q", q.as_slice());
    let n = q.norm();
    let q = if n > 0.0 { q / n } else { *q };
    let (w, x, y, z) = (q[0], q[1], q[2], q[3]);
    Matrix3::new(
        1.0 - 2.0 * (y * y + z * z),
        2.0 * (x * y - w * z),
        2.0 * (x * z + w * y),
        2.0 * (x * y + w * z),
        1.0 - 2.0 * (x * x + z * z),
        2.0 * (y * z - w * x),
        2.0 * (x * z - w * y),
        2.0 * (y * z + w * x),
        1.0 - 2.0 * (x * x + y * y),
    )
}

/// The unit quaternion `(w, x, y, z)` of a rotation matrix, with w >= 0 (Shepperd's method).
///
/// When w = 0 (angle pi) the first non-zero of (x, y, z) is made positive. `r` is assumed to be a
/// rotation; for other matrices the result is normalised but has no particular meaning. Panics if `r` is
/// not finite.
pub fn matrix_to_quaternion(r: &Matrix3<f64>) -> Vector4<f64> {
    assert_finite("so3::matrix_to_quaternion", "r", r.as_slice());
    let m = |i: usize, j: usize| r[(i, j)];
    let tr = r.trace();
    let diag = [tr, m(0, 0), m(1, 1), m(2, 2)];
    let best = (0..4).max_by(|&i, &j| diag[i].total_cmp(&diag[j])).unwrap_or(0);
    let q = match best {
        0 => {
            let w = 0.5 * (1.0 + tr).max(0.0).sqrt();
            let f = 0.25 / w;
            Vector4::new(w, (m(2, 1) - m(1, 2)) * f, (m(0, 2) - m(2, 0)) * f, (m(1, 0) - m(0, 1)) * f)
        }
        1 => {
            let x = 0.5 * (1.0 + m(0, 0) - m(1, 1) - m(2, 2)).max(0.0).sqrt();
            let f = 0.25 / x;
            Vector4::new((m(2, 1) - m(1, 2)) * f, x, (m(0, 1) + m(1, 0)) * f, (m(0, 2) + m(2, 0)) * f)
        }
        2 => {
            let y = 0.5 * (1.0 - m(0, 0) + m(1, 1) - m(2, 2)).max(0.0).sqrt();
            let f = 0.25 / y;
            Vector4::new((m(0, 2) - m(2, 0)) * f, (m(0, 1) + m(1, 0)) * f, y, (m(1, 2) + m(2, 1)) * f)
        }
        _ => {
            let z = 0.5 * (1.0 - m(0, 0) - m(1, 1) + m(2, 2)).max(0.0).sqrt();
            let f = 0.25 / z;
            Vector4::new((m(1, 0) - m(0, 1)) * f, (m(0, 2) + m(2, 0)) * f, (m(1, 2) + m(2, 1)) * f, z)
        }
    };
    let n = q.norm();
    let q = if n > 0.0 && n.is_finite() { q / n } else { Vector4::new(1.0, 0.0, 0.0, 0.0) };
    let first = q.iter().copied().find(|v| *v != 0.0).unwrap_or(1.0);
    if first < 0.0 {
        -q
    } else {
        q
    }
}

impl Manifold for So3 {
    type Point = Matrix3<f64>;

    fn name(&self) -> String {
        "SO(3)".to_string()
    }

    fn ambient_shape(&self) -> Vec<i64> {
        vec![3, 3]
    }

    fn dim(&self) -> usize {
        3
    }

    fn injectivity_radius(&self) -> f64 {
        PI
    }

    /// The closest rotation in Frobenius norm ([`project_to_so3`]); errors on non-finite input.
    fn project(&self, x: &Matrix3<f64>) -> Result<Matrix3<f64>> {
        check_finite("x", x.as_slice())?;
        Ok(project_to_so3(x))
    }

    /// R skew(R^T V).
    fn tangent_project(&self, x: &Matrix3<f64>, v: &Matrix3<f64>) -> Matrix3<f64> {
        assert_finite("SO(3) tangent_project", "x", x.as_slice());
        assert_finite("SO(3) tangent_project", "v", v.as_slice());
        let m = x.transpose() * v;
        x * ((m - m.transpose()) * 0.5)
    }

    /// R Expm(Omega) for v = R Omega (the symmetric part of R^T v is ignored).
    fn exp(&self, x: &Matrix3<f64>, v: &Matrix3<f64>) -> Matrix3<f64> {
        assert_finite("SO(3) exp", "x", x.as_slice());
        assert_finite("SO(3) exp", "v", v.as_slice());
        x * expm(&vee_unchecked(&(x.transpose() * v)))
    }

    /// R hat(logm(R^T Q)).
    fn log(&self, x: &Matrix3<f64>, y: &Matrix3<f64>) -> Matrix3<f64> {
        assert_finite("SO(3) log", "x", x.as_slice());
        assert_finite("SO(3) log", "y", y.as_slice());
        x * hat(&logm(&(x.transpose() * y)))
    }

    /// The rotation angle of R^T Q, in [0, pi].
    fn dist(&self, x: &Matrix3<f64>, y: &Matrix3<f64>) -> f64 {
        assert_finite("SO(3) dist", "x", x.as_slice());
        assert_finite("SO(3) dist", "y", y.as_slice());
        rotation_angle(&(x.transpose() * y))
    }

    /// tr(U^T V) / 2 (the angle metric).
    fn inner(&self, x: &Matrix3<f64>, u: &Matrix3<f64>, v: &Matrix3<f64>) -> f64 {
        assert_finite("SO(3) inner", "x", x.as_slice());
        assert_finite("SO(3) inner", "u", u.as_slice());
        assert_finite("SO(3) inner", "v", v.as_slice());
        0.5 * u.dot(v)
    }

    /// Frobenius distance to [`project_to_so3`]`(x)`.
    fn distance_to_manifold(&self, x: &Matrix3<f64>) -> Result<f64> {
        let p = self.project(x)?;
        Ok((x - p).norm())
    }

    fn check_point(&self, arg: &str, x: &Matrix3<f64>, tol: f64) -> Result<()> {
        check_finite(arg, x.as_slice())?;
        let distance = self.distance_to_manifold(x)?;
        check_distance(arg, &self.name(), "the point", distance, tol)
    }

    fn to_flat(&self, x: &Matrix3<f64>) -> Vec<f64> {
        x.transpose().as_slice().to_vec()
    }

    fn from_flat(&self, flat: &[f64]) -> Result<Matrix3<f64>> {
        if flat.len() != 9 {
            return Err(GeomError::Shape {
                arg: "flat".to_string(),
                expected: "9 values (a row-major 3x3 matrix)".to_string(),
                got: format!("{} values", flat.len()),
            });
        }
        Ok(Matrix3::from_row_slice(flat))
    }
}

impl UniformSampler for So3 {
    /// The Haar law: a uniformly random unit quaternion (a normalised 4-d standard Gaussian).
    fn sample_uniform<R: Rng + ?Sized>(&self, rng: &mut R) -> Matrix3<f64> {
        loop {
            let q = Vector4::from_fn(|_, _| -> f64 { StandardNormal.sample(rng) });
            if q.norm() > 1e-6 {
                return quaternion_to_matrix(&q);
            }
        }
    }

    /// ln(8 pi^2), the volume of SO(3) under the angle metric.
    fn log_volume(&self) -> f64 {
        (8.0 * PI * PI).ln()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod batched_tests;
