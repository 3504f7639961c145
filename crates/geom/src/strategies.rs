//! Shared proptest strategies: points, ambient vectors, tangent vectors, rotations and the near-singular
//! configurations (tiny tangent vectors, near-antipodal points, rotations by nearly pi) on which every
//! manifold must still behave.
//!
//! Compiled only with the crate feature `proptest`; other crates enable it in their dev-dependencies
//! (`geom = { workspace = true, features = ["proptest"] }`).
//!
//! Generic strategies work for any [`Manifold`] through its flat coordinates (`to_flat` / `from_flat`);
//! [`point`] draws from the manifold's own uniform sampler with a `rand_chacha` generator seeded by
//! proptest, so a failing case is reproducible from proptest's persisted seed.
//! Concrete strategies cover the sphere, SO(3), the torus and discrete sets.
//!
//! ```
//! use geom::strategies as s;
//! use geom::{Manifold, Sphere};
//! use proptest::prelude::*;
//!
//! proptest!(|((x, v) in s::point_and_tangent(Sphere::new(3).unwrap(), 0.0..1.0))| {
//!     let s2 = Sphere::new(3).unwrap();
//!     prop_assert!(s2.distance_to_manifold(&s2.exp(&x, &v)).unwrap() < 1e-12);
//! });
//! ```

use crate::{Manifold, UniformSampler};
use nalgebra::{DVector, Matrix3, Vector3, Vector4};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::f64::consts::PI;

/// Lower end of the norms drawn by [`tiny_norm`].
pub const TINY_NORM_MIN: f64 = 1e-12;
/// Upper end of the norms drawn by [`tiny_norm`].
pub const TINY_NORM_MAX: f64 = 1e-6;
/// Largest distance from the cut locus drawn by [`near_antipodal_pair`] and [`near_pi_rotation_pair`]:
/// the geodesic distance of the pairs lies in `[pi - CUT_LOCUS_WIDTH, pi]`.
pub const CUT_LOCUS_WIDTH: f64 = 1e-6;

/// A standard normal number built by the Box-Muller transform from two bounded uniform draws.
///
/// The uniform inputs are bounded (the first is at least 1e-300), so the result is finite, with |z| < 38.
pub fn standard_normal() -> impl Strategy<Value = f64> + Clone {
    (1e-300f64..1.0, 0.0f64..1.0).prop_map(|(u1, u2)| (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos())
}

/// `n` independent standard normal numbers (see [`standard_normal`]).
pub fn gaussian_vector(n: usize) -> impl Strategy<Value = DVector<f64>> + Clone {
    proptest::collection::vec(standard_normal(), n).prop_map(DVector::from_vec)
}

/// A number whose logarithm is uniform on `[ln lo, ln hi)`; `0 < lo < hi`.
///
/// Use it for scales spanning several orders of magnitude (tiny norms, distances to the cut locus).
pub fn log_uniform(lo: f64, hi: f64) -> impl Strategy<Value = f64> + Clone {
    assert!(0.0 < lo && lo < hi, "log_uniform: expected 0 < lo < hi, got lo = {lo}, hi = {hi}");
    (lo.ln()..hi.ln()).prop_map(f64::exp)
}

/// A tiny norm, log-uniform in `[TINY_NORM_MIN, TINY_NORM_MAX)` = `[1e-12, 1e-6)`.
pub fn tiny_norm() -> impl Strategy<Value = f64> + Clone {
    log_uniform(TINY_NORM_MIN, TINY_NORM_MAX)
}

/// A uniformly distributed unit vector of R^d, i.e. a uniform point of the sphere S^{d-1}.
///
/// A normalised Gaussian vector (see [`gaussian_vector`]); vectors of norm below 1e-3 are rejected.
pub fn unit_vector(d: usize) -> impl Strategy<Value = DVector<f64>> + Clone {
    assert!(d >= 1, "unit_vector: expected d >= 1, got {d}");
    gaussian_vector(d).prop_filter_map("near-zero Gaussian vector", |g| {
        let n = g.norm();
        (n > 1e-3).then(|| g / n)
    })
}

/// A vector of R^n with independent coordinates uniform in `[-scale, scale)`.
pub fn ambient_vector(n: usize, scale: f64) -> impl Strategy<Value = DVector<f64>> + Clone {
    proptest::collection::vec(-scale..scale, n).prop_map(DVector::from_vec)
}

/// The number of flat coordinates of a point of `m` (the product of its ambient shape).
pub fn ambient_len<M: Manifold + ?Sized>(m: &M) -> usize {
    m.ambient_shape().iter().product::<i64>() as usize
}

fn from_flat_or_panic<M: Manifold + ?Sized>(m: &M, flat: &[f64]) -> M::Point {
    m.from_flat(flat).unwrap_or_else(|e| panic!("strategies: from_flat of {} failed: {e}", m.name()))
}

fn scaled<M: Manifold + ?Sized>(m: &M, v: &M::Point, factor: f64) -> M::Point {
    let flat: Vec<f64> = m.to_flat(v).into_iter().map(|c| c * factor).collect();
    from_flat_or_panic(m, &flat)
}

/// Riemannian norm sqrt(<v, v>_x) of a tangent vector `v` at `x`.
pub fn tangent_norm<M: Manifold + ?Sized>(m: &M, x: &M::Point, v: &M::Point) -> f64 {
    m.inner(x, v, v).max(0.0).sqrt()
}

/// A point of `m` drawn from its uniform law ([`UniformSampler::sample_uniform`]).
///
/// Proptest draws a `u64` seed (not shrunk: a smaller seed is not a simpler point) for a
/// `rand_chacha::ChaCha8Rng`, so a failure replays exactly from proptest's persisted seed.
pub fn point<M: UniformSampler + Clone + 'static>(m: M) -> impl Strategy<Value = M::Point> + Clone {
    any::<u64>().no_shrink().prop_map(move |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        m.sample_uniform(&mut rng)
    })
}

