//! The Hermite spectral score estimator of the Euclidean Ornstein-Uhlenbeck process (MATH.md section 6).
//!
//! # The process and its spectrum
//!
//! The OU process dZ = -Z dt + sqrt(2) dW on R is reversible w.r.t. mu = N(0, 1); its generator
//! L = d^2/dz^2 - z d/dz has the normalised Hermite polynomials h_k = He_k / sqrt(k!) as eigenfunctions,
//! L h_k = -k h_k, orthonormal in L^2(mu), and the semigroup acts as P_t h_k = a^k h_k with a = e^{-t}
//! (Mehler). Started at the data law, the law at time t is z_t = a z_0 + sqrt(1 - a^2) eps, and
//! E[h_k(z_t)] = a^k E[h_k(z_0)]: sample means of h_k over the data give every moment of the noised law.
//!
//! # Which (alpha, sigma) it applies to
//!
//! Any ambient noising x = alpha x_0 + sigma eps is an OU marginal after a rescaling: with
//! v = alpha^2 + sigma^2, z = x / sqrt(v) = a x_0 + sqrt(1 - a^2) eps with a = alpha / sqrt(v). So
//! p_x(x) = v^{-D/2} p_z(x / sqrt(v)) and grad_x log p_x(x) = s_z(x / sqrt(v)) / sqrt(v), with the same data
//! moments E[h_k(x_0)] at every (alpha, sigma).
//! - VP (alpha^2 + sigma^2 = 1): v = 1, z = x and a = alpha_t: the schedule is an OU process run to time
//!   t_OU = -ln alpha_t = B(t) / 2.
//! - VE (alpha = 1): a = 1 / sqrt(1 + sigma^2). The estimator applies exactly (Brownian motion from the data
//!   at variance sigma^2 is the OU marginal at parameter a, scaled by sqrt(1 + sigma^2)); nothing is refused.
//!
//! In both cases the expansion is around N(0, 1) in the units of x_0: data should be roughly standardised
//! (unit scale, near 0), since the series converges slowly (or, for [`HermiteMethod::Expansion`], not at all
//! when the data variance is 2 or more) as a -> 1, that is at small noise.
//!
//! # Per coordinate
//!
//! In R^D the basis is per coordinate, f(z) = sum_j f_j(z_j) with f_j in the span of h_1..h_K(z_j) (D K
//! functions), not the tensor-product basis (C(K + D, D) functions, each needing a mixed moment). The score
//! matching objective of an additive f splits into one objective per coordinate that involves only that
//! coordinate's marginal, so the estimator is the per-coordinate 1-D estimator applied to the marginals: exact
//! (up to sampling and truncation) when the coordinates of the noised law are independent, and otherwise the
//! score of the product of its marginals. The dependence between coordinates is what the network learns.
//!
//! # Two estimators ([`HermiteMethod`])
//!
//! With c_k = E_data[h_k(x_0)] (per coordinate, c_0 = 1) and the score written s_z = -z + f'(z):
//!
//! - [`HermiteMethod::Projection`] (the spectral estimator of MATH.md section 6, the default): f = sum_{n=1}^K
//!   b_n h_n minimises the explicit score-matching objective E_rho_t[|s|^2 + 2 div s] = C + b^T A b - 2 b^T r
//!   with A_nm = E_rho_t[h_n' h_m'] = sqrt(n m) E_rho_t[h_{n-1} h_{m-1}] (expanded by the linearisation
//!   h_p h_q = sum_r sqrt(p! q! (p+q-2r)!) / (r! (p-r)! (q-r)!) h_{p+q-2r} into moments a^i c_i, i <= 2K - 2)
//!   and r_n = -E_rho_t[L h_n] = n a^n c_n, so b = A^{-1} r. A is the Gram matrix of h_n' under the
//!   OU-smoothed empirical law (a Gaussian mixture), hence positive definite. The score is a polynomial of
//!   degree K - 1 plus -z; for Gaussian data it is exact at K >= 2 up to sampling error. Data constrain the
//!   polynomial only where the noised law has mass, so it is used inside a trust region (below) and its
//!   log-density is normalised by quadrature.
//! - [`HermiteMethod::Expansion`] (the kernel mean embedding of MATH.md section 5 in spectral form): the
//!   truncated Mehler series rho_t / mu = g(z) = sum_{k=0}^K a^k c_k h_k(z), which integrates to exactly 1
//!   against mu, and its score -z + g'(z) / g(z).
//!
//! # Shrinkage
//!
//! `shrinkage = w` in [0, 1] replaces c_k by (1 - w) c_k for k >= 1 (James-Stein style, toward the
//! moments of mu, which are 0). This is the same as mixing the empirical law with mu at weight w: the moments
//! stay those of a probability law, A stays positive definite and the expansion still integrates to 1.
//! w = 1 gives the score of mu, -z (that is -x / v in ambient units).
//! [`HermiteScore::james_stein_shrinkage`] suggests a data-driven w (positive-part James-Stein over all the
//! means) and [`HermiteScore::with_shrinkage`] applies another w without a pass over the data.
//!
//! # Numerics
//!
//! - The truncated expansion g can be small or negative where the noised law is small (far from the data):
//!   where g <= [`DENSITY_RATIO_FLOOR`] the score falls back to that of the moment-matched Gaussian
//!   N(a m, a^2 s^2 + 1 - a^2) of the coordinate (m, s^2 the shrunk data mean and variance), and the
//!   log-density to log phi + ln(floor). The fallback is confining and finite everywhere.
//! - The projection's polynomial is fitted where the noised law has mass; beyond it, it extrapolates and
//!   may point away from the data (odd degrees, or a positive leading coefficient: phi e^f is then not even
//!   integrable). So it is used only inside the trust region |z - a m| <= R(a) of each coordinate, with
//!   R(a) = a r + 6 sqrt(1 - a^2), r = max_i |x_0,i - mean| the data radius (and at least |a m| + 6 with
//!   shrinkage, for the N(0, 1) component): six noise standard deviations beyond the farthest data point.
//!   Outside, the score is the moment-matched Gaussian score, and the log-density continues from the
//!   boundary with the Gaussian's log-density, so it is proper and confining (with a kink at the boundary).
//! - Where the Hermite polynomials overflow (|z| beyond about 1e7 at degree 40, far beyond at low degrees)
//!   the score, of either method, falls back to the same Gaussian score: every output is finite.
//! - Evaluation runs on the host in f64, in parallel over rows (rayon) from
//!   [`crate::base::so3::PARALLEL_MIN_ROWS`] rows and serially below (training batches: rayon next to
//!   libtorch's spinning OpenMP threads slows a training step down several times); the weights for each
//!   distinct alpha are computed once per call (a K x K Cholesky solve per coordinate for the projection). Nothing is
//!   differentiable: scores are returned detached, in the dtype and on the device of the query.

