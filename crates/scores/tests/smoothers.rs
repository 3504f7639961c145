//! Tests of the diffusion kernel smoothers (MATH.md section 5): scores against finite differences of the
//! log-densities and against closed forms, normalisation, the large-t limits, the spectral form against the
//! direct form, the addition theorem, structural O(L^2) cost, validation errors, and bandwidth selection.
//!
//! Every test is seeded. Run with `--nocapture` to see the measured errors.

use geom::distributions::{ManifoldDistribution, VonMisesFisher};
use geom::so3::{expm, hat};
use geom::{So3, UniformSampler};
use nalgebra::{DVector, Matrix3, Vector3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use scores::smoother::bandwidth::{select_time, select_time_by_validation, test_nll};
use scores::smoother::harmonics::{index, legendre, SphericalHarmonics};
use scores::smoother::ou::OuSmoother;
use scores::smoother::so3::So3Smoother;
use scores::smoother::spectral::{degree_for_time, relative_truncation_bound, SpectralConfig, SphereSpectralSmoother};
use scores::smoother::sphere::SphereSmoother;
use scores::smoother::{DirectBackend, SmootherDensity};
use scores::{Score, ScoreError};
use std::f64::consts::PI;
use tch::{Device, Kind, Tensor};

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn gaussian_rows(rng: &mut ChaCha8Rng, n: usize, d: usize, scale: f64) -> Vec<f64> {
    (0..n * d)
        .map(|_| {
            let g: f64 = StandardNormal.sample(rng);
            scale * g
        })
        .collect()
}

fn tensor(rows: &[f64], d: i64) -> Tensor {
    Tensor::from_slice(rows).view([-1, d])
}

fn unit(v: [f64; 3]) -> [f64; 3] {
    let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    [v[0] / n, v[1] / n, v[2] / n]
}

fn sphere_points(rng: &mut ChaCha8Rng, n: usize) -> Vec<[f64; 3]> {
    (0..n).map(|_| unit([rng.sample(StandardNormal), rng.sample(StandardNormal), rng.sample(StandardNormal)])).collect()
}

/// Points clustered around a few centres (a multimodal law on S^2).
fn clustered_sphere_points(rng: &mut ChaCha8Rng, n: usize, spread: f64) -> Vec<[f64; 3]> {
    let centres = sphere_points(rng, 4);
    (0..n)
        .map(|i| {
            let c = centres[i % centres.len()];
            let g: [f64; 3] = [rng.sample(StandardNormal), rng.sample(StandardNormal), rng.sample(StandardNormal)];
            unit([c[0] + spread * g[0], c[1] + spread * g[1], c[2] + spread * g[2]])
        })
        .collect()
}

fn points_tensor(p: &[[f64; 3]]) -> Tensor {
    let flat: Vec<f64> = p.iter().flatten().copied().collect();
    tensor(&flat, 3)
}

fn values(x: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(x.to_kind(Kind::Double).contiguous().view([-1])).unwrap()
}

fn times(b: i64, t: f64) -> Tensor {
    Tensor::full([b], t, (Kind::Double, Device::Cpu))
}

/// A unit tangent vector at x on S^2 and the great circle through x along it.
fn tangent_at(x: [f64; 3], rng: &mut ChaCha8Rng) -> [f64; 3] {
    let g: [f64; 3] = [rng.sample(StandardNormal), rng.sample(StandardNormal), rng.sample(StandardNormal)];
    let d = g[0] * x[0] + g[1] * x[1] + g[2] * x[2];
    unit([g[0] - d * x[0], g[1] - d * x[1], g[2] - d * x[2]])
}

fn geodesic(x: [f64; 3], v: [f64; 3], s: f64) -> [f64; 3] {
    let (c, sn) = (s.cos(), s.sin());
    unit([c * x[0] + sn * v[0], c * x[1] + sn * v[1], c * x[2] + sn * v[2]])
}

// ---------------------------------------------------------------- OU

/// The mixture score, written out independently of the library.
fn mixture_score(data: &[DVector<f64>], x: &DVector<f64>, t: f64) -> DVector<f64> {
    let a = (-t).exp();
    let s2 = 1.0 - (-2.0 * t).exp();
    let logs: Vec<f64> = data.iter().map(|xi| -(x - xi * a).norm_squared() / (2.0 * s2)).collect();
    let m = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut num = DVector::zeros(x.len());
    let mut den = 0.0;
    for (xi, l) in data.iter().zip(&logs) {
        let w = (l - m).exp();
        num += (xi * a - x) / s2 * w;
        den += w;
    }
    num / den
}

#[test]
fn ou_score_matches_finite_differences_and_the_mixture_score() {
    let mut r = rng(1);
    let (n, d) = (40usize, 3usize);
    let data = gaussian_rows(&mut r, n, d, 1.5);
    let smoother = OuSmoother::new(&tensor(&data, d as i64)).unwrap();
    let rows: Vec<DVector<f64>> = data.chunks(d).map(DVector::from_column_slice).collect();
    let queries = gaussian_rows(&mut r, 16, d, 1.2);
    let qt = tensor(&queries, d as i64);
    let mut worst_fd: f64 = 0.0;
    let mut worst_cf: f64 = 0.0;
    for t in [0.01, 0.2, 1.0, 5.0] {
        let batched = smoother.score_at(&qt, t).unwrap();
        let logp = values(&smoother.log_density_t(&qt, t).unwrap());
        for (qi, q) in queries.chunks(d).enumerate() {
            let x = DVector::from_column_slice(q);
            let cf = mixture_score(&rows, &x, t);
            let s = smoother.score_point(&x, t).unwrap();
            let scale = cf.norm() + x.norm() / (1.0 - (-2.0 * t).exp());
            // Finite differences of the per-point log-density.
            let h = 1e-4 * (1.0 - (-2.0 * t).exp()).sqrt();
            for k in 0..d {
                let mut e = DVector::zeros(d);
                e[k] = h;
                let fd = (smoother.log_density_point(&(&x + &e), t).unwrap()
                    - smoother.log_density_point(&(&x - &e), t).unwrap())
                    / (2.0 * h);
                worst_fd = worst_fd.max((fd - s[k]).abs() / scale);
                worst_cf = worst_cf.max((batched.double_value(&[qi as i64, k as i64]) - cf[k]).abs() / scale);
                worst_cf = worst_cf.max((s[k] - cf[k]).abs() / scale);
            }
            let lp = smoother.log_density_point(&x, t).unwrap();
            assert!((lp - logp[qi]).abs() < 1e-9 * (1.0 + lp.abs()), "t={t}: batched {} vs per-point {lp}", logp[qi]);
        }
    }
    println!("OU: finite differences {worst_fd:.2e}, closed form {worst_cf:.2e} (relative to the term scale)");
    assert!(worst_fd < 1e-6, "finite differences: {worst_fd}");
    assert!(worst_cf < 1e-10, "closed form: {worst_cf}");
}

#[test]
fn ou_chunking_and_time_grouping_do_not_change_results() {
    let mut r = rng(2);
    let data = gaussian_rows(&mut r, 50, 2, 1.0);
    let full = OuSmoother::new(&tensor(&data, 2)).unwrap();
    let chunked = full.clone().with_max_pairs_per_chunk(7);
    let q = tensor(&gaussian_rows(&mut r, 9, 2, 1.0), 2);
    for t in [1e-3, 0.5] {
        let a = full.log_density_t(&q, t).unwrap();
        let b = chunked.log_density_t(&q, t).unwrap();
        assert!((a - b).abs().max().double_value(&[]) < 1e-10);
        let a = full.score_at(&q, t).unwrap();
        let b = chunked.score_at(&q, t).unwrap();
        assert!((&a - &b).abs().max().double_value(&[]) < 1e-8 * (1.0 + a.abs().max().double_value(&[])));
    }
    // Per-row times: each row equals the single-time evaluation.
    let tvals = [0.1, 0.3, 0.1, 2.0, 0.3, 0.1, 0.1, 2.0, 0.7];
    let s = full.score(&q, &Tensor::from_slice(&tvals));
    for (i, &ti) in tvals.iter().enumerate() {
        let one = full.score_at(&q.narrow(0, i as i64, 1), ti).unwrap();
        assert!((s.narrow(0, i as i64, 1) - one).abs().max().double_value(&[]) < 1e-12, "row {i}");
    }
    // Float queries give Float scores.
    let sf = full.score(&q.to_kind(Kind::Float), &Tensor::from_slice(&tvals).to_kind(Kind::Float));
    assert_eq!(sf.kind(), Kind::Float);
    assert_eq!(sf.size(), vec![9, 2]);
}

#[test]
fn ou_validation_errors_name_the_problem() {
    let empty = Tensor::zeros([0, 3], (Kind::Double, Device::Cpu));
    assert!(matches!(OuSmoother::new(&empty), Err(ScoreError::EmptyData { .. })));
    let bad = Tensor::from_slice(&[0.0f64, 1.0, 2.0, f64::NAN, 4.0, 5.0]).view([3, 2]);
    let msg = OuSmoother::new(&bad).unwrap_err().to_string();
    assert!(msg.contains("row 1") && msg.contains("data"), "{msg}");
    let ok = OuSmoother::new(&tensor(&[0.0, 1.0, 2.0, 3.0], 2)).unwrap();
    let q = tensor(&[0.0, 0.0], 2);
    for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let msg = ok.log_density_t(&q, t).unwrap_err().to_string();
        assert!(msg.contains("`t`"), "{msg}");
        assert!(ok.score_at(&q, t).is_err());
    }
    let q_bad = Tensor::from_slice(&[0.0f64, 0.0, f64::INFINITY, 0.0]).view([2, 2]);
    let msg = ok.log_density_t(&q_bad, 1.0).unwrap_err().to_string();
    assert!(msg.contains("row 1") && msg.contains("`x`"), "{msg}");
}

