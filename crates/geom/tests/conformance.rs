//! The two faces agree: every batched operation (`TensorManifold`) against its per-point twin
//! (`Manifold`) in `Kind::Double` on the CPU, on proptest batches, for every manifold.
//! Also: batched operations keep the dtype (`Kind::Float`) and device of their inputs, and gradients of
//! exp, log, dist, project and distance_to_manifold stay finite on near-singular batches (zero and tiny
//! tangent vectors, x == y, points on the manifold, antipodal points and rotations by pi).
//!
//! Tolerance: `CONFORMANCE_TOL = 1e-10`, relative to `1 + |value|` per row.

use geom::invariants::{self as inv, BatchInputs};
use geom::strategies as s;
use geom::{DiscreteSet, Euclidean, Manifold, So3, Sphere, TensorManifold, Torus};
use nalgebra::{DVector, Matrix3};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tch::{Device, Kind, Tensor};

/// Cases of the row-by-row comparison, per manifold.
const CASES: u32 = 128;
/// Cases of the dtype/device and gradient checks, per manifold.
const SMALL_CASES: u32 = 32;
/// Largest batch.
const MAX_BATCH: usize = 16;
/// Batched against per-point tolerance, relative to 1 + |value|.
const CONFORMANCE_TOL: f64 = 1e-10;

fn ok(r: Result<(), String>) -> Result<(), TestCaseError> {
    r.map_err(TestCaseError::fail)
}

/// One row of a batch: (x, y, v, a, w), see [`BatchInputs`].
type Row<P> = (P, P, P, P, P);

fn unzip<P>(rows: Vec<Row<P>>) -> BatchInputs<P> {
    let mut b = BatchInputs { x: vec![], y: vec![], v: vec![], a: vec![], w: vec![] };
    for (x, y, v, a, w) in rows {
        b.x.push(x);
        b.y.push(y);
        b.v.push(v);
        b.a.push(a);
        b.w.push(w);
    }
    b
}

/// Tangent norms: generic (beyond the injectivity radius too), tiny (Taylor branches) and zero.
fn norms() -> impl Strategy<Value = f64> + Clone {
    prop_oneof![6 => 0.0..7.0, 1 => s::tiny_norm(), 1 => Just(0.0)]
}

/// A row for manifold `m` with points from `points`: y is an independent point, x itself, or a tiny
/// step from x; v a tangent vector at x with norm from [`norms`]; a an ambient point near x; w any
/// ambient vector.
fn row<M, S>(m: M, points: S) -> impl Strategy<Value = Row<M::Point>>
where
    M: Manifold + Clone + 'static,
    S: Strategy<Value = M::Point> + Clone + 'static,
{
    points.clone().prop_flat_map(move |x| {
        let (m1, x1) = (m.clone(), x.clone());
        let near = s::tiny_tangent(m.clone(), x.clone()).prop_map(move |v| m1.exp(&x1, &v));
        let y = prop_oneof![4 => points.clone(), 1 => Just(x.clone()), 1 => near];
        (
            Just(x.clone()),
            y,
            s::tangent_vector(m.clone(), x.clone(), norms()),
            s::ambient_near(m.clone(), x, 0.9),
            s::ambient_point(m.clone(), 3.0),
        )
    })
}

fn batch<M, S>(m: M, points: S) -> impl Strategy<Value = BatchInputs<M::Point>>
where
    M: Manifold + Clone + 'static,
    S: Strategy<Value = M::Point> + Clone + 'static,
{
    proptest::collection::vec(row(m, points), 1..=MAX_BATCH).prop_map(unzip)
}

fn devices() -> Vec<Device> {
    let mut d = vec![Device::Cpu];
    if tch::Cuda::is_available() {
        d.push(Device::Cuda(0));
    }
    d
}

/// Gradient finiteness of every operation on near-singular inputs: `x` points of the manifold, `v`
/// zero, `tiny` tiny tangent vectors at `x`, `y` a point at the cut locus of `x` (or any point where
/// there is none).
fn check_gradients<M: Manifold + TensorManifold>(
    m: &M,
    x: &[M::Point],
    tiny: &[M::Point],
    cut: &[M::Point],
) -> Result<(), TestCaseError> {
    let zero: Vec<M::Point> = x.iter().map(|p| m.from_flat(&vec![0.0; m.to_flat(p).len()]).unwrap()).collect();
    ok(inv::check_grad_finite(m, "exp_t(x, 0)", &[x, &zero], |t| m.exp_t(&t[0], &t[1])))?;
    ok(inv::check_grad_finite(m, "exp_t(x, tiny v)", &[x, tiny], |t| m.exp_t(&t[0], &t[1])))?;
    ok(inv::check_grad_finite(m, "log_t(x, x)", &[x, x], |t| m.log_t(&t[0], &t[1])))?;
    ok(inv::check_grad_finite(m, "dist_t(x, x)", &[x, x], |t| m.dist_t(&t[0], &t[1])))?;
    ok(inv::check_grad_finite(m, "log_t(x, cut locus)", &[x, cut], |t| m.log_t(&t[0], &t[1])))?;
    ok(inv::check_grad_finite(m, "dist_t(x, cut locus)", &[x, cut], |t| m.dist_t(&t[0], &t[1])))?;
    ok(inv::check_grad_finite(m, "project_t(x on manifold)", &[x], |t| m.project_t(&t[0])))?;
    ok(inv::check_grad_finite(m, "tangent_project_t(x, 0)", &[x, &zero], |t| m.tangent_project_t(&t[0], &t[1])))?;
    Ok(())
}