use crate::base::so3::PARALLEL_MIN_ROWS;
use crate::base::sphere::{assert_args, assert_batch_args};
use crate::smoother::{host_vec, validate_data};
use crate::{BaseScore, Result, ScoreError};
use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::f64::consts::PI;
use tch::Tensor;

pub use poly::hermite_normalised;
use poly::{cholesky_solve, linearisation};

/// The largest supported degree K.
pub const MAX_HERMITE_DEGREE: usize = 40;

/// Below this value of the truncated density ratio g = rho_t / mu, [`HermiteMethod::Expansion`] falls back
/// to the moment-matched Gaussian score (see the [module documentation](self)).
pub const DENSITY_RATIO_FLOOR: f64 = 1e-10;

/// Number of trapezoid nodes of the projection's normalising constant.
const QUADRATURE_NODES: usize = 8001;
/// Noise standard deviations beyond the data radius at which the projection's trust region ends.
const TRUST_NOISE_SDS: f64 = 6.0;

/// Which closed-form estimator [`HermiteScore`] evaluates (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HermiteMethod {
    /// The score-matching projection onto gradients of h_1..h_K (MATH.md section 6); needs moments up to
    /// degree 2K - 2.
    #[default]
    Projection,
    /// The truncated Mehler expansion of the density ratio and its log-derivative (MATH.md section 5).
    Expansion,
}

/// Hyper-parameters of [`HermiteScore`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HermiteConfig {
    /// The degree K, in 1..=[`MAX_HERMITE_DEGREE`] (2 already makes the projection exact for Gaussian data).
    pub degree: usize,
    /// Weight w in [0, 1] of the shrinkage of the sample means toward 0 (none: w = 0).
    #[serde(default)]
    pub shrinkage: Option<f64>,
    /// The estimator.
    #[serde(default)]
    pub method: HermiteMethod,
}

