//! Heat kernels on S^d and SO(3) (generator Delta, densities w.r.t. the uniform / Haar probability
//! measure): normalisation, agreement of the series and short-time forms, exact sampling (Kolmogorov-Smirnov),
//! scores against finite differences, the semigroup property, the large- and small-t limits, and the batched
//! functions against their per-point twins.

use geom::so3::{expm, rotation_angle};
use geom::{Manifold, UniformSampler};
use nalgebra::{DVector, Matrix3, Vector3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use scores::heat::so3::So3HeatKernel;
use scores::heat::sphere::{KernelForm, SphereHeatKernel};
use scores::quadrature::{integrate_adaptive, GaussLegendre};
use std::f64::consts::PI;
use tch::{Kind, Tensor};

const TIMES: [f64; 8] = [1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0];

/// One of the kernels under test, seen through its angle.
enum Kernel {
    Sphere(SphereHeatKernel),
    So3(So3HeatKernel),
}

impl Kernel {
    fn all() -> Vec<Kernel> {
        vec![
            Kernel::Sphere(SphereHeatKernel::new(2).unwrap()),
            Kernel::Sphere(SphereHeatKernel::new(3).unwrap()),
            Kernel::Sphere(SphereHeatKernel::new(5).unwrap()),
            Kernel::So3(So3HeatKernel::new()),
        ]
    }
    fn name(&self) -> String {
        match self {
            Kernel::Sphere(k) => format!("S^{}", k.d()),
            Kernel::So3(_) => "SO(3)".to_string(),
        }
    }
    /// Intrinsic dimension.
    fn dim(&self) -> usize {
        match self {
            Kernel::Sphere(k) => k.d(),
            Kernel::So3(_) => 3,
        }
    }
    fn angle_density(&self, theta: f64, t: f64) -> f64 {
        match self {
            Kernel::Sphere(k) => k.angle_density(theta, t),
            Kernel::So3(k) => k.angle_density(theta, t),
        }
    }
    fn log_density_angle(&self, theta: f64, t: f64) -> f64 {
        match self {
            Kernel::Sphere(k) => k.log_density_angle(theta, t),
            Kernel::So3(k) => k.log_density_angle(theta, t),
        }
    }
    fn form(&self, theta: f64, t: f64, form: KernelForm) -> Option<(f64, f64)> {
        match self {
            Kernel::Sphere(k) => k.log_density_angle_form(theta, t, form),
            Kernel::So3(k) => k.log_density_angle_form(theta, t, form),
        }
        .map(|v| (v.log_density, v.dlog_dangle))
    }
    fn sample_angle(&self, t: f64, rng: &mut ChaCha8Rng) -> f64 {
        match self {
            Kernel::Sphere(k) => {
                let x = k.space().sample_uniform(rng);
                let y = k.sample(&x, t, rng);
                k.space().dist(&x, &y)
            }
            Kernel::So3(k) => {
                let r = geom::So3::new().sample_uniform(rng);
                let q = k.sample(&r, t, rng);
                rotation_angle(&(r.transpose() * q))
            }
        }
    }
    /// log of the total volume (area of S^d, 8 pi^2 for SO(3)).
    fn log_volume(&self) -> f64 {
        match self {
            Kernel::Sphere(k) => k.space().log_volume(),
            Kernel::So3(_) => (8.0 * PI * PI).ln(),
        }
    }
}

/// int_0^pi of the angle's density, split where a narrow peak could hide from the first rule.
fn total_mass(k: &Kernel, t: f64) -> f64 {
    let scale = (2.0 * t).sqrt();
    let mut cuts: Vec<f64> = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0].iter().map(|c| c * scale).filter(|&c| c < PI).collect();
    cuts.insert(0, 0.0);
    cuts.push(PI);
    cuts.windows(2).map(|w| integrate_adaptive(|th| k.angle_density(th, t), w[0], w[1], 1e-13, 1e-17)).sum()
}

#[test]
fn densities_integrate_to_one() {
    for k in Kernel::all() {
        let errors: Vec<f64> = TIMES.par_iter().map(|&t| (total_mass(&k, t) - 1.0).abs()).collect();
        let worst = errors.iter().cloned().fold(0.0, f64::max);
        println!("normalisation {}: max |int - 1| = {worst:.2e} over t in {TIMES:?}", k.name());
        for (t, e) in TIMES.iter().zip(&errors) {
            assert!(*e < 1e-9, "{} at t = {t}: |int - 1| = {e:.3e}", k.name());
        }
    }
}