// ---------------------------------------------------------------- spherical harmonics

#[test]
fn harmonics_satisfy_the_addition_theorem() {
    let degree = 60;
    let sh = SphericalHarmonics::new(degree).unwrap();
    let mut r = rng(3);
    let pts = sphere_points(&mut r, 20);
    let (mut yx, mut yy) = (vec![0.0; sh.len()], vec![0.0; sh.len()]);
    let mut worst: f64 = 0.0;
    for pair in pts.chunks(2) {
        let (x, y) = (pair[0], pair[1]);
        sh.eval(&x, &mut yx);
        sh.eval(&y, &mut yy);
        let c = x[0] * y[0] + x[1] * y[1] + x[2] * y[2];
        for l in 0..=degree {
            let sum: f64 = (-(l as i64)..=l as i64).map(|m| yx[index(l, m)] * yy[index(l, m)]).sum();
            let expect = (2 * l + 1) as f64 / (4.0 * PI) * legendre(l, c);
            worst = worst.max((sum - expect).abs() / ((2 * l + 1) as f64 / (4.0 * PI)));
        }
    }
    // Also at the poles (where sin theta = 0) and x = y: sum_m Y_lm(x)^2 = (2l+1)/(4 pi).
    for x in [[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], pts[0]] {
        sh.eval(&x, &mut yx);
        for l in 0..=degree {
            let sum: f64 = (-(l as i64)..=l as i64).map(|m| yx[index(l, m)].powi(2)).sum();
            worst = worst.max((sum * 4.0 * PI / (2 * l + 1) as f64 - 1.0).abs());
        }
    }
    // The batched face equals the per-point one.
    let batched = sh.eval_t(&points_tensor(&pts));
    for (i, p) in pts.iter().enumerate() {
        sh.eval(p, &mut yx);
        for (k, v) in yx.iter().enumerate() {
            assert_eq!(batched.double_value(&[i as i64, k as i64]), *v);
        }
    }
    println!("addition theorem up to degree {degree}: worst relative error {worst:.2e}");
    assert!(worst < 1e-12, "{worst}");
}

