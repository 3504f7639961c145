//! Flat Euclidean space R^n: exp is addition, log is subtraction, and every point is on the manifold.
//!
//! R^n has no finite volume, so [`Euclidean`] does not implement [`crate::UniformSampler`].
//! The module also holds the small crate-private helpers that the sphere, torus and discrete set share
//! (per-point length checks, a norm whose gradient is finite at 0, dtype-dependent Taylor thresholds).

use crate::check;
use crate::tensor_ops::{dot_keepdim, safe_norm_keepdim};
use crate::{GeomError, Manifold, Result, TensorManifold};
use nalgebra::DVector;
use tch::{Kind, Tensor};

/// Flat space R^n with the Euclidean metric.
///
/// ```
/// use geom::{Euclidean, Manifold};
/// use nalgebra::DVector;
///
/// let r2 = Euclidean::new(2).unwrap();
/// let x = DVector::from_vec(vec![1.0, 2.0]);
/// let y = DVector::from_vec(vec![4.0, 6.0]);
/// assert_eq!(r2.dist(&x, &y), 5.0);
/// assert_eq!(r2.exp(&x, &r2.log(&x, &y)), y);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Euclidean {
    n: usize,
}

impl Euclidean {
    /// R^n; errors (naming `n`) unless `n >= 1`.
    pub fn new(n: usize) -> Result<Self> {
        if n == 0 {
            return Err(GeomError::invalid("n", n, "an integer >= 1"));
        }
        Ok(Self { n })
    }

    /// The dimension n.
    pub fn n(&self) -> usize {
        self.n
    }
}

impl Manifold for Euclidean {
    type Point = DVector<f64>;

    fn name(&self) -> String {
        format!("R^{}", self.n)
    }
    fn ambient_shape(&self) -> Vec<i64> {
        vec![self.n as i64]
    }
    fn dim(&self) -> usize {
        self.n
    }
    fn injectivity_radius(&self) -> f64 {
        f64::INFINITY
    }
    /// The identity, after checking length and finiteness.
    fn project(&self, x: &DVector<f64>) -> Result<DVector<f64>> {
        check_len("x", x, self.n)?;
        check::check_finite("x", x.as_slice())?;
        Ok(x.clone())
    }
    fn tangent_project(&self, x: &DVector<f64>, v: &DVector<f64>) -> DVector<f64> {
        assert_point("Euclidean::tangent_project", "x", x, self.n);
        assert_point("Euclidean::tangent_project", "v", v, self.n);
        v.clone()
    }
    fn exp(&self, x: &DVector<f64>, v: &DVector<f64>) -> DVector<f64> {
        assert_point("Euclidean::exp", "x", x, self.n);
        assert_point("Euclidean::exp", "v", v, self.n);
        x + v
    }
    fn log(&self, x: &DVector<f64>, y: &DVector<f64>) -> DVector<f64> {
        assert_point("Euclidean::log", "x", x, self.n);
        assert_point("Euclidean::log", "y", y, self.n);
        y - x
    }
    fn dist(&self, x: &DVector<f64>, y: &DVector<f64>) -> f64 {
        assert_point("Euclidean::dist", "x", x, self.n);
        assert_point("Euclidean::dist", "y", y, self.n);
        (y - x).norm()
    }
    fn inner(&self, x: &DVector<f64>, u: &DVector<f64>, v: &DVector<f64>) -> f64 {
        assert_point("Euclidean::inner", "x", x, self.n);
        assert_point("Euclidean::inner", "u", u, self.n);
        assert_point("Euclidean::inner", "v", v, self.n);
        u.dot(v)
    }
    /// Always 0 for a finite point of the right length.
    fn distance_to_manifold(&self, x: &DVector<f64>) -> Result<f64> {
        check_len("x", x, self.n)?;
        check::check_finite("x", x.as_slice())?;
        Ok(0.0)
    }
    fn check_point(&self, arg: &str, x: &DVector<f64>, _tol: f64) -> Result<()> {
        check_len(arg, x, self.n)?;
        check::check_finite(arg, x.as_slice())
    }
    fn to_flat(&self, x: &DVector<f64>) -> Vec<f64> {
        x.as_slice().to_vec()
    }
    fn from_flat(&self, flat: &[f64]) -> Result<DVector<f64>> {
        from_flat_checked(flat, self.n)
    }
}

