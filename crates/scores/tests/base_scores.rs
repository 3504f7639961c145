//! Conformance tests of the exact base scores (MATH.md section 2): finite differences of the log-density,
//! independent high-accuracy posterior means (closed forms and adaptive quadrature), Monte Carlo, the small-
//! and large-sigma limits, batched against per-point in Double and Float, finiteness of values and
//! gradients, the vanishing of the discrete residual inside Voronoi cells, and parameter validation.
//!
//! Every test is seeded. Errors are measured relative to the *term scale* of the score,
//! |s| + |x|/sigma^2 + alpha |E[m|x]|/sigma^2: s = (alpha E - x)/sigma^2 is a difference of two terms that
//! cancel where x sits on the manifold at small sigma, and no finite-precision evaluation can do better than
//! a few ulps of the larger term. Run with `--nocapture` to see the measured maxima.

use geom::{DiscreteSet, Manifold, Sphere, Torus};
use nalgebra::DVector;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use scores::base::discrete::DiscreteBase;
use scores::base::gaussian::GaussianBase;
use scores::base::monte_carlo::MonteCarloBase;
use scores::base::sphere::{bessel_ratio_t, SphereBase};
use scores::base::torus::TorusBase;
use scores::quadrature::integrate_adaptive;
use scores::{BaseScore, ScoreError};
use std::f64::consts::PI;
use tch::{Device, Kind, Tensor};

const SIGMAS: [f64; 6] = [1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0];
const ALPHAS: [f64; 3] = [0.1, 0.5, 1.0];
const RADII: [f64; 7] = [0.0, 1e-8, 0.5, 1.0, 3.0, 1e3, 1e6];

type Base = Box<dyn BaseScore<Point = DVector<f64>>>;

/// How the finite-difference step follows the length scale on which the log-density varies.
#[derive(Clone, Copy)]
enum Step {
    /// Smooth radially: h = 1e-3 max(|x|, l), l = sigma min(1, sigma/alpha) (sphere, Gaussian).
    Radial,
    /// As `Radial` with the smallest circle radius in place of |x| (torus).
    PerCircle,
    /// A Gaussian mixture with components at alpha m_k, m_k in `support` (discrete set, Monte Carlo):
    /// h = 1e-3 l, l = sigma min(1, sigma/(alpha diam)), the width of the softmax transitions across Voronoi
    /// boundaries; or the `Radial` step where the posterior stays one-hot (every other component's log-weight
    /// at least 60 below the nearest one's) over the whole stencil, so that the log-density is one quadratic.
    Mixture,
}

struct Subject {
    name: String,
    base: Base,
    n: usize,
    /// A bound on |m| over the base law's support (for the rounding-noise estimate).
    radius: f64,
    step: Step,
    /// The support points of a mixture (`Step::Mixture`), else empty.
    support: Vec<DVector<f64>>,
}

fn weighted_cube() -> DiscreteSet {
    let cube = DiscreteSet::hypercube(3).unwrap();
    let w: Vec<f64> = (0..8).map(|i| 1.0 + i as f64).collect();
    DiscreteSet::new(cube.points().to_vec(), Some(w)).unwrap()
}

fn gaussian() -> GaussianBase {
    GaussianBase::new(3, DVector::from_vec(vec![0.3, -0.2, 0.5]), 0.7).unwrap()
}

fn subjects() -> Vec<Subject> {
    let mut out = Vec::new();
    for d in [2, 3, 4, 5] {
        let base = Box::new(SphereBase::new(d).unwrap());
        out.push(Subject {
            name: format!("sphere d={d}"),
            base,
            n: d,
            radius: 1.0,
            step: Step::Radial,
            support: vec![],
        });
    }
    let base = Box::new(TorusBase::new(2).unwrap());
    out.push(Subject {
        name: "torus k=2".into(),
        base,
        n: 4,
        radius: 2f64.sqrt(),
        step: Step::PerCircle,
        support: vec![],
    });
    let two = DiscreteSet::two_points();
    out.push(Subject {
        name: "discrete two points".into(),
        base: Box::new(DiscreteBase::new(two.clone())),
        n: 2,
        radius: 1.0,
        step: Step::Mixture,
        support: two.points().to_vec(),
    });
    let cube = weighted_cube();
    out.push(Subject {
        name: "discrete weighted cube".into(),
        base: Box::new(DiscreteBase::new(cube.clone())),
        n: 3,
        radius: 3f64.sqrt(),
        step: Step::Mixture,
        support: cube.points().to_vec(),
    });
    let base = Box::new(gaussian());
    out.push(Subject { name: "gaussian".into(), base, n: 3, radius: 0.7 * 12.0, step: Step::Radial, support: vec![] });
    let mc = MonteCarloBase::new(Sphere::new(3).unwrap(), 2000, 11).unwrap();
    let draws = mc.draws_tensor();
    let support = (0..2000).map(|i| DVector::from_vec(Vec::<f64>::try_from(&draws.get(i)).unwrap())).collect();
    out.push(Subject {
        name: "monte carlo S^2 (N=2000)".into(),
        base: Box::new(mc),
        n: 3,
        radius: 1.0,
        step: Step::Mixture,
        support,
    });
    out
}

#[derive(Debug, Clone)]
struct Point {
    x: DVector<f64>,
    alpha: f64,
    sigma: f64,
}

fn unit(n: usize, rng: &mut ChaCha8Rng) -> DVector<f64> {
    let g = DVector::<f64>::from_fn(n, |_, _| StandardNormal.sample(rng));
    &g / g.norm()
}

