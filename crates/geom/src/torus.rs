//! The flat torus T^k = S^1 x .. x S^1 (k circles), embedded in R^{2k}.
//!
//! Circle i occupies coordinates (2i, 2i+1) = (cos theta_i, sin theta_i). Every operation acts circle by
//! circle with the unit-circle geometry of [`crate::Sphere`] for d = 2 (same Taylor branches, cut-locus
//! and zero-vector conventions, see the `sphere` module doc); the metric is the product metric, so
//! dist = sqrt(sum_i dist_i^2), the volume is (2 pi)^k and the uniform law draws independent uniform angles.
//! Per-point `project` errors when some circle's pair of coordinates is zero; batched `project_t` maps
//! such a circle to angle 0, i.e. (1, 0).

use crate::check;
use crate::euclidean::{assert_point, check_len, from_flat_checked, norm_keepdim};
use crate::sphere::{dist_rows, dist_vec, distance_to_manifold_rows, exp_rows, exp_vec, log_rows, log_vec};
use crate::sphere::{normalize_vec, project_rows, tangent_project_rows};
use crate::{GeomError, Manifold, Result, TensorManifold, TensorUniformSampler, UniformSampler};
use nalgebra::DVector;
use rand::distr::StandardUniform;
use rand::Rng;
use rand_distr::Distribution;
use std::f64::consts::PI;
use tch::{Device, Kind, Tensor};

/// The flat torus of `k` circles in R^{2k}, intrinsic dimension k.
///
/// ```
/// use geom::{Manifold, Torus};
///
/// let t2 = Torus::new(2).unwrap();
/// let x = Torus::from_angles(&[0.0, 0.0]);
/// let y = Torus::from_angles(&[0.3, -0.4]);
/// assert!((t2.dist(&x, &y) - 0.5).abs() < 1e-15);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Torus {
    k: usize,
}

impl Torus {
    /// T^k; errors (naming `k`) unless `k >= 1`.
    pub fn new(k: usize) -> Result<Self> {
        if k == 0 {
            return Err(GeomError::invalid("k", k, "a number of circles >= 1"));
        }
        Ok(Self { k })
    }

    /// The number of circles k.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The point (cos a_0, sin a_0, cos a_1, sin a_1, ..) of length 2 * `angles.len()`.
    pub fn from_angles(angles: &[f64]) -> DVector<f64> {
        DVector::from_iterator(2 * angles.len(), angles.iter().flat_map(|a| [a.cos(), a.sin()]))
    }

    /// The angles atan2(x_{2i+1}, x_{2i}) in (-pi, pi] of a point of even length; panics on odd length.
    pub fn to_angles(x: &DVector<f64>) -> Vec<f64> {
        assert!(x.len() & 1 == 0, "Torus::to_angles: argument `x` has odd length {}", x.len());
        (0..x.len() / 2).map(|i| x[2 * i + 1].atan2(x[2 * i])).collect()
    }

    /// Batched [`Torus::from_angles`]: `[B, k] -> [B, 2k]`, same dtype and device, differentiable.
    pub fn from_angles_t(angles: &Tensor) -> Tensor {
        let size = angles.size();
        assert!(size.len() == 2, "Torus::from_angles_t: argument `angles` has shape {size:?}, expected [B, k]");
        Tensor::stack(&[angles.cos(), angles.sin()], -1).reshape([size[0], 2 * size[1]])
    }

    /// Batched [`Torus::to_angles`]: `[B, 2k] -> [B, k]` in (-pi, pi], same dtype and device.
    ///
    /// Differentiable away from circles whose pair of coordinates is (0, 0).
    pub fn to_angles_t(x: &Tensor) -> Tensor {
        let size = x.size();
        assert!(
            size.len() == 2 && size[1] % 2 == 0,
            "Torus::to_angles_t: argument `x` has shape {size:?}, expected [B, 2k]"
        );
        let c = x.reshape([size[0], size[1] / 2, 2]);
        c.select(-1, 1).atan2(&c.select(-1, 0))
    }

    fn circle(x: &DVector<f64>, i: usize) -> DVector<f64> {
        x.rows(2 * i, 2).into_owned()
    }

