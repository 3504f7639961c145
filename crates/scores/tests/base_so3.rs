//! The Haar base score on SO(3) (`scores::base::so3`): the normalising constant and its gradient against
//! a Monte Carlo over Haar and against an independent quadrature of MATH.md's Bessel integral, the score
//! against finite differences of the log-density, the sigma -> 0 and sigma -> inf limits, the batched paths
//! against the per-point reference, and finiteness at degenerate inputs.
//!
//! The measured maximum errors are printed (`cargo test -p scores --test base_so3 -- --nocapture`).

use geom::so3::{project_to_so3, quaternion_to_matrix};
use nalgebra::{Matrix3, Vector3, Vector4};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use scores::base::so3::{fisher_log_normaliser, fisher_mean, fisher_moments, proper_svd, So3Base};
use scores::quadrature::integrate_adaptive;
use scores::BaseScore;
use tch::{Kind, Tensor};

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn random_rotation(rng: &mut impl Rng) -> Matrix3<f64> {
    let q = Vector4::from_fn(|_, _| rng.sample::<f64, _>(StandardNormal));
    quaternion_to_matrix(&q)
}

fn diag(a: f64, b: f64, c: f64) -> Matrix3<f64> {
    Matrix3::from_diagonal(&Vector3::new(a, b, c))
}

/// Shapes of X (before scaling to unit Frobenius norm) covering the regimes: generic, repeated singular
/// values, det < 0, the anisotropic corners s1 >> s2 + s3 and s2 = -s3, and rank deficiency.
fn shapes(rng: &mut impl Rng) -> Vec<(&'static str, Matrix3<f64>)> {
    let mut out = Vec::new();
    let mut rot = || random_rotation(rng);
    out.push(("rotation", rot()));
    let (r1, r2) = (rot(), rot());
    out.push(("generic", r1 * diag(1.0, 0.5, 0.2) * r2));
    let (r1, r2) = (rot(), rot());
    out.push(("repeated", r1 * diag(1.0, 1.0, 0.3) * r2));
    let (r1, r2) = (rot(), rot());
    out.push(("det<0 repeated", r1 * diag(1.0, 0.6, -0.6) * r2));
    out.push(("minus rotation", -rot()));
    let (r1, r2) = (rot(), rot());
    out.push(("s1 >> s2+s3", r1 * diag(1.0, 1e-3, -0.9e-3) * r2));
    let (r1, r2) = (rot(), rot());
    out.push(("rank 2", r1 * diag(1.0, 0.5, 0.0) * r2));
    out.into_iter().map(|(n, m)| (n, m / m.norm())).collect()
}

/// Relative error |a - b| / |b| (0 when both are 0).
fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / b.abs()
    }
}

// ---------------------------------------------------------------------------------------------------------
// The independent reference: MATH.md's Bessel integral by adaptive Gauss-Legendre quadrature.
// ---------------------------------------------------------------------------------------------------------

/// e^{-x} I0(x) for x >= 0 (written here so that the reference shares no code with the library): the power
/// series up to 25 and the asymptotic series above, both sums of positive terms, to a few ulps.
fn bessel_i0e(x: f64) -> f64 {
    let x = x.abs();
    if x <= 25.0 {
        let (q, mut term, mut sum) = (0.25 * x * x, 1.0, 1.0);
        for k in 1..200 {
            term *= q / (k * k) as f64;
            sum += term;
            if term < 1e-17 * sum {
                break;
            }
        }
        sum * (-x).exp()
    } else {
        let (mut term, mut sum) = (1.0, 1.0);
        for k in 0..200 {
            let kf = k as f64;
            term *= (2.0 * kf + 1.0).powi(2) / (8.0 * (kf + 1.0) * x);
            sum += term;
            if term < 1e-17 * sum {
                break;
            }
        }
        sum / (2.0 * std::f64::consts::PI * x).sqrt()
    }
}

#[test]
fn reference_bessel_matches_known_values() {
    // Values from 30-digit arithmetic.
    assert!(rel(bessel_i0e(1.0) * 1f64.exp(), 1.266_065_877_752_008) < 1e-15);
    assert!(rel(bessel_i0e(20.0) * 20f64.exp(), 4.355_828_255_955_353e7) < 1e-14);
    assert!(rel(bessel_i0e(30.0), 0.073_145_946_482_237_3) < 1e-15);
    assert!(rel(bessel_i0e(25.000_000_001), bessel_i0e(25.0)) < 1e-10);
}

