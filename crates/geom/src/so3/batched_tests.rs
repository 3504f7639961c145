//! Batched SO(3) tests: agreement with the per-point reference in Double, finite gradients at the singular
//! points in Float and Double, gradients against finite differences, Float accuracy near pi, validation.

use super::*;
use crate::{TensorManifold, TensorUniformSampler};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::f64::consts::FRAC_PI_2;
use tch::{Device, Kind, Tensor};

const CPU: Device = Device::Cpu;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn gaussian3(rng: &mut ChaCha8Rng) -> Vector3<f64> {
    Vector3::from_fn(|_, _| -> f64 { StandardNormal.sample(rng) })
}

fn unit3(rng: &mut ChaCha8Rng) -> Vector3<f64> {
    gaussian3(rng).normalize()
}

fn gaussian33(rng: &mut ChaCha8Rng) -> Matrix3<f64> {
    Matrix3::from_fn(|_, _| -> f64 { StandardNormal.sample(rng) })
}

fn mats_t(ms: &[Matrix3<f64>], kind: Kind) -> Tensor {
    let flat: Vec<f64> = ms.iter().flat_map(|m| So3.to_flat(m)).collect();
    Tensor::from_slice(&flat).view([ms.len() as i64, 3, 3]).to_kind(kind)
}

fn vecs_t(vs: &[Vector3<f64>], kind: Kind) -> Tensor {
    let flat: Vec<f64> = vs.iter().flat_map(|v| v.iter().copied()).collect();
    Tensor::from_slice(&flat).view([vs.len() as i64, 3]).to_kind(kind)
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.detach().to_kind(Kind::Double).contiguous().view([-1])).unwrap()
}

fn mats(t: &Tensor) -> Vec<Matrix3<f64>> {
    values(t).chunks(9).map(Matrix3::from_row_slice).collect()
}

fn vecs(t: &Tensor) -> Vec<Vector3<f64>> {
    values(t).chunks(3).map(Vector3::from_column_slice).collect()
}

