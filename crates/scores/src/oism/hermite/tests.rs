use super::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind};

/// `n` rows of independent N(mean_j, std_j^2) coordinates, seeded.
fn gaussian_data(n: usize, mean: &[f64], std: &[f64], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = mean.len();
    let v: Vec<f64> = (0..n * d)
        .map(|i| {
            let e: f64 = StandardNormal.sample(&mut rng);
            mean[i % d] + std[i % d] * e
        })
        .collect();
    Tensor::from_slice(&v).view([n as i64, d as i64])
}

/// (alpha, sigma) of the VP / OU process at OU time t.
fn vp(t: f64) -> (f64, f64) {
    ((-t).exp(), (-(-2.0 * t).exp_m1()).sqrt())
}

/// Relative RMS error, over a grid of +-2.5 standard deviations around the noised mean in every coordinate,
/// of the estimated score against the exact score -(x - alpha m) / (alpha^2 s^2 + sigma^2), in units of the
/// score's scale 1 / sqrt(v).
fn gaussian_error(est: &HermiteScore, mean: &[f64], std: &[f64], alpha: f64, sigma: f64) -> f64 {
    let d = mean.len();
    let mut sq = 0.0;
    let mut count = 0.0;
    for i in 0..=20 {
        let u = -2.5 + 0.25 * i as f64;
        let var: Vec<f64> = std.iter().map(|s| alpha * alpha * s * s + sigma * sigma).collect();
        let x = DVector::from_fn(d, |j, _| alpha * mean[j] + u * var[j].sqrt());
        let s = est.base_score(&x, alpha, sigma);
        for j in 0..d {
            let exact = -(x[j] - alpha * mean[j]) / var[j];
            sq += ((s[j] - exact) * var[j].sqrt()).powi(2);
            count += 1.0;
        }
    }
    (sq / count).sqrt()
}

#[test]
fn oism_projection_matches_the_noised_gaussian_in_1d_and_shrinks_with_n() {
    let (mean, std) = ([0.5], [0.8]);
    let mut errs = Vec::new();
    for (n, seed) in [(2_000, 1), (50_000, 2)] {
        let est = HermiteScore::fit(&gaussian_data(n, &mean, &std, seed), 4, None).unwrap();
        let worst = [0.05, 0.3, 1.0]
            .iter()
            .map(|&t| {
                let (a, s) = vp(t);
                gaussian_error(&est, &mean, &std, a, s)
            })
            .fold(0.0, f64::max);
        eprintln!("projection 1-d N = {n}: worst relative RMS error {worst:.4e}");
        // Sampling error is O(1/sqrt(N)); the projection is exact for Gaussian data at degree >= 2.
        assert!(worst < 8.0 / (n as f64).sqrt(), "N = {n}: {worst}");
        errs.push(worst);
    }
    assert!(errs[1] < errs[0], "{errs:?}");
}

#[test]
fn oism_expansion_error_shrinks_with_degree() {
    let (mean, std) = ([0.5], [0.8]);
    let data = gaussian_data(50_000, &mean, &std, 3);
    let (a, s) = vp(0.5);
    let errs: Vec<f64> = [2, 4, 8]
        .iter()
        .map(|&k| {
            let config = HermiteConfig { method: HermiteMethod::Expansion, ..HermiteConfig::new(k) };
            let est = HermiteScore::fit_config(&data, config).unwrap();
            gaussian_error(&est, &mean, &std, a, s)
        })
        .collect();
    eprintln!("expansion 1-d, degrees 2, 4, 8: {errs:?}");
    assert!(errs[0] > errs[1] && errs[1] > errs[2], "{errs:?}");
    assert!(errs[2] < 0.03, "{errs:?}");
}

#[test]
fn oism_matches_the_noised_gaussian_in_2d_for_both_methods_and_ve() {
    let (mean, std) = ([0.5, -0.3], [0.8, 1.1]);
    let data = gaussian_data(40_000, &mean, &std, 4);
    let proj = HermiteScore::fit(&data, 3, None).unwrap();
    let config = HermiteConfig { method: HermiteMethod::Expansion, ..HermiteConfig::new(12) };
    let expa = HermiteScore::fit_config(&data, config).unwrap();
    for t in [0.1, 0.5, 1.5] {
        let (a, s) = vp(t);
        let ep = gaussian_error(&proj, &mean, &std, a, s);
        let ee = gaussian_error(&expa, &mean, &std, a, s);
        eprintln!("2-d VP t_OU = {t}: projection {ep:.3e}, expansion {ee:.3e}");
        assert!(ep < 0.04, "projection at t = {t}: {ep}");
        // The expansion converges slowly as a -> 1 (t = 0.1 gives a = 0.9).
        assert!(ee < if t < 0.2 { 0.15 } else { 0.04 }, "expansion at t = {t}: {ee}");
    }
    // VE (alpha = 1): exact through the rescaling z = x / sqrt(1 + sigma^2).
    for sigma in [0.5, 2.0, 10.0] {
        let ep = gaussian_error(&proj, &mean, &std, 1.0, sigma);
        eprintln!("2-d VE sigma = {sigma}: projection {ep:.3e}");
        assert!(ep < 0.04, "VE sigma = {sigma}: {ep}");
    }
}