/// Every (sigma, alpha, |x|) of the grid with a random direction in R^n; with `zero_circle` (the torus) also
/// points whose first circle is (0, 0).
fn grid_with(n: usize, seed: u64, zero_circle: bool) -> Vec<Point> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for &sigma in &SIGMAS {
        for &alpha in &ALPHAS {
            for &r in &RADII {
                let u = unit(n, &mut rng);
                out.push(Point { x: &u * r, alpha, sigma });
                if zero_circle {
                    let mut v = &u * r;
                    v[0] = 0.0;
                    v[1] = 0.0;
                    out.push(Point { x: v, alpha, sigma });
                }
            }
        }
    }
    out
}

fn grid(n: usize, seed: u64) -> Vec<Point> {
    grid_with(n, seed, false)
}

fn subject_grid(subject: &Subject, seed: u64) -> Vec<Point> {
    grid_with(subject.n, seed, matches!(subject.step, Step::PerCircle))
}

fn term_scale(base: &Base, p: &Point) -> f64 {
    let s = base.base_score(&p.x, p.alpha, p.sigma);
    let e = base.posterior_mean(&p.x, p.alpha, p.sigma);
    let s2 = p.sigma * p.sigma;
    s.norm() + p.x.norm() / s2 + p.alpha * e.norm() / s2
}

fn fd_step(subject: &Subject, p: &Point) -> f64 {
    let (s, a) = (p.sigma, p.alpha);
    let radial = 1e-3 * p.x.norm().max(s * (s / a).min(1.0));
    match subject.step {
        Step::Radial => radial,
        Step::PerCircle => {
            let rmin = (0..p.x.len() / 2)
                .map(|i| p.x.rows(2 * i, 2).norm())
                .filter(|r| *r > 0.0)
                .fold(f64::INFINITY, f64::min);
            let rmin = if rmin.is_finite() { rmin } else { 0.0 };
            1e-3 * rmin.max(s * (s / a).min(1.0))
        }
        Step::Mixture => {
            let (pts, diam) = (&subject.support, 2.0 * subject.radius);
            // Log-weight gaps to the nearest component k; moving by up to 2h changes gap j by at most
            // 2h alpha |m_j - m_k| / sigma^2 (the log-weights of the base, < 3 apart, are covered by the margin).
            let d2: Vec<f64> = pts.iter().map(|m| (&p.x - m * a).norm_squared() / (2.0 * s * s)).collect();
            let k = (0..pts.len()).min_by(|&i, &j| d2[i].partial_cmp(&d2[j]).unwrap()).unwrap();
            let one_hot = (0..pts.len())
                .all(|j| j == k || d2[j] - d2[k] - 4.0 * radial * a * (&pts[j] - &pts[k]).norm() / (s * s) > 63.0);
            if one_hot {
                radial
            } else {
                1e-3 * s * (s / (a * diam)).min(1.0)
            }
        }
    }
}

/// Fourth-order central difference of `f` at `x` with step `h` (rounded so that x_i + h is exact).
fn fd_gradient(f: &dyn Fn(&DVector<f64>) -> f64, x: &DVector<f64>, h: f64) -> DVector<f64> {
    DVector::from_fn(x.len(), |i, _| {
        let h = (x[i] + h) - x[i];
        let at = |t: f64| {
            let mut y = x.clone();
            y[i] += t;
            f(&y)
        };
        (at(-2.0 * h) - 8.0 * at(-h) + 8.0 * at(h) - at(2.0 * h)) / (12.0 * h)
    })
}

/// A bound on the rounding error of the finite difference: each log-density value carries an error of a few
/// ulps of its largest term, |x - alpha m| (|x| + alpha |m|) / sigma^2 for the quadratic, n |ln(2 pi sigma^2)|
/// for the normalisation; the stencil multiplies it by 1.5 / h.
fn fd_noise(subject: &Subject, p: &Point, log_density: f64, h: f64) -> f64 {
    let norm = subject.n as f64 * (2.0 * PI * p.sigma * p.sigma).ln().abs();
    let quad = log_density.abs() + norm;
    let cross = (2.0 * quad).sqrt() * (p.x.norm() + p.alpha * subject.radius) / p.sigma;
    let per_value = 4.0 * f64::EPSILON * (quad + cross + 10.0);
    1.5 * per_value / h
}

fn all_finite_t(t: &Tensor) -> bool {
    t.isfinite().all().int64_value(&[]) != 0
}

fn all_finite(v: &DVector<f64>) -> bool {
    v.iter().all(|c| c.is_finite())
}