/// The parameters (a, b, s_k) of the k-th cyclic representation
/// c = int_{-1}^{1} 1/2 I0(a (1 - u)) I0(b (1 + u)) exp(s_k u) du, whose u-moment is dc/ds_k, and the decay
/// rate r = b - a + s_k = min(s_i, s_j) + s_k >= 0 of its scaled form (formed directly: b - a would carry
/// a rounding error of order s1 eps, which matters when s_j + s_k = 0).
fn cyclic(s: [f64; 3], k: usize) -> (f64, f64, f64, f64) {
    let (i, j) = ((k + 1) % 3, (k + 2) % 3);
    (0.5 * (s[i] - s[j]).abs(), 0.5 * (s[i] + s[j]), s[k], (s[i].min(s[j]) + s[k]).max(0.0))
}

/// 0 and `end`, and the points m / scale (m = 0.01 .. 100) inside (0, end): where the integrand changes.
fn breakpoints(scales: &[f64], end: f64) -> Vec<f64> {
    let mut pts = vec![0.0, end];
    for &sc in scales.iter().filter(|&&sc| sc > 0.0) {
        pts.extend([0.01, 0.1, 1.0, 10.0, 100.0].iter().map(|m| m / sc).filter(|&w| w < end));
    }
    pts.sort_by(f64::total_cmp);
    pts.dedup();
    pts
}

/// The sum of adaptive integrals over consecutive pieces, to 1e-14 relative to the whole (a first pass with a
/// fixed rule gives the scale, so that pieces that contribute nothing are not refined to rounding noise).
fn integrate_pieces(f: impl Fn(f64) -> f64, pts: &[f64]) -> f64 {
    let rule = scores::quadrature::GaussLegendre::new(20);
    let rough: f64 = pts.windows(2).map(|p| rule.integrate(&f, p[0], p[1]).abs()).sum();
    let abs_tol = 1e-15 * rough / pts.len() as f64;
    pts.windows(2).map(|p| integrate_adaptive(&f, p[0], p[1], 1e-14, abs_tol)).sum()
}

/// Scaled form in w = 1 - u (large s): J = int_0^2 g, M = int_0^2 w g with
/// g(w) = 1/2 I0e(a w) I0e(b (2 - w)) exp(-r w), r = b - a + s_k, so that c = exp(s1 + s2 + s3) J and
/// d_k = 1 - M / J. The half w > 1 is integrated in v = 2 - w, so that b v carries no rounding error from
/// forming 2 - w next to the endpoint.
fn scaled_reference(a: f64, b: f64, r: f64) -> (f64, f64) {
    let g = |w: f64, v: f64| 0.5 * bessel_i0e(a * w) * bessel_i0e(b * v) * (-r * w).exp();
    // Beyond w = 80 / r the integrand is below e^-80 of its values near 0.
    let wmax = if r > 0.0 { (80.0 / r).min(2.0) } else { 2.0 };
    let pts = breakpoints(&[a, b, r], wmax.min(1.0));
    let mut j = integrate_pieces(|w| g(w, 2.0 - w), &pts);
    let mut m = integrate_pieces(|w| w * g(w, 2.0 - w), &pts);
    if wmax > 1.0 {
        let vmin = 2.0 - wmax;
        let mut pts: Vec<f64> = breakpoints(&[b, r], 1.0).into_iter().filter(|&v| v > vmin).collect();
        pts.insert(0, vmin);
        j += integrate_pieces(|v| g(2.0 - v, v), &pts);
        m += integrate_pieces(|v| (2.0 - v) * g(2.0 - v, v), &pts);
    }
    (j, m)
}

