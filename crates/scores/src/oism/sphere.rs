//! The spectral score estimator of Brownian motion on S^2 (MATH.md sections 5 and 6).
//!
//! Brownian motion with generator Delta (dX = sqrt(2) dB) on the unit sphere has the real spherical
//! harmonics as eigenfunctions, Delta Y_lm = -l(l+1) Y_lm, and started at the data its law at heat time t
//! has density (w.r.t. the area measure)
//!
//!   rho_t(x) = sum_{l, m} e^{-l(l+1)t} E_data(Y_lm) Y_lm(x),
//!
//! which [`SphereSpectralSmoother`] evaluates, truncated at degree L, with its intrinsic score
//! grad log rho_t (tangent vectors). [`SphereSpectralScore`] adds the shrinkage of the sample means of
//! the operator-informed estimator: E_data(Y_lm) -> (1 - w) E_data(Y_lm) for l >= 1, which is the same as
//! mixing the data law with the uniform law at weight w, so that
//!
//!   rho_t^w = w / (4 pi) + (1 - w) rho_t,   grad log rho_t^w = (1 - w) rho_t grad log rho_t / rho_t^w.
//!
//! w = 1 gives the uniform law (score 0). Truncation, accuracy floors and errors are those of the smoother
//! (the degree must suit the time: [`SphereSpectralScore::min_time`]).
//!
//! # Time
//!
//! The time t here is the intrinsic heat time (dX = sqrt(2) dB: angular variance 2t per tangent direction
//! at small t), not the time of an ambient schedule. Ambient noising x = alpha x_0 + sigma eps is not a
//! diffusion on S^2; at small sigma / alpha its radial projection x / |x| moves x_0 by a tangent Gaussian
//! step of variance sigma^2 / alpha^2 per direction, which matches the heat kernel at
//! t = sigma^2 / (2 alpha^2) ([`heat_time`]). That correspondence is only asymptotic (it ignores the
//! curvature and the radial component), so this module does not implement the ambient
//! [`crate::BaseScore`]: the estimator serves intrinsic (Riemannian) score models, or ambient ones through
//! this documented approximation chosen by the caller.

use crate::smoother::spectral::{SpectralConfig, SphereSpectralSmoother};
use crate::smoother::{by_time, SmootherDensity};
use crate::{Result, Score, ScoreError};
use geom::{Sphere, TensorManifold};
use std::f64::consts::PI;
use tch::{Kind, Tensor};

/// The heat time t = sigma^2 / (2 alpha^2) whose heat kernel (generator Delta) matches, at small
/// sigma / alpha, the tangent spread of the radial projection of x = alpha x_0 + sigma eps (see the
/// [module documentation](self)); infinite at alpha = 0.
pub fn heat_time(alpha: f64, sigma: f64) -> f64 {
    sigma * sigma / (2.0 * alpha * alpha)
}

/// The S^2 spectral score estimator: the spherical-harmonic smoother with shrunk coefficients.
///
/// ```
/// use scores::oism::sphere::SphereSpectralScore;
/// use scores::smoother::SmootherDensity;
/// use tch::Tensor;
///
/// let data = Tensor::from_slice(&[0.0f64, 0.0, 1.0, 0.0, 0.6, 0.8]).view([2, 3]);
/// let est = SphereSpectralScore::fit(&data, 40, Some(0.2)).unwrap();
/// let x = Tensor::from_slice(&[0.6f64, 0.0, 0.8]).view([1, 3]);
/// let s = est.score_at(&x, 0.1).unwrap();
/// // Tangent at x.
/// let dot = (&s * &x).sum(tch::Kind::Double).double_value(&[]);
/// assert!(dot.abs() < 1e-12);
/// ```
#[derive(Debug, Clone)]
pub struct SphereSpectralScore {
    smoother: SphereSpectralSmoother,
    shrinkage: f64,
}

impl SphereSpectralScore {
    /// [`SphereSpectralScore::fit_config`] with [`SpectralConfig::new`]`(degree)`.
    pub fn fit(data: &Tensor, degree: usize, shrinkage: Option<f64>) -> Result<Self> {
        Self::fit_config(data, SpectralConfig::new(degree), shrinkage)
    }