/// Batched R^n on tensors `[B, n]` of any float dtype and device; every output keeps the input's dtype
/// and device.
impl TensorManifold for Euclidean {
    fn point_shape(&self) -> Vec<i64> {
        vec![self.n as i64]
    }
    /// `[B, n] -> [B, n]`, the identity (a shallow copy sharing the autograd graph).
    fn project_t(&self, x: &Tensor) -> Tensor {
        check::assert_batch_shape("Euclidean::project_t", "x", x, &[self.n as i64]);
        x.shallow_clone()
    }
    /// `[B, n] x [B, n] -> [B, n]`, returns `v`.
    fn tangent_project_t(&self, x: &Tensor, v: &Tensor) -> Tensor {
        self.assert_pair("Euclidean::tangent_project_t", ("x", x), ("v", v));
        v.shallow_clone()
    }
    /// `[B, n] x [B, n] -> [B, n]`, `x + v`.
    fn exp_t(&self, x: &Tensor, v: &Tensor) -> Tensor {
        self.assert_pair("Euclidean::exp_t", ("x", x), ("v", v));
        x + v
    }
    /// `[B, n] x [B, n] -> [B, n]`, `y - x`.
    fn log_t(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.assert_pair("Euclidean::log_t", ("x", x), ("y", y));
        y - x
    }
    /// `[B, n] x [B, n] -> [B]`, `|y - x|`, with gradient 0 (not NaN) at `x == y`.
    fn dist_t(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.assert_pair("Euclidean::dist_t", ("x", x), ("y", y));
        norm_keepdim(&(y - x)).squeeze_dim(-1)
    }
    /// `[B, n] -> [B]` of zeros.
    fn distance_to_manifold_t(&self, x: &Tensor) -> Tensor {
        check::assert_batch_shape("Euclidean::distance_to_manifold_t", "x", x, &[self.n as i64]);
        x.sum_dim_intlist([-1i64].as_slice(), false, None) * 0.0
    }
    fn validate(&self, arg: &str, x: &Tensor, tol: Option<f64>) -> Result<()> {
        check::validate_batch(arg, &self.name(), x, &[self.n as i64], tol, |x| {
            x.sum_dim_intlist([-1i64].as_slice(), false, None) * 0.0
        })
    }
}

impl Euclidean {
    #[track_caller]
    fn assert_pair(&self, op: &str, a: (&str, &Tensor), b: (&str, &Tensor)) {
        check::assert_batch_shape(op, a.0, a.1, &[self.n as i64]);
        check::assert_batch_shape(op, b.0, b.1, &[self.n as i64]);
        check::assert_same_shape(op, a.1, b.1);
    }
}

// ---- crate-private helpers shared with sphere.rs, torus.rs and discrete.rs ----

/// Errors (a [`GeomError::Shape`] naming `arg`) unless `x` has length `n`.
pub(crate) fn check_len(arg: &str, x: &DVector<f64>, n: usize) -> Result<()> {
    if x.len() != n {
        return Err(GeomError::Shape {
            arg: arg.to_string(),
            expected: format!("[{n}]"),
            got: format!("[{}]", x.len()),
        });
    }
    Ok(())
}

/// Panics naming `op` and `arg` unless `x` has length `n` and finite coordinates.
#[track_caller]
pub(crate) fn assert_point(op: &str, arg: &str, x: &DVector<f64>, n: usize) {
    if x.len() != n {
        panic!("{op}: argument `{arg}` has length {}, expected {n}", x.len());
    }
    check::assert_finite(op, arg, x.as_slice());
}

/// A point from a flat slice of length `n`; errors naming `flat` otherwise.
pub(crate) fn from_flat_checked(flat: &[f64], n: usize) -> Result<DVector<f64>> {
    if flat.len() != n {
        return Err(GeomError::Shape {
            arg: "flat".into(),
            expected: format!("[{n}]"),
            got: format!("[{}]", flat.len()),
        });
    }
    Ok(DVector::from_column_slice(flat))
}

/// Euclidean norm over the last dimension, `[N, .., n] -> [N, .., 1]`, same dtype and device; the gradient
/// at the zero vector is 0 rather than NaN.
pub(crate) fn norm_keepdim(x: &Tensor) -> Tensor {
    safe_norm_keepdim(x, &[-1])
}

/// Dot product over the last dimension, `[N, n] x [N, n] -> [N, 1]`.
pub(crate) fn dot(x: &Tensor, y: &Tensor) -> Tensor {
    dot_keepdim(x, y)
}

/// Numerical thresholds of a floating-point dtype, used to pick Taylor branches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Eps {
    /// Below this argument a Taylor branch replaces a ratio such as sin(t)/t: eps^(1/4).
    pub small: f64,
    /// Below this sine two unit vectors count as antipodal: eps^(1/2).
    pub anti: f64,
    /// The smallest positive normal number; smaller scales count as zero.
    pub tiny: f64,
}