    /// Applies `f` to each circle of `x` and `y` and concatenates the results.
    fn per_circle(
        &self,
        x: &DVector<f64>,
        y: &DVector<f64>,
        f: impl Fn(&DVector<f64>, &DVector<f64>) -> DVector<f64>,
    ) -> DVector<f64> {
        let mut out = DVector::zeros(2 * self.k);
        for i in 0..self.k {
            out.rows_mut(2 * i, 2).copy_from(&f(&Self::circle(x, i), &Self::circle(y, i)));
        }
        out
    }

    fn distance_to_manifold_vec(&self, x: &DVector<f64>) -> f64 {
        (0..self.k).map(|i| (Self::circle(x, i).norm() - 1.0).powi(2)).sum::<f64>().sqrt()
    }

    #[track_caller]
    fn assert_rows(&self, op: &str, a: (&str, &Tensor), b: (&str, &Tensor)) {
        check::assert_batch_shape(op, a.0, a.1, &[2 * self.k as i64]);
        check::assert_batch_shape(op, b.0, b.1, &[2 * self.k as i64]);
        check::assert_same_shape(op, a.1, b.1);
    }

    /// `[B, 2k] -> [B * k, 2]`.
    fn circles(&self, x: &Tensor) -> Tensor {
        x.reshape([x.size()[0] * self.k as i64, 2])
    }

    /// `[B * k, 2] -> [B, 2k]` or `[B * k] -> [B, k]` (explicit sizes, so that B = 0 works).
    fn uncircles(&self, x: &Tensor, batch: i64) -> Tensor {
        let width = if x.dim() == 2 { 2 * self.k as i64 } else { self.k as i64 };
        x.reshape([batch, width])
    }
}

impl Manifold for Torus {
    type Point = DVector<f64>;

    fn name(&self) -> String {
        format!("T^{}", self.k)
    }
    fn ambient_shape(&self) -> Vec<i64> {
        vec![2 * self.k as i64]
    }
    fn dim(&self) -> usize {
        self.k
    }
    fn injectivity_radius(&self) -> f64 {
        PI
    }
    /// Normalises each circle; errors naming `x` and the circle when a circle's coordinates are both 0.
    fn project(&self, x: &DVector<f64>) -> Result<DVector<f64>> {
        check_len("x", x, 2 * self.k)?;
        check::check_finite("x", x.as_slice())?;
        let mut out = DVector::zeros(2 * self.k);
        for i in 0..self.k {
            let c = normalize_vec(&Self::circle(x, i)).ok_or_else(|| GeomError::Undefined {
                op: "Torus::project".into(),
                arg: "x".into(),
                reason: format!("circle {i} (coordinates {}, {}) is the zero vector", 2 * i, 2 * i + 1),
            })?;
            out.rows_mut(2 * i, 2).copy_from(&c);
        }
        Ok(out)
    }
    fn tangent_project(&self, x: &DVector<f64>, v: &DVector<f64>) -> DVector<f64> {
        assert_point("Torus::tangent_project", "x", x, 2 * self.k);
        assert_point("Torus::tangent_project", "v", v, 2 * self.k);
        self.per_circle(x, v, |x, v| v - x * x.dot(v))
    }
    fn exp(&self, x: &DVector<f64>, v: &DVector<f64>) -> DVector<f64> {
        assert_point("Torus::exp", "x", x, 2 * self.k);
        assert_point("Torus::exp", "v", v, 2 * self.k);
        self.per_circle(x, v, exp_vec)
    }
    fn log(&self, x: &DVector<f64>, y: &DVector<f64>) -> DVector<f64> {
        assert_point("Torus::log", "x", x, 2 * self.k);
        assert_point("Torus::log", "y", y, 2 * self.k);
        self.per_circle(x, y, log_vec)
    }
    fn dist(&self, x: &DVector<f64>, y: &DVector<f64>) -> f64 {
        assert_point("Torus::dist", "x", x, 2 * self.k);
        assert_point("Torus::dist", "y", y, 2 * self.k);
        (0..self.k).map(|i| dist_vec(&Self::circle(x, i), &Self::circle(y, i)).powi(2)).sum::<f64>().sqrt()
    }
    fn inner(&self, x: &DVector<f64>, u: &DVector<f64>, v: &DVector<f64>) -> f64 {
        assert_point("Torus::inner", "x", x, 2 * self.k);
        assert_point("Torus::inner", "u", u, 2 * self.k);
        assert_point("Torus::inner", "v", v, 2 * self.k);
        u.dot(v)
    }
    /// sqrt(sum_i (|x_i| - 1)^2) over the circles' coordinate pairs x_i.
    fn distance_to_manifold(&self, x: &DVector<f64>) -> Result<f64> {
        check_len("x", x, 2 * self.k)?;
        check::check_finite("x", x.as_slice())?;
        Ok(self.distance_to_manifold_vec(x))
    }
    fn check_point(&self, arg: &str, x: &DVector<f64>, tol: f64) -> Result<()> {
        check_len(arg, x, 2 * self.k)?;
        check::check_finite(arg, x.as_slice())?;
        let distance = self.distance_to_manifold_vec(x);
        check::check_distance(arg, &self.name(), "point", distance, tol)
    }
    fn to_flat(&self, x: &DVector<f64>) -> Vec<f64> {
        x.as_slice().to_vec()
    }
    fn from_flat(&self, flat: &[f64]) -> Result<DVector<f64>> {
        from_flat_checked(flat, 2 * self.k)
    }
}