impl HermiteConfig {
    /// Degree `degree`, no shrinkage, the projection.
    pub fn new(degree: usize) -> Self {
        HermiteConfig { degree, shrinkage: None, method: HermiteMethod::Projection }
    }

    /// Validates the fields; errors name the field and the allowed range.
    pub fn check(self) -> Result<Self> {
        if !(1..=MAX_HERMITE_DEGREE).contains(&self.degree) {
            return Err(ScoreError::invalid("degree", self.degree, &format!("a degree in 1..={MAX_HERMITE_DEGREE}")));
        }
        if let Some(w) = self.shrinkage {
            if !(0.0..=1.0).contains(&w) {
                return Err(ScoreError::invalid("shrinkage", w, "a weight in [0, 1]"));
            }
        }
        Ok(self)
    }
}

/// The OU parameters of a noise level: (a, sqrt(v)) with v = alpha^2 + sigma^2 and a = alpha / sqrt(v), so
/// that x = alpha x_0 + sigma eps is sqrt(v) times the OU marginal a x_0 + sqrt(1 - a^2) eps.
pub fn ou_parameter(alpha: f64, sigma: f64) -> (f64, f64) {
    let sv = alpha.hypot(sigma);
    (alpha / sv, sv)
}

/// The closed-form Hermite score estimator, per coordinate (see the [module documentation](self)).
///
/// Keeps the dimension D and the D x (M + 1) shrunk sample means c_k = E_data[h_k(x_0)], k <= M, with
/// M = max(2K - 2, 2) for the projection and max(K, 2) for the expansion.
///
/// ```
/// use scores::oism::hermite::{HermiteConfig, HermiteMethod, HermiteScore};
/// use scores::BaseScore;
/// use tch::Tensor;
///
/// let data = Tensor::from_slice(&[-1.0f64, 0.0, 1.0, 0.5]).view([4, 1]);
/// let config = HermiteConfig { method: HermiteMethod::Expansion, ..HermiteConfig::new(6) };
/// let est = HermiteScore::fit_config(&data, config).unwrap();
/// assert_eq!(est.dim(), 1);
/// // Full shrinkage gives the N(0, 1) reference: x ~ N(0, 1) under VP noise, score -x.
/// let mu = HermiteScore::fit(&data, 6, Some(1.0)).unwrap();
/// let x = nalgebra::DVector::from_vec(vec![0.7]);
/// assert!((mu.base_score(&x, 0.6, 0.8)[0] + 0.7).abs() < 1e-12);
/// // Shrinkage outside [0, 1] is an error naming the field.
/// assert!(HermiteScore::fit(&data, 6, Some(1.5)).unwrap_err().to_string().contains("`shrinkage`"));
/// ```
#[derive(Debug, Clone)]
pub struct HermiteScore {
    config: HermiteConfig,
    dim: usize,
    n_data: i64,
    n_moments: usize,
    /// Shrunk sample means, `[dim][n_moments]` row-major.
    moments: Vec<f64>,
    /// Unshrunk sample means E_data[h_k], and E_data[h_k^2], same layout.
    raw: Vec<f64>,
    second: Vec<f64>,
    /// max_i |x_0,ij - mean_j| per coordinate (the unshrunk mean).
    radius: Vec<f64>,
    /// For the projection: `lin[p * K + q]` lists (i, coefficient) of h_p h_q = sum coefficient h_i.
    lin: Vec<Vec<(usize, f64)>>,
}

impl HermiteScore {
    /// [`HermiteScore::fit_config`] with the projection, degree `degree` and shrinkage weight `shrinkage`.
    pub fn fit(data: &Tensor, degree: usize, shrinkage: Option<f64>) -> Result<Self> {
        Self::fit_config(data, HermiteConfig { shrinkage, ..HermiteConfig::new(degree) })
    }

