//! The spectral form of the S^2 heat-kernel smoother (MATH.md section 5).
//!
//! With the heat kernel k_t(x, y) = sum_l (2l+1) e^{-l(l+1)t} P_l(<x, y>) (w.r.t. the uniform probability
//! measure, generator Delta) and the addition theorem of [`super::harmonics`], the smoothed density w.r.t.
//! the area measure is
//!
//!   rho_t(x) = (1/(4 pi)) (1/N) sum_i k_t(x, x_i) = sum_{l, m} e^{-l(l+1)t} E_data(Y_lm) Y_lm(x).
//!
//! At t -> infinity only l = 0 survives: E_data(Y_00) Y_00 = 1/(4 pi), the uniform density.
//! One O(N L^2) pass over the data gives the (L+1)^2 coefficients E_data(Y_lm); the data are not kept, and
//! each query then costs O(L^2) whatever N is. The score is grad log rho_t = P_x(grad rho_t) / rho_t with
//! the exact gradients of the polynomial harmonics and P_x(v) = v - <x, v> x.
//!
//! Truncation: cutting the series at degree L changes the density by at most
//!
//!   B_L(t) = (1/(4 pi)) sum_{l > L} (2l+1) e^{-l(l+1)t}
//!
//! (|sum_m Y_lm(x) Y_lm(y)| <= (2l+1)/(4 pi)), which is not small when t is small relative to 1/L^2:
//! then the truncated density is inaccurate and can be negative. Every evaluation checks that 4 pi B_L(t)
//! (the bound relative to the uniform density) is at most [`SpectralConfig::truncation_tol`] and errors
//! naming `L` and `t` otherwise; [`SphereSpectralSmoother::min_time`] and [`degree_for_time`] give the
//! admissible range.
//!
//! Accuracy is absolute, not relative: besides B_L(t), summing terms of size up to (2l+1)/(4 pi) loses
//! about eps (1/t) / (4 pi) to rounding. Where rho_t(x) is far below the uniform density (far from the
//! data at small t, where it is exponentially small) the relative error is (B_L(t) + rounding) / rho_t(x)
//! and the computed value can even be negative; below [`SphereSpectralSmoother::density_floor`] the
//! log-density is reported as ln(floor) and the score as 0. Measured against the direct form: 1e-12
//! relative where rho_t >= 1e-3 / (4 pi), 1e-13 of the uniform density everywhere (`tests/smoothers.rs`).
//!
//! Evaluation runs on the host in f64, in parallel over queries (rayon); tensors are converted at the
//! boundary.

use super::harmonics::{host_rows3, n_harmonics, SphericalHarmonics, MAX_DEGREE};
use super::{by_time, check_time, validate_data, SmootherDensity, MANIFOLD_TOL};
use crate::{Result, Score, ScoreError};
use geom::{Sphere, TensorManifold};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use tch::{Kind, Tensor};

/// Hyper-parameters of the spectral smoother.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpectralConfig {
    /// The truncation degree L (at most [`MAX_DEGREE`]).
    pub degree: usize,
    /// The largest admissible truncation bound relative to the uniform density, 4 pi B_L(t), in (0, 1].
    pub truncation_tol: f64,
}

impl SpectralConfig {
    /// Degree `degree` with the default tolerance 1e-10.
    pub fn new(degree: usize) -> Self {
        SpectralConfig { degree, truncation_tol: 1e-10 }
    }

    /// Validates the fields; errors name the field and the allowed range.
    pub fn check(self) -> Result<Self> {
        if self.degree > MAX_DEGREE {
            return Err(ScoreError::invalid("degree", self.degree, &format!("a degree L <= {MAX_DEGREE}")));
        }
        if !(self.truncation_tol > 0.0 && self.truncation_tol <= 1.0) {
            return Err(ScoreError::invalid("truncation_tol", self.truncation_tol, "a number in (0, 1]"));
        }
        Ok(self)
    }
}