#[test]
fn harmonics_are_orthonormal_and_their_gradients_match_finite_differences() {
    // Orthonormality by a product rule exact for polynomials of degree <= 2 * 6 on S^2:
    // Gauss-Legendre in z (8 nodes) times the trapezoidal rule in phi (16 nodes).
    let degree = 6;
    let sh = SphericalHarmonics::new(degree).unwrap();
    let k = sh.len();
    let gl = scores::quadrature::GaussLegendre::new(8);
    let mut gram = vec![0.0; k * k];
    let mut y = vec![0.0; k];
    for (z, wz) in gl.nodes().iter().zip(gl.weights()) {
        for j in 0..16 {
            let ph = 2.0 * PI * j as f64 / 16.0;
            let s = (1.0 - z * z).sqrt();
            sh.eval(&[s * ph.cos(), s * ph.sin(), *z], &mut y);
            let w = wz * 2.0 * PI / 16.0;
            for a in 0..k {
                for b in 0..k {
                    gram[a * k + b] += w * y[a] * y[b];
                }
            }
        }
    }
    for a in 0..k {
        for b in 0..k {
            let expect = if a == b { 1.0 } else { 0.0 };
            assert!((gram[a * k + b] - expect).abs() < 1e-13, "({a}, {b}): {}", gram[a * k + b]);
        }
    }
    // Tangential gradients against central differences along great circles.
    let sh = SphericalHarmonics::new(25).unwrap();
    let k = sh.len();
    let mut r = rng(4);
    let (mut g, mut y, mut yp, mut ym) = (vec![0.0; 3 * k], vec![0.0; k], vec![0.0; k], vec![0.0; k]);
    let mut worst: f64 = 0.0;
    for x in sphere_points(&mut r, 10).into_iter().chain([[0.0, 0.0, 1.0], [0.6, 0.0, -0.8]]) {
        let v = tangent_at(x, &mut r);
        sh.eval_with_grad(&x, &mut y, &mut g);
        let h = 1e-5;
        sh.eval(&geodesic(x, v, h), &mut yp);
        sh.eval(&geodesic(x, v, -h), &mut ym);
        for i in 0..k {
            let fd = (yp[i] - ym[i]) / (2.0 * h);
            let an = g[3 * i] * v[0] + g[3 * i + 1] * v[1] + g[3 * i + 2] * v[2];
            worst = worst.max((fd - an).abs() / (1.0 + an.abs()));
        }
    }
    println!("harmonic gradients vs finite differences: {worst:.2e}");
    assert!(worst < 1e-6, "{worst}");
}

// ---------------------------------------------------------------- spectral smoother

/// The direct heat-kernel mixture by the Legendre series (an independent reference for the spectral form):
/// rho_t(x) = (1/(4 pi)) (1/N) sum_i sum_l (2l+1) e^{-l(l+1)t} P_l(<x, x_i>).
fn series_density(data: &[[f64; 3]], x: [f64; 3], t: f64, lmax: usize) -> f64 {
    let mut sum = 0.0;
    for p in data {
        let c = p[0] * x[0] + p[1] * x[1] + p[2] * x[2];
        let (mut p0, mut p1) = (1.0, c);
        let mut k = 1.0 + 3.0 * (-2.0 * t).exp() * c;
        for l in 2..=lmax {
            let lf = l as f64;
            let p2 = ((2.0 * lf - 1.0) * c * p1 - (lf - 1.0) * p0) / lf;
            p0 = p1;
            p1 = p2;
            k += (2.0 * lf + 1.0) * (-lf * (lf + 1.0) * t).exp() * p2;
        }
        sum += k;
    }
    sum / (4.0 * PI * data.len() as f64)
}

#[test]
fn spectral_density_matches_the_legendre_series_and_is_normalised() {
    let mut r = rng(5);
    let data = clustered_sphere_points(&mut r, 300, 0.2);
    let t = 0.02;
    let degree = degree_for_time(t, 1e-12).unwrap();
    let smoother =
        SphereSpectralSmoother::new(&points_tensor(&data), SpectralConfig { degree, truncation_tol: 1e-12 }).unwrap();
    assert_eq!(smoother.coefficients().len(), (degree + 1) * (degree + 1));
    let queries = sphere_points(&mut r, 30);
    let logp = values(&smoother.log_density_t(&points_tensor(&queries), t).unwrap());
    // Both sums cancel where the density is far below the uniform one (rounding ~ 1e-16 times the sum of
    // |terms|, about 1/t times the uniform density): measure relative to max(rho, uniform density).
    let mut worst: f64 = 0.0;
    let mut worst_rel: f64 = 0.0;
    for (q, lp) in queries.iter().zip(&logp) {
        let reference = series_density(&data, *q, t, 200);
        worst = worst.max((lp.exp() - reference).abs() / reference.max(1.0 / (4.0 * PI)));
        worst_rel = worst_rel.max((lp.exp() / reference - 1.0).abs());
    }
    println!("spectral (L = {degree}) vs Legendre series at t = {t}: {worst:.2e} (plain relative {worst_rel:.2e})");
    assert!(worst < 1e-12, "{worst}");
    assert!(worst_rel < 1e-7, "{worst_rel}");
    // Normalisation: a product rule exact for polynomials of degree > L integrates the truncated density
    // (a polynomial of degree L in (x, y, z)) exactly.
    let gl = scores::quadrature::GaussLegendre::new(degree / 2 + 2);
    let n_phi = 2 * degree + 2;
    let mut pts = Vec::new();
    let mut weights = Vec::new();
    for (z, wz) in gl.nodes().iter().zip(gl.weights()) {
        for j in 0..n_phi {
            let ph = 2.0 * PI * j as f64 / n_phi as f64;
            let s = (1.0 - z * z).sqrt();
            pts.push([s * ph.cos(), s * ph.sin(), *z]);
            weights.push(wz * 2.0 * PI / n_phi as f64);
        }
    }
    let logp = values(&smoother.log_density_t(&points_tensor(&pts), t).unwrap());
    let total: f64 = logp.iter().zip(&weights).map(|(l, w)| w * l.exp()).sum();
    println!("spectral total mass {total:.15}");
    assert!((total - 1.0).abs() < 1e-12, "{total}");
}