#[test]
fn oism_expansion_density_integrates_to_one() {
    let data = gaussian_data(5_000, &[0.5], &[0.8], 5);
    for method in [HermiteMethod::Expansion, HermiteMethod::Projection] {
        let est = HermiteScore::fit_config(&data, HermiteConfig { method, ..HermiteConfig::new(6) }).unwrap();
        for (alpha, sigma) in [vp(0.05), vp(0.5), (1.0, 1.0), (0.0, 2.0)] {
            let sv = alpha.hypot(sigma);
            let (lo, hi, n) = (-15.0 * sv, 15.0 * sv, 6001);
            let dx = (hi - lo) / (n - 1) as f64;
            let total: f64 = (0..n)
                .map(|i| {
                    let x = DVector::from_vec(vec![lo + i as f64 * dx]);
                    let w = if i == 0 || i == n - 1 { 0.5 } else { 1.0 };
                    w * est.log_density(&x, alpha, sigma).exp() * dx
                })
                .sum();
            // The expansion integrates to 1 exactly; flooring where the truncated series is negative (at
            // small noise) adds at most that negative mass.
            let tol = if alpha > 0.9 && method == HermiteMethod::Expansion { 1e-2 } else { 1e-6 };
            assert!((total - 1.0).abs() < tol, "{method:?} alpha = {alpha}, sigma = {sigma}: {total}");
        }
    }
}

#[test]
fn oism_shrinkage_pulls_toward_the_reference_score() {
    let data = gaussian_data(5_000, &[1.0, -0.5], &[0.5, 0.7], 6);
    let (alpha, sigma) = vp(0.4);
    for method in [HermiteMethod::Projection, HermiteMethod::Expansion] {
        let dist: Vec<f64> = [0.0, 0.25, 0.5, 0.75, 1.0]
            .iter()
            .map(|&w| {
                let config = HermiteConfig { shrinkage: Some(w), method, ..HermiteConfig::new(6) };
                let est = HermiteScore::fit_config(&data, config).unwrap();
                (0..=20)
                    .map(|i| {
                        let x = DVector::from_vec(vec![-2.0 + 0.2 * i as f64, 1.5 - 0.15 * i as f64]);
                        // The reference N(0, I) noised by VP is N(0, I): score -x.
                        (est.base_score(&x, alpha, sigma) + &x).norm()
                    })
                    .sum::<f64>()
            })
            .collect();
        eprintln!("{method:?}: distance to the N(0, 1) score by shrinkage: {dist:?}");
        assert!(dist.windows(2).all(|p| p[1] < p[0]), "{method:?}: {dist:?}");
        assert!(dist[4] < 1e-12, "{method:?}: {dist:?}");
    }
}