/// (1) base_score equals the finite difference of log_density, wherever that difference is meaningful.
///
/// Skipped (counted and printed with `--nocapture`; the score and log-density are still checked to be
/// finite there): points where the rounding error of log_density divided by the step exceeds 1e-7 of the
/// term scale. On the grid these are |x| = 1e-8 at every sigma (the x-dependence of log_density across the
/// stencil, about |x| h / sigma^2, is below the rounding of its constant part), x = 0 at small sigma for the
/// bases whose score is not 0 there (Gaussian, weighted cube, Monte Carlo: alpha^2 |m|^2/(2 sigma^2) swamps
/// it), and for the Monte Carlo mixture a few far points (|x| >= 1e3) whose posterior is not one-hot, so that
/// the step must resolve softmax transitions of width sigma^2/(2 alpha). The closed forms at those points are
/// checked by the posterior-mean and batched tests below.
#[test]
fn base_score_is_the_gradient_of_log_density() {
    for (k, subject) in subjects().iter().enumerate() {
        let mut worst: f64 = 0.0;
        let (mut checked, mut skipped) = (0, 0);
        let mut skipped_at: Vec<String> = Vec::new();
        for p in subject_grid(subject, 100 + k as u64) {
            let s = subject.base.base_score(&p.x, p.alpha, p.sigma);
            let l = subject.base.log_density(&p.x, p.alpha, p.sigma);
            assert!(all_finite(&s) && l.is_finite(), "{}: non-finite at {p:?}: {s} {l}", subject.name);
            let scale = term_scale(&subject.base, &p);
            let h = fd_step(subject, &p);
            let noise = fd_noise(subject, &p, l, h);
            if scale > 0.0 && noise > 1e-7 * scale {
                skipped += 1;
                let tag = format!("(sigma {:e}, |x| {:e})", p.sigma, p.x.norm());
                if !skipped_at.contains(&tag) {
                    skipped_at.push(tag);
                }
                continue;
            }
            let f = |y: &DVector<f64>| subject.base.log_density(y, p.alpha, p.sigma);
            let fd = fd_gradient(&f, &p.x, h);
            let err = (&fd - &s).norm();
            assert!(
                err <= 1e-6 * scale + 2.0 * noise,
                "{}: at {p:?} fd {fd} vs score {s} (scale {scale:e})",
                subject.name
            );
            if scale > 0.0 {
                worst = worst.max(err / scale);
            }
            checked += 1;
        }
        println!("fd {}: {checked} points checked, {skipped} skipped, max relative error {worst:.2e}", subject.name);
        println!("  skipped at {}", skipped_at.join(" "));
        assert!(checked >= 2 * skipped, "{}: too few points checked ({checked} vs {skipped} skipped)", subject.name);
    }
}

/// Integrals over the polar angle of the vMF posterior on S^{d-1}, folded onto [0, pi/2] with theta ->
/// pi - theta and scaled by e^{-kappa} so that nothing overflows or cancels:
/// returns (A_d, 1 - A_d) = (N / D, (D - N) / D), where with c = cos(theta), w = sin^{d-2}(theta),
/// e = exp(-2 kappa sin^2(theta/2)) = exp(kappa (c - 1)),
///   D = int w e (1 + exp(-2 kappa c)), N = int c w e (1 - exp(-2 kappa c)),
///   D - N = int w e ((1 - c) + (1 + c) exp(-2 kappa c)).
fn vmf_quadrature(d: usize, kappa: f64) -> (f64, f64) {
    let upper = if kappa > 0.0 { (50.0 * (d as f64 / kappa).sqrt()).min(PI / 2.0) } else { PI / 2.0 };
    let pieces = 16;
    // A coarse first pass sets the absolute tolerance (1e-15 of the integral), which bounds the work where a
    // piece holds a negligible part of the mass.
    let integrate = |f: &dyn Fn(f64) -> f64| {
        let bounds = |i: usize| (upper * i as f64 / pieces as f64, upper * (i + 1) as f64 / pieces as f64);
        let rough: f64 = (0..pieces).map(|i| integrate_adaptive(f, bounds(i).0, bounds(i).1, 1e-6, 0.0)).sum();
        let abs_tol = 1e-15 * rough.abs() / pieces as f64;
        (0..pieces).map(|i| integrate_adaptive(f, bounds(i).0, bounds(i).1, 1e-14, abs_tol)).sum::<f64>()
    };
    let w = |t: f64| t.sin().powi(d as i32 - 2);
    let e = |t: f64| (-2.0 * kappa * (0.5 * t).sin().powi(2)).exp();
    let den = integrate(&|t| w(t) * e(t) * (1.0 + (-2.0 * kappa * t.cos()).exp()));
    let num = integrate(&|t| t.cos() * w(t) * e(t) * -(-2.0 * kappa * t.cos()).exp_m1());
    let one_minus = integrate(&|t| {
        let c = t.cos();
        w(t) * e(t) * (2.0 * (0.5 * t).sin().powi(2) + (1.0 + c) * (-2.0 * kappa * c).exp())
    });
    (num / den, one_minus / den)
}

/// |got - a| relative to min(a, 1 - a): the test of a mean resultant length both where it is small and where
/// it is close to 1. Near 1 an f64 holds A only to half an ulp of 1, so 4 ulps of A are forgiven first.
fn resultant_error(got: f64, a: f64, one_minus_a: f64) -> f64 {
    ((got - a).abs() - 4.0 * f64::EPSILON * a).max(0.0) / a.min(one_minus_a)
}