#[test]
fn spectral_score_matches_finite_differences_and_tends_to_uniform() {
    let mut r = rng(6);
    let data = clustered_sphere_points(&mut r, 200, 0.3);
    let smoother = SphereSpectralSmoother::new(&points_tensor(&data), SpectralConfig::new(60)).unwrap();
    let queries = sphere_points(&mut r, 12);
    let qt = points_tensor(&queries);
    let mut worst: f64 = 0.0;
    for t in [0.02, 0.1, 1.0] {
        let s = smoother.score_at(&qt, t).unwrap();
        for (i, &x) in queries.iter().enumerate() {
            let sv = [s.double_value(&[i as i64, 0]), s.double_value(&[i as i64, 1]), s.double_value(&[i as i64, 2])];
            // Tangent.
            assert!((sv[0] * x[0] + sv[1] * x[1] + sv[2] * x[2]).abs() < 1e-10);
            let v = tangent_at(x, &mut r);
            let h = 1e-5;
            let lp = |p: [f64; 3]| smoother.log_density_t(&points_tensor(&[p]), t).unwrap().double_value(&[0]);
            let fd = (lp(geodesic(x, v, h)) - lp(geodesic(x, v, -h))) / (2.0 * h);
            let an = sv[0] * v[0] + sv[1] * v[1] + sv[2] * v[2];
            let norm = (sv[0] * sv[0] + sv[1] * sv[1] + sv[2] * sv[2]).sqrt();
            worst = worst.max((fd - an).abs() / (1.0 + norm));
        }
    }
    println!("spectral score vs finite differences: {worst:.2e}");
    assert!(worst < 1e-6, "{worst}");
    // t -> infinity: the uniform density 1/(4 pi) and a vanishing score.
    let lp = values(&smoother.log_density_t(&qt, 30.0).unwrap());
    assert!(lp.iter().all(|l| (l + (4.0 * PI).ln()).abs() < 1e-12));
    let s = smoother.score(&qt, &times(qt.size()[0], 30.0));
    assert!(s.abs().max().double_value(&[]) < 1e-20);
}

#[test]
fn spectral_truncation_is_checked_and_cost_does_not_depend_on_n() {
    let mut r = rng(7);
    // Structure: the fitted object keeps (L+1)^2 numbers whatever N is.
    for n in [1usize, 10, 1000] {
        let s =
            SphereSpectralSmoother::new(&points_tensor(&sphere_points(&mut r, n)), SpectralConfig::new(12)).unwrap();
        assert_eq!(s.coefficients().len(), 169);
        assert_eq!(s.n_data(), n as i64);
    }
    let s = SphereSpectralSmoother::new(&points_tensor(&sphere_points(&mut r, 50)), SpectralConfig::new(20)).unwrap();
    let x = points_tensor(&sphere_points(&mut r, 3));
    let msg = s.log_density_t(&x, 1e-3).unwrap_err().to_string();
    assert!(msg.contains("`L` = 20") && msg.contains("`t`"), "{msg}");
    assert!(s.check_truncation(s.min_time() * 1.01).is_ok());
    assert!(s.check_truncation(s.min_time() * 0.9).is_err());
    // The bound: e^{-L(L+1)t} (2L+1)-like, decreasing in t and in L.
    assert!(relative_truncation_bound(20, 0.1) < relative_truncation_bound(20, 0.05));
    assert!(relative_truncation_bound(30, 0.05) < relative_truncation_bound(20, 0.05));
    let t = 0.05;
    let l = degree_for_time(t, 1e-10).unwrap();
    assert!(relative_truncation_bound(l, t) <= 1e-10 && relative_truncation_bound(l - 1, t) > 1e-10);
    assert!((s.truncation_error_bound(0.3) - relative_truncation_bound(20, 0.3) / (4.0 * PI)).abs() < 1e-300);
    // Validation.
    let empty = Tensor::zeros([0, 3], (Kind::Double, Device::Cpu));
    assert!(matches!(SphereSpectralSmoother::new(&empty, SpectralConfig::new(4)), Err(ScoreError::EmptyData { .. })));
    let off = tensor(&[0.0, 0.0, 1.0, 0.0, 1.1, 0.0], 3);
    let msg = SphereSpectralSmoother::new(&off, SpectralConfig::new(4)).unwrap_err().to_string();
    assert!(msg.contains("row 1") && msg.contains("data"), "{msg}");
    let nan = tensor(&[0.0, 0.0, 1.0, 0.0, 1.0, 0.0, f64::NAN, 0.0, 1.0], 3);
    let msg = SphereSpectralSmoother::new(&nan, SpectralConfig::new(4)).unwrap_err().to_string();
    assert!(msg.contains("row 2") && msg.contains("data"), "{msg}");
}

// ---------------------------------------------------------------- S^2, direct form

/// A product rule on S^2 (Gauss-Legendre in z, trapezoidal in phi): points and area weights.
fn sphere_rule(n_z: usize, n_phi: usize) -> (Vec<[f64; 3]>, Vec<f64>) {
    let gl = scores::quadrature::GaussLegendre::new(n_z);
    let mut pts = Vec::new();
    let mut weights = Vec::new();
    for (z, wz) in gl.nodes().iter().zip(gl.weights()) {
        for j in 0..n_phi {
            let ph = 2.0 * PI * (j as f64 + 0.5) / n_phi as f64;
            let s = (1.0 - z * z).sqrt();
            pts.push([s * ph.cos(), s * ph.sin(), *z]);
            weights.push(wz * 2.0 * PI / n_phi as f64);
        }
    }
    (pts, weights)
}

#[test]
fn sphere_direct_density_is_normalised_and_tends_to_uniform() {
    let mut r = rng(10);
    let data = clustered_sphere_points(&mut r, 60, 0.3);
    let smoother = SphereSmoother::new(&points_tensor(&data)).unwrap();
    // The kernel's width is sqrt(2t): 400 x 800 nodes resolve t >= 0.005 to far below 1e-10.
    let (pts, weights) = sphere_rule(400, 800);
    let pts_t = points_tensor(&pts);
    for t in [0.005, 0.05, 0.5, 5.0] {
        let logp = values(&smoother.log_density_t(&pts_t, t).unwrap());
        let total: f64 = logp.iter().zip(&weights).map(|(l, w)| w * l.exp()).sum();
        println!("S^2 direct, t = {t}: total mass {total:.14}");
        assert!((total - 1.0).abs() < 1e-9, "t = {t}: {total}");
    }
    // t -> infinity: 1/(4 pi) and a vanishing score.
    let q = points_tensor(&sphere_points(&mut r, 20));
    for (t, tol) in [(10.0, 1e-8), (30.0, 1e-12)] {
        let lp = values(&smoother.log_density_t(&q, t).unwrap());
        assert!(lp.iter().all(|l| (l + (4.0 * PI).ln()).abs() < tol), "t = {t}: {lp:?}");
        let s = smoother.score(&q, &times(20, t));
        assert!(s.abs().max().double_value(&[]) < tol, "t = {t}");
    }
}

