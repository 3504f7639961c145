//! The operator-informed base score on S^2 for ambient noising (MATH.md sections 2, 5 and 6).
//!
//! The S^2 spectral estimator ([`SphereSpectralScore`]) is an intrinsic object: a density on the sphere,
//! heat-smoothed to time tau. A MAD-style score model on S^2 noises ambiently, x = alpha m + sigma eps in
//! R^3. [`SphereSpectralBase`] is the *exact* ambient score of that noising when m follows the spectral
//! density, so the network learns only the residual to it, and with the uniform law (every coefficient
//! but c_00 zero, or shrinkage 1) it is the uniform sphere base of [`crate::base::sphere::SphereBase`].
//!
//! # The formula
//!
//! Let rho(y) = sum_{l <= L, m} c_lm Y_lm(y) be a density on S^2 w.r.t. area (c_00 = 1/sqrt(4 pi)). Write
//! x = r u with |u| = 1 and kappa = alpha r / sigma^2. Completing the square,
//! N(x; alpha y, sigma^2 I) = C(x) e^{kappa <u, y>}, and the Funk-Hecke formula
//! int e^{kappa <u, y>} Y_lm(y) dA(y) = 4 pi i_l(kappa) Y_lm(u) (i_l the modified spherical Bessel
//! function) give
//!
//!   p(x) = int N(x; alpha y, sigma^2 I) rho(y) dA(y) = p_unif(x) * 4 pi G(u, kappa),
//!   G(u, kappa) = sum_{l, m} c_lm a_l(kappa) Y_lm(u),   a_l = i_l / i_0,
//!
//! where p_unif is the noised uniform law. So log p = log p_unif + ln(4 pi G) and
//!
//!   grad log p = s_unif(x) + [ (alpha/sigma^2) G_kappa u + (alpha/sigma^2) P_u sum c_lm (a_l/kappa) grad Y_lm(u) ] / G,
//!
//! with P_u = I - u u^T, G_kappa = sum c_lm a_l'(kappa) Y_lm(u), and grad Y_lm the gradient of the
//! polynomial extension (the harmonic Y_lm(x) is homogeneous of degree l, so (1/r) P_u grad Y_lm(u) is the
//! tangential part of its gradient at x).
//!
//! # Numerics
//!
//! The ratios r_l = i_l / i_{l-1} = I_{l+1/2} / I_{l-1/2} follow from one continued fraction at the top
//! degree ([`geom::special::bessel_ratio`]) and the backward recurrence q_l = r_l / kappa =
//! 1 / (2l + 1 + kappa r_{l+1}) (stable: i_l is the minimal solution); then a_l = a_{l-1} r_l,
//! a_l / kappa = a_{l-1} q_l and a_l' = a_{l-1} (1 - (l + 1) q_l) - a_l a_1. Nothing divides by r or kappa,
//! so x = 0 (kappa = 0, G = 1/(4 pi), the uniform base) is regular.
//!
//! The density used is the heat-smoothed estimate rho_tau (coefficients E_data(Y_lm) e^{-l(l+1) tau},
//! shrunk by w toward the uniform law for l >= 1). Truncated at degree L it can dip below zero where rho_tau
//! is smaller than the truncation bound; G is a smoothing of it by a positive kernel, and where
//! 4 pi G falls below the relative truncation bound of (L, tau) the log-ratio is held at that floor with a
//! zero gradient (the base is then the uniform one there). With tau >= the estimator's
//! [`SphereSpectralScore::min_time`] the bound is at most the configured tolerance.

use super::sphere::SphereSpectralScore;
use crate::base::sphere::SphereBase;
use crate::smoother::harmonics::SphericalHarmonics;
use crate::smoother::spectral::relative_truncation_bound;
use crate::{BaseScore, Result, ScoreError};
use geom::special::bessel_ratio;
use nalgebra::DVector;
use rayon::prelude::*;
use std::f64::consts::PI;
use tch::{Kind, Tensor};

/// Rows per rayon task in the batched score (below one task the loop runs serially: a training batch of a
/// few hundred rows costs less than waking the pool beside libtorch's threads).
const PARALLEL_MIN_ROWS: usize = 4096;