    /// One O(N D M) pass over `data: [N, D]` (any float dtype and device; read in f64 on the host).
    ///
    /// Errors: the config's own errors; [`ScoreError::EmptyData`] for N = 0; errors naming `data` unless it is
    /// 2-d with D >= 1, or for its first non-finite row.
    pub fn fit_config(data: &Tensor, config: HermiteConfig) -> Result<Self> {
        let config = config.check()?;
        let size = data.size();
        if size.len() != 2 || size[1] < 1 {
            return Err(geom::GeomError::Shape {
                arg: "data".into(),
                expected: "[N, D], D >= 1".into(),
                got: format!("{size:?}"),
            }
            .into());
        }
        let data = validate_data("data", data, &[size[1]], |d| geom::check::check_batch_finite("data", d))?;
        let dim = size[1] as usize;
        let rows = host_vec(&data);
        let k = config.degree;
        let m = match config.method {
            HermiteMethod::Projection => (2 * k).saturating_sub(2).max(2),
            HermiteMethod::Expansion => k.max(2),
        };
        let n_moments = m + 1;
        // Partial sums per chunk, collected in order and added serially: reproducible whatever the threads.
        let partial: Vec<Vec<f64>> = rows
            .par_chunks(dim * 512)
            .map(|chunk| {
                // Sums of h_k, then of h_k^2 (for the sampling variances of the means).
                let mut acc = vec![0.0; 2 * dim * n_moments];
                let mut h = vec![0.0; n_moments];
                for row in chunk.chunks_exact(dim) {
                    for (j, &xj) in row.iter().enumerate() {
                        hermite_normalised(xj, &mut h);
                        let (sum, sq) = acc.split_at_mut(dim * n_moments);
                        sum[j * n_moments..(j + 1) * n_moments].iter_mut().zip(&h).for_each(|(a, v)| *a += v);
                        sq[j * n_moments..(j + 1) * n_moments].iter_mut().zip(&h).for_each(|(a, v)| *a += v * v);
                    }
                }
                acc
            })
            .collect();
        let mut raw = vec![0.0; 2 * dim * n_moments];
        for p in &partial {
            raw.iter_mut().zip(p).for_each(|(a, v)| *a += v);
        }
        let n = (rows.len() / dim) as f64;
        raw.iter_mut().for_each(|c| *c /= n);
        let second = raw.split_off(dim * n_moments);
        let mut radius = vec![0.0f64; dim];
        for row in rows.chunks_exact(dim) {
            for j in 0..dim {
                radius[j] = radius[j].max((row[j] - raw[j * n_moments + 1]).abs());
            }
        }
        let lin = match config.method {
            HermiteMethod::Projection => linearisation(k),
            HermiteMethod::Expansion => Vec::new(),
        };
        let moments = shrink(&raw, n_moments, config.shrinkage);
        Ok(HermiteScore { config, dim, n_data: n as i64, n_moments, moments, raw, second, radius, lin })
    }

    /// The same estimator with another shrinkage weight (no pass over the data); errors naming `shrinkage`
    /// unless it is in [0, 1].
    pub fn with_shrinkage(&self, shrinkage: Option<f64>) -> Result<Self> {
        let config = HermiteConfig { shrinkage, ..self.config }.check()?;
        Ok(HermiteScore { config, moments: shrink(&self.raw, self.n_moments, shrinkage), ..self.clone() })
    }

    /// A data-driven shrinkage weight: the positive-part James-Stein factor for the p = D M sample means
    /// c_k (k = 1..=M, all coordinates) shrunk toward 0, w = min(1, (p - 2) v / sum c_k^2), with v the mean
    /// over k and coordinates of the estimated sampling variances (E_data[h_k^2] - c_k^2) / N (a common
    /// heteroscedastic simplification; James-Stein proper assumes one known variance). 0 when p < 3. Use
    /// it as `est.with_shrinkage(Some(est.james_stein_shrinkage()))`.
    pub fn james_stein_shrinkage(&self) -> f64 {
        let m = self.n_moments;
        let p = self.dim * (m - 1);
        if p < 3 {
            return 0.0;
        }
        let (mut norm2, mut var) = (0.0, 0.0);
        for j in 0..self.dim {
            for k in 1..m {
                let c = self.raw[j * m + k];
                norm2 += c * c;
                var += (self.second[j * m + k] - c * c).max(0.0) / self.n_data as f64;
            }
        }
        let var = var / p as f64;
        if norm2 <= 0.0 {
            return 1.0;
        }
        ((p - 2) as f64 * var / norm2).min(1.0)
    }

