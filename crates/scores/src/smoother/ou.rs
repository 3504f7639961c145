//! The Euclidean Ornstein-Uhlenbeck kernel smoother (MATH.md section 5).
//!
//! The OU process dX = -X dt + sqrt(2) dW is reversible w.r.t. mu = N(0, I) and its transition law from y
//! is N(e^{-t} y, (1 - e^{-2t}) I). Started at the empirical law of x_1..x_N, its law at time t is the
//! Gaussian mixture
//!
//!   rho_t(x) = (1/N) sum_i N(x; a x_i, s^2 I),   a = e^{-t},  s^2 = 1 - e^{-2t} (computed as -expm1(-2t)),
//!
//! a density w.r.t. Lebesgue measure on R^D, and the diffusion kernel smoother
//! grad log mu + sum_i grad_x k_t(x, x_i) / sum_i k_t(x, x_i) is exactly its score
//!
//!   s_t(x) = (a sum_i w_i(x) x_i - x) / s^2,   w_i = softmax_i(-|x - a x_i|^2 / (2 s^2)).
//!
//! Batched evaluation forms |x - a x_i|^2 = |x|^2 - 2a <x, x_i> + a^2 |x_i|^2 with one matrix product per
//! chunk of (query, data) pairs (at most [`super::MAX_PAIRS_PER_CHUNK`] pairs at once) and a streaming
//! log-sum-exp over the data chunks, so memory stays bounded for any N.

use super::{
    by_time, check_time, chunked_lse, host_vec, to_tensor, validate_data, SmootherDensity, MAX_PAIRS_PER_CHUNK,
};
use crate::{Result, Score, ScoreError};
use nalgebra::DVector;
use std::f64::consts::PI;
use tch::{Kind, Tensor};

/// The exact score and log-density of the OU-smoothed empirical law (a Gaussian mixture) on R^D.
///
/// ```
/// use scores::smoother::{ou::OuSmoother, SmootherDensity};
/// use tch::Tensor;
///
/// // One data point at 0: rho_t = N(0, (1 - e^{-2t}) I), whose score is -x / (1 - e^{-2t}).
/// let smoother = OuSmoother::new(&Tensor::zeros([1, 3], (tch::Kind::Double, tch::Device::Cpu))).unwrap();
/// let x = Tensor::from_slice(&[1.0f64, 0.0, 0.0]).view([1, 3]);
/// let s = smoother.score_at(&x, 1.0).unwrap();
/// assert!((s.double_value(&[0, 0]) + 1.0 / (1.0 - (-2.0f64).exp())).abs() < 1e-12);
/// ```
#[derive(Debug, Clone)]
pub struct OuSmoother {
    /// The data, row-major `[N, D]`, on the host.
    data: Vec<f64>,
    n: i64,
    d: i64,
    max_pairs: i64,
}

impl OuSmoother {
    /// A smoother over the rows of `data: [N, D]` (any float dtype and device; copied to the host in f64). Errors: [`ScoreError::EmptyData`] for N = 0, a shape error naming `data` unless 2-d, a
    /// non-finite error naming `data` and the first bad row.
    pub fn new(data: &Tensor) -> Result<Self> {
        let size = data.size();
        if size.len() != 2 {
            return Err(geom::GeomError::Shape {
                arg: "data".into(),
                expected: "[N, D]".into(),
                got: format!("{size:?}"),
            }
            .into());
        }
        let data = validate_data("data", data, &[size[1]], |d| geom::check::check_batch_finite("data", d))?;
        Ok(OuSmoother { data: host_vec(&data), n: size[0], d: size[1], max_pairs: MAX_PAIRS_PER_CHUNK })
    }

    /// The same smoother with at most `pairs` (query, data) pairs per intermediate matrix (default
    /// [`MAX_PAIRS_PER_CHUNK`]; values below 1 count as 1). Results do not depend on it beyond rounding.
    pub fn with_max_pairs_per_chunk(mut self, pairs: i64) -> Self {
        self.max_pairs = pairs.max(1);
        self
    }

    /// The number of data points N.
    pub fn n_data(&self) -> i64 {
        self.n
    }

    /// The dimension D.
    pub fn dim(&self) -> i64 {
        self.d
    }

    /// The data, `[N, D]`, Double, on the CPU.
    pub fn data(&self) -> Tensor {
        to_tensor(&self.data, &[self.n, self.d], tch::Device::Cpu)
    }

    fn check_queries(&self, x: &Tensor) -> Result<()> {
        geom::check::check_batch_shape("x", x, &[self.dim()])?;
        geom::check::check_batch_finite("x", x)?;
        Ok(())
    }