#[test]
fn sphere_direct_matches_the_exact_kernel_and_finite_differences() {
    let mut r = rng(11);
    let data = clustered_sphere_points(&mut r, 40, 0.25);
    let host = SphereSmoother::new(&points_tensor(&data)).unwrap().with_backend(DirectBackend::Host);
    let tensor_path = host.clone().with_backend(DirectBackend::Tensor).with_max_pairs_per_chunk(97);
    let queries: Vec<[f64; 3]> = sphere_points(&mut r, 25)
        .into_iter()
        .chain([data[0], data[1], [-data[2][0], -data[2][1], -data[2][2]]])
        .collect();
    let qt = points_tensor(&queries);
    let (mut worst_table, mut worst_backend, mut worst_fd, mut worst_table_score): (f64, f64, f64, f64) =
        (0.0, 0.0, 0.0, 0.0);
    for t in [1e-3, 0.01, 0.1, 1.0, 3.0] {
        let err = host.interpolation_error(t).unwrap();
        println!("S^2 table at t = {t}: {} cells, largest error on log k {err:.2e}", host.table(t).unwrap().n_cells());
        assert!(err < 1e-9, "t = {t}: {err}");
        let lp = host.log_density_t(&qt, t).unwrap();
        let sc = host.score_at(&qt, t).unwrap();
        worst_backend =
            worst_backend.max((&lp - tensor_path.log_density_t(&qt, t).unwrap()).abs().max().double_value(&[]));
        let sc_tensor = tensor_path.score_at(&qt, t).unwrap();
        let scale = 1.0 + sc.abs().max().double_value(&[]);
        worst_backend = worst_backend.max((&sc - sc_tensor).abs().max().double_value(&[]) / scale);
        for (i, &x) in queries.iter().enumerate() {
            let xv = DVector::from_column_slice(&x);
            // Table against the exact kernel (per-point reference).
            let exact = host.log_density_point(&xv, t).unwrap();
            worst_table = worst_table.max((lp.double_value(&[i as i64]) - exact).abs());
            let sv: Vec<f64> = (0..3).map(|k| sc.double_value(&[i as i64, k])).collect();
            let exact_score = host.score_point(&xv, t).unwrap();
            let norm = exact_score.norm();
            let diff = (0..3).map(|k| (sv[k] - exact_score[k]).powi(2)).sum::<f64>().sqrt();
            worst_table_score = worst_table_score.max(diff / (1.0 + norm));
            // Tangent.
            assert!((sv[0] * x[0] + sv[1] * x[1] + sv[2] * x[2]).abs() < 1e-9 * (1.0 + norm));
            // Finite differences along a great circle.
            let v = tangent_at(x, &mut r);
            let h = 1e-4 * t.sqrt().min(1.0);
            let lp_at = |p: [f64; 3]| host.log_density_t(&points_tensor(&[p]), t).unwrap().double_value(&[0]);
            let fd = (lp_at(geodesic(x, v, h)) - lp_at(geodesic(x, v, -h))) / (2.0 * h);
            let an = sv[0] * v[0] + sv[1] * v[1] + sv[2] * v[2];
            worst_fd = worst_fd.max((fd - an).abs() / (1.0 + norm));
        }
    }
    println!(
        "S^2 direct: table vs exact kernel {worst_table:.2e} (log density), {worst_table_score:.2e} (score); \
         host vs tensor {worst_backend:.2e}; score vs finite differences {worst_fd:.2e}"
    );
    assert!(worst_table < 1e-9, "{worst_table}");
    assert!(worst_table_score < 1e-6, "{worst_table_score}");
    assert!(worst_backend < 1e-10, "{worst_backend}");
    assert!(worst_fd < 1e-5, "{worst_fd}");
}

#[test]
fn sphere_direct_with_one_point_is_the_heat_kernel() {
    let kernel = scores::heat::sphere::SphereHeatKernel::new(2).unwrap();
    let mut r = rng(12);
    let y = sphere_points(&mut r, 1)[0];
    let smoother = SphereSmoother::new(&points_tensor(&[y])).unwrap();
    let queries = sphere_points(&mut r, 10);
    let yv = DVector::from_column_slice(&y);
    for t in [0.02, 0.7] {
        let lp = values(&smoother.log_density_t(&points_tensor(&queries), t).unwrap());
        let sc = smoother.score(&points_tensor(&queries), &times(10, t));
        for (i, x) in queries.iter().enumerate() {
            let xv = DVector::from_column_slice(x);
            assert!((lp[i] - (kernel.log_density(&xv, &yv, t) - (4.0 * PI).ln())).abs() < 1e-9);
            let ks = kernel.score(&xv, &yv, t);
            for k in 0..3 {
                assert!((sc.double_value(&[i as i64, k as i64]) - ks[k]).abs() < 1e-6 * (1.0 + ks.norm()));
            }
        }
    }
}