#[test]
fn oism_scores_are_finite_and_confining_at_large_x() {
    let data = gaussian_data(2_000, &[0.5], &[1.3], 7);
    for method in [HermiteMethod::Projection, HermiteMethod::Expansion] {
        for degree in [4, 12, MAX_HERMITE_DEGREE] {
            let est = HermiteScore::fit_config(&data, HermiteConfig { method, ..HermiteConfig::new(degree) }).unwrap();
            for (alpha, sigma) in [vp(0.01), vp(1.0), (1.0, 5.0)] {
                for x in [1e3, 1e6, 1e12, 1e100, 1e300] {
                    for sign in [-1.0, 1.0] {
                        let p = DVector::from_vec(vec![sign * x]);
                        let s = est.base_score(&p, alpha, sigma)[0];
                        assert!(s.is_finite(), "{method:?} K = {degree} x = {}: {s}", sign * x);
                        let ld = est.log_density(&p, alpha, sigma);
                        assert!(!ld.is_nan() && ld < f64::INFINITY, "{method:?} K = {degree}: log-density {ld}");
                        if x >= 1e12 {
                            assert!(s * sign < 0.0, "{method:?} K = {degree} x = {}: {s}", sign * x);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn oism_score_matches_finite_differences_of_the_log_density() {
    let data = gaussian_data(3_000, &[0.3, -0.4], &[0.9, 0.6], 8);
    for method in [HermiteMethod::Projection, HermiteMethod::Expansion] {
        let est = HermiteScore::fit_config(&data, HermiteConfig { method, ..HermiteConfig::new(5) }).unwrap();
        for (alpha, sigma) in [vp(0.2), vp(1.0), (1.0, 0.7)] {
            for p in [[0.0, 0.0], [1.2, -1.0], [-0.8, 0.5]] {
                let x = DVector::from_vec(p.to_vec());
                let s = est.base_score(&x, alpha, sigma);
                for j in 0..2 {
                    let h = 1e-5;
                    let (mut xp, mut xm) = (x.clone(), x.clone());
                    xp[j] += h;
                    xm[j] -= h;
                    let fd = (est.log_density(&xp, alpha, sigma) - est.log_density(&xm, alpha, sigma)) / (2.0 * h);
                    assert!(
                        (fd - s[j]).abs() < 1e-6 * (1.0 + s[j].abs()),
                        "{method:?} {p:?} j = {j}: {fd} vs {}",
                        s[j]
                    );
                }
            }
        }
    }
}

#[test]
fn oism_batched_matches_per_point_and_keeps_dtype() {
    let data = gaussian_data(1_000, &[0.3, -0.4, 0.1], &[0.9, 0.6, 1.0], 9);
    let est = HermiteScore::fit(&data, 6, Some(0.1)).unwrap();
    let x = gaussian_data(64, &[0.0; 3], &[1.5; 3], 10);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut al, mut si) = (Vec::new(), Vec::new());
    for i in 0..64 {
        let u: f64 = rand::Rng::random(&mut rng);
        // Half VP rows, half VE rows, and a repeated noise level.
        let (a, s) = if i % 4 == 3 {
            vp(0.5)
        } else if i % 2 == 0 {
            vp(0.01 + 2.0 * u)
        } else {
            (1.0, 0.1 + 5.0 * u)
        };
        al.push(a);
        si.push(s);
    }
    let s = est.base_score_t(&x, &Tensor::from_slice(&al), &Tensor::from_slice(&si));
    assert_eq!(s.size(), vec![64, 3]);
    for i in 0..64 {
        let xi = DVector::from_fn(3, |j, _| x.double_value(&[i as i64, j as i64]));
        let r = est.base_score(&xi, al[i], si[i]);
        for j in 0..3 {
            assert!((s.double_value(&[i as i64, j as i64]) - r[j]).abs() < 1e-12 * (1.0 + r[j].abs()));
        }
        // Tweedie: alpha E[x_0 | x] - x = sigma^2 s.
        let pm = est.posterior_mean(&xi, al[i], si[i]);
        assert!(((pm * al[i] - &xi) / (si[i] * si[i]) - &r).norm() < 1e-9 * (1.0 + r.norm()));
    }
    let xf = x.to_kind(Kind::Float);
    let sf = est.base_score_t(&xf, &Tensor::from_slice(&al).to_kind(Kind::Float), &Tensor::from_slice(&si));
    assert_eq!((sf.kind(), sf.device()), (Kind::Float, Device::Cpu));
    let via = est.score_at(&x, 0.6, 0.8).unwrap();
    let xi = DVector::from_fn(3, |j, _| x.double_value(&[5, j as i64]));
    assert!((via.double_value(&[5, 1]) - est.base_score(&xi, 0.6, 0.8)[1]).abs() < 1e-12);
}

#[test]
fn oism_fit_is_deterministic_and_validates() {
    let data = gaussian_data(3_000, &[0.3, -0.4], &[0.9, 0.6], 12);
    let (e1, e2) = (HermiteScore::fit(&data, 8, None).unwrap(), HermiteScore::fit(&data, 8, None).unwrap());
    assert_eq!(e1.moments(0), e2.moments(0));
    assert_eq!(e1.moments(1).len(), 15);
    assert_eq!(e1.n_data(), 3_000);
    let err = |r: Result<HermiteScore>| r.unwrap_err().to_string();
    assert!(err(HermiteScore::fit(&data, 0, None)).contains("`degree`"));
    assert!(err(HermiteScore::fit(&data, MAX_HERMITE_DEGREE + 1, None)).contains("`degree`"));
    assert!(err(HermiteScore::fit(&data, 4, Some(-0.1))).contains("`shrinkage`"));
    assert!(err(HermiteScore::fit(&data.view([-1]), 4, None)).contains("data"));
    let empty = Tensor::zeros([0, 2], (Kind::Double, Device::Cpu));
    assert!(matches!(HermiteScore::fit(&empty, 4, None), Err(ScoreError::EmptyData { .. })));
    let bad = data.copy();
    let _ = bad.get(7).get(1).fill_(f64::NAN);
    assert!(err(HermiteScore::fit(&bad, 4, None)).contains("row 7"));
    let x = Tensor::zeros([2, 2], (Kind::Double, Device::Cpu));
    assert!(e1.score_at(&x, 1.0, 0.0).unwrap_err().to_string().contains("`sigma`"));
    assert!(e1.score_at(&x.view([4]), 1.0, 0.5).unwrap_err().to_string().contains("x"));
    // alpha = 0: pure noise N(0, sigma^2), score -x / sigma^2 whatever the data.
    let s = e1.score_at(&Tensor::from_slice(&[1.0f64, -2.0]).view([1, 2]), 0.0, 2.0).unwrap();
    assert!((s.double_value(&[0, 0]) + 0.25).abs() < 1e-14 && (s.double_value(&[0, 1]) - 0.5).abs() < 1e-14);
}

#[test]
fn oism_expansion_converges_to_the_ou_smoother_in_1d() {
    use crate::smoother::{ou::OuSmoother, SmootherDensity};
    // A bimodal empirical law: the expansion is the spectral form of the OU kernel smoother (MATH.md 5),
    // whose score is exact for the smoothed empirical law; terms decay like a^k e^{(x_0^2 + z^2)/4}.
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let v: Vec<f64> = (0..300)
        .map(|i| {
            let e: f64 = StandardNormal.sample(&mut rng);
            (if i % 3 == 0 { -1.0 } else { 0.8 }) + 0.3 * e
        })
        .collect();
    let data = Tensor::from_slice(&v).view([300, 1]);
    let smoother = OuSmoother::new(&data).unwrap();
    let t = 0.5;
    let (alpha, sigma) = vp(t);
    let x = Tensor::linspace(-2.0, 2.0, 41, (Kind::Double, Device::Cpu)).view([41, 1]);
    let exact = smoother.score_at(&x, t).unwrap();
    let errs: Vec<f64> = [10, 20, 30]
        .iter()
        .map(|&k| {
            let config = HermiteConfig { method: HermiteMethod::Expansion, ..HermiteConfig::new(k) };
            let est = HermiteScore::fit_config(&data, config).unwrap();
            let s = est.score_at(&x, alpha, sigma).unwrap();
            (s - &exact).abs().max().double_value(&[])
        })
        .collect();
    eprintln!("expansion vs OU smoother at t = {t}, degrees 10, 20, 30: max error {errs:?}");
    assert!(errs[0] > errs[1] && errs[1] > errs[2] && errs[2] < 1e-5, "{errs:?}");
}

#[test]
fn oism_james_stein_shrinkage_is_large_without_signal_and_small_with_it() {
    // Data from the reference N(0, 1) itself: every true mean c_k (k >= 1) is 0.
    let null = HermiteScore::fit(&gaussian_data(200, &[0.0, 0.0], &[1.0, 1.0], 14), 4, None).unwrap();
    let w_null = null.james_stein_shrinkage();
    // Data far from the reference, many points: the means are large and precise.
    let far = HermiteScore::fit(&gaussian_data(10_000, &[1.5, -1.0], &[0.5, 0.5], 15), 4, None).unwrap();
    let w_far = far.james_stein_shrinkage();
    eprintln!("James-Stein weights: null {w_null:.3}, far {w_far:.2e}");
    assert!(w_null > 0.5 && w_far < 1e-2, "{w_null} {w_far}");
    // with_shrinkage equals fitting with that weight.
    let data = gaussian_data(500, &[0.5, 0.2], &[0.8, 0.9], 16);
    let direct = HermiteScore::fit(&data, 4, Some(0.3)).unwrap();
    let later = HermiteScore::fit(&data, 4, None).unwrap().with_shrinkage(Some(0.3)).unwrap();
    assert_eq!(direct.moments(1), later.moments(1));
    assert_eq!(direct.config(), later.config());
    assert!(later.with_shrinkage(Some(2.0)).unwrap_err().to_string().contains("`shrinkage`"));
}
