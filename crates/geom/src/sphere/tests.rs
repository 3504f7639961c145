//! Unit tests of the sphere: known values, errors, cut locus, zero-vector convention, batched vs per-point,
//! gradient finiteness at singular points and gradients against finite differences.

use super::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn v(x: &[f64]) -> DVector<f64> {
    DVector::from_column_slice(x)
}
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
fn construction_and_metadata() {
    let s = Sphere::new(3).unwrap();
    assert_eq!((s.d(), s.dim(), s.name(), s.ambient_shape()), (3, 2, "S^2".to_string(), vec![3]));
    assert_eq!(s.injectivity_radius(), PI);
    for d in [0, 1] {
        let err = Sphere::new(d).unwrap_err().to_string();
        assert!(err.contains("`d`"), "{err}");
    }
}

#[test]
fn log_volume_known_values() {
    let lv = |d| Sphere::new(d).unwrap().log_volume();
    assert!((lv(2) - (2.0 * PI).ln()).abs() < 1e-14);
    assert!((lv(3) - (4.0 * PI).ln()).abs() < 1e-14);
    assert!((lv(4) - (2.0 * PI * PI).ln()).abs() < 1e-14);
    assert!((lv(5) - (8.0 * PI * PI / 3.0).ln()).abs() < 1e-14);
    assert!((lv(6) - (PI.powi(3)).ln()).abs() < 1e-13);
}

#[test]
fn project_known_values_and_errors() {
    let s = Sphere::new(3).unwrap();
    assert!((s.project(&v(&[0.0, 3.0, 4.0])).unwrap() - v(&[0.0, 0.6, 0.8])).norm() < 1e-15);
    assert!((s.project(&v(&[0.0, 3e-310, 4e-310])).unwrap() - v(&[0.0, 0.6, 0.8])).norm() < 1e-12);
    assert!((s.project(&v(&[0.0, 3e300, 4e300])).unwrap() - v(&[0.0, 0.6, 0.8])).norm() < 1e-15);
    let err = s.project(&v(&[0.0, 0.0, 0.0])).unwrap_err();
    assert!(matches!(err, GeomError::Undefined { .. }) && err.to_string().contains("`x`"), "{err}");
    let err = s.project(&v(&[0.0, f64::NAN, 1.0])).unwrap_err();
    assert!(matches!(err, GeomError::NonFinite { .. }) && err.to_string().contains("`x`"), "{err}");
    assert!(s.project(&v(&[1.0, 0.0])).unwrap_err().to_string().contains("`x`"));
    let err = s.check_point("data", &v(&[0.0, 0.0, 1.1]), 1e-3).unwrap_err();
    assert!(matches!(err, GeomError::OffManifold { .. }) && err.to_string().contains("`data`"), "{err}");
    assert!(s.check_point("data", &v(&[0.0, 0.0, 1.0]), 1e-3).is_ok());
    assert!((s.distance_to_manifold(&v(&[0.0, 2.0, 0.0])).unwrap() - 1.0).abs() < 1e-15);
    assert_eq!(s.from_flat(&s.to_flat(&v(&[1.0, 0.0, 0.0]))).unwrap(), v(&[1.0, 0.0, 0.0]));
    assert!(s.from_flat(&[1.0]).unwrap_err().to_string().contains("`flat`"));
}

#[test]
#[should_panic(expected = "Sphere::log: argument `y` has non-finite coordinate 2")]
fn log_panics_on_non_finite() {
    Sphere::new(3).unwrap().log(&v(&[1.0, 0.0, 0.0]), &v(&[0.0, 0.0, f64::NAN]));
}

#[test]
fn exp_log_dist_known_values() {
    let s = Sphere::new(3).unwrap();
    let x = v(&[0.0, 0.0, 1.0]);
    let t = 0.3;
    let y = s.exp(&x, &v(&[t, 0.0, 0.0]));
    assert!((y.clone() - v(&[t.sin(), 0.0, t.cos()])).norm() < 1e-15);
    assert!((s.dist(&x, &y) - t).abs() < 1e-15);
    assert!((s.log(&x, &y) - v(&[t, 0.0, 0.0])).norm() < 1e-15);
    assert_eq!(s.exp(&x, &v(&[0.0, 0.0, 0.0])), x);
    assert_eq!(s.log(&x, &x), v(&[0.0, 0.0, 0.0]));
    // Tiny angles keep full relative accuracy (no arccos).
    let y = s.exp(&x, &v(&[1e-9, 0.0, 0.0]));
    assert!((s.dist(&x, &y) / 1e-9 - 1.0).abs() < 1e-6);
    assert!((s.log(&x, &y)[0] / 1e-9 - 1.0).abs() < 1e-6);
    assert!((s.tangent_project(&x, &v(&[1.0, 2.0, 3.0])) - v(&[1.0, 2.0, 0.0])).norm() < 1e-15);
    assert_eq!(s.inner(&x, &v(&[1.0, 2.0, 0.0]), &v(&[3.0, 1.0, 0.0])), 5.0);
}