    /// One O(N L^2) pass over `data: [N, 3]` (unit rows, any float dtype and device). Errors: those of
    /// [`SphereSpectralSmoother::new`], and one naming `shrinkage` unless it is in [0, 1].
    pub fn fit_config(data: &Tensor, config: SpectralConfig, shrinkage: Option<f64>) -> Result<Self> {
        let w = shrinkage.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&w) {
            return Err(ScoreError::invalid("shrinkage", w, "a weight in [0, 1]"));
        }
        Ok(SphereSpectralScore { smoother: SphereSpectralSmoother::new(data, config)?, shrinkage: w })
    }

    /// The underlying (unshrunk) smoother.
    pub fn smoother(&self) -> &SphereSpectralSmoother {
        &self.smoother
    }

    /// The shrinkage weight w (0 without shrinkage).
    pub fn shrinkage(&self) -> f64 {
        self.shrinkage
    }

    /// The smallest heat time the degree resolves ([`SphereSpectralSmoother::min_time`]).
    pub fn min_time(&self) -> f64 {
        self.smoother.min_time()
    }

    /// (1 - w) rho_t and w / (4 pi) + (1 - w) rho_t at `x` (Double).
    fn mixture(&self, x: &Tensor, t: f64) -> Result<(Tensor, Tensor)> {
        let rho = self.smoother.log_density_t(x, t)?.exp() * (1.0 - self.shrinkage);
        let mixed = &rho + self.shrinkage / (4.0 * PI);
        Ok((rho, mixed))
    }
}

impl SmootherDensity for SphereSpectralScore {
    /// log rho_t^w(x) w.r.t. the area measure of S^2: `x: [Q, 3]` -> `[Q]`, dtype and device of `x`. Errors
    /// as [`SphereSpectralSmoother`]'s (`x`, `t`, and `L` with `t` when the degree is too low for t).
    fn log_density_t(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        if self.shrinkage == 0.0 {
            return self.smoother.log_density_t(x, t);
        }
        let xd = x.detach().to_kind(Kind::Double);
        Ok(self.mixture(&xd, t)?.1.log().to_kind(x.kind()))
    }

    /// The intrinsic score grad log rho_t^w: `x: [Q, 3]` -> `[Q, 3]` tangent vectors, dtype and device of
    /// `x`; errors as [`SphereSpectralScore::log_density_t`].
    fn score_at(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        if self.shrinkage == 0.0 {
            return self.smoother.score_at(x, t);
        }
        let xd = x.detach().to_kind(Kind::Double);
        let s = self.smoother.score_at(&xd, t)?;
        let (rho, mixed) = self.mixture(&xd, t)?;
        Ok((s * (rho / mixed).unsqueeze(-1)).to_kind(x.kind()))
    }
}