/// An ambient point of `m` (any point of the embedding space) with flat coordinates uniform in
/// `[-scale, scale)`.
///
/// Projection may be undefined at some of these (the origin for the sphere); prefer [`ambient_near`] to
/// test projection.
pub fn ambient_point<M: Manifold + Clone + 'static>(m: M, scale: f64) -> impl Strategy<Value = M::Point> + Clone {
    let n = ambient_len(&m);
    proptest::collection::vec(-scale..scale, n).prop_map(move |flat| from_flat_or_panic(&m, &flat))
}

/// An ambient point `x + u` near the point `x` of `m`, with `u` a uniformly oriented ambient vector of
/// flat Euclidean norm uniform in `[0, radius)`.
///
/// With `radius < 1` the projection is well defined for the sphere, the torus and SO(3).
pub fn ambient_near<M: Manifold + Clone + 'static>(
    m: M,
    x: M::Point,
    radius: f64,
) -> impl Strategy<Value = M::Point> + Clone {
    let n = ambient_len(&m);
    (unit_vector(n), 0.0..radius).prop_map(move |(u, r)| {
        let flat: Vec<f64> = m.to_flat(&x).iter().zip(u.iter()).map(|(a, b)| a + r * b).collect();
        from_flat_or_panic(&m, &flat)
    })
}

/// A pair `(x, a)`: a point `x` from `points` and an ambient point `a` near it (see [`ambient_near`]).
pub fn point_and_ambient_near<M, S>(m: M, points: S, radius: f64) -> impl Strategy<Value = (M::Point, M::Point)> + Clone
where
    M: Manifold + Clone + 'static,
    S: Strategy<Value = M::Point> + Clone,
{
    points.prop_flat_map(move |x| (Just(x.clone()), ambient_near(m.clone(), x, radius)))
}

