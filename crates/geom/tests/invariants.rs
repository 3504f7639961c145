//! The per-point invariant checker (`geom::invariants`) run under proptest for every manifold, plus the
//! near-singular inputs: tiny tangent vectors, near-antipodal points and rotations by nearly pi.
//!
//! Tolerances (absolute, on flat ambient coordinates or on distances):
//! - `TOL = 1e-9` for identities on generic inputs, with `MARGIN = 1e-3` from the injectivity radius;
//! - tiny tangent vectors (norm `n` in [1e-12, 1e-6)): `1e-14 + 1e-6 n`, i.e. relative accuracy, which
//!   only cancellation-free formulas reach (an arccos-based distance is off by about 1e-16 / n);
//! - cut locus (distance in [pi - 1e-6, pi]): `CUT_TOL = 1e-7`, where log is ill-conditioned by nature.

use geom::invariants as inv;
use geom::strategies as s;
use geom::{DiscreteSet, Euclidean, Manifold, So3, Sphere, Torus};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Cases per invariant and manifold.
const CASES: u32 = 256;
/// Tolerance of identities on generic inputs.
const TOL: f64 = 1e-9;
/// Distance kept from the injectivity radius by the exp/log round trips.
const MARGIN: f64 = 1e-3;
/// Largest tangent norm drawn where the injectivity radius is infinite.
const MAX_NORM: f64 = 10.0;
/// Tolerance at the cut locus.
const CUT_TOL: f64 = 1e-7;

fn ok(r: Result<(), String>) -> Result<(), TestCaseError> {
    r.map_err(TestCaseError::fail)
}

/// Tolerance for a tiny tangent vector of norm `n`.
fn tiny_tol(n: f64) -> f64 {
    1e-14 + 1e-6 * n
}

/// The invariants of a manifold of positive dimension. `$points` is a strategy for its points and may
/// call `m()`.
macro_rules! positive_dim_invariants {
    ($module:ident, $ty:ty, $make:expr, $points:expr) => {
        mod $module {
            use super::*;

            type P = <$ty as Manifold>::Point;

            fn m() -> $ty {
                $make
            }

            fn points() -> impl Strategy<Value = P> + Clone {
                $points
            }

            /// Tangent norms strictly inside the injectivity radius (capped at MAX_NORM).
            fn inside() -> std::ops::Range<f64> {
                0.0..(m().injectivity_radius() - MARGIN).min(MAX_NORM)
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(CASES))]

                #[test]
                fn projection_idempotent_on_manifold_and_closest(
                    (x, a) in s::point_and_ambient_near(m(), points(), 0.9),
                    z in points(),
                ) {
                    let m = m();
                    ok(inv::check_project(&m, &a, TOL))?;
                    ok(inv::check_project_closest(&m, &a, &x, TOL))?;
                    ok(inv::check_project_closest(&m, &a, &z, TOL))?;
                    ok(inv::check_distance_to_manifold(&m, &a, TOL))?;
                }

                #[test]
                fn tangent_projection_idempotent_and_orthogonal(
                    x in points(),
                    v in s::ambient_point(m(), 3.0),
                    w in s::ambient_point(m(), 3.0),
                ) {
                    ok(inv::check_tangent_project(&m(), &x, &v, &w, TOL))?;
                }

                #[test]
                fn exp_of_log_is_identity(x in points(), y in points()) {
                    let m = m();
                    ok(inv::check_exp_log(&m, &x, &y, MARGIN, TOL))?;
                    ok(inv::check_log(&m, &x, &y, TOL))?;
                }

                #[test]
                fn log_of_exp_is_identity((x, v) in s::with_tangent(m(), points(), inside())) {
                    ok(inv::check_log_exp(&m(), &x, &v, MARGIN, TOL))?;
                }

                #[test]
                fn dist_of_exp_is_norm((x, v) in s::with_tangent(m(), points(), inside())) {
                    ok(inv::check_dist_exp(&m(), &x, &v, MARGIN, TOL))?;
                }

                #[test]
                fn dist_is_a_metric(x in points(), y in points(), z in points()) {
                    ok(inv::check_dist_metric(&m(), &x, &y, &z, TOL))?;
                }

                #[test]
                fn exp_stays_on_manifold((x, v) in s::with_tangent(m(), points(), 0.0..50.0)) {
                    ok(inv::check_exp_on_manifold(&m(), &x, &v, TOL))?;
                }

                #[test]
                fn tiny_tangent_vectors((x, v) in s::with_tangent(m(), points(), s::tiny_norm())) {
                    let m = m();
                    let tol = tiny_tol(inv::norm_at(&m, &x, &v));
                    ok(inv::check_exp_on_manifold(&m, &x, &v, TOL))?;
                    ok(inv::check_log_exp(&m, &x, &v, MARGIN, tol))?;
                    ok(inv::check_dist_exp(&m, &x, &v, MARGIN, tol))?;
                    let y = m.exp(&x, &v);
                    ok(inv::check_log(&m, &x, &y, tol))?;
                    ok(inv::check_dist_metric(&m, &x, &y, &x, tol))?;
                }
            }
        }
    };
}