/// The exact ambient base score of x = alpha m + sigma eps when m follows the S^2 spectral density
/// estimate heat-smoothed to time tau (see the [module documentation](self)).
///
/// ```
/// use nalgebra::DVector;
/// use scores::base::sphere::SphereBase;
/// use scores::oism::sphere::SphereSpectralScore;
/// use scores::oism::sphere_base::SphereSpectralBase;
/// use scores::BaseScore;
/// use tch::Tensor;
///
/// let data = Tensor::from_slice(&[0.0f64, 0.0, 1.0, 0.0, 0.6, 0.8]).view([2, 3]);
/// let est = SphereSpectralScore::fit(&data, 12, Some(0.1)).unwrap();
/// let base = SphereSpectralBase::new(&est, 0.2).unwrap();
/// let x = DVector::from_vec(vec![0.1, 0.2, 0.9]);
/// let s = base.base_score(&x, 0.9, 0.3);
/// // It differs from the uniform base by the gradient of ln(4 pi G), which points towards the data.
/// let u = SphereBase::new(3).unwrap().base_score(&x, 0.9, 0.3);
/// assert!((&s - &u).norm() > 1e-3);
/// // At x = 0 every direction is alike: only the l = 1 part of the data law survives.
/// assert!(base.base_score(&DVector::zeros(3), 0.9, 0.3).iter().all(|v| v.is_finite()));
/// ```
#[derive(Debug, Clone)]
pub struct SphereSpectralBase {
    harmonics: SphericalHarmonics,
    /// c_lm e^{-l(l+1) tau} (1 - w for l >= 1), flat by `harmonics::index`.
    coef: Vec<f64>,
    degree: usize,
    tau: f64,
    shrinkage: f64,
    /// Floor of 4 pi G (the relative truncation bound at (L, tau), at least 1e-12).
    floor: f64,
    uniform: SphereBase,
}

impl SphereSpectralBase {
    /// The base of the estimator `est` smoothed to heat time `tau` (its coefficients and shrinkage; the
    /// data are not kept). Errors naming `tau` unless it is finite and at least `est.min_time()`.
    pub fn new(est: &SphereSpectralScore, tau: f64) -> Result<Self> {
        let min = est.min_time();
        if !(tau.is_finite() && tau >= min) {
            return Err(ScoreError::invalid(
                "tau",
                tau,
                &format!("a heat time >= {min:.4e}, the smallest time degree L = {} resolves", est.smoother().degree()),
            ));
        }
        let degree = est.smoother().degree();
        let w = est.shrinkage();
        let mut coef = est.smoother().coefficients().to_vec();
        for l in 1..=degree {
            let f = (1.0 - w) * (-(l as f64) * (l as f64 + 1.0) * tau).exp();
            coef[l * l..(l + 1) * (l + 1)].iter_mut().for_each(|c| *c *= f);
        }
        Ok(SphereSpectralBase {
            harmonics: SphericalHarmonics::new(degree)?,
            coef,
            degree,
            tau,
            shrinkage: w,
            floor: relative_truncation_bound(degree, tau).max(1e-12),
            uniform: SphereBase::new(3)?,
        })
    }

    /// The degree L.
    pub fn degree(&self) -> usize {
        self.degree
    }

    /// The smoothing time tau.
    pub fn tau(&self) -> f64 {
        self.tau
    }

    /// The shrinkage weight w.
    pub fn shrinkage(&self) -> f64 {
        self.shrinkage
    }