/// A tangent vector at `x` with Riemannian norm drawn from `norm`, in a uniformly random direction of the
/// tangent space (a projected Gaussian, rescaled).
///
/// For a 0-dimensional manifold (a discrete set) the tangent space is {0} and the zero vector is returned
/// whatever the norm.
pub fn tangent_vector<M, N>(m: M, x: M::Point, norm: N) -> impl Strategy<Value = M::Point> + Clone
where
    M: Manifold + Clone + 'static,
    N: Strategy<Value = f64> + Clone,
{
    let n = ambient_len(&m);
    (gaussian_vector(n), norm).prop_filter_map("tangent projection of a Gaussian nearly zero", move |(g, r)| {
        let v = m.tangent_project(&x, &from_flat_or_panic(&m, g.as_slice()));
        if m.dim() == 0 {
            return Some(v);
        }
        let len = tangent_norm(&m, &x, &v);
        (len > 1e-6).then(|| scaled(&m, &v, r / len))
    })
}

/// A pair `(x, v)`: a point from `points` and a tangent vector at it with norm drawn from `norm`.
pub fn with_tangent<M, S, N>(m: M, points: S, norm: N) -> impl Strategy<Value = (M::Point, M::Point)> + Clone
where
    M: Manifold + Clone + 'static,
    S: Strategy<Value = M::Point> + Clone,
    N: Strategy<Value = f64> + Clone + 'static,
{
    points.prop_flat_map(move |x| (Just(x.clone()), tangent_vector(m.clone(), x, norm.clone())))
}

/// A pair `(x, v)`: a uniform point of `m` and a tangent vector at it with norm drawn from `norm`.
pub fn point_and_tangent<M, N>(m: M, norm: N) -> impl Strategy<Value = (M::Point, M::Point)> + Clone
where
    M: UniformSampler + Clone + 'static,
    N: Strategy<Value = f64> + Clone + 'static,
{
    with_tangent(m.clone(), point(m), norm)
}

/// A tangent vector at `x` with tiny norm, log-uniform in `[1e-12, 1e-6)` (see [`tiny_norm`]).
pub fn tiny_tangent<M: Manifold + Clone + 'static>(m: M, x: M::Point) -> impl Strategy<Value = M::Point> + Clone {
    tangent_vector(m, x, tiny_norm())
}

/// A point of `m` obtained by projecting an ambient point with coordinates uniform in `[-scale, scale)`;
/// draws where the projection errors are rejected.
///
/// The natural generic strategy for discrete sets (each point is hit with the probability of its
/// Voronoi cell inside the box).
pub fn projected_point<M: Manifold + Clone + 'static>(m: M, scale: f64) -> impl Strategy<Value = M::Point> + Clone {
    let n = ambient_len(&m);
    proptest::collection::vec(-scale..scale, n)
        .prop_filter_map("projection undefined", move |flat| m.project(&from_flat_or_panic(&m, &flat)).ok())
}

/// A point of a discrete set: the projection of an ambient point with coordinates uniform in
/// `[-scale, scale)` (see [`projected_point`]).
pub fn discrete_point(set: crate::DiscreteSet, scale: f64) -> impl Strategy<Value = DVector<f64>> + Clone {
    projected_point(set, scale)
}

/// A point of the torus (S^1)^k in R^{2k}: coordinates `(cos t_i, sin t_i)` for circle `i` at flat
/// positions `2i, 2i + 1`, with angles `t_i` uniform in `[-pi, pi)`.
pub fn torus_point(k: usize) -> impl Strategy<Value = DVector<f64>> + Clone {
    proptest::collection::vec(-PI..PI, k)
        .prop_map(|angles| DVector::from_iterator(2 * angles.len(), angles.iter().flat_map(|t| [t.cos(), t.sin()])))
}

/// The skew-symmetric matrix hat(w) with hat(w) u = w x u.
pub fn hat(w: &Vector3<f64>) -> Matrix3<f64> {
    Matrix3::new(0.0, -w.z, w.y, w.z, 0.0, -w.x, -w.y, w.x, 0.0)
}

/// A uniformly distributed (Haar) rotation, from a uniform unit quaternion (see [`unit_vector`]) through
/// [`crate::so3::quaternion_to_matrix`].
pub fn rotation() -> impl Strategy<Value = Matrix3<f64>> + Clone {
    unit_vector(4).prop_map(|q| crate::so3::quaternion_to_matrix(&Vector4::new(q[0], q[1], q[2], q[3])))
}