/// Reference ln c, d and e = 1 - d for a proper s (s1 >= s2 >= |s3|).
///
/// - s1 < 1e-3: the Taylor series through degree 4 (relative error O(s^3) < 1e-9);
/// - s1 <= 2: the unscaled Bessel integral in u by a 64-point Gauss-Legendre rule (c - 1 and the u-moments
///   are integrated directly, so the relative errors are about 1e-16/s^2 and 1e-16/s);
/// - s1 > 2: the scaled form above.
fn reference(s: [f64; 3]) -> (f64, [f64; 3], [f64; 3]) {
    let [s1, s2, s3] = s;
    if s1 < 1e-3 {
        let p2 = s1 * s1 + s2 * s2 + s3 * s3;
        let p4 = s1.powi(4) + s2.powi(4) + s3.powi(4);
        let ln_c = p2 / 6.0 + s1 * s2 * s3 / 6.0 + p2 * p2 / 360.0 - p4 / 120.0;
        let d = [0, 1, 2].map(|k| {
            let sk = s[k];
            sk / 3.0 + s[(k + 1) % 3] * s[(k + 2) % 3] / 6.0 + p2 * sk / 90.0 - sk.powi(3) / 30.0
        });
        return (ln_c, d, d.map(|x| 1.0 - x));
    }
    if s1 <= 2.0 {
        let i0 = |x: f64| bessel_i0e(x) * x.abs().exp();
        let f = |k: usize, u: f64| {
            let (a, b, sk, _) = cyclic(s, k);
            0.5 * i0(a * (1.0 - u)) * i0(b * (1.0 + u)) * (sk * u).exp()
        };
        // The integrands are entire functions of u of moderate size: a 64-point rule is exact to rounding.
        let rule = scores::quadrature::GaussLegendre::new(64);
        let c_minus_1 = rule.integrate(|u| f(2, u) - 0.5, -1.0, 1.0);
        let c = 1.0 + c_minus_1;
        let d = [0, 1, 2].map(|k| rule.integrate(|u| u * f(k, u), -1.0, 1.0) / c);
        return (c_minus_1.ln_1p(), d, d.map(|x| 1.0 - x));
    }
    let mut e = [0.0; 3];
    let mut ln_j = 0.0;
    for k in 0..3 {
        let (a, b, _, r) = cyclic(s, k);
        let (j, m) = scaled_reference(a, b, r);
        e[k] = m / j;
        if k == 2 {
            ln_j = j.ln();
        }
    }
    (s1 + s2 + s3 + ln_j, e.map(|x| 1.0 - x), e)
}

#[test]
fn normaliser_at_zero_is_one() {
    let m = fisher_moments([0.0; 3]);
    assert_eq!((m.ln_c, m.ln_j, m.d, m.e), (0.0, 0.0, [0.0; 3], [1.0; 3]));
    assert_eq!(fisher_log_normaliser(&Matrix3::zeros()), 0.0);
    assert_eq!(fisher_mean(&Matrix3::zeros()), Matrix3::zeros());
}

#[test]
fn normaliser_and_mean_match_monte_carlo_over_haar() {
    // c(s) = E exp(sum_k s_k R_kk) and d_k = E[R_kk exp(..)] / c over uniform rotations.
    let mut r = rng(1);
    let n = 400_000;
    let rots: Vec<Matrix3<f64>> = (0..n).map(|_| random_rotation(&mut r)).collect();
    for s in [[0.3, 0.2, 0.1], [0.9, 0.6, -0.3], [2.0, 1.0, 0.5], [1.5, 1.5, -1.5]] {
        let w: Vec<f64> = rots.iter().map(|m| (s[0] * m[(0, 0)] + s[1] * m[(1, 1)] + s[2] * m[(2, 2)]).exp()).collect();
        let nf = n as f64;
        let mean = w.iter().sum::<f64>() / nf;
        let var = w.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (nf - 1.0);
        let m = fisher_moments(s);
        let c = m.ln_c.exp();
        let z = (mean - c) / (var / nf).sqrt();
        eprintln!("monte carlo s={s:?}: c = {c:.6}, estimate {mean:.6}, z = {z:.2}");
        assert!(z.abs() < 5.0, "s={s:?}: c = {c}, Monte Carlo {mean} (z = {z})");
        for k in 0..3 {
            // Self-normalised estimate of E[R_kk] and its delta-method standard error.
            let num: Vec<f64> = rots.iter().zip(&w).map(|(m, wi)| m[(k, k)] * wi).collect();
            let dk = num.iter().sum::<f64>() / nf / mean;
            let resid_var = rots.iter().zip(&w).map(|(m, wi)| (wi * (m[(k, k)] - dk)).powi(2)).sum::<f64>() / nf;
            let se = (resid_var / nf).sqrt() / mean;
            let z = (dk - m.d[k]) / se;
            assert!(z.abs() < 5.0, "s={s:?} k={k}: d = {}, Monte Carlo {dk} (z = {z})", m.d[k]);
        }
    }
}

