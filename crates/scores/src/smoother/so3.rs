//! The SO(3) heat-kernel smoother in direct form (MATH.md section 5).
//!
//! Brownian motion on SO(3) with the angle metric <U, V> = tr(U^T V)/2 and generator Delta
//! (dX = sqrt(2) dB; eigenvalues -l(l+1)) started at the empirical law of R_1..R_N has, at time t, the
//! density w.r.t. the Haar *probability* measure
//!
//!   rho_t(R) = (1/N) sum_i k_t(omega(R^T R_i)),
//!
//! with k_t the IGSO(3) kernel of [`crate::heat::so3`] and omega the rotation angle. W.r.t. the Riemannian
//! volume measure of the angle metric (total 8 pi^2) the density is rho_t / (8 pi^2):
//! [`So3Smoother::log_density_volume_t`] subtracts ln(8 pi^2) = 4.3689.
//!
//! The score in the angle metric is
//!
//!   grad log rho_t(R) = sum_i w_i g_i P_R(R_i),   w = softmax_i(log k_t), g = d log k_t / d cos omega,
//!
//! with P_R(V) = R skew(R^T V), because cos omega = (tr(R^T R_i) - 1)/2 has differential <dR, R_i>_F / 2 =
//! <dR, R_i> in the angle metric. It equals sum_i w_i (d log k/d omega)(-log_R(R_i)/omega_i) and is a
//! tangent vector R Omega (Omega skew).
//!
//! Evaluation is the one of [`super::sphere`]: cosines cos omega = (<R, R_i>_F - 1)/2 from Frobenius
//! products, a cubic Hermite table of log k_t per t in functions of the cosine ([`super::LogKernelTable`];
//! measured error at most 3e-10 on log k_t), a fused host loop for CPU queries or chunked tensor operations
//! ([`super::DirectBackend`]). The per-point methods sum the exact kernel over the data.

use super::{
    by_time, check_time, validate_data, AngularMixture, DirectBackend, LogKernelTable, SmootherDensity, TableCache,
    MANIFOLD_TOL, MAX_PAIRS_PER_CHUNK,
};
use crate::heat::so3::So3HeatKernel;
use crate::heat::sphere::KernelForm;
use crate::{Result, Score, ScoreError};
use geom::{Manifold, So3, TensorManifold};
use nalgebra::Matrix3;
use std::f64::consts::PI;
use std::sync::Arc;
use tch::{Kind, Tensor};

/// The SO(3) heat-kernel smoother: density w.r.t. the Haar probability measure, score in the angle metric.
///
/// ```
/// use scores::smoother::so3::So3Smoother;
/// use scores::smoother::SmootherDensity;
/// use tch::{Device, Kind, Tensor};
///
/// let data = Tensor::eye(3, (Kind::Double, Device::Cpu)).unsqueeze(0);
/// let smoother = So3Smoother::new(&data).unwrap();
/// // At large t the law is Haar: log-density 0 w.r.t. the Haar probability measure.
/// let logp = smoother.log_density_t(&data, 30.0).unwrap().double_value(&[0]);
/// assert!(logp.abs() < 1e-10);
/// ```
#[derive(Debug, Clone)]
pub struct So3Smoother {
    mixture: AngularMixture,
    kernel: So3HeatKernel,
}

impl So3Smoother {
    /// A smoother over the rotations `data: [N, 3, 3]` (any float dtype and device; copied to the host in
    /// f64 and projected onto SO(3)).
    ///
    /// Errors: [`ScoreError::EmptyData`] for N = 0; errors naming `data` for a wrong shape and for the first
    /// matrix that is non-finite or further than [`MANIFOLD_TOL`] (Frobenius) from SO(3).
    pub fn new(data: &Tensor) -> Result<Self> {
        let so3 = So3::new();
        let data = validate_data("data", data, &[3, 3], |d| so3.validate("data", d, Some(MANIFOLD_TOL)))?;
        let n = data.size()[0];
        let rows = super::host_vec(&so3.project_t(&data));
        let mixture = AngularMixture {
            data: rows,
            n,
            d: 9,
            scale: 0.5,
            shift: -0.5,
            max_pairs: MAX_PAIRS_PER_CHUNK,
            backend: DirectBackend::Auto,
            tables: TableCache::default(),
        };
        Ok(So3Smoother { mixture, kernel: So3HeatKernel::new() })
    }

