//! Per-point SO(3) tests: Rodrigues against nalgebra, log/exp round trips near 0 and pi, projection,
//! quaternions, the `Manifold` impl and the Haar sampler.

use super::*;
use nalgebra::{Quaternion, Rotation3, UnitQuaternion};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::f64::consts::FRAC_PI_2;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn gaussian3(rng: &mut ChaCha8Rng) -> Vector3<f64> {
    Vector3::from_fn(|_, _| -> f64 { StandardNormal.sample(rng) })
}

fn unit3(rng: &mut ChaCha8Rng) -> Vector3<f64> {
    loop {
        let v = gaussian3(rng);
        if v.norm() > 1e-3 {
            return v.normalize();
        }
    }
}

fn gaussian33(rng: &mut ChaCha8Rng) -> Matrix3<f64> {
    Matrix3::from_fn(|_, _| -> f64 { StandardNormal.sample(rng) })
}

fn assert_rotation(r: &Matrix3<f64>, tol: f64) {
    assert!((r.transpose() * r - Matrix3::identity()).norm() < tol, "not orthogonal: {r}");
    assert!((r.determinant() - 1.0).abs() < tol, "det {} != 1: {r}", r.determinant());
}

const ANGLES: [f64; 14] = [
    0.0,
    1e-10,
    1e-6,
    5e-3,
    9.9e-3,
    1.01e-2,
    0.3,
    1.0,
    FRAC_PI_2 - 1e-7,
    FRAC_PI_2 + 1e-7,
    2.5,
    3.1,
    PI - 1e-6,
    PI - 1e-9,
];

#[test]
fn hat_is_the_cross_product_and_vee_inverts_it() {
    let mut rng = rng(1);
    for _ in 0..20 {
        let (w, v) = (gaussian3(&mut rng), gaussian3(&mut rng));
        assert!((hat(&w) * v - w.cross(&v)).norm() < 1e-14);
        assert_eq!(vee(&hat(&w)), w);
        let a = gaussian33(&mut rng);
        assert!((vee(&a) - vee(&((a - a.transpose()) * 0.5))).norm() < 1e-15);
    }
}

#[test]
fn expm_matches_nalgebra_rotation() {
    let mut rng = rng(2);
    for &angle in ANGLES.iter().chain(&[PI, 4.0, 7.0]) {
        for _ in 0..5 {
            let w = unit3(&mut rng) * angle;
            let expected = *Rotation3::from_scaled_axis(w).matrix();
            let r = expm(&w);
            assert!((r - expected).norm() < 1e-14, "angle {angle}: {r} vs {expected}");
            assert_rotation(&r, 1e-14);
        }
    }
}

#[test]
fn logm_inverts_expm_below_pi() {
    let mut rng = rng(3);
    for &angle in &ANGLES {
        for _ in 0..5 {
            let w = unit3(&mut rng) * angle;
            let r = expm(&w);
            let l = logm(&r);
            assert!((l - w).norm() < 1e-12, "angle {angle}: logm {l} vs {w}");
            assert!((rotation_angle(&r) - angle).abs() < 1e-12, "angle {angle}");
        }
    }
    assert_eq!(logm(&Matrix3::identity()), Vector3::zeros());
    assert_eq!(rotation_angle(&Matrix3::identity()), 0.0);
}

#[test]
fn logm_at_angle_pi_recovers_the_axis_up_to_sign() {
    let mut rng = rng(4);
    let mut axes: Vec<Vector3<f64>> = (0..20).map(|_| unit3(&mut rng)).collect();
    axes.extend([Vector3::x(), Vector3::y(), Vector3::z(), Vector3::new(1.0, 1.0, 0.0).normalize()]);
    for a in axes {
        let r = expm(&(a * PI));
        let l = logm(&r);
        assert!((l.norm() - PI).abs() < 1e-12);
        let err = (l - a * PI).norm().min((l + a * PI).norm());
        assert!(err < 1e-12, "axis {a}: logm {l}");
        assert!((expm(&l) - r).norm() < 1e-12);
    }
    let l = logm(&Matrix3::from_diagonal(&Vector3::new(1.0, -1.0, -1.0)));
    assert!((l.x.abs() - PI).abs() < 1e-15 && l.y == 0.0 && l.z == 0.0, "{l}");
}