    /// (log rho_t `[Q]`, score `[Q, D]` if asked) for validated Double queries on the data's device.
    fn evaluate(&self, x: &Tensor, t: f64, with_score: bool) -> (Tensor, Option<Tensor>) {
        let a = (-t).exp();
        let s2 = -(-2.0 * t).exp_m1();
        let n = self.n_data();
        let data = to_tensor(&self.data, &[self.n, self.d], x.device());
        let sq_norms = data.square().sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
        // logits_ij = (a/s2) <x, x_i> - (a^2 / (2 s2)) |x_i|^2; the |x|^2 term is added afterwards.
        let xs = x * (a / s2);
        let bias = sq_norms * (-a * a / (2.0 * s2));
        let features = with_score.then(|| data.shallow_clone());
        let (lse, mean) = chunked_lse(&xs, n, self.max_pairs, features.as_ref(), |q, lo, len| {
            let logits = bias.narrow(0, lo, len).unsqueeze(0).addmm(q, &data.narrow(0, lo, len).tr());
            (logits, None)
        });
        let x_sq = x.square().sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
        let d = self.dim() as f64;
        let log_density = lse - x_sq / (2.0 * s2) - 0.5 * d * (2.0 * PI * s2).ln() - (n as f64).ln();
        let score = mean.map(|m| (m * a - x) / s2);
        (log_density, score)
    }

    /// Per-point reference (f64, a plain sum over the data): log rho_t(x) w.r.t. Lebesgue measure.
    /// Errors naming `x` (length or non-finite) or `t`.
    pub fn log_density_point(&self, x: &DVector<f64>, t: f64) -> Result<f64> {
        Ok(self.point_terms(x, t)?.0)
    }

    /// Per-point reference (f64): the score (a sum_i w_i x_i - x) / s^2. Errors as
    /// [`OuSmoother::log_density_point`].
    pub fn score_point(&self, x: &DVector<f64>, t: f64) -> Result<DVector<f64>> {
        Ok(self.point_terms(x, t)?.1)
    }

    fn point_terms(&self, x: &DVector<f64>, t: f64) -> Result<(f64, DVector<f64>)> {
        check_time(t)?;
        let d = self.dim() as usize;
        if x.len() != d {
            return Err(geom::GeomError::Shape {
                arg: "x".into(),
                expected: format!("{d} coordinates"),
                got: format!("{}", x.len()),
            }
            .into());
        }
        geom::check::check_finite("x", x.as_slice())?;
        let data: Vec<DVector<f64>> = self.data.chunks_exact(d).map(DVector::from_column_slice).collect();
        let a = (-t).exp();
        let s2 = -(-2.0 * t).exp_m1();
        let logits: Vec<f64> = data.iter().map(|xi| -(x - xi * a).norm_squared() / (2.0 * s2)).collect();
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        let mut mean = DVector::zeros(d);
        for (xi, l) in data.iter().zip(&logits) {
            let w = (l - m).exp();
            sum += w;
            mean += xi * w;
        }
        mean /= sum;
        let n = data.len() as f64;
        let log_density = m + sum.ln() - 0.5 * d as f64 * (2.0 * PI * s2).ln() - n.ln();
        Ok((log_density, (mean * a - x) / s2))
    }
}

impl SmootherDensity for OuSmoother {
    /// log rho_t(x) w.r.t. Lebesgue measure on R^D: `x: [Q, D]` -> `[Q]`, dtype and device of `x`.
    fn log_density_t(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        check_time(t)?;
        self.check_queries(x)?;
        let _guard = tch::no_grad_guard();
        let xd = x.detach().to_kind(Kind::Double);
        Ok(self.evaluate(&xd, t, false).0.to_kind(x.kind()).to_device(x.device()))
    }

    /// The mixture score: `x: [Q, D]` -> `[Q, D]`, dtype and device of `x`.
    fn score_at(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        check_time(t)?;
        self.check_queries(x)?;
        let _guard = tch::no_grad_guard();
        let xd = x.detach().to_kind(Kind::Double);
        let score = self.evaluate(&xd, t, true).1.expect("the score was asked for");
        Ok(score.to_kind(x.kind()).to_device(x.device()))
    }
}

impl Score for OuSmoother {
    /// `x: [B, D]`, `t: [B]` -> `[B, D]`, dtype and device of `x`; rows are grouped by their time.
    ///
    /// # Panics
    /// On a malformed `x` or a time that is not finite and > 0 (the message names the argument).
    fn score(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let run = || -> Result<Tensor> {
            self.check_queries(x)?;
            let _guard = tch::no_grad_guard();
            let xd = x.detach().to_kind(Kind::Double);
            let s = by_time(&xd, t, |rows, ti| Ok(self.evaluate(rows, ti, true).1.expect("the score was asked for")))?;
            Ok(s.to_kind(x.kind()).to_device(x.device()))
        };
        run().unwrap_or_else(|e: ScoreError| panic!("OuSmoother::score: {e}"))
    }
}