#[test]
fn spectral_and_direct_forms_agree() {
    let mut r = rng(13);
    let data = clustered_sphere_points(&mut r, 500, 0.3);
    let direct = SphereSmoother::new(&points_tensor(&data)).unwrap();
    let queries: Vec<[f64; 3]> = sphere_points(&mut r, 40).into_iter().chain(data[..5].iter().copied()).collect();
    let qt = points_tensor(&queries);
    for t in [0.01, 0.1, 1.0] {
        let degree = degree_for_time(t, 1e-13).unwrap();
        let spectral =
            SphereSpectralSmoother::new(&points_tensor(&data), SpectralConfig { degree, truncation_tol: 1e-13 })
                .unwrap();
        let a = values(&direct.log_density_t(&qt, t).unwrap());
        let b = values(&spectral.log_density_t(&qt, t).unwrap());
        let sa = direct.score_at(&qt, t).unwrap();
        let sb = spectral.score_at(&qt, t).unwrap();
        // The spectral sum cancels where rho_t is far below the uniform density (rounding ~ 1e-16 (1/t)
        // times the uniform density): relative agreement where rho_t >= 1e-3 / (4 pi), absolute (in units
        // of the uniform density) everywhere.
        let uniform = 1.0 / (4.0 * PI);
        let (mut worst, mut worst_abs, mut worst_score, mut n_dense) = (0.0f64, 0.0f64, 0.0f64, 0);
        for i in 0..queries.len() {
            let (pa, pb) = (a[i].exp(), b[i].exp());
            worst_abs = worst_abs.max((pa - pb).abs() / uniform);
            if pa >= 1e-3 * uniform {
                n_dense += 1;
                worst = worst.max((pb / pa - 1.0).abs());
                let ds: f64 =
                    (0..3).map(|k| (sa.double_value(&[i as i64, k]) - sb.double_value(&[i as i64, k])).powi(2)).sum();
                let ns: f64 = (0..3).map(|k| sa.double_value(&[i as i64, k]).powi(2)).sum();
                worst_score = worst_score.max(ds.sqrt() / (1.0 + ns.sqrt()));
            }
        }
        println!(
            "spectral (L = {degree}) vs direct at t = {t}: density {worst:.2e} relative ({n_dense} of {} queries with \
             rho >= 1e-3/(4 pi)), {worst_abs:.2e} absolute / uniform; score {worst_score:.2e}",
            queries.len()
        );
        assert!(n_dense >= 10);
        assert!(worst < 1e-8, "t = {t}: {worst}");
        assert!(worst_abs < 1e-12, "t = {t}: {worst_abs}");
        assert!(worst_score < 1e-8, "t = {t}: {worst_score}");
    }
}

#[test]
fn sphere_validation_errors_name_the_problem() {
    let empty = Tensor::zeros([0, 3], (Kind::Double, Device::Cpu));
    assert!(matches!(SphereSmoother::new(&empty), Err(ScoreError::EmptyData { .. })));
    let nan = tensor(&[0.0, 0.0, 1.0, f64::NAN, 0.0, 1.0], 3);
    let msg = SphereSmoother::new(&nan).unwrap_err().to_string();
    assert!(msg.contains("row 1") && msg.contains("`data`"), "{msg}");
    let off = tensor(&[0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.01], 3);
    let msg = SphereSmoother::new(&off).unwrap_err().to_string();
    assert!(msg.contains("row 2") && msg.contains("`data`") && msg.contains("off the manifold"), "{msg}");
    let shape = tensor(&[0.0, 1.0, 0.0, 1.0], 2);
    assert!(SphereSmoother::new(&shape).unwrap_err().to_string().contains("`data`"));
    let ok = SphereSmoother::new(&tensor(&[0.0, 0.0, 1.0], 3)).unwrap();
    let q = tensor(&[1.0, 0.0, 0.0], 3);
    for t in [0.0, -0.5, f64::NAN, f64::NEG_INFINITY] {
        assert!(ok.log_density_t(&q, t).unwrap_err().to_string().contains("`t`"));
        assert!(ok.score_at(&q, t).unwrap_err().to_string().contains("`t`"));
    }
    let q_bad = tensor(&[1.0, 0.0, 0.0, 0.0, 2.0, 0.0], 3);
    let msg = ok.log_density_t(&q_bad, 0.1).unwrap_err().to_string();
    assert!(msg.contains("row 1") && msg.contains("`x`"), "{msg}");
    let panic = std::panic::catch_unwind(|| ok.score(&q, &Tensor::from_slice(&[-1.0f64])));
    let msg = panic.unwrap_err().downcast::<String>().map(|s| *s).unwrap_or_default();
    assert!(msg.contains("`t`"), "{msg}");
}

// ---------------------------------------------------------------- SO(3)

fn random_rotation(rng: &mut ChaCha8Rng) -> Matrix3<f64> {
    So3::new().sample_uniform(rng)
}

fn rotations_tensor(r: &[Matrix3<f64>]) -> Tensor {
    let flat: Vec<f64> = r.iter().flat_map(|m| (0..3).flat_map(move |i| (0..3).map(move |j| m[(i, j)]))).collect();
    Tensor::from_slice(&flat).view([-1, 3, 3])
}

fn matrix_at(x: &Tensor, i: i64) -> Matrix3<f64> {
    Matrix3::from_fn(|a, b| x.double_value(&[i, a as i64, b as i64]))
}

/// Rotations concentrated around a few centres.
fn clustered_rotations(rng: &mut ChaCha8Rng, n: usize, spread: f64) -> Vec<Matrix3<f64>> {
    let centres: Vec<Matrix3<f64>> = (0..3).map(|_| random_rotation(rng)).collect();
    (0..n)
        .map(|i| {
            let w = Vector3::from_fn(|_, _| spread * rng.sample::<f64, _>(StandardNormal));
            centres[i % 3] * expm(&w)
        })
        .collect()
}

#[test]
fn so3_density_is_normalised_under_haar() {
    let mut r = rng(20);
    let data = clustered_rotations(&mut r, 30, 0.3);
    let smoother = So3Smoother::new(&rotations_tensor(&data)).unwrap();
    let m = 40_000;
    let uniform: Vec<Matrix3<f64>> = (0..m).map(|_| random_rotation(&mut r)).collect();
    let ut = rotations_tensor(&uniform);
    for t in [0.05, 0.3, 2.0] {
        let p: Vec<f64> = values(&smoother.log_density_t(&ut, t).unwrap()).iter().map(|l| l.exp()).collect();
        let mean = p.iter().sum::<f64>() / m as f64;
        let var = p.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (m as f64 - 1.0);
        let err = (var / m as f64).sqrt();
        println!("SO(3): E_Haar[rho_t] at t = {t}: {mean:.5} +- {err:.5}");
        assert!((mean - 1.0).abs() < 4.0 * err + 1e-12, "t = {t}: {mean} +- {err}");
    }
    // The same through the table path to quadrature accuracy: with one data point at I the density is
    // k_t(omega) and the angle of a Haar rotation has density (1 - cos omega)/pi.
    let single = So3Smoother::new(&rotations_tensor(&[Matrix3::identity()])).unwrap();
    let gl = scores::quadrature::GaussLegendre::new(200);
    for t in [0.01, 0.1, 1.0] {
        let (mut total, mut pts, mut weights) = (0.0, Vec::new(), Vec::new());
        for (a, b) in [(0.0, 0.5), (0.5, PI)] {
            for (x, w) in gl.nodes().iter().zip(gl.weights()) {
                let omega = 0.5 * (a + b) + 0.5 * (b - a) * x;
                pts.push(expm(&Vector3::new(0.3, -0.4, 0.866_025_403_784_438_6).normalize().scale(omega)));
                weights.push(0.5 * (b - a) * w * (1.0 - omega.cos()) / PI);
            }
        }
        let lp = values(&single.log_density_t(&rotations_tensor(&pts), t).unwrap());
        for (l, w) in lp.iter().zip(&weights) {
            total += w * l.exp();
        }
        println!("SO(3): quadrature of the one-point smoother at t = {t}: {total:.14}");
        assert!((total - 1.0).abs() < 1e-9, "t = {t}: {total}");
    }
    // t -> infinity: Haar (log-density 0, volume convention -ln(8 pi^2)) and a vanishing score.
    let q = rotations_tensor(&uniform[..10]);
    let lp = values(&smoother.log_density_t(&q, 30.0).unwrap());
    assert!(lp.iter().all(|l| l.abs() < 1e-12), "{lp:?}");
    let lv = values(&smoother.log_density_volume_t(&q, 30.0).unwrap());
    assert!(lv.iter().all(|l| (l + (8.0 * PI * PI).ln()).abs() < 1e-12));
    assert!(smoother.score(&q, &times(10, 30.0)).abs().max().double_value(&[]) < 1e-12);
}