/// Max |difference of log k| and max relative difference of dlog/dtheta between two forms over a grid.
fn compare_forms(
    k: &Kernel,
    times: &[f64],
    a: KernelForm,
    b: KernelForm,
    theta_max: impl Fn(f64) -> f64,
) -> (f64, f64, usize) {
    let (mut worst, mut worst_d, mut n) = (0.0f64, 0.0f64, 0);
    for &t in times {
        let hi = theta_max(t).min(PI);
        for i in 0..=60 {
            let theta = hi * i as f64 / 60.0;
            if let (Some((la, ga)), Some((lb, gb))) = (k.form(theta, t, a), k.form(theta, t, b)) {
                worst = worst.max((la - lb).abs());
                let scale = ga.abs().max(gb.abs()).max(1e-6 / t.sqrt());
                worst_d = worst_d.max((ga - gb).abs() / scale);
                n += 1;
            }
        }
    }
    (worst, worst_d, n)
}

#[test]
fn series_and_short_time_forms_agree_in_the_overlap() {
    // The series is trusted where theta^2/4t <= 10 (rounding error about 1e-16 e^{theta^2/4t} relative).
    let series_region = |t: f64| (40.0 * t).sqrt();
    for k in Kernel::all() {
        let times: &[f64] = if k.dim() == 5 {
            &[0.01, 0.02, 0.05, 0.1, 0.15, 0.2]
        } else {
            &[0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0]
        };
        let (worst, worst_d, n) = compare_forms(&k, times, KernelForm::Series, KernelForm::ShortTime, series_region);
        println!(
            "overlap {}: series vs short-time over {n} points, t in {times:?}: max |dlog k| = {worst:.2e}, max rel d(dlog k/dtheta) = {worst_d:.2e}",
            k.name()
        );
        assert!(n > 100, "{}: only {n} overlap points", k.name());
        assert!(worst <= 1e-8, "{}: series and short-time forms differ by {worst:.3e} in log k", k.name());
        assert!(worst_d <= 1e-8, "{}: derivatives differ by {worst_d:.3e} (relative)", k.name());
    }
}

#[test]
fn parametrix_agrees_with_the_exact_short_time_forms() {
    // The parametrix (used for d >= 4) against the exact fibre integral (S^2) and image sum (S^3).
    for d in [2, 3] {
        let k = Kernel::Sphere(SphereHeatKernel::new(d).unwrap());
        let times = [1e-5, 1e-4, 1e-3, 1e-2, 0.03, 0.1];
        let (worst, worst_d, n) = compare_forms(&k, &times, KernelForm::Parametrix, KernelForm::ShortTime, |_| PI);
        println!(
            "parametrix vs exact on S^{d} over {n} points: max |dlog k| = {worst:.2e}, max rel d(dlog) = {worst_d:.2e}"
        );
        assert!(n > 200);
        assert!(worst <= 1e-10 && worst_d <= 1e-10, "S^{d}: {worst:.3e} {worst_d:.3e}");
    }
}

#[test]
fn s5_matches_the_derivative_of_s3() {
    // k^{S^{d+2}}_t = e^{d t}/(d+1) (-1/sin theta) d/dtheta k^{S^d}_t: an exact relation between the
    // (parametrix) S^5 kernel and the (image-sum) S^3 kernel.
    let (s3, s5) = (SphereHeatKernel::new(3).unwrap(), SphereHeatKernel::new(5).unwrap());
    let mut worst = 0.0f64;
    for t in [1e-4, 1e-3, 1e-2, 0.05, 0.3, 2.0] {
        for i in 1..40 {
            let theta = 2.8 * i as f64 / 40.0;
            let v3 = s3.log_density_angle_and_derivative(theta, t);
            let expected = 3.0 * t - 4f64.ln() + v3.log_density + (-v3.dlog_dangle / theta.sin()).ln();
            let got = s5.log_density_angle(theta, t);
            if expected.is_finite() && PI * (PI - theta) / t > 40.0 {
                worst = worst.max((got - expected).abs());
            }
        }
    }
    println!("S^5 vs -(e^{{3t}}/4) k^{{S^3}}'/sin: max |dlog k| = {worst:.2e}");
    assert!(worst < 1e-9, "{worst:.3e}");
}

