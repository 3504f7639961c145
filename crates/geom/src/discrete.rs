//! A finite set of K distinct points m_1..m_K of R^n, seen as a 0-dimensional manifold.
//!
//! Conventions (`shared/design/MATH.md` 1, "Discrete sets"):
//! - `project(x)` is the nearest point in Euclidean distance; ties go to the lowest index.
//! - The tangent space is {0}: `tangent_project` and `log` return zero vectors, `exp(x, v) = x`, `dim` is 0
//!   and the injectivity radius is 0. `dist` and `inner` are the ambient (Euclidean) ones.
//! - The uniform law puts mass 1/K on each point and `log_volume` is log K (counting measure); the
//!   optional weights define a second law, drawn by [`DiscreteSet::sample_weighted`].
//! - Batched `project_t` uses exact pairwise distances (`cdist` without the matrix-product shortcut) and
//!   `argmin`; its output is connected to the input's autograd graph with gradient 0, the derivative of a
//!   piecewise-constant map.

use crate::check;
use crate::euclidean::{assert_point, check_len, from_flat_checked, norm_keepdim};
use crate::{GeomError, Manifold, Result, TensorManifold, TensorUniformSampler, UniformSampler};
use nalgebra::DVector;
use rand::distr::StandardUniform;
use rand::Rng;
use rand_distr::Distribution;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// The largest `d` accepted by [`DiscreteSet::hypercube`] (2^20 points).
pub const MAX_HYPERCUBE_DIM: usize = 20;

/// K distinct points of R^n with normalised weights.
///
/// ```
/// use geom::{DiscreteSet, Manifold};
/// use nalgebra::DVector;
///
/// let set = DiscreteSet::two_points();
/// let p = set.project(&DVector::from_vec(vec![0.3, 2.0])).unwrap();
/// assert_eq!(p, DVector::from_vec(vec![1.0, 0.0]));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteSet {
    points: Vec<DVector<f64>>,
    weights: Vec<f64>,
    cumulative: Vec<f64>,
    n: usize,
}

impl DiscreteSet {
    /// The set of `points` with optional nonnegative `weights` (normalised to sum 1; uniform if `None`).
    ///
    /// Errors naming `points` for an empty set, points of dimension 0, ragged dimensions, non-finite
    /// coordinates or duplicate points (-0.0 equals 0.0), and naming `weights` for a wrong length, a
    /// negative or non-finite weight, or weights that are all zero.
    pub fn new(points: Vec<DVector<f64>>, weights: Option<Vec<f64>>) -> Result<Self> {
        let k = points.len();
        if k == 0 {
            return Err(GeomError::invalid("points", "an empty set", "at least one point"));
        }
        let n = points[0].len();
        if n == 0 {
            return Err(GeomError::invalid("points", "points of dimension 0", "points of dimension >= 1"));
        }
        let mut seen: HashMap<Vec<u64>, usize> = HashMap::with_capacity(k);
        for (i, p) in points.iter().enumerate() {
            if p.len() != n {
                return Err(GeomError::Shape {
                    arg: "points".into(),
                    expected: format!("every point of dimension {n} (that of point 0)"),
                    got: format!("point {i} of dimension {}", p.len()),
                });
            }
            if let Some(j) = p.iter().position(|c| !c.is_finite()) {
                return Err(GeomError::NonFinite {
                    arg: "points".into(),
                    location: format!("point {i}, coordinate {j}"),
                });
            }
            // Adding 0.0 maps -0.0 to 0.0, so that both spellings of zero compare equal.
            let key: Vec<u64> = p.iter().map(|c| (c + 0.0).to_bits()).collect();
            if let Some(j) = seen.insert(key, i) {
                return Err(GeomError::invalid("points", format!("point {i} equal to point {j}"), "distinct points"));
            }
        }
        let weights = match weights {
            None => vec![1.0 / k as f64; k],
            Some(w) => normalise_weights(w, k)?,
        };
        let cumulative = weights.iter().scan(0.0, |acc, w| {
            *acc += w;
            Some(*acc)
        });
        Ok(Self { cumulative: cumulative.collect(), points, weights, n })
    }