/// A tangent vector `R hat(w)` of SO(3) at `r`, with `w` uniformly oriented and |w| drawn from `norm`.
///
/// With the angle metric <U, V> = tr(U^T V) / 2 its Riemannian norm is |w|.
pub fn so3_tangent<N: Strategy<Value = f64> + Clone>(
    r: Matrix3<f64>,
    norm: N,
) -> impl Strategy<Value = Matrix3<f64>> + Clone {
    (unit_vector(3), norm).prop_map(move |(a, t)| r * hat(&(Vector3::new(a[0], a[1], a[2]) * t)))
}

/// A pair `(R, V)`: a Haar rotation and a tangent vector at it with norm drawn from `norm`
/// (see [`so3_tangent`]).
pub fn rotation_and_tangent<N>(norm: N) -> impl Strategy<Value = (Matrix3<f64>, Matrix3<f64>)> + Clone
where
    N: Strategy<Value = f64> + Clone + 'static,
{
    rotation().prop_flat_map(move |r| (Just(r), so3_tangent(r, norm.clone())))
}

/// A distance to the cut locus `delta` in `[0, CUT_LOCUS_WIDTH]`: exactly 0 a quarter of the time,
/// otherwise log-uniform in `[1e-16, 1e-6)`, so that every scale of the ill-conditioned regime is hit.
pub fn cut_locus_gap() -> impl Strategy<Value = f64> + Clone {
    prop_oneof![1 => Just(0.0), 3 => log_uniform(1e-16, CUT_LOCUS_WIDTH)]
}

/// A pair `(x, y)` of unit vectors of R^d (d >= 2) at geodesic distance `pi - delta` with `delta` from
/// [`cut_locus_gap`]; when `delta = 0`, `y = -x` exactly.
pub fn near_antipodal_pair(d: usize) -> impl Strategy<Value = (DVector<f64>, DVector<f64>)> + Clone {
    assert!(d >= 2, "near_antipodal_pair: expected d >= 2, got {d}");
    (unit_vector(d), unit_vector(d), cut_locus_gap()).prop_filter_map(
        "second direction nearly parallel to the first",
        |(x, g, delta)| {
            if delta == 0.0 {
                return Some((x.clone(), -x));
            }
            let u = &g - &x * x.dot(&g);
            let n = u.norm();
            (n > 1e-3).then(|| {
                let theta = PI - delta;
                let y = &x * theta.cos() + (u / n) * theta.sin();
                (x, y)
            })
        },
    )
}

/// A unit axis of R^3: a coordinate axis half of the time (the hardest case for logarithms near
/// angle pi, where the skew part vanishes exactly), otherwise uniform.
pub fn rotation_axis() -> impl Strategy<Value = Vector3<f64>> + Clone {
    prop_oneof![
        1 => Just(Vector3::x()),
        1 => Just(Vector3::y()),
        1 => Just(Vector3::z()),
        3 => unit_vector(3).prop_map(|a| Vector3::new(a[0], a[1], a[2])),
    ]
}

/// A pair `(R, Q)` of rotations with `R^T Q` a rotation by angle `pi - delta` (`delta` from
/// [`cut_locus_gap`]) about an axis from [`rotation_axis`]; `R` is the identity a quarter of the time.
///
/// At `delta = 0` the relative rotation is built exactly as `2 a a^T - I`.
pub fn near_pi_rotation_pair() -> impl Strategy<Value = (Matrix3<f64>, Matrix3<f64>)> + Clone {
    let base = prop_oneof![1 => Just(Matrix3::identity()), 3 => rotation()];
    (base, rotation_axis(), cut_locus_gap()).prop_map(|(r, a, delta)| {
        let rel = if delta == 0.0 {
            2.0 * a * a.transpose() - Matrix3::identity()
        } else {
            crate::so3::expm(&(a * (PI - delta)))
        };
        (r, r * rel)
    })
}