#[test]
fn dist_is_the_norm_of_log() {
    let so3 = So3::new();
    let mut rng = rng(5);
    for &angle in &ANGLES {
        let r = so3.sample_uniform(&mut rng);
        let v = r * hat(&(unit3(&mut rng) * angle));
        let q = so3.exp(&r, &v);
        assert_rotation(&q, 1e-13);
        assert!((so3.dist(&r, &q) - angle).abs() < 1e-12);
        assert!((so3.dist(&q, &r) - angle).abs() < 1e-12);
        let l = so3.log(&r, &q);
        assert!((l - v).norm() < 1e-12, "angle {angle}");
        assert!((so3.inner(&r, &l, &l).sqrt() - angle).abs() < 1e-12);
    }
}

#[test]
fn tangent_projection_and_inner_product() {
    let so3 = So3::new();
    let mut rng = rng(6);
    let r = so3.sample_uniform(&mut rng);
    let x = gaussian33(&mut rng);
    let v = so3.tangent_project(&r, &x);
    let m = r.transpose() * v;
    assert!((m + m.transpose()).norm() < 1e-14, "R^T v is not skew");
    assert!((so3.tangent_project(&r, &v) - v).norm() < 1e-14);
    assert!((x - v).dot(&v).abs() < 1e-13, "residual not orthogonal");
    let (a, b) = (gaussian3(&mut rng), gaussian3(&mut rng));
    assert!((so3.inner(&r, &(r * hat(&a)), &(r * hat(&b))) - a.dot(&b)).abs() < 1e-13);
}

#[test]
fn projection_of_a_noisy_rotation_is_its_polar_factor() {
    let so3 = So3::new();
    let mut rng = rng(7);
    for _ in 0..20 {
        let r = so3.sample_uniform(&mut rng);
        assert!((project_to_so3(&r) - r).norm() < 1e-14);
        let x = r + gaussian33(&mut rng) * 1e-3;
        let q = so3.project(&x).unwrap();
        assert_rotation(&q, 1e-14);
        let p = q.transpose() * x;
        assert!((p - p.transpose()).norm() < 1e-14, "Q^T X is not symmetric: {}", (p - p.transpose()).norm());
        assert!(p.symmetric_eigenvalues().min() > 0.0);
        assert!((q - r).norm() < 1e-2);
        assert!((so3.distance_to_manifold(&x).unwrap() - (x - q).norm()).abs() < 1e-15);
        assert!((project_to_so3(&q) - q).norm() < 1e-14, "projection is not idempotent");
    }
}

#[test]
fn projection_of_reflections_and_degenerate_matrices_is_a_rotation() {
    let mut rng = rng(8);
    let flip = Matrix3::from_diagonal(&Vector3::new(1.0, 1.0, -1.0));
    for _ in 0..10 {
        let r = So3::new().sample_uniform(&mut rng);
        let q = project_to_so3(&(r * flip));
        assert_rotation(&q, 1e-13);
        assert!((project_to_so3(&gaussian33(&mut rng)).determinant() - 1.0).abs() < 1e-13);
    }
    // diag(3, 2, -1) = I diag(3, 2, 1) diag(1, 1, -1): the flip lands on the smallest singular value.
    let q = project_to_so3(&Matrix3::from_diagonal(&Vector3::new(3.0, 2.0, -1.0)));
    assert!((q - Matrix3::identity()).norm() < 1e-14, "{q}");
    let a = gaussian3(&mut rng);
    for x in [Matrix3::zeros(), a * a.transpose(), hat(&a), -Matrix3::identity()] {
        assert_rotation(&project_to_so3(&x), 1e-13);
    }
}