#[test]
fn normaliser_and_gradient_match_quadrature_of_the_bessel_integral_over_the_grid() {
    let mut r = rng(2);
    let shapes = shapes(&mut r);
    let (mut worst_ln_c, mut worst_d, mut worst_e, mut worst_score) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut worst_case = String::new();
    let base = So3Base::new();
    let mut n_cases = 0;
    for &sigma in &[1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0] {
        for &alpha in &[0.1, 0.5, 1.0] {
            for &scale in &[0.0, 1e-8, 0.5, 1.0, 3.0, 1e3, 1e6] {
                for (name, shape) in &shapes {
                    let x = shape * scale;
                    let svd = proper_svd(&x);
                    let s = svd.s.map(|v| v * alpha / (sigma * sigma));
                    let m = fisher_moments(s);
                    let (ln_c, d, e) = reference(s);
                    n_cases += 1;
                    let err_ln_c = rel(m.ln_c, ln_c);
                    let dmax = d.iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
                    let err_d = if dmax == 0.0 {
                        m.d.iter().fold(0.0f64, |acc, v| acc.max(v.abs()))
                    } else {
                        (0..3).map(|k| (m.d[k] - d[k]).abs() / dmax).fold(0.0, f64::max)
                    };
                    // The complement e = 1 - d matters (and the reference is accurate) at large s.
                    let err_e = if s[0] > 2.0 { (0..3).map(|k| rel(m.e[k], e[k])).fold(0.0, f64::max) } else { 0.0 };
                    // The score against the reference posterior mean built on the same SVD.
                    let score_ref = (svd.compose(d) * alpha - x) / (sigma * sigma);
                    let score = base.base_score(&x, alpha, sigma);
                    let err_score = if score_ref.norm() == 0.0 {
                        score.norm()
                    } else {
                        (score - score_ref).norm() / score_ref.norm()
                    };
                    let tag = format!("{name}, sigma={sigma}, alpha={alpha}, |x|={scale}, s={s:?}");
                    assert!(err_ln_c <= 1e-8, "ln c: {err_ln_c:.2e} ({} vs {ln_c}) at {tag}", m.ln_c);
                    assert!(err_d <= 1e-8, "d: {err_d:.2e} ({:?} vs {d:?}) at {tag}", m.d);
                    assert!(err_e <= 1e-8, "1 - d: {err_e:.2e} ({:?} vs {e:?}) at {tag}", m.e);
                    assert!(err_score <= 1e-8, "score: {err_score:.2e} at {tag}");
                    if err_d.max(err_e) > worst_d.max(worst_e) {
                        worst_case = tag;
                    }
                    worst_ln_c = worst_ln_c.max(err_ln_c);
                    worst_d = worst_d.max(err_d);
                    worst_e = worst_e.max(err_e);
                    worst_score = worst_score.max(err_score);
                }
            }
        }
    }
    eprintln!(
        "grid of {n_cases} cases, max relative errors: ln c {worst_ln_c:.2e}, d {worst_d:.2e}, 1 - d {worst_e:.2e}, \
         score {worst_score:.2e} (worst d / 1 - d at {worst_case})"
    );
}