/// (2) Sphere posterior mean against adaptive quadrature over the polar angle (d = 2, 3, 4, 5), and against
/// coth(k) - 1/k for d = 3 where that formula does not cancel (kappa >= 0.1), over the whole grid
/// (kappa from 0 to 1e12).
#[test]
fn sphere_posterior_mean_matches_quadrature() {
    for d in [2, 3, 4, 5] {
        let base = SphereBase::new(d).unwrap();
        let (mut worst, mut worst_plain, mut worst_closed): (f64, f64, f64) = (0.0, 0.0, 0.0);
        for p in grid(d, 200 + d as u64) {
            let r = p.x.norm();
            let e = base.posterior_mean(&p.x, p.alpha, p.sigma);
            if r == 0.0 {
                assert!(e.iter().all(|c| *c == 0.0));
                continue;
            }
            let kappa = (p.alpha / p.sigma) * (r / p.sigma);
            let (a, one_minus_a) = vmf_quadrature(d, kappa);
            let got = e.dot(&p.x) / r;
            assert!((&e - &p.x * (got / r)).norm() <= 1e-14 * got, "d={d}: E not along x at {p:?}");
            let err = resultant_error(got, a, one_minus_a);
            assert!(err <= 1e-8, "d={d} kappa={kappa:e}: {got} vs quadrature {a} (1 - A = {one_minus_a:e})");
            worst = worst.max(err);
            worst_plain = worst_plain.max((got - a).abs() / a);
            if d == 3 && kappa >= 0.1 {
                let closed = 1.0 / kappa.tanh() - 1.0 / kappa;
                let err = (got - closed).abs() / closed;
                assert!(err <= 1e-12, "kappa={kappa:e}: {got} vs coth form {closed}");
                worst_closed = worst_closed.max(err);
            }
        }
        println!(
            "posterior mean sphere d={d}: vs quadrature max relative error {worst_plain:.2e}, \
             relative to min(A, 1 - A) beyond 4 ulps {worst:.2e}"
        );
        if d == 3 {
            println!("posterior mean sphere d=3: max relative error vs coth(k) - 1/k {worst_closed:.2e}");
        }
    }
}

/// (2) Torus posterior mean, circle by circle, against the d = 2 quadrature.
#[test]
fn torus_posterior_mean_matches_quadrature() {
    let base = TorusBase::new(2).unwrap();
    let (mut worst, mut worst_plain): (f64, f64) = (0.0, 0.0);
    for p in grid_with(4, 300, true) {
        let e = base.posterior_mean(&p.x, p.alpha, p.sigma);
        for i in 0..2 {
            let (xi, ei) = (p.x.rows(2 * i, 2).into_owned(), e.rows(2 * i, 2).into_owned());
            let r = xi.norm();
            if r == 0.0 {
                assert!(ei.iter().all(|c| *c == 0.0));
                continue;
            }
            let (a, one_minus_a) = vmf_quadrature(2, (p.alpha / p.sigma) * (r / p.sigma));
            let got = ei.dot(&xi) / r;
            let err = resultant_error(got, a, one_minus_a);
            assert!(err <= 1e-8, "circle {i} at {p:?}: {ei} vs {a}");
            worst = worst.max(err);
            worst_plain = worst_plain.max((got - a).abs() / a);
        }
    }
    println!("posterior mean torus k=2: vs quadrature max relative error {worst_plain:.2e}, relative to min(A, 1 - A) {worst:.2e}");
}

/// (2) Gaussian posterior mean against 1-D quadrature of the posterior of each coordinate, in log space
/// relative to the closed-form mean c: with t = m - c, the log-posterior minus its value at c is
/// -t (t + 2 (c - mu)) / (2 s^2) - alpha t (alpha t - 2 (x - alpha c)) / (2 sigma^2), integrated over 40
/// posterior standard deviations either side. If c were not the mean, E[t] would not vanish.
#[test]
fn gaussian_posterior_mean_matches_quadrature() {
    let g = gaussian();
    let mut worst: f64 = 0.0;
    for p in grid(3, 400) {
        let e = g.posterior_mean(&p.x, p.alpha, p.sigma);
        let (s, a, sg) = (g.std(), p.alpha, p.sigma);
        let sd = 1.0 / (1.0 / (s * s) + a * a / (sg * sg)).sqrt();
        for j in 0..3 {
            let c = e[j];
            let (dm, res) = (c - g.mean()[j], p.x[j] - a * c);
            let log_ratio =
                |t: f64| -t * (t + 2.0 * dm) / (2.0 * s * s) - a * t * (a * t - 2.0 * res) / (2.0 * sg * sg);
            // The two linear terms of log_ratio are each as large as |t (c - mu)| / s^2 and cancel; their
            // rounding (relative noise up to about 1e-9 at |x| = 1e6, alpha = 0.1) sets the tolerances.
            let z = integrate_adaptive(|t| log_ratio(t).exp(), -40.0 * sd, 40.0 * sd, 1e-10, 1e-8 * sd);
            let tol = 1e-10 * (c.abs() + sd) * z;
            let shift = integrate_adaptive(|t| t * log_ratio(t).exp(), -40.0 * sd, 40.0 * sd, 1e-10, tol) / z;
            let err = shift.abs() / (c.abs() + sd);
            assert!(err <= 1e-8, "coordinate {j} at {p:?}: closed form {c}, quadrature shift {shift:e}");
            worst = worst.max(err);
        }
    }
    println!("posterior mean gaussian: max relative error vs quadrature {worst:.2e}");
}

/// (2) Discrete posterior mean against a direct evaluation of the weights without log-sum-exp, where no
/// exponential under- or overflows (sigma >= 0.1, |x| <= 3).
#[test]
fn discrete_posterior_mean_matches_direct_sum() {
    let set = weighted_cube();
    let base = DiscreteBase::new(set.clone());
    let mut worst: f64 = 0.0;
    for p in grid(3, 500).into_iter().filter(|p| p.sigma >= 0.1 && p.x.norm() <= 3.0) {
        let e = base.posterior_mean(&p.x, p.alpha, p.sigma);
        let joint: Vec<f64> = set
            .points()
            .iter()
            .zip(set.weights())
            .map(|(m, w)| w * (-(&p.x - m * p.alpha).norm_squared() / (2.0 * p.sigma * p.sigma)).exp())
            .collect();
        let total: f64 = joint.iter().sum();
        let direct = set.points().iter().zip(&joint).fold(DVector::zeros(3), |acc, (m, j)| acc + m * (j / total));
        let err = (&e - &direct).norm() / direct.norm();
        assert!(err <= 1e-12, "{p:?}: {e} vs {direct}");
        worst = worst.max(err);
    }
    println!("posterior mean discrete: max relative error vs direct sum {worst:.2e}");
}