/// Kolmogorov-Smirnov statistic of sorted angles against the density (CDF by Gauss-Legendre between samples).
fn ks_statistic(k: &Kernel, t: f64, mut angles: Vec<f64>) -> f64 {
    angles.sort_by(f64::total_cmp);
    let rule = GaussLegendre::new(10);
    let pieces: Vec<f64> = (0..angles.len())
        .into_par_iter()
        .map(|i| {
            let a = if i == 0 { 0.0 } else { angles[i - 1] };
            let b = angles[i];
            if i == 0 {
                integrate_adaptive(|th| k.angle_density(th, t), a, b, 1e-10, 1e-14)
            } else {
                rule.integrate(|th| k.angle_density(th, t), a, b)
            }
        })
        .collect();
    let n = angles.len() as f64;
    let (mut cdf, mut d) = (0.0, 0.0f64);
    for (i, p) in pieces.iter().enumerate() {
        cdf += p;
        d = d.max((cdf - i as f64 / n).abs()).max((cdf - (i + 1) as f64 / n).abs());
    }
    d
}

#[test]
fn samplers_match_their_densities() {
    let n = 4000;
    let critical = 1.628 / (n as f64).sqrt(); // 1% level
    for (ki, k) in Kernel::all().into_iter().enumerate() {
        for (ti, &t) in [1e-4, 0.01, 0.5, 5.0].iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(1000 + 10 * ki as u64 + ti as u64);
            let angles: Vec<f64> = (0..n).map(|_| k.sample_angle(t, &mut rng)).collect();
            let d = ks_statistic(&k, t, angles);
            println!("KS {} t = {t}: D = {d:.4} (1% critical value {critical:.4})", k.name());
            assert!(d < critical, "{} t = {t}: KS statistic {d:.4} >= {critical:.4}", k.name());
        }
    }
}

#[test]
fn batched_samplers_match_their_densities() {
    let n = 4000;
    let critical = 1.628 / (n as f64).sqrt();
    tch::manual_seed(7);
    let s2 = SphereHeatKernel::new(2).unwrap();
    let x = Tensor::from_slice(&[0.0, 0.0, 1.0]).view([1, 3]).expand([n, 3], false).to_kind(Kind::Float);
    let y = s2.sample_t(&x, 0.05);
    assert_eq!(y.kind(), Kind::Float);
    let theta: Vec<f64> = Vec::<f64>::try_from(&geom::TensorManifold::dist_t(
        s2.space(),
        &x.to_kind(Kind::Double),
        &y.to_kind(Kind::Double),
    ))
    .unwrap();
    let d = ks_statistic(&Kernel::Sphere(s2), 0.05, theta);
    println!("KS S^2 sample_t t = 0.05: D = {d:.4}");
    assert!(d < critical);

    let so3 = So3HeatKernel::new();
    let r = geom::TensorUniformSampler::sample_uniform_t(&geom::So3::new(), n, Kind::Double, tch::Device::Cpu);
    let q = so3.sample_t(&r, 0.3);
    let omega: Vec<f64> = Vec::<f64>::try_from(&geom::TensorManifold::dist_t(&geom::So3::new(), &r, &q)).unwrap();
    let d = ks_statistic(&Kernel::So3(so3), 0.3, omega);
    println!("KS SO(3) sample_t t = 0.3: D = {d:.4}");
    assert!(d < critical);
}

#[test]
fn sampling_is_reproducible() {
    let k = SphereHeatKernel::new(2).unwrap();
    let x = DVector::from_vec(vec![0.0, 1.0, 0.0]);
    let draw = |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..5).map(|_| k.sample(&x, 0.1, &mut rng)).collect::<Vec<_>>()
    };
    assert_eq!(draw(3), draw(3));
    assert_ne!(draw(3), draw(4));
}

fn random_tangent(x: &DVector<f64>, rng: &mut ChaCha8Rng) -> DVector<f64> {
    let g = DVector::from_fn(x.len(), |_, _| -> f64 { StandardNormal.sample(rng) });
    let v = &g - x * x.dot(&g);
    let n = v.norm();
    v / n
}