    /// The two points (-1, 0) and (1, 0) of R^2, equally weighted.
    pub fn two_points() -> Self {
        let points = vec![DVector::from_vec(vec![-1.0, 0.0]), DVector::from_vec(vec![1.0, 0.0])];
        Self::new(points, None).expect("two distinct finite points")
    }

    /// The 2^d vertices {-1, 1}^d of the hypercube, equally weighted; errors naming `d` unless
    /// 1 <= d <= [`MAX_HYPERCUBE_DIM`].
    ///
    /// Vertex i has coordinate j equal to 1 if bit j of i is set and -1 otherwise, so vertex 0 is
    /// (-1, .., -1).
    pub fn hypercube(d: usize) -> Result<Self> {
        if d == 0 || d > MAX_HYPERCUBE_DIM {
            return Err(GeomError::invalid("d", d, &format!("a dimension in 1..={MAX_HYPERCUBE_DIM}")));
        }
        let points =
            (0..1usize << d).map(|i| DVector::from_fn(d, |j, _| if (i >> j) & 1 == 1 { 1.0 } else { -1.0 })).collect();
        Self::new(points, None)
    }

    /// The points, in the order given.
    pub fn points(&self) -> &[DVector<f64>] {
        &self.points
    }

    /// The normalised weights (summing to 1), one per point.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The logs of the normalised weights (-inf for a zero weight).
    pub fn log_weights(&self) -> Vec<f64> {
        self.weights.iter().map(|w| w.ln()).collect()
    }

    /// The number of points K.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Always false: a set holds at least one point.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The ambient dimension n.
    pub fn ambient_dim(&self) -> usize {
        self.n
    }

    /// The points as a tensor `[K, n]` of `kind` on `device`.
    pub fn points_tensor(&self, kind: Kind, device: Device) -> Tensor {
        let flat: Vec<f64> = self.points.iter().flat_map(|p| p.iter().copied()).collect();
        Tensor::from_slice(&flat).view([self.len() as i64, self.n as i64]).to_kind(kind).to_device(device)
    }

    /// The normalised weights as a tensor `[K]` of `kind` on `device`.
    pub fn weights_tensor(&self, kind: Kind, device: Device) -> Tensor {
        Tensor::from_slice(&self.weights).to_kind(kind).to_device(device)
    }

    /// Index of the point nearest to `x` (ties: the lowest index); panics naming `x` on a wrong length or
    /// a non-finite coordinate.
    pub fn nearest_index(&self, x: &DVector<f64>) -> usize {
        assert_point("DiscreteSet::nearest_index", "x", x, self.n);
        self.nearest(x).0
    }

    /// Batched [`DiscreteSet::nearest_index`]: `x: [B, n]` (any float dtype and device) -> `[B]` of
    /// Kind::Int64 on `x`'s device; not differentiable.
    pub fn nearest_index_t(&self, x: &Tensor) -> Tensor {
        check::assert_batch_shape("DiscreteSet::nearest_index_t", "x", x, &[self.n as i64]);
        self.cdist(x).argmin(1, false)
    }

    /// One point drawn according to the weights.
    pub fn sample_weighted<R: Rng + ?Sized>(&self, rng: &mut R) -> DVector<f64> {
        let u: f64 = StandardUniform.sample(rng);
        let i = self.cumulative.partition_point(|&c| c <= u);
        // Rounding can leave the last cumulative sum just below 1: fall back to the last weighted point.
        let i =
            if i < self.len() { i } else { self.weights.iter().rposition(|&w| w > 0.0).expect("a positive weight") };
        self.points[i].clone()
    }

    /// `n` points drawn according to the weights, `[n, ambient_dim]` of `kind` on `device`, with libtorch's
    /// generator (seed it with `tch::manual_seed`).
    pub fn sample_weighted_t(&self, n: i64, kind: Kind, device: Device) -> Tensor {
        let idx = self.weights_tensor(Kind::Double, device).multinomial(n, true);
        self.points_tensor(kind, device).index_select(0, &idx)
    }

    /// (index, Euclidean distance) of the nearest point, ties to the lowest index.
    fn nearest(&self, x: &DVector<f64>) -> (usize, f64) {
        let mut best = (0, f64::INFINITY);
        for (i, p) in self.points.iter().enumerate() {
            let d2 = (x - p).norm_squared();
            if d2 < best.1 {
                best = (i, d2);
            }
        }
        (best.0, best.1.sqrt())
    }