#[test]
fn so3_score_matches_finite_differences_and_the_exact_kernel() {
    let mut r = rng(21);
    let data = clustered_rotations(&mut r, 25, 0.4);
    let host = So3Smoother::new(&rotations_tensor(&data)).unwrap().with_backend(DirectBackend::Host);
    let tensor_path = host.clone().with_backend(DirectBackend::Tensor).with_max_pairs_per_chunk(50);
    let queries: Vec<Matrix3<f64>> = (0..15).map(|_| random_rotation(&mut r)).chain([data[0], data[3]]).collect();
    let qt = rotations_tensor(&queries);
    let (mut worst_fd, mut worst_exact, mut worst_backend): (f64, f64, f64) = (0.0, 0.0, 0.0);
    for t in [0.01, 0.1, 1.0] {
        let err = host.interpolation_error(t).unwrap();
        println!(
            "SO(3) table at t = {t}: {} cells, largest error on log k {err:.2e}",
            host.table(t).unwrap().n_cells()
        );
        assert!(err < 1e-9, "t = {t}: {err}");
        let lp = host.log_density_t(&qt, t).unwrap();
        let sc = host.score_at(&qt, t).unwrap();
        worst_backend =
            worst_backend.max((&lp - tensor_path.log_density_t(&qt, t).unwrap()).abs().max().double_value(&[]));
        let scale = 1.0 + sc.abs().max().double_value(&[]);
        worst_backend =
            worst_backend.max((&sc - tensor_path.score_at(&qt, t).unwrap()).abs().max().double_value(&[]) / scale);
        for (i, x) in queries.iter().enumerate() {
            let s = matrix_at(&sc, i as i64);
            let exact = host.score_point(x, t).unwrap();
            worst_exact = worst_exact.max((s - exact).norm() / (1.0 + exact.norm()));
            worst_exact = worst_exact.max((lp.double_value(&[i as i64]) - host.log_density_point(x, t).unwrap()).abs());
            // Tangent: x^T s is skew.
            let m = x.transpose() * s;
            assert!((m + m.transpose()).norm() < 1e-9 * (1.0 + s.norm()));
            // d/ds log rho(x expm(s w)) = <score, x hat(w)> in the angle metric = tr(score^T x hat(w)) / 2.
            let w = Vector3::from_fn(|_, _| r.sample::<f64, _>(StandardNormal)).normalize();
            let h = 1e-4 * t.sqrt().min(1.0);
            let lp_at = |m: Matrix3<f64>| host.log_density_t(&rotations_tensor(&[m]), t).unwrap().double_value(&[0]);
            let fd = (lp_at(x * expm(&(w * h))) - lp_at(x * expm(&(w * -h)))) / (2.0 * h);
            let an = 0.5 * (s.transpose() * x * hat(&w)).trace();
            worst_fd = worst_fd.max((fd - an).abs() / (1.0 + s.norm()));
        }
    }
    println!("SO(3): score vs finite differences {worst_fd:.2e}, vs exact kernel {worst_exact:.2e}, host vs tensor {worst_backend:.2e}");
    assert!(worst_fd < 1e-5, "{worst_fd}");
    assert!(worst_exact < 1e-6, "{worst_exact}");
    assert!(worst_backend < 1e-10, "{worst_backend}");
}

#[test]
fn so3_validation_errors_name_the_problem() {
    let empty = Tensor::zeros([0, 3, 3], (Kind::Double, Device::Cpu));
    assert!(matches!(So3Smoother::new(&empty), Err(ScoreError::EmptyData { .. })));
    let mut r = rng(22);
    let mut rows: Vec<Matrix3<f64>> = (0..3).map(|_| random_rotation(&mut r)).collect();
    rows[2][(1, 1)] = f64::NAN;
    let msg = So3Smoother::new(&rotations_tensor(&rows)).unwrap_err().to_string();
    assert!(msg.contains("row 2") && msg.contains("`data`"), "{msg}");
    rows[2] = random_rotation(&mut r);
    rows[1] *= 1.01;
    let msg = So3Smoother::new(&rotations_tensor(&rows)).unwrap_err().to_string();
    assert!(msg.contains("row 1") && msg.contains("`data`") && msg.contains("off the manifold"), "{msg}");
    let ok = So3Smoother::new(&rotations_tensor(&rows[..1])).unwrap();
    for t in [0.0, f64::NAN, -2.0] {
        assert!(ok.log_density_t(&rotations_tensor(&rows[..1]), t).unwrap_err().to_string().contains("`t`"));
    }
}

// ---------------------------------------------------------------- bandwidth

