//! The S^2 heat-kernel smoother in direct form (MATH.md section 5).
//!
//! Brownian motion on S^2 with generator Delta (dX = sqrt(2) dB) started at the empirical law of
//! x_1..x_N has, at time t, the density w.r.t. the area measure
//!
//!   rho_t(x) = (1/(4 pi)) (1/N) sum_i k_t(x, x_i),
//!
//! with k_t the heat kernel of [`crate::heat::sphere`] (a density w.r.t. the uniform probability measure),
//! and the score
//!
//!   grad log rho_t(x) = sum_i grad_x k_t(x, x_i) / sum_i k_t(x, x_i) = P_x(sum_i w_i g_i x_i),
//!
//! where w = softmax_i(log k_t(x, x_i)), g = d log k_t / d cos theta = -(d log k_t/d theta) / sin theta and
//! P_x(v) = v - <x, v> x (the gradient of cos theta = <x, x_i> is P_x(x_i)); a tangent vector.
//!
//! # Evaluation
//!
//! The heat kernel itself is far too costly per (query, data) pair (its exact short-time form is a
//! 28-point fibre integral, microseconds per angle). So for each t the smoother tabulates
//! f = log k_t once, with the exact value and derivative (`log_density_angle_and_derivative`) at every node
//! of a [`super::LogKernelTable`], and every pair then costs a dot product, a table lookup and a cubic
//! Hermite step, with no inverse trigonometric function. The table's variables are functions of the cosine
//! c in which log k_t is smooth: w = 1 - c for angles up to 2 pi/3 (log k_t is analytic in w, its leading
//! part -theta^2/4t has fourth derivatives of order 1/t) and z = sqrt(1 + c) beyond (z is about
//! (pi - theta)/sqrt(2) at the antipode, where log k_t is even in pi - theta and has its one short scale,
//! the caustic of width O(t), resolved by a fine grid of step t/100). Cell counts follow t: 3,072 cells
//! for t >= 0.1, 3,949 at t = 0.01, 14,786 at t = 1e-3, 102,677 at t = 1e-4, about 10^6 at t = 1e-5
//! (built in parallel in 0.01 s, 0.02 s, 0.06 s, 0.3 s and 3 s in a release build). The score is the exact
//! derivative of the interpolated log-density, so the two stay consistent. Tables are cached for the last
//! few times.
//!
//! Accuracy: [`SphereSmoother::interpolation_error`] measures the table's largest error on log k_t at every
//! cell midpoint (where the Hermite error peaks); it bounds the relative error of every kernel value and so
//! of the density. Measured: at most 1.6e-10 for t from 1e-5 to 10 (below 1e-14 for t >= 1), against a
//! target of 1e-8 on the density (`tests/smoothers.rs` prints it). One limit is not the table's: near the
//! antipode of a data point the cosine, with rounding error eps, fixes pi - theta only to about
//! eps/(pi - theta), which moves log k_t by about pi eps / (2t (pi - theta)) however it is evaluated; the
//! density there is e^{-pi^2/4t} times its peak.
//!
//! Two backends ([`DirectBackend`]) evaluate the pairs: a fused host loop in f64 (rayon over queries, two
//! passes over the data per query: log-kernels and their maximum, then the log-sum-exp and the weighted
//! sum), used for CPU queries; and chunked tensor operations on the query's device (cosines of at most
//! [`MAX_PAIRS_PER_CHUNK`] pairs by one matrix product, the table evaluated by gathers, a streaming log-sum-exp
//! over data chunks), used for other devices. They agree to rounding (a test checks it).
//!
//! The per-point methods ([`SphereSmoother::log_density_point`], [`SphereSmoother::score_point`]) sum the
//! exact heat kernel over the data in f64: the reference for the batched path.

use super::{
    by_time, check_time, validate_data, AngularMixture, DirectBackend, LogKernelTable, SmootherDensity, TableCache,
    MANIFOLD_TOL, MAX_PAIRS_PER_CHUNK,
};
use crate::heat::sphere::SphereHeatKernel;
use crate::{Result, Score, ScoreError};
use geom::{Sphere, TensorManifold};
use nalgebra::DVector;
use std::f64::consts::PI;
use std::sync::Arc;
use tch::{Kind, Tensor};