#[test]
fn sphere_scores_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut worst = 0.0f64;
    for d in [2, 3, 5] {
        let k = SphereHeatKernel::new(d).unwrap();
        for &t in &[1e-3f64, 0.05, 0.5, 3.0] {
            for _ in 0..20 {
                let x = k.space().sample_uniform(&mut rng);
                // y at a controlled angle from x, up to near the antipode.
                let theta = rng.random_range(0.0..3.1f64).min(30.0 * t.sqrt());
                let u = random_tangent(&x, &mut rng);
                let y = k.space().exp(&x, &(u * theta));
                let v = random_tangent(&x, &mut rng);
                let h = 1e-5 * t.sqrt().min(1.0);
                let f = |s: f64| k.log_density(&k.space().exp(&x, &(&v * s)), &y, t);
                let fd = (f(h) - f(-h)) / (2.0 * h);
                let s = k.score(&x, &y, t);
                assert!(s.dot(&x).abs() < 1e-12, "score is not tangent");
                let scale = s.norm().max(1.0);
                let err = (s.dot(&v) - fd).abs() / scale;
                worst = worst.max(err);
                assert!(
                    err < 1e-6,
                    "S^{d}, t = {t}, theta = {theta}: score . v = {} vs finite difference {fd}",
                    s.dot(&v)
                );
            }
        }
        // The score vanishes at y = x and y = -x.
        let x = k.space().sample_uniform(&mut rng);
        assert!(k.score(&x, &x, 0.1).norm() < 1e-12);
        assert!(k.score(&x, &(-&x), 0.1).norm() < 1e-12);
    }
    println!("sphere scores vs finite differences: max relative error {worst:.2e}");
}

#[test]
fn so3_scores_match_finite_differences() {
    let k = So3HeatKernel::new();
    let space = geom::So3::new();
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut worst = 0.0f64;
    let unit = |rng: &mut ChaCha8Rng| {
        let g = Vector3::from_fn(|_, _| -> f64 { StandardNormal.sample(rng) });
        g / g.norm()
    };
    for &t in &[1e-3f64, 0.05, 0.5, 3.0] {
        for _ in 0..20 {
            let r = space.sample_uniform(&mut rng);
            let omega = rng.random_range(0.0..3.1f64).min(30.0 * t.sqrt());
            let q = r * expm(&(unit(&mut rng) * omega));
            let w = unit(&mut rng);
            let h = 1e-5 * t.sqrt().min(1.0);
            let f = |s: f64| k.log_density(&(r * expm(&(w * s))), &q, t);
            let fd = (f(h) - f(-h)) / (2.0 * h);
            let s = k.score(&r, &q, t);
            // Directional derivative along R hat(w) in the angle metric: tr(S^T R hat(w)) / 2.
            let v: Matrix3<f64> = r * geom::so3::hat(&w);
            let dir = 0.5 * s.dot(&v);
            let err = (dir - fd).abs() / (0.5 * s.norm_squared()).sqrt().max(1.0);
            worst = worst.max(err);
            assert!(err < 1e-6, "t = {t}, omega = {omega}: <score, v> = {dir} vs finite difference {fd}");
            // Tangent: R^T S is skew.
            let m = r.transpose() * s;
            assert!((m + m.transpose()).norm() < 1e-9 * s.norm().max(1.0));
        }
    }
    println!("SO(3) scores vs finite differences: max relative error {worst:.2e}");
}

#[test]
fn chapman_kolmogorov_on_s2() {
    // k_{s+u}(x, z) = int k_s(x, y) k_u(y, z) dmu(y), with x the north pole, by a product Gauss-Legendre rule
    // in the polar angle (split at 1) and the azimuth.
    let k = SphereHeatKernel::new(2).unwrap();
    let (gl_theta, gl_phi) = (GaussLegendre::new(80), GaussLegendre::new(80));
    let mut worst = 0.0f64;
    for (s, u) in [(0.05, 0.1), (0.3, 0.2)] {
        for theta_z in [0.0f64, 0.7, 2.0, 3.0] {
            let z = DVector::from_vec(vec![theta_z.sin(), 0.0, theta_z.cos()]);
            let inner = |theta: f64| {
                let f = |phi: f64| {
                    let y = DVector::from_vec(vec![theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()]);
                    k.log_density(&z, &y, u).exp()
                };
                let ring = gl_phi.integrate(f, 0.0, PI) * 2.0; // symmetric in phi -> -phi
                k.log_density_angle(theta, s).exp() * ring * theta.sin() / (4.0 * PI)
            };
            let got = gl_theta.integrate(inner, 0.0, 1.0) + gl_theta.integrate(inner, 1.0, PI);
            let expected = k.log_density_angle(theta_z, s + u).exp();
            worst = worst.max((got / expected - 1.0).abs());
        }
    }
    println!("Chapman-Kolmogorov on S^2: max relative error {worst:.2e}");
    assert!(worst < 1e-8, "{worst:.3e}");
}