#[test]
fn log_at_cut_locus_is_a_minimising_geodesic() {
    for d in [2, 3, 5] {
        let s = Sphere::new(d).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(d as u64);
        for _ in 0..10 {
            let x = s.sample_uniform(&mut rng);
            let y = -&x;
            let l = s.log(&x, &y);
            assert!((l.norm() - PI).abs() < 1e-12, "d={d}: |log| = {}", l.norm());
            assert!(x.dot(&l).abs() < 1e-12);
            assert!((s.exp(&x, &l) - &y).norm() < 1e-12);
            assert!((s.dist(&x, &y) - PI).abs() < 1e-15);
        }
    }
    // The direction comes from the axis least aligned with x.
    let s = Sphere::new(3).unwrap();
    let l = s.log(&v(&[0.0, 0.6, 0.8]), &v(&[0.0, -0.6, -0.8]));
    assert!((l - v(&[PI, 0.0, 0.0])).norm() < 1e-15);
}

#[test]
fn uniform_sampler_is_on_the_sphere_and_centred() {
    let s = Sphere::new(4).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let n = 4000;
    let mut mean = DVector::zeros(4);
    for _ in 0..n {
        let x = s.sample_uniform(&mut rng);
        assert!((x.norm() - 1.0).abs() < 1e-14);
        mean += x / n as f64;
    }
    assert!(mean.norm() < 0.06, "mean {mean}");
}

/// Pairs (x, y) covering generic, equal, close, antipodal and nearly antipodal points.
fn pairs(d: usize) -> (Vec<DVector<f64>>, Vec<DVector<f64>>) {
    let s = Sphere::new(d).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut xs, mut ys) = (vec![], vec![]);
    for i in 0..12 {
        let x = s.sample_uniform(&mut rng);
        let z = s.sample_uniform(&mut rng);
        let y = match i % 6 {
            0 => x.clone(),
            1 => -&x,
            2 => s.exp(&x, &(s.tangent_project(&x, &z) * 1e-3)),
            3 => s.exp(&x, &(s.tangent_project(&x, &z).normalize() * (PI - 1e-3))),
            _ => z,
        };
        xs.push(x);
        ys.push(y);
    }
    (xs, ys)
}

#[test]
fn batched_agrees_with_per_point() {
    for d in [2, 3, 6] {
        let s = Sphere::new(d).unwrap();
        let (xs, ys) = pairs(d);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let vs: Vec<_> = xs.iter().map(|x| s.tangent_project(x, &(s.sample_uniform(&mut rng) * 2.0))).collect();
        for (kind, tol) in [(Kind::Double, 1e-12), (Kind::Float, 2e-5)] {
            let (x, y, vt) = (rows(&xs, kind), rows(&ys, kind), rows(&vs, kind));
            let log = s.log_t(&x, &y);
            let exp = s.exp_t(&x, &vt);
            let dist = s.dist_t(&x, &y);
            let proj = s.project_t(&(&y * 3.0));
            let tan = s.tangent_project_t(&x, &y);
            for t in [&log, &exp, &dist, &proj, &tan] {
                assert_eq!((t.kind(), t.device()), (kind, Device::Cpu));
            }
            assert_eq!(dist.size(), vec![xs.len() as i64]);
            let want = |f: &dyn Fn(usize) -> DVector<f64>| rows(&(0..xs.len()).map(f).collect::<Vec<_>>(), kind);
            assert!(max_abs(&(log - want(&|i| s.log(&xs[i], &ys[i])))) < tol * 10.0, "log d={d} {kind:?}");
            assert!(max_abs(&(exp - want(&|i| s.exp(&xs[i], &vs[i])))) < tol, "exp d={d} {kind:?}");
            assert!(max_abs(&(proj - &y)) < tol, "project d={d} {kind:?}");
            assert!(max_abs(&(tan - want(&|i| s.tangent_project(&xs[i], &ys[i])))) < tol);
            let dists: Vec<f64> = xs.iter().zip(&ys).map(|(x, y)| s.dist(x, y)).collect();
            let want_d = Tensor::from_slice(&dists).to_kind(kind);
            assert!(max_abs(&(dist - want_d)) < tol * 10.0, "dist d={d} {kind:?}");
        }
    }
}