/// (3) Exact bases against the Monte Carlo estimator at moderate sigma: within 5 standard errors.
#[test]
fn exact_bases_agree_with_monte_carlo() {
    fn compare<M: geom::UniformSampler<Point = DVector<f64>>>(
        name: &str,
        exact: &dyn BaseScore<Point = DVector<f64>>,
        mc: &MonteCarloBase<M>,
        n: usize,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(600);
        let mut worst: f64 = 0.0;
        for sigma in [0.3, 1.0] {
            for alpha in [0.5, 1.0] {
                for r in [0.5, 1.0, 2.0] {
                    let x = unit(n, &mut rng) * r;
                    let est = mc.estimate(&x, alpha, sigma);
                    assert!(est.ess > 100.0, "{name}: effective sample size {} too small", est.ess);
                    let e = exact.posterior_mean(&x, alpha, sigma);
                    for j in 0..n {
                        // The standard error can fall below the rounding of the weighted sum (a posterior
                        // concentrated on one point): a few ulps are added to it.
                        let se = est.posterior_mean_se[j] + 1e-14 * e[j].abs().max(1.0);
                        let z = (est.posterior_mean[j] - e[j]).abs() / se;
                        assert!(z <= 5.0, "{name} sigma={sigma} alpha={alpha} r={r}: coordinate {j} off by {z:.1} se");
                        worst = worst.max(z);
                    }
                    let l = exact.log_density(&x, alpha, sigma);
                    let z = (est.log_density - l).abs() / est.log_density_se;
                    assert!(z <= 5.0, "{name} sigma={sigma} alpha={alpha} r={r}: log-density off by {z:.1} se");
                    worst = worst.max(z);
                }
            }
        }
        println!("monte carlo {name}: max deviation {worst:.2} standard errors");
    }
    let mc = MonteCarloBase::new(Sphere::new(3).unwrap(), 20_000, 1).unwrap();
    compare("sphere d=3", &SphereBase::new(3).unwrap(), &mc, 3);
    let mc = MonteCarloBase::new(Sphere::new(5).unwrap(), 20_000, 2).unwrap();
    compare("sphere d=5", &SphereBase::new(5).unwrap(), &mc, 5);
    let mc = MonteCarloBase::new(Torus::new(2).unwrap(), 20_000, 3).unwrap();
    compare("torus k=2", &TorusBase::new(2).unwrap(), &mc, 4);
    let mc = MonteCarloBase::new(DiscreteSet::hypercube(3).unwrap(), 20_000, 4).unwrap();
    compare("cube", &DiscreteBase::new(DiscreteSet::hypercube(3).unwrap()), &mc, 3);
}

/// The posterior mean under the base law itself (the sigma -> infinity limit of E[m | x]).
fn prior_mean(name: &str, n: usize) -> DVector<f64> {
    if name.starts_with("discrete weighted") {
        let set = weighted_cube();
        set.points().iter().zip(set.weights()).fold(DVector::zeros(3), |acc, (m, w)| acc + m * *w)
    } else if name.starts_with("gaussian") {
        gaussian().mean().clone()
    } else {
        DVector::zeros(n)
    }
}

/// The projection of x/alpha onto the support as sigma -> 0 (nearest point, x/|x| circle by circle, or x/alpha
/// itself for the Gaussian, whose support is all of R^n).
fn projection(name: &str, x: &DVector<f64>, alpha: f64) -> DVector<f64> {
    if name.starts_with("sphere") || name.starts_with("monte") {
        x / x.norm()
    } else if name.starts_with("torus") {
        Torus::new(2).unwrap().project(x).unwrap()
    } else if name.starts_with("discrete two") {
        DiscreteSet::two_points().project(&(x / alpha)).unwrap()
    } else if name.starts_with("discrete weighted") {
        weighted_cube().project(&(x / alpha)).unwrap()
    } else {
        x / alpha
    }
}

/// (4) sigma -> 0: E[m | x] -> the projection; sigma -> infinity: sigma^2 s_base + x -> alpha E_base[m], so
/// s_base -> -x/sigma^2 up to alpha times the base mean.
#[test]
fn small_and_large_sigma_limits() {
    let mut rng = ChaCha8Rng::seed_from_u64(700);
    for subject in subjects().iter().filter(|s| !s.name.starts_with("monte")) {
        for alpha in ALPHAS {
            for _ in 0..5 {
                // A point at distance about alpha from the origin, off the support.
                let x = unit(subject.n, &mut rng) * (alpha * rng.random_range(0.5..1.5));
                let target = projection(&subject.name, &x, alpha);
                let mut prev = f64::INFINITY;
                for sigma in [1e-2, 1e-3, 1e-4, 1e-5, 1e-6] {
                    let err = (subject.base.posterior_mean(&x, alpha, sigma) - &target).norm();
                    assert!(err <= prev.max(1e-15), "{}: not converging at sigma={sigma}", subject.name);
                    prev = err;
                }
                assert!(prev <= 1e-9, "{}: |E - projection| = {prev:e} at sigma = 1e-6", subject.name);
                let m0 = prior_mean(&subject.name, subject.n) * alpha;
                for sigma in [1e3, 1e5] {
                    let s = subject.base.base_score(&x, alpha, sigma);
                    let err = (s * (sigma * sigma) + &x - &m0).norm();
                    assert!(
                        err <= 10.0 * alpha * alpha * x.norm() * (1.0 + subject.radius) / (sigma * sigma)
                            + 1e-12 * x.norm(),
                        "{}: sigma^2 s + x - alpha E_base = {err:e} at sigma = {sigma}",
                        subject.name
                    );
                }
            }
        }
    }
}