    /// The configuration.
    pub fn config(&self) -> HermiteConfig {
        self.config
    }

    /// The dimension D.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of data points the moments were computed from.
    pub fn n_data(&self) -> i64 {
        self.n_data
    }

    /// The shrunk sample means c_k = (1 - w) E_data[h_k(x_0)] (c_0 = 1) of coordinate `j`, k = 0..=M.
    /// Panics naming `j` unless j < D.
    pub fn moments(&self, j: usize) -> &[f64] {
        assert!(j < self.dim, "HermiteScore::moments: argument `j` = {j} must be < D = {}", self.dim);
        &self.moments[j * self.n_moments..(j + 1) * self.n_moments]
    }

    /// The per-coordinate weights at OU parameter `a` in [0, 1], `[D][K + 1]` row-major: for the expansion
    /// a^k c_k (the coefficients of g on h_k), for the projection b_k (the coefficients of f on h_k, b_0 = 0).
    pub fn weights(&self, a: f64) -> Vec<f64> {
        let k1 = self.config.degree + 1;
        let params = self.params(a, &mut self.scratch());
        (0..self.dim).flat_map(|j| params[j * (k1 + 4)..j * (k1 + 4) + k1].to_vec()).collect()
    }

    /// Scratch for [`HermiteScore::params_into`].
    fn scratch(&self) -> Vec<f64> {
        let k = self.config.degree;
        vec![0.0; self.n_moments + k * k + k]
    }

    /// Everything a query at OU parameter `a` needs, per coordinate: `[D][K + 5]` with the weights w_0..w_K,
    /// then the trust region's centre and half-width, then the moment-matched Gaussian's mean and variance
    /// (z units).
    fn params(&self, a: f64, scratch: &mut [f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.dim * (self.config.degree + 5)];
        self.params_into(a, &mut out, scratch);
        out
    }

    fn params_into(&self, a: f64, out: &mut [f64], scratch: &mut [f64]) {
        let stride = self.config.degree + 5;
        for j in 0..self.dim {
            let o = &mut out[j * stride..(j + 1) * stride];
            self.coordinate_weights(j, a, &mut o[..stride - 4], scratch);
            let (mean, var) = self.gaussian(j, a);
            o[stride - 4] = a * self.moments(j)[1];
            o[stride - 3] = self.trust_radius(j, a);
            o[stride - 2] = mean;
            o[stride - 1] = var;
        }
    }

    fn coordinate_weights(&self, j: usize, a: f64, out: &mut [f64], scratch: &mut [f64]) {
        let c = self.moments(j);
        let k = self.config.degree;
        let (ac, rest) = scratch.split_at_mut(self.n_moments);
        let mut power = 1.0;
        for (aci, ci) in ac.iter_mut().zip(c) {
            *aci = power * ci;
            power *= a;
        }
        match self.config.method {
            HermiteMethod::Expansion => out.copy_from_slice(&ac[..=k]),
            HermiteMethod::Projection => {
                let (g, r) = rest.split_at_mut(k * k);
                // The Gram matrix (lower triangle) and the right-hand side.
                for p in 0..k {
                    for q in 0..=p {
                        let e: f64 = self.lin[p * k + q].iter().map(|&(i, l)| l * ac[i]).sum();
                        g[p * k + q] = e * (((p + 1) * (q + 1)) as f64).sqrt();
                    }
                    r[p] = (p + 1) as f64 * ac[p + 1];
                }
                out[0] = 0.0;
                if !cholesky_solve(k, g, r) {
                    // Not numerically positive definite (very high degree): a pivoted LU on the same system.
                    let gram = DMatrix::from_fn(k, k, |p, q| {
                        let (p, q) = (p.max(q), p.min(q));
                        let e: f64 = self.lin[p * k + q].iter().map(|&(i, l)| l * ac[i]).sum();
                        e * (((p + 1) * (q + 1)) as f64).sqrt()
                    });
                    let rhs = DVector::from_fn(k, |n, _| (n + 1) as f64 * ac[n + 1]);
                    let b = gram.lu().solve(&rhs).unwrap_or_else(|| DVector::zeros(k));
                    r.copy_from_slice(b.as_slice());
                }
                out[1..].copy_from_slice(r);
            }
        }
    }