#[test]
fn quaternions_round_trip() {
    let mut rng = rng(9);
    for _ in 0..50 {
        let q = Vector4::from_fn(|_, _| -> f64 { StandardNormal.sample(&mut rng) }) * 3.0;
        let r = quaternion_to_matrix(&q);
        let expected = UnitQuaternion::from_quaternion(Quaternion::new(q[0], q[1], q[2], q[3])).to_rotation_matrix();
        assert!((r - expected.matrix()).norm() < 1e-14);
        let back = matrix_to_quaternion(&r);
        assert!(back[0] >= 0.0);
        let qn = q.normalize() * q[0].signum();
        assert!((back - qn).norm() < 1e-14, "{back} vs {qn}");
    }
    let back = matrix_to_quaternion(&quaternion_to_matrix(&Vector4::new(0.0, -0.6, 0.8, 0.0)));
    assert!((back - Vector4::new(0.0, 0.6, -0.8, 0.0)).norm() < 1e-15, "{back}");
    assert_eq!(quaternion_to_matrix(&Vector4::zeros()), Matrix3::identity());
    assert_eq!(matrix_to_quaternion(&Matrix3::identity()), Vector4::new(1.0, 0.0, 0.0, 0.0));
}

#[test]
fn flat_coordinates_are_row_major_and_checked() {
    let so3 = So3::new();
    let x = Matrix3::new(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0);
    let flat = so3.to_flat(&x);
    assert_eq!(flat, (1..=9).map(f64::from).collect::<Vec<_>>());
    assert_eq!(so3.from_flat(&flat).unwrap(), x);
    assert!(matches!(so3.from_flat(&flat[..8]), Err(GeomError::Shape { .. })));
    assert_eq!((so3.name(), so3.ambient_shape(), so3.dim()), ("SO(3)".to_string(), vec![3, 3], 3));
    assert_eq!(so3.injectivity_radius(), PI);
}

#[test]
fn checks_name_the_argument() {
    let so3 = So3::new();
    let mut bad = Matrix3::identity();
    bad[(1, 2)] = f64::NAN;
    assert!(matches!(so3.project(&bad), Err(GeomError::NonFinite { arg, .. }) if arg == "x"));
    assert!(matches!(so3.check_point("start", &bad, 1e-6), Err(GeomError::NonFinite { arg, .. }) if arg == "start"));
    let off = Matrix3::identity() * 1.1;
    assert!(matches!(so3.check_point("start", &off, 1e-6), Err(GeomError::OffManifold { arg, .. }) if arg == "start"));
    assert!(so3.check_point("start", &Matrix3::identity(), 1e-12).is_ok());
}

#[test]
#[should_panic(expected = "argument `w`")]
fn expm_panics_on_non_finite_input() {
    expm(&Vector3::new(0.0, f64::INFINITY, 0.0));
}

#[test]
#[should_panic(expected = "argument `y`")]
fn log_panics_naming_the_argument() {
    let mut y = Matrix3::identity();
    y[(0, 0)] = f64::NAN;
    So3::new().log(&Matrix3::identity(), &y);
}

#[test]
fn uniform_sampler_has_the_haar_angle_law() {
    let so3 = So3::new();
    let mut rng = rng(10);
    let n = 20_000;
    let mut mean = Matrix3::zeros();
    let mut mean_angle = 0.0;
    for _ in 0..n {
        let r = so3.sample_uniform(&mut rng);
        mean += r / n as f64;
        mean_angle += rotation_angle(&r) / n as f64;
    }
    // Haar: E[R] = 0, and the angle has density (1 - cos t) / pi on [0, pi] with mean pi/2 + 2/pi.
    assert!(mean.amax() < 0.03, "{mean}");
    assert!((mean_angle - (PI / 2.0 + 2.0 / PI)).abs() < 0.02, "{mean_angle}");
    assert!((so3.log_volume() - (8.0 * PI * PI).ln()).abs() < 1e-15);
}
