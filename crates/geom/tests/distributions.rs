//! Distributions on manifolds: samplers against their exact laws (Kolmogorov-Smirnov on the cosine or
//! angle, seeded), normalisation of the densities (Monte Carlo against the uniform law and 1-d quadrature),
//! mixtures, and parameter validation.

use geom::distributions::{
    random_vmf_mixture, random_wrapped_normal_mixture, ManifoldDistribution, Mixture, VonMisesFisher, WrappedNormalSo3,
};
use geom::so3::rotation_angle;
use geom::special::{ln_sphere_area, sphere_mean_resultant};
use geom::{GeomError, So3, Sphere, UniformSampler};
use nalgebra::{DVector, Matrix3};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::f64::consts::PI;

const N_KS: usize = 4000;
/// Asymptotic 1% critical value of sqrt(n) D_n: sqrt(ln(2 / 0.01) / 2).
const KS_CRIT_1PCT: f64 = 1.627_6;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Kolmogorov-Smirnov statistic of values of the hypothesised CDF at the samples.
fn ks_statistic(mut u: Vec<f64>) -> f64 {
    u.sort_by(f64::total_cmp);
    let n = u.len() as f64;
    u.iter().enumerate().map(|(i, &v)| ((i as f64 + 1.0) / n - v).max(v - i as f64 / n)).fold(0.0, f64::max)
}

fn assert_ks(u: Vec<f64>, what: &str) {
    let n = u.len();
    let d = ks_statistic(u);
    let crit = KS_CRIT_1PCT / (n as f64).sqrt();
    assert!(d < crit, "{what}: KS statistic {d:.4} exceeds the 1% critical value {crit:.4}");
}

/// Gauss-Legendre nodes and weights on [-1, 1] by Newton's method on P_n.
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let legendre = |z: f64| {
        let (mut p0, mut p1) = (1.0, z);
        for k in 2..=n {
            let kf = k as f64;
            (p0, p1) = (p1, ((2.0 * kf - 1.0) * z * p1 - (kf - 1.0) * p0) / kf);
        }
        (p1, n as f64 * (z * p1 - p0) / (z * z - 1.0))
    };
    let (mut nodes, mut weights) = (vec![0.0; n], vec![0.0; n]);
    for i in 0..n {
        let mut z = (PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        for _ in 0..100 {
            let (p, dp) = legendre(z);
            let dz = p / dp;
            z -= dz;
            if dz.abs() < 1e-16 {
                break;
            }
        }
        let (_, dp) = legendre(z);
        nodes[i] = z;
        weights[i] = 2.0 / ((1.0 - z * z) * dp * dp);
    }
    (nodes, weights)
}

/// The CDF on [0, upper] of an unnormalised density f, by 20-point Gauss-Legendre on equal panels.
struct QuadratureCdf<F: Fn(f64) -> f64> {
    f: F,
    h: f64,
    upper: f64,
    cumulative: Vec<f64>,
    nodes: Vec<f64>,
    weights: Vec<f64>,
}

impl<F: Fn(f64) -> f64> QuadratureCdf<F> {
    fn new(f: F, upper: f64, panels: usize) -> Self {
        let (nodes, weights) = gauss_legendre(20);
        let h = upper / panels as f64;
        let mut s = Self { f, h, upper, cumulative: vec![0.0], nodes, weights };
        for p in 0..panels {
            let next = s.cumulative[p] + s.integral(p as f64 * h, (p + 1) as f64 * h);
            s.cumulative.push(next);
        }
        s
    }

    fn integral(&self, a: f64, b: f64) -> f64 {
        self.nodes
            .iter()
            .zip(&self.weights)
            .map(|(z, w)| 0.5 * (b - a) * w * (self.f)(a + 0.5 * (b - a) * (z + 1.0)))
            .sum()
    }

    fn total(&self) -> f64 {
        *self.cumulative.last().unwrap()
    }