/// Batched dist and log at tiny separations, against the exact values: for `y = exp(x, v)` with `|v|`
/// tiny, `dist_t(x, y) = |v|` and `log_t(x, y) = v` within `1e-14 + 1e-6 |v|` (relative accuracy, which
/// the `1 + |value|` scale of the conformance tolerance would not demand).
fn check_tiny_steps<M: Manifold + TensorManifold>(m: &M, x: &[M::Point], v: &[M::Point]) -> Result<(), TestCaseError> {
    let y: Vec<M::Point> = x.iter().zip(v).map(|(x, v)| m.exp(x, v)).collect();
    let (xt, yt) = (inv::to_batch(m, x, Kind::Double, Device::Cpu), inv::to_batch(m, &y, Kind::Double, Device::Cpu));
    let dist = inv::batch_rows(&m.dist_t(&xt, &yt));
    let log = inv::batch_rows(&m.log_t(&xt, &yt));
    for i in 0..x.len() {
        let n = inv::norm_at(m, &x[i], &v[i]);
        let tol = 1e-14 + 1e-6 * n;
        let flat_v = m.to_flat(&v[i]);
        let log_err = log[i].iter().zip(&flat_v).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        prop_assert!(
            (dist[i][0] - n).abs() <= tol && log_err <= tol,
            "{}: row {i}: dist_t = {:e}, |v| = {n:e}; |log_t - v| = {log_err:e} > {tol:e}\n  x = {:?}\n  v = {flat_v:?}",
            m.name(),
            dist[i][0],
            m.to_flat(&x[i])
        );
    }
    Ok(())
}

/// Gradient of `distance_to_manifold_t` at points on the manifold (distance 0, a norm at 0).
fn check_distance_gradient<M: Manifold + TensorManifold>(m: &M, x: &[M::Point]) -> Result<(), TestCaseError> {
    ok(inv::check_grad_finite(m, "distance_to_manifold_t(x on manifold)", &[x], |t| m.distance_to_manifold_t(&t[0])))
}

/// Conformance, dtype/device and gradient tests for one manifold. `$cut` maps a point `x` to a
/// strategy for points at its cut locus.
macro_rules! conformance_tests {
    ($module:ident, $ty:ty, $make:expr, $points:expr, $cut:expr) => {
        mod $module {
            use super::*;

            type P = <$ty as Manifold>::Point;

            fn m() -> $ty {
                $make
            }

            fn points() -> impl Strategy<Value = P> + Clone {
                $points
            }

            /// Rows (x, tiny tangent at x, cut-locus point of x).
            fn singular_rows() -> impl Strategy<Value = Vec<(P, P, P)>> {
                let row = points().prop_flat_map(|x: P| {
                    let cut: fn(&P) -> BoxedStrategy<P> = $cut;
                    (Just(x.clone()), s::tiny_tangent(m(), x.clone()), cut(&x))
                });
                proptest::collection::vec(row, 1..=8)
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(CASES))]

                #[test]
                fn batched_matches_per_point_in_double(b in batch(m(), points())) {
                    ok(inv::check_conformance(&m(), &b, CONFORMANCE_TOL))?;
                }
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(SMALL_CASES))]

                #[test]
                fn batched_keeps_float_dtype_and_device(b in batch(m(), points())) {
                    for device in devices() {
                        ok(inv::check_kind_device(&m(), &b, Kind::Float, device))?;
                        ok(inv::check_kind_device(&m(), &b, Kind::Double, device))?;
                    }
                }

                #[test]
                fn gradients_finite_near_singular_points(rows in singular_rows()) {
                    let x: Vec<P> = rows.iter().map(|r| r.0.clone()).collect();
                    let tiny: Vec<P> = rows.iter().map(|r| r.1.clone()).collect();
                    let cut: Vec<P> = rows.iter().map(|r| r.2.clone()).collect();
                    check_gradients(&m(), &x, &tiny, &cut)?;
                }

                #[test]
                fn distance_to_manifold_gradient_finite_on_manifold(x in proptest::collection::vec(points(), 1..=8)) {
                    check_distance_gradient(&m(), &x)?;
                }
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(CASES))]

                #[test]
                fn batched_accurate_for_tiny_steps(
                    rows in proptest::collection::vec(s::with_tangent(m(), points(), s::tiny_norm()), 1..=8),
                ) {
                    let (x, v): (Vec<P>, Vec<P>) = rows.into_iter().unzip();
                    check_tiny_steps(&m(), &x, &v)?;
                }
            }

            #[test]
            fn float_inputs_give_float_outputs() {
                let m = m();
                let x = to_float(&m, &[first_point(&m)]);
                let out = m.exp_t(&x, &x.zeros_like());
                assert_eq!(out.kind(), Kind::Float);
                assert_eq!(m.dist_t(&x, &x).kind(), Kind::Float);
            }
        }
    };
}