positive_dim_invariants!(euclidean_3, Euclidean, Euclidean::new(3).unwrap(), s::ambient_point(m(), 5.0));
positive_dim_invariants!(sphere_2, Sphere, Sphere::new(2).unwrap(), s::unit_vector(2));
positive_dim_invariants!(sphere_3, Sphere, Sphere::new(3).unwrap(), s::unit_vector(3));
positive_dim_invariants!(sphere_5, Sphere, Sphere::new(5).unwrap(), s::unit_vector(5));
positive_dim_invariants!(so3, So3, So3, s::rotation());
positive_dim_invariants!(torus_2, Torus, Torus::new(2).unwrap(), s::torus_point(2));

/// The uniform samplers land on their manifolds (the generic strategy `s::point` relies on it).
mod samplers {
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn sphere_samples_on_manifold(x2 in s::point(Sphere::new(2).unwrap()), x5 in s::point(Sphere::new(5).unwrap())) {
            prop_assert!(Sphere::new(2).unwrap().distance_to_manifold(&x2).unwrap() <= TOL);
            prop_assert!(Sphere::new(5).unwrap().distance_to_manifold(&x5).unwrap() <= TOL);
        }

        #[test]
        fn so3_samples_on_manifold(r in s::point(So3)) {
            prop_assert!(So3.distance_to_manifold(&r).unwrap() <= TOL);
        }

        #[test]
        fn torus_samples_on_manifold(x in s::point(Torus::new(2).unwrap())) {
            prop_assert!(Torus::new(2).unwrap().distance_to_manifold(&x).unwrap() <= TOL);
        }

        #[test]
        fn discrete_samples_on_manifold(x in s::point(DiscreteSet::hypercube(3).unwrap())) {
            prop_assert!(DiscreteSet::hypercube(3).unwrap().distance_to_manifold(&x).unwrap() <= TOL);
        }

        #[test]
        fn so3_tangent_strategy_is_tangent_with_its_norm((r, v) in s::rotation_and_tangent(0.5..2.0)) {
            let n = inv::norm_at(&So3, &r, &v);
            prop_assert!((0.5 - TOL..2.0 + TOL).contains(&n), "|v| = {n}");
            prop_assert!((So3.tangent_project(&r, &v) - v).norm() <= TOL);
        }

        #[test]
        fn strategy_points_on_manifold(t in s::torus_point(3), r in s::rotation()) {
            prop_assert!(Torus::new(3).unwrap().distance_to_manifold(&t).unwrap() <= TOL);
            prop_assert!(So3.distance_to_manifold(&r).unwrap() <= TOL);
        }
    }
}

/// The hypercube {-1, 1}^3: a 0-dimensional manifold (tangent space {0}, exp(x, v) = x, log = 0,
/// injectivity radius 0). The exp/log round trips are vacuous; what remains is checked.
mod hypercube_3 {
    use super::*;

    fn m() -> DiscreteSet {
        DiscreteSet::hypercube(3).unwrap()
    }

    fn points() -> impl Strategy<Value = nalgebra::DVector<f64>> + Clone {
        s::discrete_point(m(), 3.0)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn projection_idempotent_on_manifold_and_closest(
            (x, near) in s::point_and_ambient_near(m(), points(), 0.9),
            far in s::ambient_point(m(), 3.0),
            z in points(),
        ) {
            let m = m();
            for a in [&near, &far] {
                ok(inv::check_project(&m, a, TOL))?;
                ok(inv::check_project_closest(&m, a, &x, TOL))?;
                ok(inv::check_project_closest(&m, a, &z, TOL))?;
                ok(inv::check_distance_to_manifold(&m, a, TOL))?;
            }
            // Within 0.9 of a vertex of {-1, 1}^3 the vertex is the unique nearest point.
            prop_assert_eq!(m.project(&near).unwrap(), x);
        }

        #[test]
        fn tangent_projection_is_zero(x in points(), v in s::ambient_point(m(), 3.0), w in s::ambient_point(m(), 3.0)) {
            let m = m();
            ok(inv::check_tangent_project(&m, &x, &v, &w, TOL))?;
            prop_assert!(m.tangent_project(&x, &v).norm() == 0.0);
        }

        #[test]
        fn log_is_zero_and_exp_is_identity(x in points(), y in points()) {
            let m = m();
            ok(inv::check_log(&m, &x, &y, TOL))?;
            ok(inv::check_exp_log(&m, &x, &y, MARGIN, TOL))?;
            let v = m.tangent_project(&x, &y);
            ok(inv::check_exp_on_manifold(&m, &x, &v, TOL))?;
            prop_assert_eq!(m.exp(&x, &v), x);
        }

        #[test]
        fn dist_is_a_metric(x in points(), y in points(), z in points()) {
            ok(inv::check_dist_metric(&m(), &x, &y, &z, TOL))?;
        }
    }

    #[test]
    fn zero_dimensional() {
        let m = m();
        assert_eq!(m.dim(), 0);
        assert_eq!(m.injectivity_radius(), 0.0);
    }
}