    /// The same smoother with at most `pairs` (query, data) pairs per intermediate matrix (default
    /// [`MAX_PAIRS_PER_CHUNK`]; values below 1 count as 1).
    pub fn with_max_pairs_per_chunk(mut self, pairs: i64) -> Self {
        self.mixture.max_pairs = pairs.max(1);
        self
    }

    /// The same smoother evaluating its pairs with `backend` (default [`DirectBackend::Auto`]).
    pub fn with_backend(mut self, backend: DirectBackend) -> Self {
        self.mixture.backend = backend;
        self
    }

    /// The number of data points N.
    pub fn n_data(&self) -> i64 {
        self.mixture.n
    }

    /// The (projected) data, `[N, 3, 3]`, Double, on the CPU.
    pub fn data(&self) -> Tensor {
        super::to_tensor(&self.mixture.data, &[self.mixture.n, 3, 3], tch::Device::Cpu)
    }

    /// The heat kernel (IGSO(3), generator Delta of the angle metric, Haar probability measure).
    pub fn kernel(&self) -> &So3HeatKernel {
        &self.kernel
    }

    /// log k_t(omega) and its derivative, exact.
    fn kernel_pair(&self, omega: f64, t: f64) -> (f64, f64) {
        match self.kernel.log_density_angle_form(omega, t, KernelForm::Auto) {
            Some(v) => v.pair(),
            None => (self.kernel.log_density_angle(omega, t), self.kernel.dlog_density_domega(omega, t)),
        }
    }

    /// The interpolation table of log k_t at time `t` (cached); errors naming `t` unless finite and > 0.
    pub fn table(&self, t: f64) -> Result<Arc<LogKernelTable>> {
        check_time(t)?;
        Ok(self.mixture.tables.get_or_build(t, || LogKernelTable::for_time(t, |a| self.kernel_pair(a, t))))
    }

    /// The table's largest error on log k_t at time `t`, measured against the exact kernel at every cell
    /// midpoint (a bound on the relative error of the density).
    pub fn interpolation_error(&self, t: f64) -> Result<f64> {
        let table = self.table(t)?;
        Ok(table.max_error(|a| self.kernel.log_density_angle(a, t)))
    }

    /// (log rho w.r.t. Haar `[Q]`, score `[Q, 3, 3]` if asked) for validated Double queries `[Q, 3, 3]`.
    fn evaluate(&self, x: &Tensor, t: f64, with_score: bool) -> Result<(Tensor, Option<Tensor>)> {
        let table = self.table(t)?;
        let q = x.size()[0];
        let (lse, mean) = self.mixture.evaluate(&x.reshape([q, 9]), &table, with_score);
        let log_density = lse - (self.n_data() as f64).ln();
        // mean = sum_i w_i (d log k / d<R, R_i>_F) R_i; the angle-metric gradient of <R, R_i>_F is 2 P_R(R_i),
        // and 2 P_R(M) = R (R^T M - M^T R).
        let score = mean.map(|m| {
            let rt_m = x.transpose(1, 2).matmul(&m.reshape([q, 3, 3]));
            x.matmul(&(&rt_m - rt_m.transpose(1, 2)))
        });
        Ok((log_density, score))
    }

    /// log rho_t(R) w.r.t. the Riemannian volume measure of the angle metric (total 8 pi^2): the Haar
    /// log-density minus ln(8 pi^2). `x: [Q, 3, 3]` -> `[Q]`, dtype and device of `x`; errors as
    /// [`SmootherDensity::log_density_t`].
    pub fn log_density_volume_t(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        Ok(self.log_density_t(x, t)? - (8.0 * PI * PI).ln())
    }