/// An upper bound on the relative truncation error 4 pi B_L(t) = sum_{l > L} (2l+1) e^{-l(l+1)t} (see
/// the [module documentation](self)); infinite when t is so small that the bound is meaningless.
pub fn relative_truncation_bound(degree: usize, t: f64) -> f64 {
    if t.is_nan() || t <= 0.0 {
        return f64::INFINITY;
    }
    // The summand increases up to l ~ 1/sqrt(2t) and decreases after; sum explicitly up to the peak,
    // then bound the decreasing tail by its first term plus the integral e^{-l(l+1)t} / t.
    let term = |l: f64| (2.0 * l + 1.0) * (-l * (l + 1.0) * t).exp();
    let first = degree as f64 + 1.0;
    let peak = (0.5 / t).sqrt().ceil().max(first);
    if peak - first > 1e7 {
        return f64::INFINITY;
    }
    let mut sum = 0.0;
    let mut l = first;
    while l < peak {
        sum += term(l);
        l += 1.0;
    }
    sum + term(peak) + (-peak * (peak + 1.0) * t).exp() / t
}

/// The smallest degree L whose relative truncation bound at time `t` is at most `tol`; errors naming `t`
/// (and `tol`) when no L <= [`MAX_DEGREE`] suffices.
pub fn degree_for_time(t: f64, tol: f64) -> Result<usize> {
    check_time(t)?;
    if tol.is_nan() || tol <= 0.0 {
        return Err(ScoreError::invalid("tol", tol, "a number > 0"));
    }
    if relative_truncation_bound(MAX_DEGREE, t) > tol {
        return Err(ScoreError::invalid(
            "t",
            t,
            &format!("a time at which a degree L <= {MAX_DEGREE} reaches tolerance {tol:e}"),
        ));
    }
    let (mut lo, mut hi) = (0usize, MAX_DEGREE);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if relative_truncation_bound(mid, t) <= tol {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

/// The S^2 heat-kernel smoother in spectral form: (L+1)^2 coefficients E_data(Y_lm), no data.
///
/// ```
/// use scores::smoother::spectral::{SpectralConfig, SphereSpectralSmoother};
/// use scores::smoother::SmootherDensity;
/// use tch::Tensor;
///
/// let data = Tensor::from_slice(&[0.0f64, 0.0, 1.0, 1.0, 0.0, 0.0]).view([2, 3]);
/// let smoother = SphereSpectralSmoother::new(&data, SpectralConfig::new(30)).unwrap();
/// assert_eq!(smoother.coefficients().len(), 31 * 31);
/// // At large t the density is uniform, 1/(4 pi) w.r.t. area.
/// let x = Tensor::from_slice(&[0.0f64, 1.0, 0.0]).view([1, 3]);
/// let logp = smoother.log_density_t(&x, 20.0).unwrap().double_value(&[0]);
/// assert!((logp + (4.0 * std::f64::consts::PI).ln()).abs() < 1e-12);
/// // At t = 1e-3 degree 30 is far too small: the error names `L` and `t`.
/// assert!(smoother.log_density_t(&x, 1e-3).unwrap_err().to_string().contains("`L`"));
/// ```
#[derive(Debug, Clone)]
pub struct SphereSpectralSmoother {
    harmonics: SphericalHarmonics,
    /// E_data(Y_lm), flat by [`super::harmonics::index`].
    coefficients: Vec<f64>,
    n_data: i64,
    config: SpectralConfig,
}

impl SphereSpectralSmoother {
    /// One O(N L^2) pass over `data: [N, 3]` (unit rows; any float dtype and device).
    ///
    /// Errors: the config's own errors; [`ScoreError::EmptyData`] for N = 0; errors naming `data` and the
    /// first row that is non-finite or further than [`MANIFOLD_TOL`] from the sphere (rows within it are
    /// normalised).
    pub fn new(data: &Tensor, config: SpectralConfig) -> Result<Self> {
        let config = config.check()?;
        let s2 = Sphere::new(3)?;
        let data = validate_data("data", data, &[3], |d| s2.validate("data", d, Some(MANIFOLD_TOL)))?;
        let rows = host_rows3(&s2.project_t(&data));
        let harmonics = SphericalHarmonics::new(config.degree)?;
        let k = harmonics.len();
        let sums = rows
            .par_chunks(256)
            .map(|chunk| {
                let mut acc = vec![0.0; k];
                let mut y = vec![0.0; k];
                for p in chunk {
                    harmonics.eval(p, &mut y);
                    acc.iter_mut().zip(&y).for_each(|(a, v)| *a += v);
                }
                acc
            })
            .reduce(
                || vec![0.0; k],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        let n = rows.len() as f64;
        let coefficients = sums.into_iter().map(|s| s / n).collect();
        Ok(SphereSpectralSmoother { harmonics, coefficients, n_data: rows.len() as i64, config })
    }

    /// The truncation degree L.
    pub fn degree(&self) -> usize {
        self.harmonics.degree()
    }

    /// The configuration.
    pub fn config(&self) -> SpectralConfig {
        self.config
    }

    /// The (L+1)^2 empirical means E_data(Y_lm), flat by [`super::harmonics::index`]: all the smoother
    /// keeps of the data.
    pub fn coefficients(&self) -> &[f64] {
        &self.coefficients
    }

    /// The number of data points the coefficients were computed from.
    pub fn n_data(&self) -> i64 {
        self.n_data
    }

    /// The absolute truncation bound B_L(t) on |rho_t - rho_t^(L)| (area measure) at every x.
    pub fn truncation_error_bound(&self, t: f64) -> f64 {
        relative_truncation_bound(self.degree(), t) / (4.0 * PI)
    }

    /// Errors naming `L` and `t` when the relative bound 4 pi B_L(t) exceeds the configured tolerance, or
    /// naming `t` unless t is finite and > 0.
    pub fn check_truncation(&self, t: f64) -> Result<()> {
        check_time(t)?;
        let rel = relative_truncation_bound(self.degree(), t);
        if rel > self.config.truncation_tol {
            return Err(ScoreError::invalid(
                "t",
                t,
                &format!(
                    "a time >= {:.4e} for degree `L` = {} (the relative truncation bound is {rel:.3e} > tolerance {:.1e}; \
                     raise `L` or `t`)",
                    self.min_time(),
                    self.degree(),
                    self.config.truncation_tol
                ),
            ));
        }
        Ok(())
    }

    /// The smallest t at which the truncation bound meets the configured tolerance (by bisection in log t,
    /// to 1e-6 relative).
    pub fn min_time(&self) -> f64 {
        let ok = |t: f64| relative_truncation_bound(self.degree(), t) <= self.config.truncation_tol;
        let (mut lo, mut hi) = (1e-12f64, 1.0f64);
        while !ok(hi) {
            hi *= 10.0;
        }
        if ok(lo) {
            return lo;
        }
        while hi / lo > 1.0 + 1e-6 {
            let mid = (lo * hi).sqrt();
            if ok(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// e^{-l(l+1)t} E_data(Y_lm), flat.
    fn decayed(&self, t: f64) -> Vec<f64> {
        let mut out = self.coefficients.clone();
        for l in 0..=self.degree() {
            let f = (-(l as f64) * (l as f64 + 1.0) * t).exp();
            out[l * l..(l + 1) * (l + 1)].iter_mut().for_each(|c| *c *= f);
        }
        out
    }

    /// Per-point: rho_t(x) w.r.t. the area measure, truncated at degree L, for a unit vector `x` (not
    /// checked). Errors as [`SphereSpectralSmoother::check_truncation`].
    pub fn density_point(&self, x: &[f64; 3], t: f64) -> Result<f64> {
        self.check_truncation(t)?;
        Ok(self.harmonics.contract::<false>(x, &self.decayed(t)).0)
    }

    /// (log rho `[Q]`, score `[Q, 3]` if asked) for unit host rows, floored at the accuracy floor.
    fn evaluate(&self, rows: &[[f64; 3]], t: f64, with_score: bool) -> Result<(Vec<f64>, Vec<[f64; 3]>)> {
        self.check_truncation(t)?;
        let coef = self.decayed(t);
        let floor = self.density_floor(t);
        Ok(rows
            .par_iter()
            .map(|p| {
                let (rho, g) = if with_score {
                    self.harmonics.contract::<true>(p, &coef)
                } else {
                    (self.harmonics.contract::<false>(p, &coef).0, [0.0; 3])
                };
                if rho.is_nan() || rho <= floor {
                    return (floor.ln(), [0.0; 3]);
                }
                let dot = g[0] * p[0] + g[1] * p[1] + g[2] * p[2];
                (rho.ln(), [(g[0] - dot * p[0]) / rho, (g[1] - dot * p[1]) / rho, (g[2] - dot * p[2]) / rho])
            })
            .unzip())
    }

    /// The accuracy floor of the truncated density at time `t` (area measure): the truncation bound
    /// B_L(t) plus 16 eps S_L(t) / (4 pi), a bound on the rounding of the sum, where
    /// S_L(t) = sum_{l <= L} (2l+1) e^{-l(l+1)t} (about 1/t) bounds the sum of the terms' magnitudes. Where
    /// the truncated density falls below it (far from the data at small t, where the true density is
    /// exponentially small), the log-density is reported as ln(floor) and the score as 0: the spectral form
    /// cannot resolve densities below its absolute accuracy (use the direct form there).
    pub fn density_floor(&self, t: f64) -> f64 {
        let s: f64 = (0..=self.degree()).map(|l| (2 * l + 1) as f64 * (-(l as f64) * (l as f64 + 1.0) * t).exp()).sum();
        self.truncation_error_bound(t) + 16.0 * f64::EPSILON * s / (4.0 * PI)
    }

    /// Validated, normalised host rows of the queries `x: [Q, 3]`.
    fn query_rows(&self, x: &Tensor, check_membership: bool) -> Result<Vec<[f64; 3]>> {
        let s2 = Sphere::new(3)?;
        s2.validate("x", x, check_membership.then_some(MANIFOLD_TOL))?;
        let _guard = tch::no_grad_guard();
        Ok(host_rows3(&s2.project_t(&x.detach().to_kind(Kind::Double))))
    }
}

fn score_tensor(scores: &[[f64; 3]], like: &Tensor) -> Tensor {
    let flat: Vec<f64> = scores.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).view([scores.len() as i64, 3]).to_kind(like.kind()).to_device(like.device())
}

impl SmootherDensity for SphereSpectralSmoother {
    /// log rho_t(x) w.r.t. the area measure of S^2: `x: [Q, 3]` -> `[Q]`, dtype and device of `x`.
    /// Errors name `x` (shape, non-finite or off-sphere row), `t`, and `L` with `t` when the truncation
    /// is too coarse. Values below ln([`SphereSpectralSmoother::density_floor`]) are reported as that.
    fn log_density_t(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        check_time(t)?;
        let rows = self.query_rows(x, true)?;
        let (logp, _) = self.evaluate(&rows, t, false)?;
        Ok(Tensor::from_slice(&logp).to_kind(x.kind()).to_device(x.device()))
    }

    /// The tangent score `x: [Q, 3]` -> `[Q, 3]`, dtype and device of `x`; errors as `log_density_t`.
    fn score_at(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        check_time(t)?;
        let rows = self.query_rows(x, true)?;
        let (_, s) = self.evaluate(&rows, t, true)?;
        Ok(score_tensor(&s, x))
    }
}

impl Score for SphereSpectralSmoother {
    /// `x: [B, 3]`, `t: [B]` -> `[B, 3]` tangent vectors, dtype and device of `x`; rows are normalised and
    /// grouped by their time.
    ///
    /// # Panics
    /// On a malformed `x`, a bad time, or a time too small for the degree (the message names `L` and `t`).
    /// The score is 0 where the density is below [`SphereSpectralSmoother::density_floor`].
    fn score(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let run = || -> Result<Tensor> {
            let xd = x.detach().to_kind(Kind::Double).to_device(tch::Device::Cpu);
            Sphere::new(3)?.validate("x", &xd, None)?;
            let s = by_time(&xd, t, |part, ti| {
                let rows = self.query_rows(part, false)?;
                let (_, s) = self.evaluate(&rows, ti, true)?;
                Ok(score_tensor(&s, part))
            })?;
            Ok(s.to_kind(x.kind()).to_device(x.device()))
        };
        run().unwrap_or_else(|e: ScoreError| panic!("SphereSpectralSmoother::score: {e}"))
    }
}

/// The number of coefficients a spectral smoother of degree `degree` stores, (L+1)^2.
pub fn n_coefficients(degree: usize) -> usize {
    n_harmonics(degree)
}