    fn cdf(&self, t: f64) -> f64 {
        if t >= self.upper {
            return 1.0;
        }
        let p = ((t / self.h) as usize).min(self.cumulative.len() - 2);
        (self.cumulative[p] + self.integral(p as f64 * self.h, t)) / self.total()
    }
}

/// The angle between x and mu on the sphere, 2 asin(|x - mu| / 2), accurate at small angles.
fn sphere_angle(mu: &DVector<f64>, x: &DVector<f64>) -> f64 {
    2.0 * (0.5 * (x - mu).norm()).min(1.0).asin()
}

fn unit(v: Vec<f64>) -> DVector<f64> {
    DVector::from_vec(v).normalize()
}

#[test]
fn vmf_sampler_matches_the_law_of_the_angle() {
    let kappas = [0.0, 0.5, 5.0, 50.0, 1e4, 1e6];
    for (d_idx, d) in [2usize, 3, 5, 10].into_iter().enumerate() {
        for (k_idx, &kappa) in kappas.iter().enumerate() {
            let mu = Sphere::new(d).unwrap().sample_uniform(&mut rng(99 + d as u64));
            let vmf = VonMisesFisher::new(mu.clone(), kappa).unwrap();
            let mut r = rng(1000 * d_idx as u64 + k_idx as u64);
            let angles: Vec<f64> = vmf.sample_n(N_KS, &mut r).iter().map(|x| sphere_angle(&mu, x)).collect();
            // Density of the angle theta to mu: exp(-kappa (1 - cos theta)) sin^{d-2}(theta) on [0, pi].
            let upper = PI.min(60.0 / kappa.sqrt());
            let cdf = QuadratureCdf::new(
                |t: f64| (-2.0 * kappa * (0.5 * t).sin().powi(2)).exp() * t.sin().powi(d as i32 - 2),
                upper,
                200,
            );
            assert_ks(angles.iter().map(|&t| cdf.cdf(t)).collect(), &format!("vMF d = {d}, kappa = {kappa}"));
            if d == 3 {
                // Closed form: P(theta <= t) = (1 - e^{-kappa (1 - cos t)}) / (1 - e^{-2 kappa}).
                let exact = |t: f64| {
                    let omw = 2.0 * (0.5 * t).sin().powi(2);
                    if kappa == 0.0 {
                        0.5 * omw
                    } else {
                        (-kappa * omw).exp_m1() / (-2.0 * kappa).exp_m1()
                    }
                };
                assert_ks(angles.iter().map(|&t| exact(t)).collect(), &format!("vMF closed form, kappa = {kappa}"));
            }
        }
    }
}