/// The thresholds of `kind` (Double for anything that is not Float, Half or BFloat16).
pub(crate) fn eps_of(kind: Kind) -> Eps {
    let (eps, tiny) = match kind {
        Kind::Float => (f32::EPSILON as f64, f32::MIN_POSITIVE as f64),
        Kind::Half => (2f64.powi(-10), 2f64.powi(-14)),
        Kind::BFloat16 => (2f64.powi(-7), f32::MIN_POSITIVE as f64),
        _ => (f64::EPSILON, f64::MIN_POSITIVE),
    };
    Eps { small: eps.powf(0.25), anti: eps.sqrt(), tiny }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn v(x: &[f64]) -> DVector<f64> {
        DVector::from_column_slice(x)
    }

    #[test]
    fn construction_and_metadata() {
        let e = Euclidean::new(3).unwrap();
        assert_eq!((e.n(), e.dim(), e.name(), e.ambient_shape()), (3, 3, "R^3".to_string(), vec![3]));
        assert!(e.injectivity_radius().is_infinite());
        let err = Euclidean::new(0).unwrap_err().to_string();
        assert!(err.contains("`n`"), "{err}");
    }

    #[test]
    fn per_point_ops() {
        let e = Euclidean::new(2).unwrap();
        let (x, y) = (v(&[1.0, 2.0]), v(&[4.0, 6.0]));
        assert_eq!(e.dist(&x, &y), 5.0);
        assert_eq!(e.log(&x, &y), v(&[3.0, 4.0]));
        assert_eq!(e.exp(&x, &v(&[3.0, 4.0])), y);
        assert_eq!(e.tangent_project(&x, &y), y);
        assert_eq!(e.inner(&x, &x, &y), 16.0);
        assert_eq!(e.project(&x).unwrap(), x);
        assert_eq!(e.distance_to_manifold(&x).unwrap(), 0.0);
        assert_eq!(e.from_flat(&e.to_flat(&x)).unwrap(), x);
        assert!(e.from_flat(&[1.0]).unwrap_err().to_string().contains("`flat`"));
        let bad = v(&[f64::NAN, 0.0]);
        assert!(e.project(&bad).unwrap_err().to_string().contains("`x`"));
        assert!(e.check_point("data", &bad, 0.1).unwrap_err().to_string().contains("`data`"));
        assert!(e.check_point("data", &v(&[1.0]), 0.1).unwrap_err().to_string().contains("`data`"));
    }

    #[test]
    #[should_panic(expected = "argument `v` has non-finite coordinate 1")]
    fn exp_panics_on_non_finite() {
        let e = Euclidean::new(2).unwrap();
        e.exp(&v(&[0.0, 0.0]), &v(&[0.0, f64::INFINITY]));
    }

    #[test]
    fn batched_agrees_and_grad_is_finite_at_equal_points() {
        let e = Euclidean::new(3).unwrap();
        for kind in [Kind::Float, Kind::Double] {
            let x =
                Tensor::from_slice(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0]).view([2, 3]).to_kind(kind).set_requires_grad(true);
            let y = Tensor::from_slice(&[1.0, 2.0, 3.0, 3.0, 4.0, 0.0]).view([2, 3]).to_kind(kind);
            let d = e.dist_t(&x, &y);
            assert_eq!(d.kind(), kind);
            assert_eq!(d.size(), vec![2]);
            assert!((d.double_value(&[0])).abs() < 1e-12 && (d.double_value(&[1]) - 5.0).abs() < 1e-6);
            d.sum(kind).backward();
            assert!(x.grad().isfinite().all().int64_value(&[]) != 0);
            assert!((e.exp_t(&x, &e.log_t(&x, &y)) - &y).abs().max().double_value(&[]) < 1e-6);
            assert_eq!(e.distance_to_manifold_t(&y).size(), vec![2]);
        }
        let nan = Tensor::from_slice(&[0.0, f64::NAN, 0.0]).view([1, 3]);
        let err = e.validate("batch", &nan, None).unwrap_err().to_string();
        assert!(err.contains("`batch`") && err.contains("row 0"), "{err}");
        assert!(e.validate("batch", &Tensor::zeros([4, 3], (Kind::Float, Device::Cpu)), Some(0.0)).is_ok());
    }

    #[test]
    fn norm_helper_has_finite_grad_at_zero_in_float() {
        let x = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        norm_keepdim(&x).sum(Kind::Float).backward();
        assert!(x.grad().isfinite().all().int64_value(&[]) != 0);
    }
}