fn to_float<M: Manifold + TensorManifold>(m: &M, p: &[M::Point]) -> Tensor {
    inv::to_batch(m, p, Kind::Float, Device::Cpu)
}

/// A deterministic point of `m`: the projection of (1, 0.5, 0.25, ...).
fn first_point<M: Manifold>(m: &M) -> M::Point {
    let n: i64 = m.ambient_shape().iter().product();
    let flat: Vec<f64> = (0..n).map(|i| 0.5f64.powi(i as i32)).collect();
    m.project(&m.from_flat(&flat).unwrap()).unwrap()
}

fn same_point(x: &DVector<f64>) -> BoxedStrategy<DVector<f64>> {
    Just(x.clone()).boxed()
}

fn antipode(x: &DVector<f64>) -> BoxedStrategy<DVector<f64>> {
    Just(-x).boxed()
}

/// A torus point with circle 0 antipodal to x's and the other circles either equal or antipodal.
fn torus_cut(x: &DVector<f64>) -> BoxedStrategy<DVector<f64>> {
    let x = x.clone();
    proptest::collection::vec(any::<bool>(), x.len() / 2)
        .prop_map(move |flip| {
            let mut y = x.clone();
            for (i, f) in flip.iter().enumerate() {
                if i == 0 || *f {
                    y[2 * i] = -y[2 * i];
                    y[2 * i + 1] = -y[2 * i + 1];
                }
            }
            y
        })
        .boxed()
}

/// R (2 a a^T - I): the rotation by exactly pi from R about an axis from `s::rotation_axis`.
fn rotation_by_pi(r: &Matrix3<f64>) -> BoxedStrategy<Matrix3<f64>> {
    let r = *r;
    s::rotation_axis().prop_map(move |a| r * (2.0 * a * a.transpose() - Matrix3::identity())).boxed()
}

conformance_tests!(euclidean_3, Euclidean, Euclidean::new(3).unwrap(), s::ambient_point(m(), 5.0), same_point);
conformance_tests!(sphere_2, Sphere, Sphere::new(2).unwrap(), s::unit_vector(2), antipode);
conformance_tests!(sphere_3, Sphere, Sphere::new(3).unwrap(), s::unit_vector(3), antipode);
conformance_tests!(sphere_5, Sphere, Sphere::new(5).unwrap(), s::unit_vector(5), antipode);
conformance_tests!(so3, So3, So3, s::rotation(), rotation_by_pi);
conformance_tests!(torus_2, Torus, Torus::new(2).unwrap(), s::torus_point(2), torus_cut);
conformance_tests!(hypercube_3, DiscreteSet, DiscreteSet::hypercube(3).unwrap(), s::discrete_point(m(), 3.0), antipode);

#[test]
fn dtype_is_float_for_all_manifolds_on_cpu() {
    // One explicit, non-proptest statement of the dtype contract for the default training dtype.
    let s2 = Sphere::new(3).unwrap();
    let x = to_float(&s2, &[first_point(&s2)]);
    assert_eq!(s2.project_t(&x).kind(), Kind::Float);
    assert_eq!(s2.project_t(&x).device(), Device::Cpu);
}

/// Batched dist against per-point next to the cut locus (distance in [pi - 1e-6, pi]), where dist is
/// well conditioned even though log is not.
mod cut_locus {
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn sphere_dist_near_antipodal(
            p2 in proptest::collection::vec(s::near_antipodal_pair(2), 1..=8),
            p3 in proptest::collection::vec(s::near_antipodal_pair(3), 1..=8),
            p5 in proptest::collection::vec(s::near_antipodal_pair(5), 1..=8),
        ) {
            for (d, pairs) in [(2, p2), (3, p3), (5, p5)] {
                let (x, y): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
                ok(inv::check_conform_dist(&Sphere::new(d).unwrap(), &x, &y, CONFORMANCE_TOL))?;
            }
        }

        #[test]
        fn so3_dist_near_pi(pairs in proptest::collection::vec(s::near_pi_rotation_pair(), 1..=8)) {
            let (x, y): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
            ok(inv::check_conform_dist(&So3, &x, &y, CONFORMANCE_TOL))?;
        }
    }
}