#[test]
fn vmf_mean_resultant_matches_sample_mean() {
    for (d, kappa) in [(2usize, 1.0), (3, 2.0), (5, 5.0), (10, 0.7)] {
        let mu = Sphere::new(d).unwrap().sample_uniform(&mut rng(5));
        let vmf = VonMisesFisher::new(mu.clone(), kappa).unwrap();
        let w: Vec<f64> = vmf.sample_n(40_000, &mut rng(6 + d as u64)).iter().map(|x| mu.dot(x)).collect();
        let n = w.len() as f64;
        let mean = w.iter().sum::<f64>() / n;
        let sd = (w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let a = sphere_mean_resultant(d, kappa);
        assert!((mean - a).abs() < 4.0 * sd / n.sqrt(), "d = {d}, kappa = {kappa}: {mean} vs A_d = {a}");
        assert_eq!(vmf.mean_resultant_length(), a);
    }
}

#[test]
fn vmf_normalises_against_the_uniform_law() {
    // E_uniform[p(x)] area(S^{d-1}) = 1.
    for d in [2usize, 3, 5] {
        let sphere = Sphere::new(d).unwrap();
        for kappa in [0.0, 0.5, 2.0] {
            let vmf = VonMisesFisher::new(sphere.sample_uniform(&mut rng(3)), kappa).unwrap();
            let mut r = rng(40 + d as u64);
            let n = 100_000;
            let v: Vec<f64> =
                (0..n).map(|_| (vmf.log_prob(&sphere.sample_uniform(&mut r)) + sphere.log_volume()).exp()).collect();
            let mean = v.iter().sum::<f64>() / n as f64;
            let se = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt() / (n as f64).sqrt();
            assert!((mean - 1.0).abs() <= 3.0 * se + 1e-12, "d = {d}, kappa = {kappa}: mean {mean}, s.e. {se}");
        }
    }
}

#[test]
fn vmf_normalises_by_quadrature_up_to_huge_kappa() {
    // int_0^pi p(x(theta)) area(S^{d-2}) sin^{d-2}(theta) dtheta = 1.
    for d in [2usize, 3, 4, 5, 10, 50] {
        for kappa in [0.1, 1.0, 1.0 + 1e-9, 10.0, 50.0, 1e3, 1e4, 1e6] {
            let mut mu = DVector::zeros(d);
            mu[0] = 1.0;
            let vmf = VonMisesFisher::new(mu, kappa).unwrap();
            let density = |t: f64| {
                let mut x = DVector::zeros(d);
                x[0] = t.cos();
                x[1] = t.sin();
                vmf.log_prob(&x).exp() * t.sin().powi(d as i32 - 2)
            };
            let upper = PI.min(80.0 / kappa.sqrt());
            let total = QuadratureCdf::new(density, upper, 400).total() * ln_sphere_area(d - 1).exp();
            assert!((total - 1.0).abs() < 1e-11, "d = {d}, kappa = {kappa}: integral {total}");
        }
    }
}

#[test]
fn vmf_log_density_values_and_stability() {
    let mu3 = unit(vec![0.2, -0.5, 0.7]);
    // Uniform law at kappa = 0.
    let vmf = VonMisesFisher::new(mu3.clone(), 0.0).unwrap();
    assert!((vmf.log_prob(&unit(vec![1.0, 2.0, 3.0])) + (4.0 * PI).ln()).abs() < 1e-15);
    // d = 3 against kappa / (4 pi sinh kappa), where that formula is fine.
    for kappa in [0.3, 1.0, 2.0, 10.0, 100.0] {
        let vmf = VonMisesFisher::new(mu3.clone(), kappa).unwrap();
        let want = kappa.ln() - (4.0 * PI * kappa.sinh()).ln();
        assert!((vmf.log_normaliser() - want).abs() < 1e-13, "kappa = {kappa}");
    }
    // No jump where the evaluation switches branch (kappa = 1).
    for d in [2usize, 3, 6] {
        let mut mu = DVector::zeros(d);
        mu[0] = 1.0;
        let a = VonMisesFisher::new(mu.clone(), 1.0).unwrap().log_normaliser();
        let b = VonMisesFisher::new(mu.clone(), 1.0 + 1e-12).unwrap().log_normaliser();
        assert!((a - b).abs() < 1e-11, "d = {d}: {a} vs {b}");
    }
    // Huge kappa: finite everywhere, exact at mu and -mu.
    for d in [2usize, 3, 5, 100] {
        let mut mu = DVector::zeros(d);
        mu[0] = 1.0;
        let kappa = 1e6;
        let vmf = VonMisesFisher::new(mu.clone(), kappa).unwrap();
        let c = vmf.log_normaliser();
        assert!(c.is_finite());
        assert!((vmf.log_prob(&mu) - (c + kappa)).abs() < 1e-9 * kappa);
        assert!((vmf.log_prob(&-&mu) - (c - kappa)).abs() < 1e-9 * kappa);
        let x = vmf.sample(&mut rng(8));
        assert!(vmf.log_prob(&x).is_finite() && (x.norm() - 1.0).abs() < 1e-14);
        if d == 3 {
            // ln C_3 + kappa = ln kappa - ln 2 pi up to e^{-2 kappa}.
            assert!((vmf.log_prob(&mu) - (kappa.ln() - (2.0 * PI).ln())).abs() < 1e-13);
        }
    }
}

#[test]
fn vmf_rejects_invalid_parameters() {
    let mu = unit(vec![0.0, 0.0, 1.0]);
    for kappa in [-1.0, f64::NAN, f64::INFINITY] {
        let e = VonMisesFisher::new(mu.clone(), kappa).unwrap_err();
        assert!(matches!(e, GeomError::InvalidParameter { ref name, .. } if name == "kappa"), "{e}");
    }
    let e = VonMisesFisher::new(DVector::from_vec(vec![1.0, 1.0, 0.0]), 1.0).unwrap_err();
    assert!(matches!(e, GeomError::OffManifold { ref arg, .. } if arg == "mu"), "{e}");
    let e = VonMisesFisher::new(DVector::from_vec(vec![f64::NAN, 0.0, 1.0]), 1.0).unwrap_err();
    assert!(matches!(e, GeomError::NonFinite { ref arg, .. } if arg == "mu"), "{e}");
    let e = VonMisesFisher::new(DVector::from_vec(vec![1.0]), 1.0).unwrap_err();
    assert!(matches!(e, GeomError::Shape { ref arg, .. } if arg == "mu"), "{e}");
    // Within tolerance the mean direction is renormalised.
    let vmf = VonMisesFisher::new(DVector::from_vec(vec![0.0, 0.0, 1.0 + 1e-10]), 1.0).unwrap();
    assert_eq!(vmf.mu()[2], 1.0);
}

/// 4 pi sum_n N_3(|w + 2 pi n|; sigma) (w + 2 pi n)^2: the angle marginal, summed directly.
fn wrapped_angle_marginal_direct(w: f64, sigma: f64) -> f64 {
    let norm = (2.0 * PI * sigma * sigma).powf(-1.5);
    4.0 * PI
        * (-60i32..=60)
            .map(|n| {
                let r = w + 2.0 * PI * n as f64;
                norm * (-r * r / (2.0 * sigma * sigma)).exp() * r * r
            })
            .sum::<f64>()
}

#[test]
fn wrapped_normal_angle_marginal_matches_direct_sum_and_integrates_to_one() {
    for sigma in [0.05, 0.3, 1.0, 3.0, 10.0] {
        let wn = WrappedNormalSo3::new(Matrix3::identity(), sigma).unwrap();
        // p_Haar(w) (1 - cos w) / pi.
        let marginal = |w: f64| (wn.log_prob_angle(w)).exp() * 2.0 * (0.5 * w).sin().powi(2) / PI;
        for w in [1e-6, 0.01, 0.1, 1.0, 2.0, 3.0, PI - 1e-9] {
            let (got, want) = (marginal(w), wrapped_angle_marginal_direct(w, sigma));
            if want > 1e-250 {
                assert!(((got - want) / want).abs() < 1e-12, "sigma = {sigma}, w = {w}: {got} vs {want}");
            }
        }
        let cdf = QuadratureCdf::new(marginal, PI, 400);
        assert!((cdf.total() - 1.0).abs() < 1e-12, "sigma = {sigma}: total mass {}", cdf.total());
    }
}

#[test]
fn wrapped_normal_normalises_against_haar() {
    let so3 = So3::new();
    for (i, sigma) in [0.3, 1.0, 3.0].into_iter().enumerate() {
        let mean = so3.sample_uniform(&mut rng(11));
        let wn = WrappedNormalSo3::new(mean, sigma).unwrap();
        let mut r = rng(20 + i as u64);
        let n = 200_000;
        let v: Vec<f64> = (0..n).map(|_| wn.log_prob(&so3.sample_uniform(&mut r)).exp()).collect();
        let mean_v = v.iter().sum::<f64>() / n as f64;
        let se = (v.iter().map(|x| (x - mean_v).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt() / (n as f64).sqrt();
        assert!((mean_v - 1.0).abs() <= 3.0 * se, "sigma = {sigma}: mean {mean_v}, s.e. {se}");
    }
}

#[test]
fn wrapped_normal_sampler_matches_angle_marginal() {
    let so3 = So3::new();
    for (i, sigma) in [0.1, 0.3, 1.0, 3.0].into_iter().enumerate() {
        let mean = so3.sample_uniform(&mut rng(12));
        let wn = WrappedNormalSo3::new(mean, sigma).unwrap();
        let cdf = QuadratureCdf::new(|w: f64| wn.log_prob_angle(w).exp() * 2.0 * (0.5 * w).sin().powi(2) / PI, PI, 400);
        let mut r = rng(30 + i as u64);
        let u: Vec<f64> =
            wn.sample_n(N_KS, &mut r).iter().map(|x| cdf.cdf(rotation_angle(&(mean.transpose() * x)))).collect();
        assert_ks(u, &format!("wrapped normal sigma = {sigma}"));
    }
}

#[test]
fn wrapped_normal_values_near_the_mean() {
    // Small sigma: only the n = 0 preimage matters, p = 8 pi^2 N_3(w) ((w/2)/sin(w/2))^2.
    let sigma = 0.01;
    let wn = WrappedNormalSo3::new(Matrix3::identity(), sigma).unwrap();
    for w in [1e-9, 1e-3, 0.01, 0.05] {
        let want = (8.0 * PI * PI).ln() - 1.5 * (2.0 * PI * sigma * sigma).ln() - w * w / (2.0 * sigma * sigma)
            + 2.0 * ((0.5 * w) / (0.5 * w).sin()).ln();
        assert!((wn.log_prob_angle(w) - want).abs() < 1e-12, "w = {w}");
    }
    // At the mean itself the density is infinite (Expm folds the spheres |v| = 2 pi n onto the identity) ...
    let wn = WrappedNormalSo3::new(Matrix3::identity(), 0.3).unwrap();
    assert_eq!(wn.log_prob(&Matrix3::identity()), f64::INFINITY);
    // ... but for moderate sigma that singularity is invisible at any representable nearby angle.
    let near = geom::so3::expm(&nalgebra::Vector3::new(1e-9, 0.0, 0.0));
    let at_near = wn.log_prob(&near);
    let peak = (8.0 * PI * PI).ln() - 1.5 * (2.0 * PI * 0.09f64).ln();
    assert!((at_near - peak).abs() < 1e-12);
    // A large sigma shows the w^{-2} growth towards the mean.
    let wide = WrappedNormalSo3::new(Matrix3::identity(), 3.0).unwrap();
    assert!(wide.log_prob_angle(1e-4) > wide.log_prob_angle(1e-2) + 5.0);
}

#[test]
fn wrapped_normal_rejects_invalid_parameters() {
    for sigma in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = WrappedNormalSo3::new(Matrix3::identity(), sigma).unwrap_err();
        assert!(matches!(e, GeomError::InvalidParameter { ref name, .. } if name == "sigma"), "{e}");
    }
    for mean in [Matrix3::from_diagonal(&nalgebra::Vector3::new(1.0, 1.0, -1.0)), Matrix3::identity() * 2.0] {
        let e = WrappedNormalSo3::new(mean, 0.5).unwrap_err();
        assert!(matches!(e, GeomError::OffManifold { ref arg, .. } if arg == "mean"), "{e}");
    }
    let mut bad = Matrix3::identity();
    bad[(0, 1)] = f64::NAN;
    let e = WrappedNormalSo3::new(bad, 0.5).unwrap_err();
    assert!(matches!(e, GeomError::NonFinite { ref arg, .. } if arg == "mean"), "{e}");
}

#[test]
fn mixture_log_prob_is_log_sum_exp_of_components() {
    let base = random_vmf_mixture(3, 4, 10.0, &mut rng(50)).unwrap();
    let weights = vec![1.0, 2.0, 3.0, 4.0];
    let mix = Mixture::new(base.components().to_vec(), weights.clone()).unwrap();
    assert!((mix.weights().iter().sum::<f64>() - 1.0).abs() < 1e-15);
    let sphere = Sphere::new(3).unwrap();
    let mut r = rng(51);
    for _ in 0..100 {
        let x = sphere.sample_uniform(&mut r);
        let want =
            (mix.components().iter().zip(&weights).map(|(c, w)| w / 10.0 * c.log_prob(&x).exp()).sum::<f64>()).ln();
        assert!((mix.log_prob(&x) - want).abs() < 1e-13 * want.abs().max(1.0));
    }
    let so3_mix = random_wrapped_normal_mixture(3, 0.4, &mut rng(52)).unwrap();
    let so3 = So3::new();
    for _ in 0..100 {
        let x = so3.sample_uniform(&mut r);
        let want = (so3_mix.components().iter().map(|c| c.log_prob(&x).exp()).sum::<f64>() / 3.0).ln();
        assert!((so3_mix.log_prob(&x) - want).abs() < 1e-12 * want.abs().max(1.0));
    }
    // A component whose density is infinite at x makes the mixture infinite there, not NaN.
    assert_eq!(so3_mix.log_prob(so3_mix.components()[0].mean()), f64::INFINITY);
}

#[test]
fn mixture_samples_components_with_their_weights() {
    let e3 = unit(vec![0.0, 0.0, 1.0]);
    let comps = vec![VonMisesFisher::new(e3.clone(), 50.0).unwrap(), VonMisesFisher::new(-&e3, 50.0).unwrap()];
    let mix = Mixture::new(comps.clone(), vec![0.3, 0.7]).unwrap();
    let n = 20_000;
    let up = mix.sample_n(n, &mut rng(60)).iter().filter(|x| x[2] > 0.0).count() as f64 / n as f64;
    let se = (0.3f64 * 0.7 / n as f64).sqrt();
    assert!((up - 0.3).abs() < 4.0 * se, "fraction of the first component {up}");
    // Zero-weight components are never drawn.
    let mix = Mixture::new(vec![comps[0].clone(), comps[1].clone(), comps[0].clone()], vec![0.0, 2.0, 0.0]).unwrap();
    let mut r = rng(61);
    assert!((0..10_000).all(|_| mix.sample_component(&mut r) == 1));
    assert!(mix.log_prob(&-&e3).is_finite());
    // Reproducible from the seed.
    let a = random_vmf_mixture(4, 3, 5.0, &mut rng(7)).unwrap().sample_n(5, &mut rng(8));
    let b = random_vmf_mixture(4, 3, 5.0, &mut rng(7)).unwrap().sample_n(5, &mut rng(8));
    assert_eq!(a, b);
}

#[test]
fn mixture_rejects_invalid_input() {
    let c = VonMisesFisher::new(unit(vec![1.0, 0.0]), 1.0).unwrap();
    let e = Mixture::<VonMisesFisher>::new(vec![], vec![]).unwrap_err();
    assert!(matches!(e, GeomError::InvalidParameter { ref name, .. } if name == "components"), "{e}");
    let e = Mixture::new(vec![c.clone(), c.clone()], vec![1.0]).unwrap_err();
    assert!(matches!(e, GeomError::Shape { ref arg, .. } if arg == "weights"), "{e}");
    for weights in [vec![1.0, -0.5], vec![1.0, f64::NAN], vec![f64::INFINITY, 1.0], vec![0.0, 0.0]] {
        let e = Mixture::new(vec![c.clone(), c.clone()], weights).unwrap_err();
        assert!(matches!(e, GeomError::InvalidParameter { ref name, .. } if name == "weights"), "{e}");
    }
    let e = random_vmf_mixture(1, 2, 1.0, &mut rng(0)).unwrap_err();
    assert!(matches!(e, GeomError::InvalidParameter { ref name, .. } if name == "d"), "{e}");
    let e = random_vmf_mixture(3, 0, 1.0, &mut rng(0)).unwrap_err();
    assert!(matches!(e, GeomError::InvalidParameter { ref name, .. } if name == "n_components"), "{e}");
    let e = random_wrapped_normal_mixture(2, 0.0, &mut rng(0)).unwrap_err();
    assert!(matches!(e, GeomError::InvalidParameter { ref name, .. } if name == "sigma"), "{e}");
}