    /// The half-width R(a) of the projection's trust region of coordinate `j`, in z units (see the
    /// [module documentation](self)); it is centred at a m_j with m_j the shrunk mean.
    pub fn trust_radius(&self, j: usize, a: f64) -> f64 {
        let noise = TRUST_NOISE_SDS * (1.0 - a * a).max(0.0).sqrt();
        let r = a * self.radius[j] + noise;
        if self.config.shrinkage.unwrap_or(0.0) > 0.0 {
            r.max((a * self.moments(j)[1]).abs() + TRUST_NOISE_SDS)
        } else {
            r
        }
    }

    /// The moment-matched Gaussian of coordinate `j` at OU parameter `a`: (mean, variance) in z units.
    fn gaussian(&self, j: usize, a: f64) -> (f64, f64) {
        let c = self.moments(j);
        let var = (c[0] + std::f64::consts::SQRT_2 * c[2] - c[1] * c[1]).max(0.0);
        (a * c[1], a * a * var + (1.0 - a * a))
    }

    /// The z-space score of one coordinate given its parameters `par` (`[K + 5]`, see
    /// [`HermiteScore::params`]); `h` is scratch of length K + 1.
    fn coordinate_score(&self, par: &[f64], z: f64, h: &mut [f64]) -> f64 {
        let k1 = par.len() - 4;
        let (w, rest) = par.split_at(k1);
        let (centre, radius, mean, var) = (rest[0], rest[1], rest[2], rest[3]);
        let s = match self.config.method {
            HermiteMethod::Projection if (z - centre).abs() > radius => f64::NAN,
            method => {
                hermite_normalised(z, h);
                let d: f64 = (1..k1).map(|k| w[k] * (k as f64).sqrt() * h[k - 1]).sum();
                if method == HermiteMethod::Projection {
                    -z + d
                } else {
                    let g: f64 = w.iter().zip(h.iter()).map(|(wk, hk)| wk * hk).sum();
                    if g > DENSITY_RATIO_FLOOR && g.is_finite() {
                        -z + d / g
                    } else {
                        f64::NAN
                    }
                }
            }
        };
        if s.is_finite() {
            s
        } else {
            -(z - mean) / var
        }
    }

    /// log p_z of coordinate `j` at z, w.r.t. Lebesgue measure on R.
    fn coordinate_log_density(&self, j: usize, a: f64, w: &[f64], z: f64, h: &mut [f64]) -> f64 {
        let log_phi = -0.5 * z * z - 0.5 * (2.0 * PI).ln();
        let poly = |z: f64, h: &mut [f64]| -> f64 {
            hermite_normalised(z, h);
            w.iter().zip(h.iter()).map(|(wk, hk)| wk * hk).sum()
        };
        match self.config.method {
            HermiteMethod::Expansion => {
                let g = poly(z, h);
                log_phi + if g > DENSITY_RATIO_FLOOR && g.is_finite() { g.ln() } else { DENSITY_RATIO_FLOOR.ln() }
            }
            HermiteMethod::Projection => {
                // Unnormalised log-density: -z^2/2 + f(z) inside the trust region, continued outside by the
                // moment-matched Gaussian's log-density from the nearer boundary.
                let centre = a * self.moments(j)[1];
                let radius = self.trust_radius(j, a);
                let (mean, var) = self.gaussian(j, a);
                let gauss = |z: f64| -(z - mean) * (z - mean) / (2.0 * var);
                let (lo, hi) = (centre - radius, centre + radius);
                let (u_lo, u_hi) = (-0.5 * lo * lo + poly(lo, h), -0.5 * hi * hi + poly(hi, h));
                let mut u = |z: f64| -> f64 {
                    if z < lo {
                        u_lo + gauss(z) - gauss(lo)
                    } else if z > hi {
                        u_hi + gauss(z) - gauss(hi)
                    } else {
                        -0.5 * z * z + poly(z, h)
                    }
                };
                // log of the normaliser by the trapezoid rule over the trust region and 12 Gaussian standard
                // deviations beyond it, in log space.
                let margin = 12.0 * var.sqrt();
                let (q_lo, q_hi) = (lo - margin, hi + margin);
                let dz = (q_hi - q_lo) / (QUADRATURE_NODES - 1) as f64;
                let logs: Vec<f64> = (0..QUADRATURE_NODES).map(|i| u(q_lo + i as f64 * dz)).collect();
                let max = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = logs
                    .iter()
                    .enumerate()
                    .map(|(i, l)| if i == 0 || i == QUADRATURE_NODES - 1 { 0.5 } else { 1.0 } * (l - max).exp())
                    .sum();
                u(z) - (max + (sum * dz).ln())
            }
        }
    }