/// The S^2 heat-kernel smoother in direct form: density w.r.t. the area measure, tangent score.
///
/// ```
/// use scores::smoother::sphere::SphereSmoother;
/// use scores::smoother::SmootherDensity;
/// use tch::Tensor;
///
/// let data = Tensor::from_slice(&[0.0f64, 0.0, 1.0, 1.0, 0.0, 0.0]).view([2, 3]);
/// let smoother = SphereSmoother::new(&data).unwrap();
/// let x = Tensor::from_slice(&[0.0f64, 1.0, 0.0]).view([1, 3]);
/// // At large t the density is uniform: 1/(4 pi) w.r.t. area.
/// let logp = smoother.log_density_t(&x, 30.0).unwrap().double_value(&[0]);
/// assert!((logp + (4.0 * std::f64::consts::PI).ln()).abs() < 1e-10);
/// ```
#[derive(Debug, Clone)]
pub struct SphereSmoother {
    mixture: AngularMixture,
    kernel: SphereHeatKernel,
}

impl SphereSmoother {
    /// A smoother over the rows of `data: [N, 3]` (any float dtype and device; copied to the host in f64
    /// and normalised).
    ///
    /// Errors: [`ScoreError::EmptyData`] for N = 0; errors naming `data` for a wrong shape and for the first
    /// row that is non-finite or further than [`MANIFOLD_TOL`] from the sphere.
    pub fn new(data: &Tensor) -> Result<Self> {
        let s2 = Sphere::new(3)?;
        let data = validate_data("data", data, &[3], |d| s2.validate("data", d, Some(MANIFOLD_TOL)))?;
        let n = data.size()[0];
        let rows = super::host_vec(&s2.project_t(&data));
        let mixture = AngularMixture {
            data: rows,
            n,
            d: 3,
            scale: 1.0,
            shift: 0.0,
            max_pairs: MAX_PAIRS_PER_CHUNK,
            backend: DirectBackend::Auto,
            tables: TableCache::default(),
        };
        Ok(SphereSmoother { mixture, kernel: SphereHeatKernel::new(2)? })
    }

    /// The same smoother with at most `pairs` (query, data) pairs per intermediate matrix (default
    /// [`MAX_PAIRS_PER_CHUNK`]; values below 1 count as 1). Results do not depend on it beyond rounding.
    pub fn with_max_pairs_per_chunk(mut self, pairs: i64) -> Self {
        self.mixture.max_pairs = pairs.max(1);
        self
    }

    /// The same smoother evaluating its pairs with `backend` (default [`DirectBackend::Auto`]); the
    /// backends agree to rounding.
    pub fn with_backend(mut self, backend: DirectBackend) -> Self {
        self.mixture.backend = backend;
        self
    }

    /// The number of data points N.
    pub fn n_data(&self) -> i64 {
        self.mixture.n
    }

    /// The (normalised) data, `[N, 3]`, Double, on the CPU.
    pub fn data(&self) -> Tensor {
        super::to_tensor(&self.mixture.data, &[self.mixture.n, 3], tch::Device::Cpu)
    }

    /// The heat kernel (S^2, generator Delta, density w.r.t. the uniform probability measure).
    pub fn kernel(&self) -> &SphereHeatKernel {
        &self.kernel
    }

    /// The interpolation table of log k_t at time `t` (cached); errors naming `t` unless finite and > 0.
    pub fn table(&self, t: f64) -> Result<Arc<LogKernelTable>> {
        check_time(t)?;
        Ok(self.mixture.tables.get_or_build(t, || self.build_table(t)))
    }

    fn build_table(&self, t: f64) -> LogKernelTable {
        LogKernelTable::for_time(t, |a| self.kernel.log_density_angle_and_derivative(a, t).pair())
    }

    /// The table's largest error on log k_t at time `t`, measured against the exact kernel at every cell
    /// midpoint (where the cubic Hermite error peaks): a bound on the relative error of every kernel value
    /// and hence of the density. Costs one kernel evaluation per cell.
    pub fn interpolation_error(&self, t: f64) -> Result<f64> {
        let table = self.table(t)?;
        Ok(table.max_error(|a| self.kernel.log_density_angle(a, t)))
    }

    fn check_queries(&self, x: &Tensor, tol: Option<f64>) -> Result<()> {
        Sphere::new(3)?.validate("x", x, tol)?;
        Ok(())
    }