fn to_tensor(points: &[Point], kind: Kind) -> (Tensor, Tensor, Tensor) {
    let n = points[0].x.len() as i64;
    let flat: Vec<f64> = points.iter().flat_map(|p| p.x.iter().copied()).collect();
    let x = Tensor::from_slice(&flat).reshape([points.len() as i64, n]).to_kind(kind);
    let alpha = Tensor::from_slice(&points.iter().map(|p| p.alpha).collect::<Vec<_>>()).to_kind(kind);
    let sigma = Tensor::from_slice(&points.iter().map(|p| p.sigma).collect::<Vec<_>>()).to_kind(kind);
    (x, alpha, sigma)
}

fn row(t: &Tensor, i: usize) -> DVector<f64> {
    let r = t.get(i as i64).to_kind(Kind::Double);
    DVector::from_vec(Vec::<f64>::try_from(&r).unwrap())
}

fn round_f32(p: &Point) -> Point {
    Point { x: p.x.map(|c| c as f32 as f64), alpha: p.alpha as f32 as f64, sigma: p.sigma as f32 as f64 }
}

/// (5) batched = per point: Double to 1e-10 of the term scale, Float to 1e-4 (against the per-point value at
/// the Float-rounded inputs). In Float the discrete and Monte Carlo posteriors are skipped where the logits'
/// own rounding (about 6e-8 alpha |x| |m| / sigma^2) moves the posterior weights by more than 1e-5 of the
/// scale: there Float cannot be accurate, whatever the algorithm.
#[test]
fn batched_matches_per_point() {
    for (k, subject) in subjects().iter().enumerate() {
        let points = subject_grid(subject, 800 + k as u64);
        let (x, alpha, sigma) = to_tensor(&points, Kind::Double);
        let s = subject.base.base_score_t(&x, &alpha, &sigma);
        assert_eq!(s.kind(), Kind::Double);
        assert_eq!(s.size(), x.size());
        let mut worst: f64 = 0.0;
        for (i, p) in points.iter().enumerate() {
            let reference = subject.base.base_score(&p.x, p.alpha, p.sigma);
            let scale = term_scale(&subject.base, p);
            let err = (row(&s, i) - &reference).norm();
            assert!(err <= 1e-10 * scale, "{} Double at {p:?}: {} vs {reference}", subject.name, row(&s, i));
            if scale > 0.0 {
                worst = worst.max(err / scale);
            }
        }
        let (x, alpha, sigma) = to_tensor(&points, Kind::Float);
        let s = subject.base.base_score_t(&x, &alpha, &sigma);
        assert_eq!(s.kind(), Kind::Float);
        let (mut worst_f, mut skipped) = (0f64, 0);
        for (i, p) in points.iter().enumerate() {
            let q = round_f32(p);
            let scale = term_scale(&subject.base, &q);
            if let Step::Mixture = subject.step {
                // Rounding of the logits, and the posterior mass off the nearest point that it can move.
                let (a, s2) = (q.alpha, q.sigma * q.sigma);
                let logit_err = 6e-8 * a * (q.x.norm() + a * subject.radius) * subject.radius / s2;
                let d2: Vec<f64> = subject.support.iter().map(|m| (&q.x - m * a).norm_squared() / (2.0 * s2)).collect();
                let nearest = d2.iter().copied().fold(f64::INFINITY, f64::min);
                let off_mass = d2.iter().map(|d| (-(d - nearest - 3.0)).exp().min(1.0)).sum::<f64>() - 1.0;
                let score_err = a * 4.0 * subject.radius * logit_err * off_mass.min(1.0) / s2;
                if score_err > 1e-5 * scale {
                    skipped += 1;
                    continue;
                }
            }
            let reference = subject.base.base_score(&q.x, q.alpha, q.sigma);
            let err = (row(&s, i) - &reference).norm();
            assert!(err <= 1e-4 * scale, "{} Float at {q:?}: {} vs {reference}", subject.name, row(&s, i));
            if scale > 0.0 {
                worst_f = worst_f.max(err / scale);
            }
        }
        println!(
            "batched {}: max relative error Double {worst:.2e}, Float {worst_f:.2e} ({skipped} Float points skipped)",
            subject.name
        );
    }
}