    /// The score at one row (ambient units), given the parameters for its a.
    fn row_score(&self, sv: f64, params: &[f64], x: &[f64], out: &mut [f64], h: &mut [f64]) {
        let stride = self.config.degree + 5;
        for j in 0..self.dim {
            out[j] = self.coordinate_score(&params[j * stride..(j + 1) * stride], x[j] / sv, h) / sv;
        }
    }

    /// Scores of host rows `x` (`[B][D]` flat) with per-row alpha and sigma. Parameters are computed once
    /// per distinct alpha when rows share them, per row otherwise.
    fn scores_host(&self, x: &[f64], alpha: &[f64], sigma: &[f64]) -> Vec<f64> {
        let ou: Vec<(f64, f64)> = alpha.iter().zip(sigma).map(|(&al, &si)| ou_parameter(al, si)).collect();
        let mut slot: HashMap<u64, usize> = HashMap::new();
        let mut distinct = Vec::new();
        let row_slot: Vec<usize> = ou
            .iter()
            .map(|&(a, _)| {
                *slot.entry(a.to_bits()).or_insert_with(|| {
                    distinct.push(a);
                    distinct.len() - 1
                })
            })
            .collect();
        let (d, k1) = (self.dim, self.config.degree + 1);
        let mut out = vec![0.0; x.len()];
        let serial = ou.len() < PARALLEL_MIN_ROWS;
        if 2 * distinct.len() <= ou.len() {
            let table: Vec<Vec<f64>> = if serial {
                let mut scratch = self.scratch();
                distinct.iter().map(|&a| self.params(a, &mut scratch)).collect()
            } else {
                distinct.par_iter().map_init(|| self.scratch(), |scratch, &a| self.params(a, scratch)).collect()
            };
            let row = |h: &mut Vec<f64>, (i, (o, xi)): (usize, (&mut [f64], &[f64]))| {
                self.row_score(ou[i].1, &table[row_slot[i]], xi, o, h)
            };
            if serial {
                let mut h = vec![0.0; k1];
                out.chunks_mut(d).zip(x.chunks(d)).enumerate().for_each(|r| row(&mut h, r));
            } else {
                out.par_chunks_mut(d).zip(x.par_chunks(d)).enumerate().for_each_init(|| vec![0.0; k1], row);
            }
        } else {
            type Scratch = (Vec<f64>, Vec<f64>, Vec<f64>);
            let init = || (vec![0.0; k1], self.scratch(), vec![0.0; d * (k1 + 4)]);
            let row = |(h, scratch, params): &mut Scratch, (i, (o, xi)): (usize, (&mut [f64], &[f64]))| {
                let (a, sv) = ou[i];
                self.params_into(a, params, scratch);
                self.row_score(sv, params, xi, o, h);
            };
            if serial {
                let mut sc = init();
                out.chunks_mut(d).zip(x.chunks(d)).enumerate().for_each(|r| row(&mut sc, r));
            } else {
                out.par_chunks_mut(d).zip(x.par_chunks(d)).enumerate().for_each_init(init, row);
            }
        }
        out
    }

    /// The score at one noise level: `x: [B, D]` (any float dtype and device), scalar `alpha` >= 0 and
    /// `sigma` > 0 -> `[B, D]` in the dtype and on the device of `x`, detached.
    ///
    /// Errors naming `x` (shape or first non-finite row), `alpha` or `sigma`.
    pub fn score_at(&self, x: &Tensor, alpha: f64, sigma: f64) -> Result<Tensor> {
        geom::check::check_batch_shape("x", x, &[self.dim as i64])?;
        geom::check::check_batch_finite("x", x)?;
        if !(alpha.is_finite() && alpha >= 0.0) {
            return Err(ScoreError::invalid("alpha", alpha, "a finite number >= 0"));
        }
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(ScoreError::invalid("sigma", sigma, "a finite number > 0"));
        }
        let b = x.size()[0] as usize;
        Ok(self.evaluate_t(x, &vec![alpha; b], &vec![sigma; b]))
    }

    fn evaluate_t(&self, x: &Tensor, alpha: &[f64], sigma: &[f64]) -> Tensor {
        let _guard = tch::no_grad_guard();
        let rows = host_vec(x);
        let s = self.scores_host(&rows, alpha, sigma);
        Tensor::from_slice(&s).view([alpha.len() as i64, self.dim as i64]).to_kind(x.kind()).to_device(x.device())
    }
}