#[test]
fn anisotropic_corners_and_the_large_s_asymptotics() {
    let (mut worst_ref, mut worst_asym) = (0.0f64, 0.0f64);
    // Corners: s1 >> s2 + s3, s1 ~ s2 >> s3, s2 = -s3, all equal, tiny third value.
    let corners = [
        [1e6, 1.0, -0.999],
        [1e6, 1e6, 1.0],
        [1e6, 1e6, -1e6],
        [1e8, 1e8, -1e8 + 1.0],
        [1e9, 3.0, 0.0],
        [50.0, 50.0, -49.9],
        [1e4, 1e4, 1e4],
        [7.0, 1e-3, 1e-3],
        [1e12, 1e12, 1e12],
        [1e12, 1.0, 0.5],
        [1e12, 1e12, -1e12],
    ];
    for s in corners {
        let m = fisher_moments(s);
        let (ln_c, d, e) = reference(s);
        let err = (0..3).map(|k| rel(m.e[k], e[k]).max((m.d[k] - d[k]).abs())).fold(rel(m.ln_c, ln_c), f64::max);
        assert!(err <= 1e-8, "s={s:?}: {err:.2e}; {m:?} vs ({ln_c}, {d:?}, {e:?})");
        worst_ref = worst_ref.max(err);
    }
    // Large s in every direction: e_k = 1 - d_k = 1/2 sum_{j != k} 1/(s_k + s_j) (1 + O(1/s)).
    for s in [[1e10, 5e9, 2e9], [1e12, 1e12, -5e11], [3e11, 2e11, 1e11]] {
        let m = fisher_moments(s);
        for k in 0..3 {
            let asym = 0.5 * (0..3).filter(|&j| j != k).map(|j| 1.0 / (s[k] + s[j])).sum::<f64>();
            let err = rel(m.e[k], asym);
            let bound = 10.0 / (s[1] + s[2]);
            assert!(err <= bound, "s={s:?} k={k}: e = {}, asymptotic {asym} ({err:.2e} > {bound:.2e})", m.e[k]);
            worst_asym = worst_asym.max(err);
        }
    }
    eprintln!(
        "corners: max relative error vs quadrature {worst_ref:.2e}; asymptotic series agrees to {worst_asym:.2e}"
    );
}

#[test]
fn series_and_contour_branches_agree_at_the_switch() {
    let mut worst = 0.0f64;
    for s in [[0.04, 0.03, -0.02], [0.04, 0.04, 0.04], [0.04, 0.0, 0.0], [0.04, 0.04, -0.04]] {
        let below = fisher_moments(s);
        let above = fisher_moments(s.map(|v| v * (1.0 + 1e-12)));
        worst = worst.max(rel(below.ln_c, above.ln_c));
        for k in 0..3 {
            worst = worst.max((below.d[k] - above.d[k]).abs() / s[0]);
        }
    }
    eprintln!("series vs contour at s1 = 0.04: {worst:.2e}");
    assert!(worst < 1e-10, "{worst}");
}

#[test]
fn proper_svd_reconstructs_with_rotations() {
    let mut r = rng(3);
    for (name, x) in shapes(&mut r).into_iter().chain([("zero", Matrix3::zeros()), ("rank 1", diag(2.0, 0.0, 0.0))]) {
        let svd = proper_svd(&x);
        for f in [svd.u, svd.v] {
            assert!((f.transpose() * f - Matrix3::identity()).norm() < 1e-14, "{name}");
            assert!((f.determinant() - 1.0).abs() < 1e-14, "{name}");
        }
        assert!(svd.s[0] >= svd.s[1] && svd.s[1] >= svd.s[2].abs(), "{name}: {:?}", svd.s);
        assert!((svd.compose(svd.s) - x).norm() <= 1e-15 * x.norm().max(1e-300), "{name}");
        assert_eq!(svd.s[2] < 0.0, x.determinant() < -1e-12, "{name}");
    }
}

#[test]
fn score_is_the_gradient_of_the_log_density() {
    let mut r = rng(4);
    let base = So3Base::new();
    let mut worst = 0.0f64;
    let shapes = shapes(&mut r);
    for &sigma in &[0.3, 1.0, 3.0] {
        for &alpha in &[0.5, 1.0] {
            for &scale in &[0.3, 1.0, 2.0] {
                for (name, shape) in &shapes {
                    let x = shape * scale;
                    let score = base.base_score(&x, alpha, sigma);
                    let h = 1e-5;
                    let fd = Matrix3::from_fn(|i, j| {
                        let mut e = Matrix3::zeros();
                        e[(i, j)] = h;
                        (base.log_density(&(x + e), alpha, sigma) - base.log_density(&(x - e), alpha, sigma))
                            / (2.0 * h)
                    });
                    let err = (fd - score).norm() / score.norm().max(1.0);
                    assert!(err < 1e-7, "{name} sigma={sigma} alpha={alpha} |x|={scale}: {err:.2e}\n{score}\n{fd}");
                    worst = worst.max(err);
                }
            }
        }
    }
    eprintln!("score vs central differences of log_density: max error {worst:.2e}");
}