/// (5) The batched mean resultant length A_d over kappa in [0, 1e13] against the per-point reference, and
/// the d = 3 closed form against Perron's continued fraction.
#[test]
fn batched_mean_resultant_matches_reference() {
    let mut kappas = vec![0.0];
    kappas.extend((-48..=52).map(|e| 10f64.powf(e as f64 / 4.0)));
    kappas.extend([0.3, 0.49, 0.5, 0.51, 1.0, 7.5, 13.3, 20.0, 1e30]);
    let k64 = Tensor::from_slice(&kappas);
    for d in [2, 3, 4, 5, 6, 7, 10, 21] {
        let base = SphereBase::new(d).unwrap();
        let a64 = base.mean_resultant_t(&k64);
        let a32 = base.mean_resultant_t(&k64.to_kind(Kind::Float));
        let (mut worst, mut worst_f): (f64, f64) = (0.0, 0.0);
        for (i, &k) in kappas.iter().enumerate() {
            let reference = base.mean_resultant(k);
            let got = a64.double_value(&[i as i64]);
            let err = if k == 0.0 { got.abs() } else { (got / reference - 1.0).abs() };
            assert!(err <= 1e-13, "d={d} kappa={k:e}: {got} vs {reference}");
            worst = worst.max(err);
            let kf = k as f32 as f64;
            let reference = base.mean_resultant(kf);
            let got = a32.double_value(&[i as i64]);
            let err = if kf == 0.0 { got.abs() } else { (got / reference - 1.0).abs() };
            assert!(err <= 1e-5, "d={d} Float kappa={kf:e}: {got} vs {reference}");
            worst_f = worst_f.max(err);
        }
        println!("A_d batched d={d}: max relative error Double {worst:.2e}, Float {worst_f:.2e}");
    }
    // d = 3: the coth form (used by SphereBase) and the continued fraction agree.
    let cf = bessel_ratio_t(0.5, &k64.clamp_max(1e29));
    let closed = SphereBase::new(3).unwrap().mean_resultant_t(&k64.clamp_max(1e29));
    let diff = (&cf - &closed).abs().max().double_value(&[]);
    println!("A_3: coth form vs continued fraction, max difference {diff:.2e}");
    assert!(diff <= 1e-15);
}

/// (6) Values and gradients (w.r.t. x, alpha and sigma) are finite on the whole grid, x = 0 included, in Double
/// and Float.
#[test]
fn values_and_gradients_are_finite() {
    for (k, subject) in subjects().iter().enumerate() {
        let points = subject_grid(subject, 900 + k as u64);
        for kind in [Kind::Double, Kind::Float] {
            let (x, alpha, sigma) = to_tensor(&points, kind);
            let (x, alpha, sigma) =
                (x.set_requires_grad(true), alpha.set_requires_grad(true), sigma.set_requires_grad(true));
            let s = subject.base.base_score_t(&x, &alpha, &sigma);
            assert!(all_finite_t(&s), "{} {kind:?}: non-finite score", subject.name);
            // Weight each row by sigma^2 / (|x|_1 + 1), which keeps the sum representable in Float.
            let w = sigma.detach().square().unsqueeze(-1)
                / (x.detach().abs().sum_dim_intlist([-1i64].as_slice(), true, None) + 1.0);
            let loss = (&s * w).sum(kind);
            let grads = Tensor::run_backward(&[loss], &[&x, &alpha, &sigma], false, false);
            for (g, name) in grads.iter().zip(["x", "alpha", "sigma"]) {
                assert!(all_finite_t(g), "{} {kind:?}: non-finite gradient w.r.t. {name}", subject.name);
            }
        }
    }
}

/// (6) At x = 0 the sphere's score is 0 and its Jacobian is (alpha^2/(d sigma^2) - 1)/sigma^2 I (autograd through the
/// Taylor and continued-fraction branches), for every d.
#[test]
fn sphere_jacobian_at_the_origin() {
    for d in [2, 3, 4, 7] {
        let base = SphereBase::new(d).unwrap();
        let (alpha, sigma) = (0.8, 0.5);
        for j in 0..d {
            let x = Tensor::zeros([1, d as i64], (Kind::Double, Device::Cpu)).set_requires_grad(true);
            let a = Tensor::from_slice(&[alpha]);
            let s = Tensor::from_slice(&[sigma]);
            let out = base.base_score_t(&x, &a, &s);
            assert_eq!(out.abs().sum(Kind::Double).double_value(&[]), 0.0);
            let g = Tensor::run_backward(&[out.select(1, j as i64).sum(Kind::Double)], &[&x], false, false);
            // s ~ (alpha A_d(kappa)/|x| - 1) x/sigma^2 and A_d(kappa)/|x| ~ alpha/(d sigma^2) near 0.
            let expect = (alpha * alpha / (d as f64 * sigma * sigma) - 1.0) / (sigma * sigma);
            for i in 0..d {
                let got = g[0].double_value(&[0, i as i64]);
                let want = if i == j { expect } else { 0.0 };
                assert!((got - want).abs() <= 1e-14 * expect.abs(), "d={d}: d s_{j}/d x_{i} = {got}, expected {want}");
            }
        }
    }
}

/// The MAD residual s_data - s_base = (alpha/sigma^2) sum_k (pi_k - w_k) m_k for two weightings of one set,
/// evaluated as (alpha/sigma^2) sum_{k != k*} (pi_k - w_k) (m_k - m_k*) with k* the most probable point
/// (the weights' differences sum to 0), so that it is accurate when every difference is tiny. The difference
/// of the two base scores would round to exactly 0 long before.
fn residual(data: &DiscreteBase, base: &DiscreteBase, x: &DVector<f64>, alpha: f64, sigma: f64) -> f64 {
    let (pi, w) = (data.posterior_weights(x, alpha, sigma), base.posterior_weights(x, alpha, sigma));
    let top = (0..w.len()).max_by(|&i, &j| w[i].partial_cmp(&w[j]).unwrap()).unwrap();
    let pts = base.set().points();
    let sum = (0..w.len())
        .filter(|&k| k != top)
        .fold(DVector::zeros(x.len()), |acc, k| acc + (&pts[k] - &pts[top]) * (pi[k] - w[k]));
    alpha / (sigma * sigma) * sum.norm()
}