#[test]
fn gradients_are_finite_at_singular_points() {
    let s = Sphere::new(3).unwrap();
    for kind in [Kind::Float, Kind::Double] {
        let opts = (kind, Device::Cpu);
        let x0 = s.project_t(&Tensor::from_slice(&[0.3, -0.5, 0.8, 1.0, 0.0, 0.0]).view([2, 3]).to_kind(kind));
        let grads_finite = |f: &dyn Fn(&Tensor, &Tensor) -> Tensor, a: &Tensor, b: &Tensor| {
            let a = a.detach().set_requires_grad(true);
            let b = b.detach().set_requires_grad(true);
            let out = f(&a, &b);
            assert!(all_finite(&out), "{kind:?}: value {out}");
            (&out * Tensor::rand(out.size(), opts)).sum(kind).backward();
            for g in [a.grad(), b.grad()].iter().filter(|g| g.defined()) {
                assert!(all_finite(g), "{kind:?}: grad {g}");
            }
            assert!(a.grad().defined());
        };
        let zero = Tensor::zeros([2, 3], opts);
        grads_finite(&|x, v| s.exp_t(x, v), &x0, &zero);
        grads_finite(&|x, y| s.log_t(x, y), &x0, &x0);
        grads_finite(&|x, y| s.log_t(x, y), &x0, &-&x0);
        grads_finite(&|x, y| s.dist_t(x, y), &x0, &x0);
        grads_finite(&|x, y| s.dist_t(x, y), &x0, &-&x0);
        grads_finite(&|x, y| s.tangent_project_t(x, y), &x0, &zero);
        grads_finite(&|x, _| s.project_t(x), &zero, &zero);
        grads_finite(&|x, _| s.project_t(x), &(&x0 * 1e-20), &zero);
        grads_finite(&|x, _| s.distance_to_manifold_t(x), &zero, &zero);
        // Values at the singular points.
        assert!(max_abs(&(s.exp_t(&x0, &zero) - &x0)) < 1e-6);
        assert!(max_abs(&s.log_t(&x0, &x0)) < 1e-6);
        let l = s.log_t(&x0, &-&x0);
        assert!(max_abs(&(norm_keepdim(&l) - PI)) < 1e-5, "{kind:?}: {l}");
        assert!(max_abs(&dot(&l, &x0)) < 1e-5);
        assert!(max_abs(&(s.exp_t(&x0, &l) + &x0)) < 1e-5);
    }
}

/// Max |autograd - central difference| of sum(f(a, b) * r) with respect to `a`, in Double, relative to
/// max(1, max |autograd|).
fn gradcheck(f: &dyn Fn(&Tensor, &Tensor) -> Tensor, a: &Tensor, b: &Tensor) -> f64 {
    let r = Tensor::rand(f(a, b).size(), (Kind::Double, Device::Cpu));
    let scalar = |a: &Tensor| (f(a, b) * &r).sum(Kind::Double);
    let ag = a.detach().set_requires_grad(true);
    scalar(&ag).backward();
    let (grad, flat, h) = (ag.grad().view([-1]), a.detach().view([-1]), 1e-6);
    (0..flat.numel() as i64)
        .map(|i| {
            let bump = |s: f64| {
                scalar(&(flat.copy().index_add(0, &Tensor::from_slice(&[i]), &Tensor::from_slice(&[s])).view_as(a)))
            };
            let fd = (bump(h).double_value(&[]) - bump(-h).double_value(&[])) / (2.0 * h);
            (grad.double_value(&[i]) - fd).abs()
        })
        .fold(0.0, f64::max)
        / grad.abs().max().double_value(&[]).max(1.0)
}