    /// `[B, n] -> [B, K]` exact Euclidean distances to the points, in `x`'s dtype and device.
    fn cdist(&self, x: &Tensor) -> Tensor {
        Tensor::cdist(x, &self.points_tensor(x.kind(), x.device()), 2.0, Some(2))
    }

    #[track_caller]
    fn assert_rows(&self, op: &str, a: (&str, &Tensor), b: (&str, &Tensor)) {
        check::assert_batch_shape(op, a.0, a.1, &[self.n as i64]);
        check::assert_batch_shape(op, b.0, b.1, &[self.n as i64]);
        check::assert_same_shape(op, a.1, b.1);
    }
}

fn normalise_weights(w: Vec<f64>, k: usize) -> Result<Vec<f64>> {
    if w.len() != k {
        return Err(GeomError::Shape {
            arg: "weights".into(),
            expected: format!("[{k}] (one per point)"),
            got: format!("[{}]", w.len()),
        });
    }
    if let Some(i) = w.iter().position(|x| !x.is_finite() || *x < 0.0) {
        return Err(GeomError::invalid("weights", format!("{} at index {i}", w[i]), "finite nonnegative weights"));
    }
    // Scale by the largest weight first so that the sum cannot overflow.
    let max = w.iter().copied().fold(0.0, f64::max);
    if max == 0.0 {
        return Err(GeomError::invalid("weights", "all zero", "weights with a positive sum"));
    }
    let total: f64 = w.iter().map(|x| x / max).sum();
    Ok(w.iter().map(|x| x / max / total).collect())
}

impl Manifold for DiscreteSet {
    type Point = DVector<f64>;

    fn name(&self) -> String {
        format!("discrete set of {} points in R^{}", self.len(), self.n)
    }
    fn ambient_shape(&self) -> Vec<i64> {
        vec![self.n as i64]
    }
    fn dim(&self) -> usize {
        0
    }
    fn injectivity_radius(&self) -> f64 {
        0.0
    }
    /// The nearest point (ties: the lowest index); errors naming `x` on a wrong length or a non-finite value.
    fn project(&self, x: &DVector<f64>) -> Result<DVector<f64>> {
        check_len("x", x, self.n)?;
        check::check_finite("x", x.as_slice())?;
        Ok(self.points[self.nearest(x).0].clone())
    }
    /// The zero vector (the tangent space is {0}).
    fn tangent_project(&self, x: &DVector<f64>, v: &DVector<f64>) -> DVector<f64> {
        assert_point("DiscreteSet::tangent_project", "x", x, self.n);
        assert_point("DiscreteSet::tangent_project", "v", v, self.n);
        DVector::zeros(self.n)
    }
    /// Returns `x`.
    fn exp(&self, x: &DVector<f64>, v: &DVector<f64>) -> DVector<f64> {
        assert_point("DiscreteSet::exp", "x", x, self.n);
        assert_point("DiscreteSet::exp", "v", v, self.n);
        x.clone()
    }
    /// The zero vector.
    fn log(&self, x: &DVector<f64>, y: &DVector<f64>) -> DVector<f64> {
        assert_point("DiscreteSet::log", "x", x, self.n);
        assert_point("DiscreteSet::log", "y", y, self.n);
        DVector::zeros(self.n)
    }
    /// The Euclidean distance |x - y|.
    fn dist(&self, x: &DVector<f64>, y: &DVector<f64>) -> f64 {
        assert_point("DiscreteSet::dist", "x", x, self.n);
        assert_point("DiscreteSet::dist", "y", y, self.n);
        (x - y).norm()
    }
    /// The ambient dot product (0 on tangent vectors, which are all zero).
    fn inner(&self, x: &DVector<f64>, u: &DVector<f64>, v: &DVector<f64>) -> f64 {
        assert_point("DiscreteSet::inner", "x", x, self.n);
        assert_point("DiscreteSet::inner", "u", u, self.n);
        assert_point("DiscreteSet::inner", "v", v, self.n);
        u.dot(v)
    }
    /// The Euclidean distance to the nearest point.
    fn distance_to_manifold(&self, x: &DVector<f64>) -> Result<f64> {
        check_len("x", x, self.n)?;
        check::check_finite("x", x.as_slice())?;
        Ok(self.nearest(x).1)
    }
    fn check_point(&self, arg: &str, x: &DVector<f64>, tol: f64) -> Result<()> {
        check_len(arg, x, self.n)?;
        check::check_finite(arg, x.as_slice())?;
        let distance = self.nearest(x).1;
        check::check_distance(arg, &self.name(), "point", distance, tol)
    }
    fn to_flat(&self, x: &DVector<f64>) -> Vec<f64> {
        x.as_slice().to_vec()
    }
    fn from_flat(&self, flat: &[f64]) -> Result<DVector<f64>> {
        from_flat_checked(flat, self.n)
    }
}