/// Near the cut locus: log returns a minimising geodesic (norm dist, exp lands on y) and dist stays a
/// metric, for spheres at distance in [pi - 1e-6, pi] and rotations by angles in [pi - 1e-6, pi].
mod cut_locus {
    use super::*;
    use std::f64::consts::PI;

    fn check_pair<M: Manifold>(m: &M, x: &M::Point, y: &M::Point) -> Result<(), TestCaseError> {
        ok(inv::check_log(m, x, y, CUT_TOL))?;
        ok(inv::check_dist_metric(m, x, y, x, CUT_TOL))?;
        let d = m.dist(x, y);
        prop_assert!(
            (PI - s::CUT_LOCUS_WIDTH - CUT_TOL..=PI).contains(&d),
            "{}: dist = {d} outside [pi - 1e-6, pi] for x = {x:?}, y = {y:?}",
            m.name()
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn sphere_2_near_antipodal((x, y) in s::near_antipodal_pair(2)) {
            check_pair(&Sphere::new(2).unwrap(), &x, &y)?;
        }

        #[test]
        fn sphere_3_near_antipodal((x, y) in s::near_antipodal_pair(3)) {
            check_pair(&Sphere::new(3).unwrap(), &x, &y)?;
        }

        #[test]
        fn sphere_5_near_antipodal((x, y) in s::near_antipodal_pair(5)) {
            check_pair(&Sphere::new(5).unwrap(), &x, &y)?;
        }

        #[test]
        fn so3_rotation_near_pi((r, q) in s::near_pi_rotation_pair()) {
            check_pair(&So3, &r, &q)?;
        }

        /// T^2 with circle 0 at angular distance pi - delta and circle 1 anywhere.
        #[test]
        fn torus_2_one_circle_near_antipodal(
            t0 in -PI..PI,
            t1 in -PI..PI,
            u1 in -PI..PI,
            delta in s::cut_locus_gap(),
        ) {
            let t2 = Torus::new(2).unwrap();
            let x = Torus::from_angles(&[t0, t1]);
            let y = Torus::from_angles(&[t0 + PI - delta, u1]);
            ok(inv::check_log(&t2, &x, &y, CUT_TOL))?;
            ok(inv::check_dist_metric(&t2, &x, &y, &x, CUT_TOL))?;
        }
    }

    #[test]
    fn antipodal_log_has_norm_pi() {
        let s2 = Sphere::new(3).unwrap();
        let x = nalgebra::DVector::from_vec(vec![0.0, 0.0, 1.0]);
        let y = -&x;
        let l = s2.log(&x, &y);
        assert!((l.norm() - PI).abs() < 1e-12, "|log| = {}", l.norm());
        assert!((s2.exp(&x, &l) - &y).norm() < 1e-12);
    }

    #[test]
    fn rotation_by_pi_about_z() {
        let q = nalgebra::Matrix3::from_diagonal(&nalgebra::Vector3::new(-1.0, -1.0, 1.0));
        let r = nalgebra::Matrix3::identity();
        assert!((So3.dist(&r, &q) - PI).abs() < 1e-12);
        let l = So3.log(&r, &q);
        assert!((inv::norm_at(&So3, &r, &l) - PI).abs() < 1e-12, "log = {l:?}");
        assert!((So3.exp(&r, &l) - q).norm() < 1e-12, "log = {l:?}");
    }
}

/// SO(3) projection against an independent reference: the Newton iteration X <- (X + X^{-T}) / 2 for the
/// orthogonal polar factor, which is the closest rotation when det X > 0 (true within Frobenius distance
/// 0.9 of a rotation).
mod so3_projection {
    use super::*;
    use nalgebra::Matrix3;

    fn newton_polar(x: &Matrix3<f64>) -> Matrix3<f64> {
        let mut r = *x;
        for _ in 0..100 {
            let next = 0.5 * (r + r.try_inverse().expect("invertible").transpose());
            let done = (next - r).norm() < 1e-15;
            r = next;
            if done {
                break;
            }
        }
        r
    }

    fn check(a: &Matrix3<f64>) -> Result<(), String> {
        let got = So3.project(a).map_err(|e| e.to_string())?;
        let want = newton_polar(a);
        let err = (got - want).norm();
        if err <= TOL * 1e-2 {
            Ok(())
        } else {
            Err(format!(
                "project(a) differs from the polar factor by {err:.3e} > 1e-11: a = {a:?}, got {got:?}, want {want:?}"
            ))
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn project_is_the_polar_factor((_r, a) in s::point_and_ambient_near(So3, s::rotation(), 0.9)) {
            ok(check(&a))?;
        }
    }

    /// A near-rotation with two close singular values (1.00035, 1.00012, 0.986): ill-conditioned singular
    /// vectors, well-conditioned polar factor.
    #[test]
    fn project_close_singular_values() {
        let a = Matrix3::new(
            0.7708773429039871,
            0.26160343903037137,
            0.5801899950217386,
            0.3346420432427318,
            -0.9283521747052924,
            -0.01738758879051688,
            0.5420486005821668,
            0.20767058648098222,
            -0.8145183746592327,
        );
        check(&a).unwrap();
    }
}