#[test]
fn log_density_integrates_the_gaussian_over_haar() {
    // p(x) = E_R N(x; alpha R, sigma^2 I_9) by Monte Carlo at a moderate sigma.
    let mut r = rng(5);
    let base = So3Base::new();
    let (alpha, sigma) = (0.8, 0.7);
    let x = random_rotation(&mut r) * diag(0.9, 0.6, -0.2);
    let n = 200_000;
    let norm = -4.5 * (2.0 * std::f64::consts::PI * sigma * sigma).ln();
    let vals: Vec<f64> = (0..n)
        .map(|_| (norm - (x - random_rotation(&mut r) * alpha).norm_squared() / (2.0 * sigma * sigma)).exp())
        .collect();
    let mean = vals.iter().sum::<f64>() / n as f64;
    let se = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0) / n as f64).sqrt();
    let exact = base.log_density(&x, alpha, sigma).exp();
    eprintln!("log_density vs Monte Carlo: {exact:.6e} vs {mean:.6e} +- {se:.1e}");
    assert!((exact - mean).abs() < 5.0 * se, "{exact} vs {mean} +- {se}");
}

#[test]
fn limits_in_sigma() {
    let mut r = rng(6);
    let base = So3Base::new();
    let (mut worst_small, mut worst_large) = (0.0f64, 0.0f64);
    for (name, shape) in shapes(&mut r).into_iter().filter(|(n, _)| !matches!(*n, "minus rotation" | "det<0 repeated"))
    {
        // sigma -> 0: E[R | x] -> project(x) (unique when the two smallest singular values differ or det > 0),
        // with an error O(sigma^2).
        let x = shape * 1.5;
        let m = base.posterior_mean(&x, 1.0, 1e-4);
        let err = (m - project_to_so3(&x)).norm();
        let bound = if name == "s1 >> s2+s3" { 1e-2 } else { 1e-6 };
        assert!(err < bound, "{name}: |E[R|x] - project(x)| = {err:.2e}");
        if name != "s1 >> s2+s3" {
            worst_small = worst_small.max(err);
        }
        // sigma -> inf: s_base -> -x / sigma^2 (E[R|x] = O(alpha |x| / sigma^2)).
        let sigma = 1e4;
        let s = base.base_score(&x, 1.0, sigma);
        let err = (s * sigma * sigma + x).norm() / x.norm();
        assert!(err < 1e-7, "{name}: {err:.2e}");
        worst_large = worst_large.max(err);
    }
    eprintln!("limits: |E[R|x] - project(x)| at sigma = 1e-4: {worst_small:.2e}; |sigma^2 s + x|/|x| at sigma = 1e4: {worst_large:.2e}");
}

/// A batch mixing every shape, scale, alpha and sigma over the ranges, and degenerate rows.
fn batch(seed: u64, n: usize) -> (Vec<Matrix3<f64>>, Vec<f64>, Vec<f64>) {
    let mut r = rng(seed);
    let shapes = shapes(&mut r);
    let (mut xs, mut alphas, mut sigmas) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let scale = match i % 10 {
            0 => 0.0,
            1 => 1e-8,
            _ => 10f64.powf(r.random_range(-3.0..6.0)),
        };
        let (_, shape) = &shapes[i % shapes.len()];
        let noise = Matrix3::from_fn(|_, _| r.sample::<f64, _>(StandardNormal)) * if i % 3 == 0 { 0.0 } else { 0.05 };
        xs.push((shape + noise) * scale);
        alphas.push(r.random_range(0.05..1.0));
        sigmas.push(10f64.powf(r.random_range(-3.0..2.0)));
    }
    (xs, alphas, sigmas)
}

fn to_tensor(xs: &[Matrix3<f64>], kind: Kind) -> Tensor {
    let flat: Vec<f64> = xs.iter().flat_map(|m| m.transpose().as_slice().to_vec()).collect();
    Tensor::from_slice(&flat).view([xs.len() as i64, 3, 3]).to_kind(kind)
}