    /// (ln(4 pi G), grad_x ln(4 pi G)) at an ambient point `x` (any finite point; x = 0 allowed).
    pub fn log_ratio(&self, x: &[f64; 3], alpha: f64, sigma: f64) -> (f64, [f64; 3]) {
        let r = (x[0] * x[0] + x[1] * x[1] + x[2] * x[2]).sqrt();
        let u = if r > 0.0 { [x[0] / r, x[1] / r, x[2] / r] } else { [0.0, 0.0, 1.0] };
        let scale = alpha / (sigma * sigma);
        let kappa = scale * r;
        let big_l = self.degree;
        // a_l, a_l / kappa and a_l' for l = 0..=L.
        let mut q = vec![0.0; big_l + 2];
        let mut r_next = if big_l >= 1 { bessel_ratio(big_l as f64 + 0.5, kappa) } else { 0.0 };
        for l in (1..=big_l).rev() {
            q[l] = 1.0 / (2.0 * l as f64 + 1.0 + kappa * r_next);
            r_next = kappa * q[l];
        }
        let mut a = vec![1.0; big_l + 1];
        let mut a_over_k = vec![0.0; big_l + 1];
        let mut da = vec![0.0; big_l + 1];
        for l in 1..=big_l {
            a_over_k[l] = a[l - 1] * q[l];
            a[l] = kappa * a_over_k[l];
        }
        let a1 = if big_l >= 1 { a[1] } else { 0.0 };
        for l in 1..=big_l {
            da[l] = a[l - 1] * (1.0 - (l as f64 + 1.0) * q[l]) - a[l] * a1;
        }
        // One pass over the harmonics: per degree, S_l = sum_m c_lm Y_lm(u) and T_l = sum_m c_lm grad Y_lm(u).
        let n = self.harmonics.len();
        let mut y = vec![0.0; n];
        let mut gy = vec![0.0; 3 * n];
        self.harmonics.eval_with_grad(&u, &mut y, &mut gy);
        let (mut g, mut gk, mut grad) = (0.0, 0.0, [0.0; 3]);
        for l in 0..=big_l {
            let (mut s_l, mut t_l) = (0.0, [0.0; 3]);
            for i in l * l..(l + 1) * (l + 1) {
                let c = self.coef[i];
                s_l += c * y[i];
                t_l[0] += c * gy[3 * i];
                t_l[1] += c * gy[3 * i + 1];
                t_l[2] += c * gy[3 * i + 2];
            }
            g += a[l] * s_l;
            gk += da[l] * s_l;
            for k in 0..3 {
                grad[k] += a_over_k[l] * t_l[k];
            }
        }
        let g4 = 4.0 * PI * g;
        if g4.is_nan() || g4 <= self.floor {
            return (self.floor.ln(), [0.0; 3]);
        }
        let dot = grad[0] * u[0] + grad[1] * u[1] + grad[2] * u[2];
        let out: [f64; 3] = std::array::from_fn(|i| scale * (gk * u[i] + grad[i] - dot * u[i]) / g);
        (g4.ln(), out)
    }
}

fn check_point(name: &str, x: &DVector<f64>, alpha: f64, sigma: f64) {
    assert_eq!(x.len(), 3, "{name}: argument `x` has length {}, expected 3", x.len());
    assert!(x.iter().all(|v| v.is_finite()), "{name}: argument `x` has a non-finite coordinate");
    assert!(alpha.is_finite() && alpha >= 0.0, "{name}: argument `alpha` = {alpha} must be finite and >= 0");
    assert!(sigma.is_finite() && sigma > 0.0, "{name}: argument `sigma` = {sigma} must be finite and > 0");
}

impl BaseScore for SphereSpectralBase {
    type Point = DVector<f64>;