/// The sample means `raw` (`[D][n_moments]`) with every entry but c_0 scaled by 1 - w.
fn shrink(raw: &[f64], n_moments: usize, shrinkage: Option<f64>) -> Vec<f64> {
    let keep = 1.0 - shrinkage.unwrap_or(0.0);
    raw.iter().enumerate().map(|(idx, c)| if idx % n_moments == 0 { *c } else { c * keep }).collect()
}

impl BaseScore for HermiteScore {
    type Point = nalgebra::DVector<f64>;

    /// E[x_0 | x] by Tweedie's formula, (x + sigma^2 s(x)) / alpha; the (shrunk) data mean c_1 when
    /// alpha = 0. Panics naming the argument on a wrong length, a non-finite `x`, a negative or non-finite
    /// `alpha`, or `sigma` not finite and > 0.
    fn posterior_mean(&self, x: &Self::Point, alpha: f64, sigma: f64) -> Self::Point {
        assert_args("HermiteScore::posterior_mean", x, self.dim, alpha, sigma);
        if alpha == 0.0 {
            return DVector::from_fn(self.dim, |j, _| self.moments(j)[1]);
        }
        (x + self.base_score(x, alpha, sigma) * (sigma * sigma)) / alpha
    }

    /// The estimated score of the noised law at x (ambient units); panics as
    /// [`HermiteScore::posterior_mean`] does.
    fn base_score(&self, x: &Self::Point, alpha: f64, sigma: f64) -> Self::Point {
        assert_args("HermiteScore::base_score", x, self.dim, alpha, sigma);
        let (a, sv) = ou_parameter(alpha, sigma);
        let params = self.params(a, &mut self.scratch());
        let mut out = vec![0.0; self.dim];
        let mut h = vec![0.0; self.config.degree + 1];
        self.row_score(sv, &params, x.as_slice(), &mut out, &mut h);
        DVector::from_vec(out)
    }

    /// The estimated log-density of the noised law w.r.t. Lebesgue measure on R^D, sum over coordinates of
    /// log p_z(x_j / sqrt(v)) minus (D/2) ln v. Expansion: log phi + ln g, with g floored at
    /// [`DENSITY_RATIO_FLOOR`] (so it integrates to 1 up to the floored mass). Projection: log phi + f - log Z
    /// inside the trust region and its Gaussian continuation outside (see the [module documentation](self)),
    /// Z by the trapezoid rule (8001 nodes, O(K) each: about 10^5 operations per coordinate and call).
    /// Panics as [`HermiteScore::posterior_mean`] does.
    fn log_density(&self, x: &Self::Point, alpha: f64, sigma: f64) -> f64 {
        assert_args("HermiteScore::log_density", x, self.dim, alpha, sigma);
        let (a, sv) = ou_parameter(alpha, sigma);
        let w = self.weights(a);
        let k1 = self.config.degree + 1;
        let mut h = vec![0.0; k1];
        (0..self.dim)
            .map(|j| self.coordinate_log_density(j, a, &w[j * k1..(j + 1) * k1], x[j] / sv, &mut h))
            .sum::<f64>()
            - self.dim as f64 * sv.ln()
    }

    /// `x: [B, D]`, `alpha, sigma: [B]` (float, same device) -> `[B, D]` in the dtype and on the device of `x`,
    /// detached (computed on the host in f64). Panics naming the argument on a shape mismatch; values are
    /// not checked (non-finite rows give the Gaussian fallback or NaN).
    fn base_score_t(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        assert_batch_args("HermiteScore::base_score_t", x, &[self.dim as i64], alpha, sigma);
        let (al, si) = (host_vec(alpha), host_vec(sigma));
        self.evaluate_t(x, &al, &si)
    }
}

mod poly;
#[cfg(test)]
mod tests;