impl UniformSampler for Torus {
    /// Independent uniform angles in [0, 2 pi).
    fn sample_uniform<R: Rng + ?Sized>(&self, rng: &mut R) -> DVector<f64> {
        let angles: Vec<f64> =
            (0..self.k).map(|_| 2.0 * PI * Distribution::<f64>::sample(&StandardUniform, rng)).collect();
        Self::from_angles(&angles)
    }
    /// k log(2 pi).
    fn log_volume(&self) -> f64 {
        self.k as f64 * (2.0 * PI).ln()
    }
}

/// Batched T^k on tensors `[B, 2k]` of any float dtype and device; every output keeps the input's dtype
/// and device and is differentiable, with finite gradients at the same singular points as the sphere's.
impl TensorManifold for Torus {
    fn point_shape(&self) -> Vec<i64> {
        vec![2 * self.k as i64]
    }
    /// `[B, 2k] -> [B, 2k]`, each circle normalised; zero circles map to (1, 0).
    fn project_t(&self, x: &Tensor) -> Tensor {
        check::assert_batch_shape("Torus::project_t", "x", x, &[2 * self.k as i64]);
        self.uncircles(&project_rows(&self.circles(x)), x.size()[0])
    }
    /// `[B, 2k] x [B, 2k] -> [B, 2k]`, circle by circle v_i - <x_i, v_i> x_i.
    fn tangent_project_t(&self, x: &Tensor, v: &Tensor) -> Tensor {
        self.assert_rows("Torus::tangent_project_t", ("x", x), ("v", v));
        self.uncircles(&tangent_project_rows(&self.circles(x), &self.circles(v)), x.size()[0])
    }
    /// `[B, 2k] x [B, 2k] -> [B, 2k]`, circle by circle exp.
    fn exp_t(&self, x: &Tensor, v: &Tensor) -> Tensor {
        self.assert_rows("Torus::exp_t", ("x", x), ("v", v));
        self.uncircles(&exp_rows(&self.circles(x), &self.circles(v)), x.size()[0])
    }
    /// `[B, 2k] x [B, 2k] -> [B, 2k]`, circle by circle log (cut locus as for the sphere).
    fn log_t(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.assert_rows("Torus::log_t", ("x", x), ("y", y));
        self.uncircles(&log_rows(&self.circles(x), &self.circles(y)), x.size()[0])
    }
    /// `[B, 2k] x [B, 2k] -> [B]`, sqrt of the sum of squared circle distances.
    fn dist_t(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.assert_rows("Torus::dist_t", ("x", x), ("y", y));
        let d = self.uncircles(&dist_rows(&self.circles(x), &self.circles(y)), x.size()[0]);
        norm_keepdim(&d).squeeze_dim(-1)
    }
    /// `[B, 2k] -> [B]`, sqrt(sum_i (|x_i| - 1)^2).
    fn distance_to_manifold_t(&self, x: &Tensor) -> Tensor {
        check::assert_batch_shape("Torus::distance_to_manifold_t", "x", x, &[2 * self.k as i64]);
        let d = self.uncircles(&distance_to_manifold_rows(&self.circles(x)), x.size()[0]);
        norm_keepdim(&d).squeeze_dim(-1)
    }
    fn validate(&self, arg: &str, x: &Tensor, tol: Option<f64>) -> Result<()> {
        check::validate_batch(arg, &self.name(), x, &[2 * self.k as i64], tol, |x| self.distance_to_manifold_t(x))
    }
}