impl UniformSampler for DiscreteSet {
    /// A point drawn with probability 1/K each (the weights are ignored; see [`DiscreteSet::sample_weighted`]).
    fn sample_uniform<R: Rng + ?Sized>(&self, rng: &mut R) -> DVector<f64> {
        self.points[rng.random_range(0..self.len())].clone()
    }
    /// log K (counting measure).
    fn log_volume(&self) -> f64 {
        (self.len() as f64).ln()
    }
}

/// Batched discrete set on tensors `[B, n]` of any float dtype and device; outputs keep the input's dtype
/// and device.
impl TensorManifold for DiscreteSet {
    fn point_shape(&self) -> Vec<i64> {
        vec![self.n as i64]
    }
    /// `[B, n] -> [B, n]`, the nearest point (ties: the lowest index); gradient 0.
    fn project_t(&self, x: &Tensor) -> Tensor {
        check::assert_batch_shape("DiscreteSet::project_t", "x", x, &[self.n as i64]);
        let idx = self.nearest_index_t(x);
        self.points_tensor(x.kind(), x.device()).index_select(0, &idx) + x * 0.0
    }
    /// `[B, n] x [B, n] -> [B, n]` of zeros (gradient 0).
    fn tangent_project_t(&self, x: &Tensor, v: &Tensor) -> Tensor {
        self.assert_rows("DiscreteSet::tangent_project_t", ("x", x), ("v", v));
        v * 0.0
    }
    /// `[B, n] x [B, n] -> [B, n]`, returns `x` (as `x + 0 v`).
    fn exp_t(&self, x: &Tensor, v: &Tensor) -> Tensor {
        self.assert_rows("DiscreteSet::exp_t", ("x", x), ("v", v));
        x + v * 0.0
    }
    /// `[B, n] x [B, n] -> [B, n]` of zeros (gradient 0).
    fn log_t(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.assert_rows("DiscreteSet::log_t", ("x", x), ("y", y));
        (y - x) * 0.0
    }
    /// `[B, n] x [B, n] -> [B]`, |x - y|, gradient 0 at x == y.
    fn dist_t(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.assert_rows("DiscreteSet::dist_t", ("x", x), ("y", y));
        norm_keepdim(&(y - x)).squeeze_dim(-1)
    }
    /// `[B, n] -> [B]`, Euclidean distance to the nearest point.
    fn distance_to_manifold_t(&self, x: &Tensor) -> Tensor {
        check::assert_batch_shape("DiscreteSet::distance_to_manifold_t", "x", x, &[self.n as i64]);
        let idx = self.nearest_index_t(x);
        let nearest = self.points_tensor(x.kind(), x.device()).index_select(0, &idx);
        norm_keepdim(&(x - nearest)).squeeze_dim(-1)
    }
    fn validate(&self, arg: &str, x: &Tensor, tol: Option<f64>) -> Result<()> {
        check::validate_batch(arg, &self.name(), x, &[self.n as i64], tol, |x| self.distance_to_manifold_t(x))
    }
}