    /// (log rho `[Q]`, score `[Q, 3]` if asked) for validated queries, Double on any device.
    fn evaluate(&self, x: &Tensor, t: f64, with_score: bool) -> (Tensor, Option<Tensor>) {
        let x = Sphere::new(3).expect("3 >= 2").project_t(x);
        let table = self.mixture.tables.get_or_build(t, || self.build_table(t));
        let (lse, mean) = self.mixture.evaluate(&x, &table, with_score);
        let log_density = lse - (self.n_data() as f64).ln() - (4.0 * PI).ln();
        let score = mean.map(|m| {
            let dot = (&m * &x).sum_dim_intlist([1i64].as_slice(), true, Kind::Double);
            m - dot * &x
        });
        (log_density, score)
    }

    /// Per-point reference (exact heat kernel, f64, a plain sum over the data): log rho_t(x) w.r.t. the
    /// area measure, for a unit vector `x` of length 3. Errors naming `x` (length, non-finite,
    /// off-sphere) or `t`.
    pub fn log_density_point(&self, x: &DVector<f64>, t: f64) -> Result<f64> {
        Ok(self.point_terms(x, t, false)?.0)
    }

    /// Per-point reference: the tangent score sum_i grad_x k_t(x, x_i) / sum_i k_t(x, x_i) with the exact
    /// heat kernel. Errors as [`SphereSmoother::log_density_point`].
    pub fn score_point(&self, x: &DVector<f64>, t: f64) -> Result<DVector<f64>> {
        Ok(self.point_terms(x, t, true)?.1)
    }

    fn point_terms(&self, x: &DVector<f64>, t: f64, with_score: bool) -> Result<(f64, DVector<f64>)> {
        use geom::Manifold;
        check_time(t)?;
        Sphere::new(3)?.check_point("x", x, MANIFOLD_TOL)?;
        let x = x.normalize();
        let rows: Vec<DVector<f64>> = self.mixture.data.chunks_exact(3).map(DVector::from_column_slice).collect();
        let logs: Vec<f64> = rows.iter().map(|y| self.kernel.log_density(&x, y, t)).collect();
        let m = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        let mut score = DVector::zeros(3);
        for (y, l) in rows.iter().zip(&logs) {
            let w = (l - m).exp();
            sum += w;
            if with_score {
                score += self.kernel.score(&x, y, t) * w;
            }
        }
        let log_density = m + sum.ln() - (rows.len() as f64).ln() - (4.0 * PI).ln();
        Ok((log_density, score / sum))
    }
}

impl SmootherDensity for SphereSmoother {
    /// log rho_t(x) w.r.t. the area measure of S^2: `x: [Q, 3]` (unit rows within [`MANIFOLD_TOL`], any
    /// float dtype and device) -> `[Q]`, dtype and device of `x`. Errors name `x` and the row, or `t`.
    fn log_density_t(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        check_time(t)?;
        self.check_queries(x, Some(MANIFOLD_TOL))?;
        let _guard = tch::no_grad_guard();
        let xd = x.detach().to_kind(Kind::Double);
        Ok(self.evaluate(&xd, t, false).0.to_kind(x.kind()))
    }

    /// The tangent score `x: [Q, 3]` -> `[Q, 3]`, dtype and device of `x`; errors as `log_density_t`.
    fn score_at(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        check_time(t)?;
        self.check_queries(x, Some(MANIFOLD_TOL))?;
        let _guard = tch::no_grad_guard();
        let xd = x.detach().to_kind(Kind::Double);
        Ok(self.evaluate(&xd, t, true).1.expect("the score was asked for").to_kind(x.kind()))
    }
}

impl Score for SphereSmoother {
    /// `x: [B, 3]`, `t: [B]` -> `[B, 3]` tangent vectors at x/|x|, dtype and device of `x`; rows are
    /// normalised (not checked for membership) and grouped by their time.
    ///
    /// # Panics
    /// On a malformed or non-finite `x` or a time that is not finite and > 0 (the message names the argument).
    fn score(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let run = || -> Result<Tensor> {
            self.check_queries(x, None)?;
            let _guard = tch::no_grad_guard();
            let xd = x.detach().to_kind(Kind::Double);
            let s = by_time(&xd, t, |rows, ti| Ok(self.evaluate(rows, ti, true).1.expect("the score was asked for")))?;
            Ok(s.to_kind(x.kind()))
        };
        run().unwrap_or_else(|e: ScoreError| panic!("SphereSmoother::score: {e}"))
    }
}