fn max_abs(t: &Tensor) -> f64 {
    values(t).iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// Rotations at the angles of interest (0, tiny, the Taylor threshold, generic, pi/2, near pi), random axes.
fn test_rotations(rng: &mut ChaCha8Rng) -> (Vec<Vector3<f64>>, Vec<Matrix3<f64>>) {
    let angles = [0.0, 1e-9, 9.9e-3, 1.01e-2, 0.7, FRAC_PI_2 - 1e-7, FRAC_PI_2 + 1e-7, 2.0, 3.0, PI - 1e-4, PI - 1e-8];
    let ws: Vec<_> = angles.iter().flat_map(|&a| [unit3(rng) * a, unit3(rng) * a]).collect();
    let rs = ws.iter().map(expm).collect();
    (ws, rs)
}

#[test]
fn hat_and_vee_agree_with_per_point() {
    let mut rng = rng(1);
    let ws: Vec<_> = (0..8).map(|_| gaussian3(&mut rng)).collect();
    let as_: Vec<_> = (0..8).map(|_| gaussian33(&mut rng)).collect();
    for (got, w) in mats(&hat_t(&vecs_t(&ws, Kind::Double))).iter().zip(&ws) {
        assert_eq!(*got, hat(w));
    }
    for (got, a) in vecs(&vee_t(&mats_t(&as_, Kind::Double))).iter().zip(&as_) {
        assert!((got - vee(a)).norm() < 1e-15);
    }
    assert_eq!(hat_t(&Tensor::zeros([0, 3], (Kind::Float, CPU))).size(), [0, 3, 3]);
}

#[test]
fn expm_logm_and_angle_agree_with_per_point_in_double() {
    let mut rng = rng(2);
    let (mut ws, rs) = test_rotations(&mut rng);
    ws.extend([unit3(&mut rng) * 4.0, unit3(&mut rng) * 9.0, gaussian3(&mut rng)]);
    for (got, w) in mats(&expm_t(&vecs_t(&ws, Kind::Double))).iter().zip(&ws) {
        assert!((got - expm(w)).norm() < 1e-14, "expm at {w}");
    }
    let r = mats_t(&rs, Kind::Double);
    for (got, m) in vecs(&logm_t(&r)).iter().zip(&rs) {
        assert!((got - logm(m)).norm() < 1e-12, "logm: {got} vs {}", logm(m));
    }
    for (got, m) in values(&rotation_angle_t(&r)).iter().zip(&rs) {
        assert!((got - rotation_angle(m)).abs() < 1e-14);
    }
}

#[test]
fn logm_at_angle_pi_is_a_logarithm() {
    let mut rng = rng(3);
    let mut rs: Vec<_> = (0..10).map(|_| expm(&(unit3(&mut rng) * PI))).collect();
    rs.push(Matrix3::from_diagonal(&Vector3::new(1.0, -1.0, -1.0)));
    rs.push(Matrix3::from_diagonal(&Vector3::new(-1.0, -1.0, 1.0)));
    for kind in [Kind::Float, Kind::Double] {
        let tol = if kind == Kind::Double { 1e-12 } else { 1e-5 };
        for (l, r) in vecs(&logm_t(&mats_t(&rs, kind))).iter().zip(&rs) {
            assert!((l.norm() - PI).abs() < tol, "{kind:?}: |logm| = {}", l.norm());
            assert!((expm(l) - r).norm() < 10.0 * tol, "{kind:?}: expm(logm(r)) != r");
        }
    }
}

#[test]
fn logm_is_accurate_near_pi_in_float() {
    let mut rng = rng(4);
    for (gap, signed) in [(1e-1, true), (1e-2, true), (1e-4, true), (1e-6, false)] {
        let ws: Vec<_> = (0..10).map(|_| unit3(&mut rng) * (PI - gap)).collect();
        let rs: Vec<_> = ws.iter().map(expm).collect();
        for (l, w) in vecs(&logm_t(&mats_t(&rs, Kind::Float))).iter().zip(&ws) {
            let err = if signed { (l - w).norm() } else { (l - w).norm().min((l + w).norm()) };
            assert!(err < 2e-5, "gap {gap}: {l} vs {w}");
        }
    }
}

#[test]
fn projection_and_quaternions_agree_with_per_point_in_double() {
    let mut rng = rng(5);
    let mut xs: Vec<_> = (0..10).map(|_| gaussian33(&mut rng)).collect();
    xs.extend((0..5).map(|_| So3.sample_uniform(&mut rng) + gaussian33(&mut rng) * 1e-3));
    xs.push(Matrix3::from_diagonal(&Vector3::new(3.0, 2.0, -1.0)));
    for (got, x) in mats(&project_to_so3_t(&mats_t(&xs, Kind::Double))).iter().zip(&xs) {
        assert!((got - project_to_so3(x)).norm() < 1e-12);
    }
    let mut qs: Vec<Vector4<f64>> =
        (0..10).map(|_| Vector4::from_fn(|_, _| -> f64 { StandardNormal.sample(&mut rng) })).collect();
    qs.push(Vector4::zeros());
    let flat: Vec<f64> = qs.iter().flat_map(|q| q.iter().copied()).collect();
    let q_t = Tensor::from_slice(&flat).view([qs.len() as i64, 4]);
    for (got, q) in mats(&quaternion_to_matrix_t(&q_t)).iter().zip(&qs) {
        assert!((got - quaternion_to_matrix(q)).norm() < 1e-14);
    }
}

#[test]
fn manifold_operations_agree_with_per_point_in_double() {
    let mut rng = rng(6);
    let (ws, _) = test_rotations(&mut rng);
    let xs: Vec<_> = ws.iter().map(|_| So3.sample_uniform(&mut rng)).collect();
    let vs: Vec<_> = xs.iter().zip(&ws).map(|(x, w)| x * hat(w)).collect();
    let ys: Vec<_> = xs.iter().zip(&vs).map(|(x, v)| So3.exp(x, v)).collect();
    let amb: Vec<_> = xs.iter().map(|_| gaussian33(&mut rng)).collect();
    let (x, v, y, a) =
        (mats_t(&xs, Kind::Double), mats_t(&vs, Kind::Double), mats_t(&ys, Kind::Double), mats_t(&amb, Kind::Double));
    let close = |t: &Tensor, f: &dyn Fn(usize) -> Matrix3<f64>, tol: f64| {
        for (i, got) in mats(t).iter().enumerate() {
            assert!((got - f(i)).norm() < tol, "row {i}: {got} vs {}", f(i));
        }
    };
    close(&So3.exp_t(&x, &v), &|i| ys[i], 1e-13);
    close(&So3.log_t(&x, &y), &|i| So3.log(&xs[i], &ys[i]), 1e-11);
    close(&So3.tangent_project_t(&x, &a), &|i| So3.tangent_project(&xs[i], &amb[i]), 1e-14);
    close(&So3.project_t(&(&x + &a * 0.01)), &|i| project_to_so3(&(xs[i] + amb[i] * 0.01)), 1e-13);
    for (i, d) in values(&So3.dist_t(&x, &y)).iter().enumerate() {
        assert!((d - So3.dist(&xs[i], &ys[i])).abs() < 1e-13);
    }
    for (i, d) in values(&So3.distance_to_manifold_t(&a)).iter().enumerate() {
        assert!((d - So3.distance_to_manifold(&amb[i]).unwrap()).abs() < 1e-12);
    }
    assert!(max_abs(&So3.distance_to_manifold_t(&x)) < 1e-14);
}

/// Sum of `f(input)` against fixed random weights, backpropagated; returns the input's gradient.
fn grad_of(input: &Tensor, f: &dyn Fn(&Tensor) -> Tensor) -> Tensor {
    let x = input.detach().set_requires_grad(true);
    let out = f(&x);
    let weights = Tensor::randn(out.size(), (out.kind(), out.device()));
    (out * weights).sum(None).backward();
    x.grad()
}

fn assert_finite_grad(name: &str, kind: Kind, input: &Tensor, f: &dyn Fn(&Tensor) -> Tensor) {
    let x = input.detach().set_requires_grad(true);
    let out = f(&x);
    assert!(values(&out).iter().all(|v| v.is_finite()), "{name} ({kind:?}): non-finite value");
    let g = grad_of(input, f);
    assert!(g.defined(), "{name} ({kind:?}): no gradient");
    assert!(values(&g).iter().all(|v| v.is_finite()), "{name} ({kind:?}): non-finite gradient {g}");
}

#[test]
fn gradients_are_finite_at_singular_points() {
    tch::manual_seed(0);
    let mut rng = rng(7);
    let axis = unit3(&mut rng);
    let x0 = So3.sample_uniform(&mut rng);
    let singular = [
        Matrix3::identity(),
        Matrix3::from_diagonal(&Vector3::new(1.0, -1.0, -1.0)),
        expm(&(axis * PI)),
        expm(&(axis * (PI - 1e-8))),
        expm(&(Vector3::x() * (PI - 1e-8))),
        expm(&(axis * 1e-9)),
    ];
    for kind in [Kind::Float, Kind::Double] {
        let r = mats_t(&singular, kind);
        let x = mats_t(&vec![x0; singular.len()], kind);
        let y = x.matmul(&r);
        let zero_w = Tensor::zeros([2, 3], (kind, CPU));
        assert_finite_grad("expm_t at 0", kind, &zero_w, &|w| expm_t(w));
        assert_finite_grad("logm_t", kind, &r, &|r| logm_t(r));
        assert_finite_grad("rotation_angle_t", kind, &r, &|r| rotation_angle_t(r));
        assert_finite_grad("dist_t in y", kind, &y, &|y| So3.dist_t(&x, y));
        assert_finite_grad("dist_t in x", kind, &x, &|x| So3.dist_t(x, &y));
        assert_finite_grad("dist_t at x = y", kind, &x, &|x| So3.dist_t(x, x));
        assert_finite_grad("log_t in y", kind, &y, &|y| So3.log_t(&x, y));
        assert_finite_grad("log_t in x", kind, &x, &|x| So3.log_t(x, &y));
        assert_finite_grad("log_t at x = y", kind, &x, &|x| So3.log_t(x, x));
        let v = Tensor::zeros([singular.len() as i64, 3, 3], (kind, CPU));
        assert_finite_grad("exp_t at v = 0", kind, &v, &|v| So3.exp_t(&x, v));
        assert_finite_grad("project_to_so3_t at rotations", kind, &r, &|r| project_to_so3_t(r));
        assert_finite_grad("distance_to_manifold_t at rotations", kind, &r, &|r| So3.distance_to_manifold_t(r));
        let q0 = Tensor::zeros([2, 4], (kind, CPU));
        assert_finite_grad("quaternion_to_matrix_t at 0", kind, &q0, &|q| quaternion_to_matrix_t(q));
    }
}

/// Central finite differences of sum(weights * f(x)) for a per-point f on 9 or 3 coordinates.
fn fd_grad(x: &[f64], weights: &[f64], f: &dyn Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let h = 1e-6;
    (0..x.len())
        .map(|i| {
            let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
            xp[i] += h;
            xm[i] -= h;
            let (fp, fm) = (f(&xp), f(&xm));
            fp.iter().zip(&fm).zip(weights).map(|((p, m), w)| w * (p - m) / (2.0 * h)).sum()
        })
        .collect()
}

/// Compares the autograd gradient of a batched function of one `[1, ..]` input against finite differences
/// of its per-point twin.
fn check_grad(
    name: &str,
    input: &[f64],
    shape: &[i64],
    batched: &dyn Fn(&Tensor) -> Tensor,
    point: &dyn Fn(&[f64]) -> Vec<f64>,
) {
    let x = Tensor::from_slice(input).view(shape).set_requires_grad(true);
    let out = batched(&x);
    let weights: Vec<f64> = (0..out.numel()).map(|i| 1.0 + 0.37 * i as f64 - 0.05 * (i * i) as f64).collect();
    (&out * Tensor::from_slice(&weights).view(out.size().as_slice())).sum(None).backward();
    let got = values(&x.grad());
    let expected = fd_grad(input, &weights, point);
    let err = got.iter().zip(&expected).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    let scale = expected.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    assert!(err < 1e-6 * scale, "{name}: autograd {got:?} vs finite differences {expected:?}");
}

#[test]
fn gradients_match_finite_differences_in_double() {
    let mut rng = rng(8);
    let m9 = |f: &[f64]| Matrix3::from_row_slice(f);
    for angle in [1e-3, 0.02, 1.0, 2.0, PI - 1e-2] {
        let w = unit3(&mut rng) * angle;
        check_grad("expm_t", w.as_slice(), &[1, 3], &|w| expm_t(w), &|f| {
            So3.to_flat(&expm(&Vector3::from_column_slice(f)))
        });
        let r = So3.to_flat(&expm(&w));
        check_grad("logm_t", &r, &[1, 3, 3], &|r| logm_t(r), &|f| logm(&m9(f)).as_slice().to_vec());
        check_grad("rotation_angle_t", &r, &[1, 3, 3], &|r| rotation_angle_t(r), &|f| vec![rotation_angle(&m9(f))]);
    }
    let x = So3.sample_uniform(&mut rng);
    let noisy = x + gaussian33(&mut rng) * 0.3;
    let reflected = x * Matrix3::from_diagonal(&Vector3::new(1.0, 1.0, -1.0)) + gaussian33(&mut rng) * 0.1;
    for m in [x, noisy, reflected, gaussian33(&mut rng)] {
        check_grad("project_to_so3_t", &So3.to_flat(&m), &[1, 3, 3], &|x| project_to_so3_t(x), &|f| {
            So3.to_flat(&project_to_so3(&m9(f)))
        });
    }
}

#[test]
fn validation_reports_shape_non_finite_and_off_manifold_rows() {
    let mut rng = rng(9);
    let rs: Vec<_> = (0..4).map(|_| So3.sample_uniform(&mut rng)).collect();
    let x = mats_t(&rs, Kind::Double);
    assert!(So3.validate("x", &x, Some(1e-10)).is_ok());
    let bad_shape = Tensor::zeros([4, 9], (Kind::Double, CPU));
    assert!(matches!(So3.validate("x", &bad_shape, None), Err(crate::GeomError::Shape { .. })));
    let nan = x.copy();
    let _ = nan.get(2).get(1).get(1).fill_(f64::NAN);
    match So3.validate("x", &nan, None) {
        Err(crate::GeomError::NonFinite { arg, location }) => {
            assert_eq!((arg.as_str(), location.as_str()), ("x", "row 2"))
        }
        other => panic!("expected a non-finite error, got {other:?}"),
    }
    let off = x.copy();
    let _ = off.get(3).get(0).get(0).fill_(2.0);
    match So3.validate("x", &off, Some(1e-6)) {
        Err(crate::GeomError::OffManifold { location, .. }) => assert_eq!(location, "row 3"),
        other => panic!("expected an off-manifold error, got {other:?}"),
    }
    let member = values(&So3.is_member_t(&off, 1e-6).to_kind(Kind::Double));
    assert_eq!(member, [1.0, 1.0, 1.0, 0.0]);
}

#[test]
fn uniform_samples_are_rotations_of_the_requested_kind() {
    tch::manual_seed(11);
    for kind in [Kind::Float, Kind::Double] {
        let r = So3.sample_uniform_t(500, kind, CPU);
        assert_eq!((r.size(), r.kind()), (vec![500, 3, 3], kind));
        let tol = if kind == Kind::Double { 1e-12 } else { 1e-5 };
        assert!(max_abs(&So3.distance_to_manifold_t(&r)) < tol);
        // The Haar angle law has mean pi/2 + 2/pi.
        let mean_angle = rotation_angle_t(&r).mean(None).double_value(&[]);
        assert!((mean_angle - (PI / 2.0 + 2.0 / PI)).abs() < 0.1, "{mean_angle}");
    }
}

#[test]
#[should_panic(expected = "argument `r`")]
fn shapes_are_asserted() {
    let _ = logm_t(&Tensor::zeros([2, 3], (Kind::Double, CPU)));
}

#[test]
fn half_precision_kinds_keep_their_kind_and_roughly_agree() {
    let mut rng = rng(12);
    let (ws, rs) = test_rotations(&mut rng);
    for kind in [Kind::BFloat16, Kind::Half] {
        let r = mats_t(&rs, kind);
        let w = vecs_t(&ws, kind);
        let outputs = [expm_t(&w), project_to_so3_t(&r), quaternion_to_matrix_t(&Tensor::ones([2, 4], (kind, CPU)))];
        for out in &outputs {
            assert_eq!(out.kind(), kind);
        }
        for (got, m) in mats(&outputs[0]).iter().zip(&rs) {
            assert!((got - m).norm() < 0.05, "{kind:?} expm_t");
        }
        for (l, m) in vecs(&logm_t(&r)).iter().zip(&rs) {
            assert!((expm(l) - m).norm() < 0.1, "{kind:?} logm_t");
        }
        let angles = values(&rotation_angle_t(&r));
        assert!(angles.iter().zip(&ws).all(|(a, w)| (a - w.norm()).abs() < 0.05), "{kind:?} angle");
    }
}