impl TensorUniformSampler for DiscreteSet {
    /// `[n, ambient_dim]` of `kind` on `device`, each point with probability 1/K (libtorch's generator).
    fn sample_uniform_t(&self, n: i64, kind: Kind, device: Device) -> Tensor {
        let idx = Tensor::randint(self.len() as i64, [n], (Kind::Int64, device));
        self.points_tensor(kind, device).index_select(0, &idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn v(x: &[f64]) -> DVector<f64> {
        DVector::from_column_slice(x)
    }
    fn err_of(points: Vec<DVector<f64>>, weights: Option<Vec<f64>>) -> String {
        DiscreteSet::new(points, weights).unwrap_err().to_string()
    }

    #[test]
    fn construction_errors_name_the_argument() {
        let two = || vec![v(&[0.0, 1.0]), v(&[1.0, 0.0])];
        assert!(err_of(vec![], None).contains("`points`"));
        assert!(err_of(vec![v(&[])], None).contains("`points`"));
        let e = err_of(vec![v(&[0.0, 1.0]), v(&[1.0])], None);
        assert!(e.contains("`points`") && e.contains("point 1"), "{e}");
        let e = err_of(vec![v(&[0.0, 1.0]), v(&[1.0, f64::NAN])], None);
        assert!(e.contains("`points`") && e.contains("point 1, coordinate 1"), "{e}");
        let e = err_of(vec![v(&[0.0, 1.0]), v(&[2.0, 1.0]), v(&[-0.0, 1.0])], None);
        assert!(e.contains("`points`") && e.contains("point 2 equal to point 0"), "{e}");
        for w in [vec![1.0], vec![1.0, -1.0], vec![1.0, f64::NAN], vec![f64::INFINITY, 1.0], vec![0.0, 0.0]] {
            let e = err_of(two(), Some(w));
            assert!(e.contains("`weights`"), "{e}");
        }
        assert!(DiscreteSet::hypercube(0).unwrap_err().to_string().contains("`d`"));
        assert!(DiscreteSet::hypercube(MAX_HYPERCUBE_DIM + 1).unwrap_err().to_string().contains("`d`"));
    }

    #[test]
    fn constructors_and_accessors() {
        let s = DiscreteSet::two_points();
        assert_eq!(s.points(), &[v(&[-1.0, 0.0]), v(&[1.0, 0.0])]);
        assert_eq!((s.len(), s.ambient_dim(), s.is_empty()), (2, 2, false));
        let c = DiscreteSet::hypercube(3).unwrap();
        assert_eq!(c.len(), 8);
        assert_eq!(c.points()[0], v(&[-1.0, -1.0, -1.0]));
        assert_eq!(c.points()[5], v(&[1.0, -1.0, 1.0]));
        assert!((c.log_volume() - 8f64.ln()).abs() < 1e-15);
        let w = DiscreteSet::new(vec![v(&[0.0]), v(&[1.0]), v(&[2.0])], Some(vec![1e308, 0.0, 1e308])).unwrap();
        assert_eq!(w.weights(), &[0.5, 0.0, 0.5]);
        assert_eq!(w.log_weights()[1], f64::NEG_INFINITY);
        assert!((w.log_weights()[0] - 0.5f64.ln()).abs() < 1e-15);
        let p = c.points_tensor(Kind::Float, Device::Cpu);
        assert_eq!((p.size(), p.kind()), (vec![8, 3], Kind::Float));
        assert_eq!(p.double_value(&[5, 1]), -1.0);
        assert_eq!((c.dim(), c.injectivity_radius(), c.ambient_shape()), (0, 0.0, vec![3]));
    }

    #[test]
    fn per_point_geometry() {
        let s = DiscreteSet::two_points();
        let (a, b) = (v(&[-1.0, 0.0]), v(&[1.0, 0.0]));
        assert_eq!(s.project(&v(&[0.2, -3.0])).unwrap(), b);
        // Ties go to the lowest index.
        assert_eq!(s.project(&v(&[0.0, 5.0])).unwrap(), a);
        assert_eq!(s.nearest_index(&v(&[0.0, 5.0])), 0);
        assert!(s.project(&v(&[f64::NAN, 0.0])).unwrap_err().to_string().contains("`x`"));
        assert!(s.project(&v(&[0.0])).unwrap_err().to_string().contains("`x`"));
        assert_eq!(s.tangent_project(&a, &b), v(&[0.0, 0.0]));
        assert_eq!(s.exp(&a, &b), a);
        assert_eq!(s.log(&a, &b), v(&[0.0, 0.0]));
        assert_eq!(s.dist(&a, &b), 2.0);
        assert_eq!(s.distance_to_manifold(&v(&[1.0, 2.0])).unwrap(), 2.0);
        assert!(s.check_point("pt", &a, 1e-12).is_ok());
        let e = s.check_point("pt", &v(&[0.0, 0.0]), 0.5).unwrap_err();
        assert!(matches!(e, GeomError::OffManifold { .. }) && e.to_string().contains("`pt`"), "{e}");
        assert_eq!(s.from_flat(&s.to_flat(&a)).unwrap(), a);
    }

    #[test]
    #[should_panic(expected = "DiscreteSet::dist: argument `y` has non-finite coordinate 0")]
    fn dist_panics_on_non_finite() {
        let s = DiscreteSet::two_points();
        s.dist(&v(&[0.0, 0.0]), &v(&[f64::INFINITY, 0.0]));
    }

    #[test]
    fn samplers_follow_their_laws() {
        let s = DiscreteSet::new(vec![v(&[0.0]), v(&[1.0]), v(&[2.0])], Some(vec![3.0, 0.0, 1.0])).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let n = 20000;
        let (mut uni, mut wei) = ([0usize; 3], [0usize; 3]);
        for _ in 0..n {
            uni[s.sample_uniform(&mut rng)[0] as usize] += 1;
            wei[s.sample_weighted(&mut rng)[0] as usize] += 1;
        }
        for c in uni {
            assert!((c as f64 / n as f64 - 1.0 / 3.0).abs() < 0.02, "{uni:?}");
        }
        assert_eq!(wei[1], 0);
        assert!((wei[0] as f64 / n as f64 - 0.75).abs() < 0.02, "{wei:?}");
        tch::manual_seed(3);
        let t = s.sample_weighted_t(n as i64, Kind::Float, Device::Cpu);
        assert_eq!((t.size(), t.kind()), (vec![n as i64, 1], Kind::Float));
        assert!((t.eq(0.0).to_kind(Kind::Double).mean(Kind::Double).double_value(&[]) - 0.75).abs() < 0.02);
        assert_eq!(t.eq(1.0).sum(Kind::Int64).int64_value(&[]), 0);
        let u = s.sample_uniform_t(n as i64, Kind::Double, Device::Cpu);
        assert!((u.eq(1.0).to_kind(Kind::Double).mean(Kind::Double).double_value(&[]) - 1.0 / 3.0).abs() < 0.02);
    }

    #[test]
    fn batched_agrees_with_per_point() {
        let s = DiscreteSet::hypercube(3).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut xs: Vec<DVector<f64>> =
            (0..20).map(|_| DVector::from_fn(3, |_, _| rng.random_range(-2.0..2.0))).collect();
        xs[0] = v(&[0.0, 0.0, 0.0]); // an 8-way tie: index 0
        xs[1] = s.points()[6].clone(); // exactly on the set
        for kind in [Kind::Float, Kind::Double] {
            let flat: Vec<f64> = xs.iter().flat_map(|x| x.iter().copied()).collect();
            let x = Tensor::from_slice(&flat).view([20, 3]).to_kind(kind).set_requires_grad(true);
            let p = s.project_t(&x);
            let idx = s.nearest_index_t(&x);
            let d = s.distance_to_manifold_t(&x);
            assert_eq!((p.kind(), d.kind(), d.size()), (kind, kind, vec![20]));
            for (i, xi) in xs.iter().enumerate() {
                assert_eq!(idx.int64_value(&[i as i64]) as usize, s.nearest_index(xi));
                let want = s.project(xi).unwrap();
                for j in 0..3 {
                    assert_eq!(p.double_value(&[i as i64, j]), want[j as usize]);
                }
                assert!((d.double_value(&[i as i64]) - s.distance_to_manifold(xi).unwrap()).abs() < 1e-6);
            }
            let y = s.project_t(&x.detach());
            let dist = s.dist_t(&x, &y);
            assert!((dist.double_value(&[1])).abs() < 1e-12);
            let total =
                p.sum(kind) + d.sum(kind) + dist.sum(kind) + s.log_t(&x, &y).sum(kind) + s.exp_t(&x, &y).sum(kind);
            total.backward();
            assert!(x.grad().isfinite().all().int64_value(&[]) != 0);
            assert!(s.validate("x", &y, Some(1e-6)).is_ok());
            let e = s.validate("x", &x.detach(), Some(1e-6)).unwrap_err();
            assert!(matches!(e, GeomError::OffManifold { .. }) && e.to_string().contains("row 0"), "{e}");
        }
    }
}