fn from_tensor(t: &Tensor) -> Vec<Matrix3<f64>> {
    let t = t.to_kind(Kind::Double).contiguous();
    let n = t.numel();
    let mut v = vec![0.0; n];
    t.copy_data(&mut v, n);
    v.chunks(9).map(Matrix3::from_row_slice).collect()
}

#[test]
fn batched_paths_match_the_per_point_reference() {
    let base = So3Base::new();
    let (xs, alphas, sigmas) = batch(7, 700);
    for kind in [Kind::Double, Kind::Float] {
        let xt = to_tensor(&xs, kind);
        let (at, st) = (Tensor::from_slice(&alphas).to_kind(kind), Tensor::from_slice(&sigmas).to_kind(kind));
        // The per-point reference on the inputs as the batched code sees them (rounded to `kind`).
        let (xr, ar, sr) = (from_tensor(&xt), from_tensor_1d(&at), from_tensor_1d(&st));
        let tol = if kind == Kind::Double { 1e-8 } else { 1e-4 };
        for (label, score_t, mean_t) in [
            ("rayon", base.base_score_t(&xt, &at, &st), base.posterior_mean_t(&xt, &at, &st)),
            (
                "vectorised",
                base.base_score_vectorised_t(&xt, &at, &st),
                base.posterior_mean_vectorised_t(&xt, &at, &st),
            ),
        ] {
            assert_eq!(score_t.kind(), kind);
            assert_eq!(score_t.size(), [xs.len() as i64, 3, 3]);
            let (scores, means) = (from_tensor(&score_t), from_tensor(&mean_t));
            let (mut worst_score, mut worst_mean) = (0.0f64, 0.0f64);
            for i in 0..xs.len() {
                let s_ref = base.base_score(&xr[i], ar[i], sr[i]);
                let m_ref = base.posterior_mean(&xr[i], ar[i], sr[i]);
                assert!(scores[i].iter().all(|v| v.is_finite()), "{label} {kind:?} row {i}: {}", scores[i]);
                // The two paths use different SVDs, which agree to a backward error of about 1e-16 |x|. E[R|x]
                // changes by Cov(R) dF with dF = alpha dx / sigma^2, and |Cov(R)| <~ 2 max_k (1 - d_k): small at
                // large s except where s2 + s3 = O(1) (then E[R|x] is genuinely that sensitive to x).
                let k = ar[i] / (sr[i] * sr[i]);
                let spread = fisher_moments(proper_svd(&(xr[i] * k)).s).e.iter().fold(0.0f64, |a, e| a.max(*e));
                // The part of the difference explained by that sensitivity is not counted.
                let cond = 1e-14 * k * xr[i].norm() * spread;
                let es =
                    ((scores[i] - s_ref).norm() - cond * ar[i] / (sr[i] * sr[i])).max(0.0) / s_ref.norm().max(1e-300);
                let em = ((means[i] - m_ref).norm() - cond).max(0.0) / m_ref.norm().max(1e-300);
                assert!(
                    es <= tol && em <= tol,
                    "{label} {kind:?} row {i}: score {es:.2e}, mean {em:.2e}, x = {}",
                    xr[i]
                );
                worst_score = worst_score.max(es);
                worst_mean = worst_mean.max(em);
            }
            eprintln!("batched {label} {kind:?} vs per point: max relative error score {worst_score:.2e}, posterior mean {worst_mean:.2e}");
        }
    }
}

fn from_tensor_1d(t: &Tensor) -> Vec<f64> {
    let t = t.to_kind(Kind::Double);
    let n = t.numel();
    let mut v = vec![0.0; n];
    t.copy_data(&mut v, n);
    v
}