/// (7) The residual s_data - s_base of MAD for a discrete set (data weights pi, base weights p) vanishes as
/// sigma -> 0 inside a Voronoi cell of {alpha m_k}, and grows like 1/sigma^2 on a cell boundary.
#[test]
fn discrete_residual_vanishes_inside_voronoi_cells() {
    let points = DiscreteSet::two_points().points().to_vec();
    let base = DiscreteBase::new(DiscreteSet::two_points());
    let data = DiscreteBase::from_points(points, Some(vec![0.8, 0.2])).unwrap();
    let alpha = 0.9;
    let inside = DVector::from_vec(vec![alpha * 1.0 + 0.3, 0.2]);
    let boundary = DVector::from_vec(vec![0.0, 0.7]);
    let mut prev = f64::INFINITY;
    for sigma in [1.0, 0.5, 0.3, 0.2, 0.1, 0.05] {
        let res = residual(&data, &base, &inside, alpha, sigma);
        assert!(res < prev, "residual inside the cell does not decrease at sigma={sigma}: {res:e}");
        prev = res;
        // On the boundary the base posterior is (1/2, 1/2) exactly, the data one (0.8, 0.2): the residual is
        // alpha/sigma^2 |sum_k (pi_k - w_k) m_k| = 0.6 alpha / sigma^2.
        let res_b = (data.base_score(&boundary, alpha, sigma) - base.base_score(&boundary, alpha, sigma)).norm();
        assert!((res_b * sigma * sigma / alpha - 0.6).abs() < 1e-12, "boundary residual {res_b} at sigma={sigma}");
    }
    assert!(prev < 1e-100, "residual inside the cell at sigma = 0.05: {prev:e}");

    // The weighted cube against uniform data weights, at random points well inside their cells.
    let cube = weighted_cube();
    let uniform = DiscreteBase::new(DiscreteSet::hypercube(3).unwrap());
    let weighted = DiscreteBase::new(cube.clone());
    let mut rng = ChaCha8Rng::seed_from_u64(1000);
    for _ in 0..20 {
        let k = rng.random_range(0..8);
        let x = &cube.points()[k] * alpha + unit(3, &mut rng) * (0.5 * alpha);
        let res: Vec<f64> = [0.3, 0.1, 0.03].iter().map(|&s| residual(&uniform, &weighted, &x, alpha, s)).collect();
        assert!(res[2] < res[1] && res[1] < res[0] && res[2] < 1e-30, "cube residuals {res:?} at {x}");
    }
}

/// (8) Invalid parameters are rejected with errors that name the field.
#[test]
fn invalid_parameters_name_the_field() {
    fn names(e: ScoreError, field: &str) {
        let msg = e.to_string();
        assert!(msg.contains(&format!("`{field}`")), "{msg}");
    }
    names(SphereBase::new(1).unwrap_err(), "d");
    names(TorusBase::new(0).unwrap_err(), "k");
    names(GaussianBase::new(0, DVector::zeros(0), 1.0).unwrap_err(), "dim");
    names(GaussianBase::new(2, DVector::zeros(3), 1.0).unwrap_err(), "mean");
    names(GaussianBase::new(2, DVector::from_vec(vec![0.0, f64::NAN]), 1.0).unwrap_err(), "mean");
    for std in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        names(GaussianBase::new(2, DVector::zeros(2), std).unwrap_err(), "std");
    }
    names(MonteCarloBase::new(Sphere::new(3).unwrap(), 1, 0).unwrap_err(), "n_samples");
    names(DiscreteBase::from_points(vec![], None).unwrap_err(), "points");
    let two = DiscreteSet::two_points().points().to_vec();
    names(DiscreteBase::from_points(two.clone(), Some(vec![1.0])).unwrap_err(), "weights");
    names(DiscreteBase::from_points(two, Some(vec![1.0, -1.0])).unwrap_err(), "weights");
}

#[test]
#[should_panic(expected = "argument `x`")]
fn per_point_non_finite_x_panics_naming_x() {
    SphereBase::new(3).unwrap().base_score(&DVector::from_vec(vec![0.0, f64::NAN, 1.0]), 1.0, 1.0);
}

#[test]
#[should_panic(expected = "argument `sigma`")]
fn per_point_zero_sigma_panics_naming_sigma() {
    TorusBase::new(1).unwrap().log_density(&DVector::from_vec(vec![1.0, 0.0]), 1.0, 0.0);
}

#[test]
#[should_panic(expected = "argument `alpha`")]
fn per_point_nan_alpha_panics_naming_alpha() {
    gaussian().posterior_mean(&DVector::zeros(3), f64::NAN, 1.0);
}

#[test]
#[should_panic(expected = "argument `x`")]
fn per_point_wrong_length_panics_naming_x() {
    DiscreteBase::new(DiscreteSet::two_points()).posterior_mean(&DVector::zeros(3), 1.0, 1.0);
}

/// The Monte Carlo draws depend on the seed only.
#[test]
fn monte_carlo_draws_are_reproducible() {
    let a = MonteCarloBase::new(Sphere::new(3).unwrap(), 100, 5).unwrap().draws_tensor();
    let b = MonteCarloBase::new(Sphere::new(3).unwrap(), 100, 5).unwrap().draws_tensor();
    let c = MonteCarloBase::new(Sphere::new(3).unwrap(), 100, 6).unwrap().draws_tensor();
    assert!(a.equal(&b));
    assert!(!a.equal(&c));
    assert_eq!(a.size(), [100, 3]);
}