    /// (sigma^2 s + x) / alpha; at alpha = 0 the prior mean, the l = 1 part: (4 pi / 3) c_1 in xyz order
    /// (after smoothing and shrinkage). Panics naming the argument on a malformed point or parameter.
    fn posterior_mean(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> DVector<f64> {
        check_point("SphereSpectralBase::posterior_mean", x, alpha, sigma);
        if alpha == 0.0 {
            // E[m] = int y rho(y) dA: Y_1,-1 = c y, Y_10 = c z, Y_11 = c x with c = sqrt(3 / (4 pi)).
            let c = (3.0 / (4.0 * PI)).sqrt();
            let f = 4.0 * PI / 3.0 * c;
            return if self.degree >= 1 {
                DVector::from_vec(vec![f * self.coef[3], f * self.coef[1], f * self.coef[2]])
            } else {
                DVector::zeros(3)
            };
        }
        (self.base_score(x, alpha, sigma) * (sigma * sigma) + x) / alpha
    }

    /// s_unif(x) + grad ln(4 pi G); panics as [`SphereSpectralBase::posterior_mean`].
    fn base_score(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> DVector<f64> {
        check_point("SphereSpectralBase::base_score", x, alpha, sigma);
        let (_, g) = self.log_ratio(&[x[0], x[1], x[2]], alpha, sigma);
        self.uniform.base_score(x, alpha, sigma) + DVector::from_column_slice(&g)
    }

    /// log p_unif(x) + ln(4 pi G) w.r.t. Lebesgue measure on R^3; panics as
    /// [`SphereSpectralBase::posterior_mean`].
    fn log_density(&self, x: &DVector<f64>, alpha: f64, sigma: f64) -> f64 {
        check_point("SphereSpectralBase::log_density", x, alpha, sigma);
        self.uniform.log_density(x, alpha, sigma) + self.log_ratio(&[x[0], x[1], x[2]], alpha, sigma).0
    }

    /// `x: [B, 3]`, `alpha, sigma: [B]` -> `[B, 3]`, dtype and device of `x`. The uniform part is the
    /// batched [`SphereBase`]; the spectral part is computed per row on the host in f64 and is not
    /// differentiable (detached). Panics naming the argument on a shape mismatch.
    fn base_score_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        let unif = self.uniform.base_score_t(x, alpha, sigma);
        let b = x.size()[0];
        let host = |t: &Tensor| -> Vec<f64> {
            Vec::<f64>::try_from(
                t.detach().to_kind(Kind::Double).to_device(tch::Device::Cpu).contiguous().flatten(0, -1),
            )
            .expect("a float tensor")
        };
        let (xs, al, sg) = (host(x), host(alpha), host(sigma));
        let row = |i: usize| self.log_ratio(&[xs[3 * i], xs[3 * i + 1], xs[3 * i + 2]], al[i], sg[i]).1;
        let rows: Vec<[f64; 3]> = if (b as usize) < PARALLEL_MIN_ROWS {
            (0..b as usize).map(row).collect()
        } else {
            (0..b as usize).into_par_iter().map(row).collect()
        };
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        let extra = Tensor::from_slice(&flat).view([b, 3]).to_kind(x.kind()).to_device(x.device());
        unif + extra
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quadrature::gauss_legendre;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    /// Points clustered around two directions (angular spread about 0.4).
    fn data(n: usize, seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut v = Vec::new();
        for i in 0..n {
            let c = if i % 3 == 0 { [0.0, 0.0, 1.0] } else { [0.6, -0.8, 0.0] };
            let p: Vec<f64> = c
                .iter()
                .map(|ci| {
                    let e: f64 = StandardNormal.sample(&mut rng);
                    ci + 0.4 * e
                })
                .collect();
            let r = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
            v.extend(p.iter().map(|pi| pi / r));
        }
        Tensor::from_slice(&v).view([n as i64, 3])
    }

    fn base(w: f64, tau: f64) -> SphereSpectralBase {
        let est = SphereSpectralScore::fit(&data(3_000, 5), 16, Some(w)).unwrap();
        SphereSpectralBase::new(&est, tau).unwrap()
    }

    fn v(p: [f64; 3]) -> DVector<f64> {
        DVector::from_column_slice(&p)
    }

    /// p(x) = int N(x; alpha y, sigma^2 I) rho_tau(y) dA(y) by a product rule (Gauss-Legendre in cos theta,
    /// trapezoid in phi), with rho_tau the base's own truncated series.
    fn brute_log_density(b: &SphereSpectralBase, x: [f64; 3], alpha: f64, sigma: f64) -> f64 {
        let (nodes, weights) = gauss_legendre(160);
        let n_phi = 320;
        let mut total = 0.0;
        let mut y_buf = vec![0.0; b.harmonics.len()];
        for (z, wz) in nodes.iter().zip(&weights) {
            let s = (1.0 - z * z).sqrt();
            for k in 0..n_phi {
                let phi = 2.0 * PI * k as f64 / n_phi as f64;
                let y = [s * phi.cos(), s * phi.sin(), *z];
                b.harmonics.eval(&y, &mut y_buf);
                let rho: f64 = y_buf.iter().zip(&b.coef).map(|(a, c)| a * c).sum();
                let d2 = (0..3).map(|i| (x[i] - alpha * y[i]).powi(2)).sum::<f64>();
                let normal = (-d2 / (2.0 * sigma * sigma)).exp() / (2.0 * PI * sigma * sigma).powf(1.5);
                total += wz * (2.0 * PI / n_phi as f64) * normal * rho;
            }
        }
        total.ln()
    }

    #[test]
    fn oism_sphere_base_log_density_matches_quadrature() {
        let b = base(0.05, 0.1);
        for (x, alpha, sigma) in [
            ([0.3, -0.5, 0.7], 1.0, 0.5),
            ([0.1, 0.0, 0.05], 0.8, 0.3),
            ([1.2, -1.1, 0.4], 0.9, 0.45),
            ([0.0, 0.0, 0.0], 1.0, 1.0),
            ([2.0, 1.0, -3.0], 0.5, 2.0),
        ] {
            let got = b.log_density(&v(x), alpha, sigma);
            let want = brute_log_density(&b, x, alpha, sigma);
            assert!((got - want).abs() < 1e-9 * (1.0 + want.abs()), "{x:?} {alpha} {sigma}: {got} vs {want}");
        }
    }

    #[test]
    fn oism_sphere_base_score_matches_finite_differences() {
        let b = base(0.02, 0.09);
        let h = 1e-6;
        for (x, alpha, sigma) in [
            ([0.3, -0.5, 0.7], 1.0, 0.2),
            ([0.01, 0.02, -0.01], 0.9, 0.4),
            ([0.5, -0.7, 0.1], 1.0, 0.05),
            ([0.0, 0.0, 1.0], 1.0, 0.01),
            ([3.0, 0.0, 1.0], 0.3, 3.0),
        ] {
            let s = b.base_score(&v(x), alpha, sigma);
            for i in 0..3 {
                let mut xp = x;
                let mut xm = x;
                xp[i] += h;
                xm[i] -= h;
                let fd = (b.log_density(&v(xp), alpha, sigma) - b.log_density(&v(xm), alpha, sigma)) / (2.0 * h);
                let tol = 1e-5 * (1.0 + s[i].abs()) + 1e-9 / (sigma * sigma);
                assert!((fd - s[i]).abs() < tol, "{x:?} {alpha} {sigma} [{i}]: {fd} vs {}", s[i]);
            }
        }
    }

    #[test]
    fn oism_sphere_base_is_uniform_base_at_full_shrinkage_and_batched_matches_per_point() {
        let u = SphereBase::new(3).unwrap();
        let full = base(1.0, 0.1);
        for (x, alpha, sigma) in [([0.3, -0.5, 0.7], 1.0, 0.2), ([0.0, 0.0, 0.0], 0.7, 0.5)] {
            let d = (full.base_score(&v(x), alpha, sigma) - u.base_score(&v(x), alpha, sigma)).norm();
            assert!(d < 1e-12, "{d}");
            let dl = full.log_density(&v(x), alpha, sigma) - u.log_density(&v(x), alpha, sigma);
            assert!(dl.abs() < 1e-12, "{dl}");
        }
        let b = base(0.1, 0.1);
        let x = Tensor::from_slice(&[0.3f64, -0.5, 0.7, 0.0, 0.0, 0.0, 1.5, 0.2, -0.1]).view([3, 3]);
        let alpha = Tensor::from_slice(&[1.0f64, 0.8, 0.5]);
        let sigma = Tensor::from_slice(&[0.2f64, 0.6, 1.5]);
        let s = b.base_score_t(&x.to_kind(Kind::Float), &alpha.to_kind(Kind::Float), &sigma.to_kind(Kind::Float));
        assert_eq!(s.kind(), Kind::Float);
        for i in 0..3 {
            let xi: Vec<f64> = (0..3).map(|k| x.double_value(&[i, k])).collect();
            let want = b.base_score(&DVector::from_vec(xi), alpha.double_value(&[i]), sigma.double_value(&[i]));
            for k in 0..3usize {
                let got = s.double_value(&[i, k as i64]);
                assert!((got - want[k]).abs() < 2e-5 * (1.0 + want[k].abs()), "row {i}: {got} vs {}", want[k]);
            }
        }
        // Posterior mean consistency and the prior mean at alpha = 0.
        let x = v([0.3, -0.5, 0.7]);
        let m = b.posterior_mean(&x, 0.9, 0.4);
        let s = b.base_score(&x, 0.9, 0.4);
        assert!(((m * 0.9 - &x) / 0.16 - s).norm() < 1e-12);
        let prior = b.posterior_mean(&DVector::zeros(3), 0.0, 1.0);
        let tiny = b.posterior_mean(&DVector::zeros(3), 1e-6, 1.0);
        assert!((prior - tiny).norm() < 1e-5);
    }

    #[test]
    fn oism_sphere_base_errors_name_tau_and_pulls_toward_data() {
        let est = SphereSpectralScore::fit(&data(500, 2), 16, None).unwrap();
        let err = SphereSpectralBase::new(&est, 1e-4).unwrap_err().to_string();
        assert!(err.contains("`tau`"), "{err}");
        assert!(SphereSpectralBase::new(&est, f64::NAN).is_err());
        // Small noise near a data cluster: the extra term points along the sphere towards the cluster centre.
        let b = SphereSpectralBase::new(&est, 0.1).unwrap();
        let x = [0.3, 0.0, 0.954];
        let (_, g) = b.log_ratio(&x, 1.0, 0.05);
        assert!(g[0] < 0.0, "{g:?}");
    }
}