#[test]
fn select_time_finds_the_maximum_and_validates_the_grid() {
    let f = |t: f64| -(t.ln() - 0.3f64.ln()).powi(2);
    let (t, table) = select_time(f, &[0.01, 0.1, 1.0, 10.0]).unwrap();
    assert!((t / 0.3 - 1.0).abs() < 1e-3, "{t}");
    assert!(table.windows(2).all(|w| w[0].0 <= w[1].0));
    // Maximum beyond the grid: the best end, refined towards it.
    let (t, _) = select_time(f, &[0.001, 0.01]).unwrap();
    assert!((t / 0.01 - 1.0).abs() < 1e-3, "{t}");
    // -inf and NaN count as the worst value: the refinement walks up to the edge of the valid range.
    let g = |t: f64| if t < 0.05 { f64::NAN } else { -t };
    let (t, _) = select_time(g, &[0.01, 0.1, 1.0]).unwrap();
    assert!((0.05..0.0501).contains(&t), "{t}");
    assert!(select_time(f, &[]).unwrap_err().to_string().contains("`grid`"));
    assert!(select_time(f, &[0.1, -1.0]).unwrap_err().to_string().contains("`grid`"));
    assert!(select_time(|_| f64::NAN, &[0.1, 1.0]).unwrap_err().to_string().contains("`log_lik`"));
}

#[test]
fn bandwidth_selection_on_von_mises_fisher_data_approaches_the_true_nll() {
    let vmf = VonMisesFisher::new(DVector::from_vec(vec![0.3, -0.5, 0.8]).normalize(), 20.0).unwrap();
    let mut r = rng(30);
    let draw = |n: usize, r: &mut ChaCha8Rng| -> Vec<[f64; 3]> {
        (0..n).map(|_| vmf.sample(r)).map(|v: DVector<f64>| [v[0], v[1], v[2]]).collect()
    };
    let (train, val, test) = (draw(4000, &mut r), draw(1000, &mut r), draw(2000, &mut r));
    let true_nll = -test.iter().map(|p| vmf.log_prob(&DVector::from_column_slice(p))).sum::<f64>() / test.len() as f64;
    let smoother = SphereSmoother::new(&points_tensor(&train)).unwrap();
    let grid = [1e-3, 3e-3, 1e-2, 3e-2, 0.1];
    let (t_best, table) = select_time_by_validation(&smoother, &points_tensor(&val), &grid).unwrap();
    let nll = test_nll(&smoother, &points_tensor(&test), t_best).unwrap();
    println!(
        "vMF(kappa = 20): t_best = {t_best:.4e}, test NLL {nll:.4} vs true {true_nll:.4} ({} evaluations)",
        table.len()
    );
    assert!(nll >= true_nll - 0.05 && nll < true_nll + 0.08, "{nll} vs {true_nll}");
    // The uniform law is far worse; the selected t beats the grid's ends.
    assert!(nll < (4.0 * PI).ln() - 1.0);
    let ends = [grid[0], grid[grid.len() - 1]].map(|t| test_nll(&smoother, &points_tensor(&test), t).unwrap());
    assert!(nll < ends[0] && nll < ends[1]);
}

// ---------------------------------------------------------------- throughput (slow; MANIFOLD_GEN_SLOW_TESTS=1)

/// User + system CPU time of this process, from /proc/self/stat (clock ticks of 10 ms; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The target workload, 10,000 data x 10,000 queries on S^2: queries per second of the direct form (both
/// backends) and of the spectral form, printed (no timing assertion). Also checks that the three agree.
#[test]
fn throughput_report_at_ten_thousand_by_ten_thousand() {
    if std::env::var("MANIFOLD_GEN_SLOW_TESTS").map(|v| v.is_empty() || v == "0").unwrap_or(true) {
        return;
    }
    let mut r = rng(40);
    let data = points_tensor(&clustered_sphere_points(&mut r, 10_000, 0.3));
    let queries = points_tensor(&sphere_points(&mut r, 10_000));
    let n_q = 10_000.0;
    let time = |f: &dyn Fn() -> Tensor| {
        let (start, cpu) = (std::time::Instant::now(), cpu_seconds());
        let out = f();
        let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu);
        println!("    {:.0} q/s wall, {:.1} ns CPU per (query, data) pair", n_q / wall, cpu / (n_q * 1e4) * 1e9);
        (out, n_q / wall)
    };
    for t in [1e-2, 1e-3] {
        let direct = SphereSmoother::new(&data).unwrap();
        let start = std::time::Instant::now();
        let _ = direct.table(t).unwrap();
        let build = start.elapsed().as_secs_f64();
        let host = direct.clone().with_backend(DirectBackend::Host);
        let tens = direct.clone().with_backend(DirectBackend::Tensor);
        let _ = host.table(t).unwrap();
        let _ = tens.table(t).unwrap();
        let (lp_host, qps_lp_host) = time(&|| host.log_density_t(&queries, t).unwrap());
        let (sc_host, qps_sc_host) = time(&|| host.score_at(&queries, t).unwrap());
        let (lp_tens, qps_lp_tens) = time(&|| tens.log_density_t(&queries, t).unwrap());
        let (sc_tens, qps_sc_tens) = time(&|| tens.score_at(&queries, t).unwrap());
        let degree = degree_for_time(t, 1e-10).unwrap();
        let start = std::time::Instant::now();
        let spectral = SphereSpectralSmoother::new(&data, SpectralConfig::new(degree)).unwrap();
        let fit = start.elapsed().as_secs_f64();
        let (lp_spec, qps_lp_spec) = time(&|| spectral.log_density_t(&queries, t).unwrap());
        let (_, qps_sc_spec) = time(&|| spectral.score_at(&queries, t).unwrap());
        println!(
            "t = {t}: table {build:.2} s; direct host {qps_lp_host:.0} q/s (log density), {qps_sc_host:.0} q/s (score); \
             direct tensor {qps_lp_tens:.0} / {qps_sc_tens:.0} q/s; spectral L = {degree} (fit {fit:.2} s) \
             {qps_lp_spec:.0} / {qps_sc_spec:.0} q/s"
        );
        assert!((&lp_host - &lp_tens).abs().max().double_value(&[]) < 1e-9);
        assert!(
            (&sc_host - &sc_tens).abs().max().double_value(&[]) < 1e-6 * (1.0 + sc_host.abs().max().double_value(&[]))
        );
        let dense = lp_host.gt(-(4.0 * PI).ln() - 3.0);
        let diff = (lp_host - lp_spec).abs().masked_select(&dense);
        println!("  spectral vs direct where rho >= e^-3/(4 pi): {:.2e} (log density)", diff.max().double_value(&[]));
    }
}