#[test]
fn large_time_tends_to_the_uniform_density() {
    for k in Kernel::all() {
        // The first non-zero eigenvalue: d on S^d, 2 on SO(3).
        let (lambda1, mult) = match &k {
            Kernel::Sphere(s) => (s.d() as f64, (s.d() + 1) as f64),
            Kernel::So3(_) => (2.0, 9.0),
        };
        for theta in [0.0, 1.0, 2.0, PI] {
            assert!(k.log_density_angle(theta, 100.0).abs() < 1e-15, "{}", k.name());
            let l10 = k.log_density_angle(theta, 10.0).abs();
            assert!(l10 <= 1.01 * mult * (-10.0 * lambda1).exp(), "{}: {l10:.3e}", k.name());
        }
    }
}

#[test]
fn small_time_matches_the_euclidean_gaussian() {
    for k in Kernel::all() {
        let df = k.dim() as f64;
        let mut worst = 0.0f64;
        for t in [1e-5f64, 1e-4] {
            for c in [0.0, 0.5, 1.0, 3.0] {
                let theta = c * t.sqrt();
                let gauss = k.log_volume() - 0.5 * df * (4.0 * PI * t).ln() - theta * theta / (4.0 * t);
                let err = (k.log_density_angle(theta, t) - gauss).abs();
                worst = worst.max(err / t);
                assert!(err < 2.0 * df * t, "{} t = {t}, theta = {theta}: {err:.3e}", k.name());
            }
        }
        println!("small t {}: max |log k - log Gaussian| / t = {worst:.3}", k.name());
    }
}

#[test]
fn antipodal_values_are_finite_and_flat() {
    for d in [2, 3, 4, 5, 6] {
        let k = SphereHeatKernel::new(d).unwrap();
        for t in [1e-5, 1e-3, 0.03, 0.15] {
            let mut prev = f64::INFINITY;
            for i in 0..=50 {
                let theta = 2.5 + (PI - 2.5) * i as f64 / 50.0;
                let v = k.log_density_angle_and_derivative(theta, t);
                assert!(v.log_density.is_finite() && v.dlog_dangle.is_finite(), "S^{d} t = {t} theta = {theta}");
                assert!(v.log_density <= prev + 1e-9, "S^{d} t = {t}: not decreasing at theta = {theta}");
                prev = v.log_density;
            }
            assert!(k.dlog_density_dtheta(PI, t).abs() < 1e-6 / t, "S^{d} t = {t}");
        }
    }
    let so3 = So3HeatKernel::new();
    assert!(so3.dlog_density_domega(PI, 1e-3).abs() < 1e-6);
    assert!(so3.log_density_angle(PI, 1e-5).is_finite());
}