impl Score for SphereSpectralScore {
    /// `x: [B, 3]`, `t: [B]` heat times -> `[B, 3]` tangent vectors, dtype and device of `x`; rows are
    /// normalised and grouped by their time.
    ///
    /// # Panics
    /// On a malformed `x`, a bad time, or a time too small for the degree (the message names `L` and `t`).
    fn score(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let run = || -> Result<Tensor> {
            let xd = x.detach().to_kind(Kind::Double);
            let s2 = Sphere::new(3)?;
            s2.validate("x", &xd, None)?;
            let xd = s2.project_t(&xd);
            let s = by_time(&xd, t, |part, ti| self.score_at(part, ti))?;
            Ok(s.to_kind(x.kind()).to_device(x.device()))
        };
        run().unwrap_or_else(|e: ScoreError| panic!("SphereSpectralScore::score: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    /// `n` unit vectors: half around the north pole, half around (1, 0, 0), angular spread about 0.3.
    fn data(n: usize) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let mut v = Vec::new();
        for i in 0..n {
            let c = if i % 2 == 0 { [0.0, 0.0, 1.0] } else { [1.0, 0.0, 0.0] };
            let p: Vec<f64> = c
                .iter()
                .map(|ci| {
                    let e: f64 = StandardNormal.sample(&mut rng);
                    ci + 0.3 * e
                })
                .collect();
            let r = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
            v.extend(p.iter().map(|pi| pi / r));
        }
        Tensor::from_slice(&v).view([n as i64, 3])
    }

    fn unit(p: [f64; 3]) -> [f64; 3] {
        let r = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
        [p[0] / r, p[1] / r, p[2] / r]
    }

    fn row(p: [f64; 3]) -> Tensor {
        Tensor::from_slice(&p).view([1, 3])
    }

    #[test]
    fn oism_sphere_score_matches_finite_differences_and_is_tangent() {
        let d = data(2_000);
        for w in [None, Some(0.3)] {
            let est = SphereSpectralScore::fit(&d, 40, w).unwrap();
            for t in [0.05, 0.3] {
                for p in [[0.2, 0.1, 0.97], [0.7, -0.3, 0.6], [-0.5, 0.5, -0.7]] {
                    let x = unit(p);
                    let s = est.score_at(&row(x), t).unwrap();
                    let sv = [s.double_value(&[0, 0]), s.double_value(&[0, 1]), s.double_value(&[0, 2])];
                    let dot = sv[0] * x[0] + sv[1] * x[1] + sv[2] * x[2];
                    assert!(dot.abs() < 1e-12, "not tangent: {dot}");
                    // Two tangent directions: e_k minus its normal part, for k = 0 and 1.
                    for k in 0..2 {
                        let mut u = [0.0; 3];
                        u[k] = 1.0;
                        let un: [f64; 3] = std::array::from_fn(|i| u[i] - x[k] * x[i]);
                        let h = 1e-5;
                        let lp = |e: f64| {
                            let q = unit(std::array::from_fn(|i| x[i] + e * un[i]));
                            est.log_density_t(&row(q), t).unwrap().double_value(&[0])
                        };
                        let fd = (lp(h) - lp(-h)) / (2.0 * h);
                        let an = sv[0] * un[0] + sv[1] * un[1] + sv[2] * un[2];
                        assert!((fd - an).abs() < 1e-6 * (1.0 + an.abs()), "w = {w:?} t = {t} {p:?}: {fd} vs {an}");
                    }
                }
            }
        }
    }

    #[test]
    fn oism_sphere_shrinkage_interpolates_to_uniform() {
        let d = data(500);
        let x = row(unit([0.3, 0.2, 0.9]));
        let t = 0.1;
        let norms: Vec<f64> = [0.0, 0.5, 0.9, 1.0]
            .iter()
            .map(|&w| {
                let est = SphereSpectralScore::fit(&d, 40, Some(w)).unwrap();
                est.score_at(&x, t).unwrap().norm().double_value(&[])
            })
            .collect();
        assert!(norms.windows(2).all(|p| p[1] < p[0]), "{norms:?}");
        assert_eq!(norms[3], 0.0);
        let uniform = SphereSpectralScore::fit(&d, 40, Some(1.0)).unwrap();
        let lp = uniform.log_density_t(&x, t).unwrap().double_value(&[0]);
        assert!((lp + (4.0 * PI).ln()).abs() < 1e-14);
        // Without shrinkage it is the smoother.
        let plain = SphereSpectralScore::fit(&d, 40, None).unwrap();
        let diff = plain.score_at(&x, t).unwrap() - plain.smoother().score_at(&x, t).unwrap();
        assert_eq!(diff.abs().max().double_value(&[]), 0.0);
        assert!(SphereSpectralScore::fit(&d, 40, Some(1.5)).unwrap_err().to_string().contains("`shrinkage`"));
        assert!(plain.score_at(&x, 1e-4).unwrap_err().to_string().contains("`L`"));
    }

    #[test]
    fn oism_sphere_batched_score_groups_times() {
        let d = data(500);
        let est = SphereSpectralScore::fit(&d, 40, Some(0.2)).unwrap();
        let x = Tensor::from_slice(&[0.0f64, 0.0, 1.0, 0.6, 0.0, 0.8, 0.0, 1.0, 0.0]).view([3, 3]);
        let t = Tensor::from_slice(&[0.1f64, 0.4, 0.1]);
        let s = est.score(&x.to_kind(Kind::Float), &t);
        assert_eq!(s.kind(), Kind::Float);
        for (i, ti) in [0.1, 0.4, 0.1].iter().enumerate() {
            let r = est.score_at(&x.narrow(0, i as i64, 1), *ti).unwrap();
            let diff = (s.narrow(0, i as i64, 1).to_kind(Kind::Double) - r).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "row {i}: {diff}");
        }
        assert!((heat_time(0.5, 0.1) - 0.02).abs() < 1e-15);
    }
}