#[test]
fn gradients_match_finite_differences() {
    let s = Sphere::new(3).unwrap();
    tch::manual_seed(5);
    let x = s.sample_uniform_t(4, Kind::Double, Device::Cpu);
    let y = s.sample_uniform_t(4, Kind::Double, Device::Cpu);
    let v = s.tangent_project_t(&x, &y);
    // Generic, Taylor-branch (|v| and theta = 1e-5) and near-antipodal inputs.
    for scale in [1.0, 1e-5] {
        let vs = &v * scale;
        let ys = s.exp_t(&x, &vs);
        assert!(gradcheck(&|x, v| s.exp_t(x, v), &vs, &x) < 1e-6, "exp wrt v, scale {scale}");
        assert!(gradcheck(&|x, v| s.exp_t(x, v), &x, &vs) < 1e-6, "exp wrt x, scale {scale}");
        assert!(gradcheck(&|y, x| s.log_t(x, y), &ys, &x) < 1e-6, "log wrt y, scale {scale}");
        assert!(gradcheck(&|x, y| s.log_t(x, y), &x, &ys) < 1e-6, "log wrt x, scale {scale}");
    }
    let far = s.exp_t(&x, &(s.project_t(&v) * (PI - 1e-3)));
    assert!(gradcheck(&|x, y| s.dist_t(x, y), &x, &far) < 1e-6);
    assert!(gradcheck(&|x, y| s.log_t(x, y), &x, &far) < 1e-5);
    assert!(gradcheck(&|x, _| s.project_t(x), &(&y * 1e-3), &x) < 1e-3);
}

#[test]
fn half_precision_smoke() {
    let s = Sphere::new(3).unwrap();
    for kind in [Kind::BFloat16, Kind::Half] {
        let x = s.sample_uniform_t(64, kind, Device::Cpu);
        let y = s.sample_uniform_t(64, kind, Device::Cpu);
        let l = s.log_t(&x, &y);
        let z = s.exp_t(&x, &l);
        assert_eq!(z.kind(), kind);
        assert!(max_abs(&(z - &y).to_kind(Kind::Float)) < 0.1, "{kind:?}");
        assert!(max_abs(&(s.dist_t(&x, &y) - norm_keepdim(&l).squeeze_dim(-1)).to_kind(Kind::Float)) < 0.1);
        assert!(all_finite(&s.log_t(&x, &-&x)) && all_finite(&s.project_t(&x.zeros_like())));
    }
}

#[test]
fn project_t_maps_zero_to_first_basis_vector() {
    let s = Sphere::new(4).unwrap();
    for kind in [Kind::Float, Kind::Double] {
        let x = Tensor::from_slice(&[0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0]).view([2, 4]).to_kind(kind);
        let p = s.project_t(&x);
        let want = Tensor::from_slice(&[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]).view([2, 4]).to_kind(kind);
        assert_eq!(max_abs(&(p - want)), 0.0);
    }
}

#[test]
fn sample_uniform_t_and_validate() {
    let s = Sphere::new(3).unwrap();
    tch::manual_seed(0);
    for kind in [Kind::Float, Kind::Double] {
        let x = s.sample_uniform_t(1000, kind, Device::Cpu);
        assert_eq!((x.size(), x.kind()), (vec![1000, 3], kind));
        assert!(max_abs(&s.distance_to_manifold_t(&x)) < 1e-6);
        assert!(max_abs(&x.mean_dim([0i64].as_slice(), false, kind)) < 0.1);
        assert!(s.validate("x", &x, Some(1e-5)).is_ok());
    }
    let bad = Tensor::from_slice(&[1.0, 0.0, 0.0, 0.0, 2.0, 0.0]).view([2, 3]);
    let err = s.validate("batch", &bad, Some(1e-6)).unwrap_err();
    assert!(matches!(err, GeomError::OffManifold { .. }) && err.to_string().contains("row 1"), "{err}");
    let err = s.validate("batch", &Tensor::zeros([2, 4], (Kind::Float, Device::Cpu)), None).unwrap_err();
    assert!(matches!(err, GeomError::Shape { .. }) && err.to_string().contains("`batch`"), "{err}");
}

#[test]
#[should_panic(expected = "Sphere::exp_t")]
fn batched_shape_mismatch_panics() {
    let s = Sphere::new(3).unwrap();
    let _ =
        s.exp_t(&Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)), &Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)));
}