#[test]
fn batched_functions_match_per_point() {
    tch::manual_seed(5);
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for d in [2, 3, 5] {
        let k = SphereHeatKernel::new(d).unwrap();
        let b = 32;
        let xs: Vec<DVector<f64>> = (0..b).map(|_| k.space().sample_uniform(&mut rng)).collect();
        let ts: Vec<f64> = (0..b).map(|i| 10f64.powf(-4.0 + 5.0 * i as f64 / b as f64)).collect();
        let ys: Vec<DVector<f64>> = xs.iter().zip(&ts).map(|(x, &t)| k.sample(x, t, &mut rng)).collect();
        let flat = |v: &[DVector<f64>]| {
            Tensor::from_slice(&v.iter().flat_map(|p| p.iter().cloned()).collect::<Vec<_>>())
                .view([b as i64, d as i64 + 1])
        };
        let (x, y, t) = (flat(&xs).set_requires_grad(true), flat(&ys), Tensor::from_slice(&ts));
        let logk = k.log_density_t(&x, &y, &t);
        let score = k.score_t(&x, &y, &t);
        let logk_v = Vec::<f64>::try_from(&logk.detach()).unwrap();
        for i in 0..b {
            let expected = k.log_density(&xs[i], &ys[i], ts[i]);
            assert!((logk_v[i] - expected).abs() <= 1e-12 * expected.abs().max(1.0), "S^{d} row {i}");
            let s = k.score(&xs[i], &ys[i], ts[i]);
            let row = Vec::<f64>::try_from(&score.get(i as i64)).unwrap();
            let err: f64 = row.iter().zip(s.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(err <= 1e-9 * s.norm().max(1.0), "S^{d} score row {i}: {err:.3e}");
        }
        // The gradient of log_density_t, projected to the tangent space, is the score.
        let grad = Tensor::run_backward(&[logk.sum(Kind::Double)], &[&x], false, false).remove(0);
        let x_det = x.detach();
        let tangent = &grad - (&grad * &x_det).sum_dim_intlist([-1i64].as_slice(), true, None) * &x_det;
        let diff = f64::try_from((tangent - &score).abs().max()).unwrap();
        let scale = f64::try_from(score.abs().max()).unwrap().max(1.0);
        assert!(diff <= 1e-8 * scale, "S^{d}: autograd of log_density_t vs score_t: {diff:.3e}");
        // Float inputs give Float outputs close to the f64 values.
        let logk32 =
            k.log_density_t(&x.detach().to_kind(Kind::Float), &y.to_kind(Kind::Float), &t.to_kind(Kind::Float));
        assert_eq!(logk32.kind(), Kind::Float);
        // Angles as tensors.
        let theta = Tensor::from_slice(&[0.0, 0.5, 3.0, PI]);
        let la = Vec::<f64>::try_from(&k.log_density_angle_t(&theta, &Tensor::from(0.1))).unwrap();
        for (i, th) in [0.0, 0.5, 3.0, PI].iter().enumerate() {
            assert!((la[i] - k.log_density_angle(*th, 0.1)).abs() < 1e-13);
        }
    }

    let k = So3HeatKernel::new();
    let space = geom::So3::new();
    let b = 32;
    let rs: Vec<Matrix3<f64>> = (0..b).map(|_| space.sample_uniform(&mut rng)).collect();
    let ts: Vec<f64> = (0..b).map(|i| 10f64.powf(-4.0 + 5.0 * i as f64 / b as f64)).collect();
    let qs: Vec<Matrix3<f64>> = rs.iter().zip(&ts).map(|(r, &t)| k.sample(r, t, &mut rng)).collect();
    let flat = |v: &[Matrix3<f64>]| {
        Tensor::from_slice(&v.iter().flat_map(|m| space.to_flat(m)).collect::<Vec<_>>()).view([b as i64, 3, 3])
    };
    let (r, q, t) = (flat(&rs), flat(&qs), Tensor::from_slice(&ts));
    let logk = Vec::<f64>::try_from(&k.log_density_t(&r, &q, &t)).unwrap();
    let score = k.score_t(&r, &q, &t);
    for i in 0..b {
        let expected = k.log_density(&rs[i], &qs[i], ts[i]);
        assert!((logk[i] - expected).abs() <= 1e-12 * expected.abs().max(1.0), "SO(3) row {i}");
        let s = space.to_flat(&k.score(&rs[i], &qs[i], ts[i]));
        let row = Vec::<f64>::try_from(&score.get(i as i64).reshape([9])).unwrap();
        let err: f64 = row.iter().zip(&s).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err <= 1e-9 * s.iter().map(|v| v.abs()).fold(1.0, f64::max), "SO(3) score row {i}: {err:.3e}");
    }
}

#[test]
fn invalid_arguments_are_reported() {
    let err = SphereHeatKernel::new(1).unwrap_err().to_string();
    assert!(err.contains("`d`"), "{err}");
    let k = SphereHeatKernel::new(2).unwrap();
    for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err = k.check_time(t).unwrap_err().to_string();
        assert!(err.contains("`t`"), "{err}");
        assert!(So3HeatKernel::new().check_time(t).is_err());
    }
    assert!(k.check_time(1e-3).is_ok());
    // Batched functions return NaN for invalid times instead of panicking.
    let v = k.log_density_angle_t(&Tensor::from_slice(&[0.3]), &Tensor::from_slice(&[-1.0]));
    assert!(f64::try_from(v.sum(Kind::Double)).unwrap().is_nan());
}

#[test]
#[should_panic(expected = "`t`")]
fn per_point_panics_on_bad_time() {
    SphereHeatKernel::new(2).unwrap().log_density_angle(0.1, 0.0);
}

#[test]
#[should_panic(expected = "`theta`")]
fn per_point_panics_on_bad_angle() {
    SphereHeatKernel::new(2).unwrap().log_density_angle(f64::NAN, 0.1);
}

#[test]
#[should_panic(expected = "`omega`")]
fn so3_per_point_panics_on_bad_angle() {
    So3HeatKernel::new().log_density_angle(f64::INFINITY, 0.1);
}