    /// Per-point reference (exact kernel, f64, a plain sum over the data): log rho_t(R) w.r.t. the Haar
    /// probability measure. Errors naming `x` (non-finite or off SO(3)) or `t`.
    pub fn log_density_point(&self, x: &Matrix3<f64>, t: f64) -> Result<f64> {
        Ok(self.point_terms(x, t, false)?.0)
    }

    /// Per-point reference: the score sum_i grad_R k_t(R, R_i) / sum_i k_t(R, R_i) in the angle metric,
    /// with the exact kernel. Errors as [`So3Smoother::log_density_point`].
    pub fn score_point(&self, x: &Matrix3<f64>, t: f64) -> Result<Matrix3<f64>> {
        Ok(self.point_terms(x, t, true)?.1)
    }

    fn point_terms(&self, x: &Matrix3<f64>, t: f64, with_score: bool) -> Result<(f64, Matrix3<f64>)> {
        check_time(t)?;
        So3::new().check_point("x", x, MANIFOLD_TOL)?;
        let rows: Vec<Matrix3<f64>> = self.mixture.data.chunks_exact(9).map(Matrix3::from_row_slice).collect();
        let logs: Vec<f64> = rows.iter().map(|q| self.kernel.log_density(x, q, t)).collect();
        let m = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        let mut score = Matrix3::zeros();
        for (q, l) in rows.iter().zip(&logs) {
            let w = (l - m).exp();
            sum += w;
            if with_score {
                score += self.kernel.score(x, q, t) * w;
            }
        }
        Ok((m + sum.ln() - (rows.len() as f64).ln(), score / sum))
    }
}

impl SmootherDensity for So3Smoother {
    /// log rho_t(R) w.r.t. the Haar probability measure (uniform law: 0): `x: [Q, 3, 3]` (rotations within
    /// [`MANIFOLD_TOL`], any float dtype and device) -> `[Q]`, dtype and device of `x`. Errors name `x` and
    /// the row, or `t`.
    fn log_density_t(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        check_time(t)?;
        So3::new().validate("x", x, Some(MANIFOLD_TOL))?;
        let _guard = tch::no_grad_guard();
        Ok(self.evaluate(&x.detach().to_kind(Kind::Double), t, false)?.0.to_kind(x.kind()))
    }

    /// The score in the angle metric, `x: [Q, 3, 3]` -> `[Q, 3, 3]` tangent vectors R Omega, dtype and
    /// device of `x`; errors as `log_density_t`.
    fn score_at(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        check_time(t)?;
        So3::new().validate("x", x, Some(MANIFOLD_TOL))?;
        let _guard = tch::no_grad_guard();
        let s = self.evaluate(&x.detach().to_kind(Kind::Double), t, true)?.1.expect("the score was asked for");
        Ok(s.to_kind(x.kind()))
    }
}

impl Score for So3Smoother {
    /// `x: [B, 3, 3]`, `t: [B]` -> `[B, 3, 3]` tangent vectors at x (angle metric), dtype and device of `x`;
    /// rows are grouped by their time. Queries are used as given (not projected; not checked for
    /// membership).
    ///
    /// # Panics
    /// On a malformed or non-finite `x` or a time that is not finite and > 0 (the message names the argument).
    fn score(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let run = || -> Result<Tensor> {
            So3::new().validate("x", x, None)?;
            let _guard = tch::no_grad_guard();
            let xd = x.detach().to_kind(Kind::Double);
            let s = by_time(&xd, t, |rows, ti| Ok(self.evaluate(rows, ti, true)?.1.expect("the score was asked for")))?;
            Ok(s.to_kind(x.kind()))
        };
        run().unwrap_or_else(|e: ScoreError| panic!("So3Smoother::score: {e}"))
    }
}