#[test]
fn finite_at_degenerate_inputs() {
    let base = So3Base::new();
    let xs = [
        Matrix3::zeros(),
        diag(1.0, 0.0, 0.0),
        diag(1e6, 1e6, 0.0),
        diag(1.0, 1.0, -1.0),
        -Matrix3::identity() * 1e6,
        Matrix3::from_element(1e-300),
        diag(1e6, 1e-300, 0.0),
    ];
    for x in &xs {
        for &(alpha, sigma) in &[(1.0, 1e-3), (0.0, 1.0), (1.0, 1e2), (0.5, 1e-8), (1.0, 1e6)] {
            let m = base.posterior_mean(x, alpha, sigma);
            let s = base.base_score(x, alpha, sigma);
            let l = base.log_density(x, alpha, sigma);
            assert!(
                m.iter().chain(s.iter()).all(|v| v.is_finite()) && l.is_finite(),
                "x = {x}, alpha={alpha}, sigma={sigma}"
            );
            assert!(m.norm() <= 3f64.sqrt() * (1.0 + 1e-12), "x = {x}: |E[R|x]| = {}", m.norm());
        }
    }
    let n = xs.len();
    let xt = to_tensor(&xs, Kind::Double);
    let (at, st) = (
        Tensor::ones([n as i64], (Kind::Double, tch::Device::Cpu)),
        Tensor::full([n as i64], 1e-3, (Kind::Double, tch::Device::Cpu)),
    );
    for t in [base.base_score_t(&xt, &at, &st), base.base_score_vectorised_t(&xt, &at, &st)] {
        assert!(t.isfinite().all().int64_value(&[]) == 1, "{t}");
    }
    // Invalid rows (non-finite x, sigma = 0, alpha < 0) give NaN rows and leave the others alone.
    let mut bad = Matrix3::identity();
    bad[(0, 1)] = f64::NAN;
    let xt = to_tensor(&[Matrix3::identity(), bad, Matrix3::identity(), Matrix3::identity()], Kind::Double);
    let at = Tensor::from_slice(&[1.0, 1.0, 1.0, -1.0]);
    let st = Tensor::from_slice(&[0.5, 0.5, 0.0, 0.5]);
    for t in [base.base_score_t(&xt, &at, &st), base.base_score_vectorised_t(&xt, &at, &st)] {
        let rows = from_tensor(&t);
        assert!(rows[0].iter().all(|v| v.is_finite()), "{}", rows[0]);
        assert!(rows[1..].iter().all(|r| r.iter().all(|v| v.is_nan())), "{t}");
    }
    // Empty batches.
    let empty = Tensor::zeros([0, 3, 3], (Kind::Float, tch::Device::Cpu));
    let e1 = Tensor::zeros([0], (Kind::Float, tch::Device::Cpu));
    assert_eq!(base.base_score_t(&empty, &e1, &e1).size(), [0, 3, 3]);
}

#[test]
#[should_panic(expected = "argument `x`")]
fn non_finite_x_panics_naming_it() {
    let mut x = Matrix3::identity();
    x[(1, 2)] = f64::NAN;
    So3Base::new().base_score(&x, 1.0, 1.0);
}

#[test]
#[should_panic(expected = "argument `sigma`")]
fn zero_sigma_panics_naming_it() {
    So3Base::new().log_density(&Matrix3::identity(), 1.0, 0.0);
}

#[test]
fn batched_throughput() {
    // A quick timing (the dev profile is slow; set SO3_BASE_TIMING_B and use --release for real figures).
    let b: usize = std::env::var("SO3_BASE_TIMING_B").ok().and_then(|v| v.parse().ok()).unwrap_or(8192);
    let (xs, alphas, sigmas) = batch(8, b);
    let xt = to_tensor(&xs, Kind::Float);
    let (at, st) = (Tensor::from_slice(&alphas).to_kind(Kind::Float), Tensor::from_slice(&sigmas).to_kind(Kind::Float));
    let base = So3Base::new();
    let _ = base.base_score_t(&xt, &at, &st);
    for (label, f) in [
        ("rayon", Box::new(|| base.base_score_t(&xt, &at, &st)) as Box<dyn Fn() -> Tensor>),
        ("vectorised", Box::new(|| base.base_score_vectorised_t(&xt, &at, &st))),
    ] {
        let start = std::time::Instant::now();
        let reps = 3;
        for _ in 0..reps {
            let out = f();
            assert_eq!(out.size(), [b as i64, 3, 3]);
        }
        let secs = start.elapsed().as_secs_f64() / reps as f64;
        eprintln!("base_score_t {label}, B = {b}: {:.3} s per batch, {:.3e} points/s", secs, b as f64 / secs);
    }
}