impl TensorUniformSampler for Torus {
    /// `[n, 2k]` of `kind` on `device`: independent uniform angles from libtorch's generator.
    fn sample_uniform_t(&self, n: i64, kind: Kind, device: Device) -> Tensor {
        Self::from_angles_t(&(Tensor::rand([n, self.k as i64], (kind, device)) * (2.0 * PI)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rows(xs: &[DVector<f64>], kind: Kind) -> Tensor {
        let flat: Vec<f64> = xs.iter().flat_map(|x| x.iter().copied()).collect();
        Tensor::from_slice(&flat).view([xs.len() as i64, -1]).to_kind(kind)
    }
    fn max_abs(t: &Tensor) -> f64 {
        t.abs().max().double_value(&[])
    }
    fn all_finite(t: &Tensor) -> bool {
        t.isfinite().all().int64_value(&[]) != 0
    }

    #[test]
    fn construction_angles_and_volume() {
        let t = Torus::new(3).unwrap();
        assert_eq!((t.k(), t.dim(), t.name(), t.ambient_shape()), (3, 3, "T^3".to_string(), vec![6]));
        assert_eq!(t.injectivity_radius(), PI);
        assert!(Torus::new(0).unwrap_err().to_string().contains("`k`"));
        assert!((t.log_volume() - 3.0 * (2.0 * PI).ln()).abs() < 1e-14);
        let a = [0.1, -3.0, PI];
        let x = Torus::from_angles(&a);
        assert_eq!(x.len(), 6);
        assert!((x[2] - (-3.0f64).cos()).abs() < 1e-16 && (x[3] - (-3.0f64).sin()).abs() < 1e-16);
        for (got, want) in Torus::to_angles(&x).iter().zip(a) {
            assert!((got - want).abs() < 1e-15);
        }
        let at = Tensor::from_slice(&a).view([1, 3]);
        assert!(max_abs(&(Torus::from_angles_t(&at) - rows(std::slice::from_ref(&x), Kind::Double))) < 1e-15);
        assert!(max_abs(&(Torus::to_angles_t(&rows(&[x], Kind::Double)) - at)) < 1e-15);
    }

    #[test]
    fn known_values() {
        let t = Torus::new(2).unwrap();
        let x = Torus::from_angles(&[0.0, 3.0]);
        let y = Torus::from_angles(&[0.3, -3.0]);
        let wrap = 2.0 * PI - 6.0;
        assert!((t.dist(&x, &y) - (0.09 + wrap * wrap).sqrt()).abs() < 1e-14);
        let l = t.log(&x, &y);
        // Tangent vector of circle i at angle a with angular speed w is w (-sin a, cos a).
        let want = DVector::from_vec(vec![0.0, 0.3, -3.0f64.sin() * wrap, 3.0f64.cos() * wrap]);
        assert!((&l - want).norm() < 1e-14, "{l}");
        assert!((t.exp(&x, &l) - &y).norm() < 1e-14);
        assert!(t.tangent_project(&x, &x).norm() < 1e-15);
        let p = t.project(&DVector::from_vec(vec![2.0, 0.0, 0.0, -0.5])).unwrap();
        assert!((p - DVector::from_vec(vec![1.0, 0.0, 0.0, -1.0])).norm() < 1e-15);
        let err = t.project(&DVector::from_vec(vec![1.0, 0.0, 0.0, 0.0])).unwrap_err();
        assert!(matches!(err, GeomError::Undefined { .. }) && err.to_string().contains("circle 1"), "{err}");
        let err = t.check_point("pts", &DVector::from_vec(vec![2.0, 0.0, 0.0, 1.0]), 1e-6).unwrap_err();
        assert!(matches!(err, GeomError::OffManifold { .. }) && err.to_string().contains("`pts`"), "{err}");
        assert!(
            (t.distance_to_manifold(&DVector::from_vec(vec![2.0, 0.0, 0.0, 3.0])).unwrap() - 5f64.sqrt()).abs() < 1e-15
        );
        // Antipodal circle: the log has length pi on that circle.
        let l = t.log(&x, &Torus::from_angles(&[PI, 3.0]));
        assert!((l.norm() - PI).abs() < 1e-12);
    }

    #[test]
    #[should_panic(expected = "Torus::exp: argument `v` has length 3, expected 4")]
    fn exp_panics_on_wrong_length() {
        let t = Torus::new(2).unwrap();
        t.exp(&Torus::from_angles(&[0.0, 0.0]), &DVector::zeros(3));
    }

    #[test]
    fn batched_agrees_with_per_point_and_has_finite_grads() {
        let t = Torus::new(3).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let xs: Vec<_> = (0..8).map(|_| t.sample_uniform(&mut rng)).collect();
        let mut ys: Vec<_> = (0..8).map(|_| t.sample_uniform(&mut rng)).collect();
        ys[0] = xs[0].clone();
        ys[1] = -&xs[1];
        let vs: Vec<_> = xs.iter().map(|x| t.tangent_project(x, &(t.sample_uniform(&mut rng) * 2.0))).collect();
        for (kind, tol) in [(Kind::Double, 1e-12), (Kind::Float, 2e-5)] {
            let (x, y, v) = (rows(&xs, kind), rows(&ys, kind), rows(&vs, kind));
            let want = |f: &dyn Fn(usize) -> DVector<f64>| rows(&(0..xs.len()).map(f).collect::<Vec<_>>(), kind);
            assert!(max_abs(&(t.log_t(&x, &y) - want(&|i| t.log(&xs[i], &ys[i])))) < tol * 10.0);
            assert!(max_abs(&(t.exp_t(&x, &v) - want(&|i| t.exp(&xs[i], &vs[i])))) < tol);
            assert!(max_abs(&(t.tangent_project_t(&x, &y) - want(&|i| t.tangent_project(&xs[i], &ys[i])))) < tol);
            assert!(max_abs(&(t.project_t(&(&y * 2.5)) - &y)) < tol);
            let d: Vec<f64> = (0..xs.len()).map(|i| t.dist(&xs[i], &ys[i])).collect();
            let dt = t.dist_t(&x, &y);
            assert_eq!((dt.size(), dt.kind()), (vec![8], kind));
            assert!(max_abs(&(dt - Tensor::from_slice(&d).to_kind(kind))) < tol * 10.0);
            assert!(max_abs(&t.distance_to_manifold_t(&x)) < tol);
            // Gradients at x == y, y == -x, v == 0 and zero circles.
            let xg = x.detach().set_requires_grad(true);
            let zero = x.zeros_like().set_requires_grad(true);
            let total = t.dist_t(&xg, &x).sum(kind)
                + t.dist_t(&xg, &-&x).sum(kind)
                + t.log_t(&xg, &x).sum(kind)
                + t.log_t(&xg, &-&x).sum(kind)
                + t.exp_t(&xg, &zero).sum(kind)
                + t.project_t(&zero).sum(kind)
                + t.distance_to_manifold_t(&zero).sum(kind);
            assert!(all_finite(&total));
            total.backward();
            assert!(all_finite(&xg.grad()) && all_finite(&zero.grad()));
        }
    }

    #[test]
    fn zero_circle_convention_sampling_and_validate() {
        let t = Torus::new(2).unwrap();
        let x = Tensor::from_slice(&[0.0, 0.0, 0.0, -3.0]).view([1, 4]);
        let want = Tensor::from_slice(&[1.0, 0.0, 0.0, -1.0]).view([1, 4]);
        assert_eq!(max_abs(&(t.project_t(&x) - want)), 0.0);
        tch::manual_seed(1);
        let s = t.sample_uniform_t(2000, Kind::Float, Device::Cpu);
        assert_eq!((s.size(), s.kind()), (vec![2000, 4], Kind::Float));
        assert!(max_abs(&s.mean_dim([0i64].as_slice(), false, Kind::Float)) < 0.1);
        assert!(t.validate("s", &s, Some(1e-5)).is_ok());
        let err = t.validate("s", &x, Some(1e-5)).unwrap_err();
        assert!(matches!(err, GeomError::OffManifold { .. }) && err.to_string().contains("row 0"), "{err}");
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        assert!(t.check_point("p", &t.sample_uniform(&mut rng), 1e-12).is_ok());
    }
}
