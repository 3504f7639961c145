//! Geodesic random walks for intrinsic SDEs on a manifold (MATH.md section 3), the sampler of intrinsic
//! scores (heat kernels, kernel smoothers).
//!
//! # The walk
//!
//! For an intrinsic SDE dX = b(X, t) dt + c(t) dB with B a Brownian motion of the manifold, on a monotone
//! sequence of times t_0, t_1, ..., t_N with dt_k = |t_{k+1} - t_k| and z_k an ambient standard Gaussian
//! from libtorch's generator on the state's device (seed it with `tch::manual_seed`):
//!
//!   x_{k+1} = exp_{x_k}( P_{x_k}( b(x_k, t_k) dt_k + c(t_k) sqrt(dt_k) z_k ) ),
//!
//! with P_x the tangent projection and exp the exponential map of a [`TensorManifold`]. Every point stays on
//! the manifold up to the accuracy of `exp_t`. The drift is evaluated at the left end t_k of each step;
//! time may run forwards or backwards, only |dt| enters.
//!
//! The tangent projection of an ambient standard Gaussian is a standard Gaussian for the metric induced by
//! the ambient inner product. A manifold whose metric is `metric_factor` times the induced one (1/2 for
//! `geom::So3`, whose angle metric is half the Frobenius product) needs the noise scaled by
//! 1/sqrt(metric_factor); [`BrownianMotion`] and [`ReverseHeat`] take that factor.
//!
//! # The heat convention
//!
//! As in MATH.md section 0, the forward intrinsic process is the Brownian motion with generator the
//! Laplace-Beltrami operator Delta, dX = sqrt(2) dB (so its heat kernel at time t has variance 2t per
//! dimension). Its time-reversal, run from t = t_start down to t = t_end, is
//!
//!   dY = 2 s(Y, t) |dt| + sqrt(2) dB,   s = grad log p_t (the Riemannian gradient, a tangent vector),
//!
//! which is [`ReverseHeat`]: drift 2 s(x, t), diffusion sqrt(2). The walk starts from (an approximation
//! of) p_{t_start}, for example the uniform law when t_start is large.

use crate::error::check;
use crate::grid::{heat_time_grid, TimeGrid};
use crate::tensor_util::{check_state, ensure_finite, time_like};
use crate::{Progress, Result, SampleError};
use geom::TensorManifold;
use scores::Score;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// An intrinsic SDE dX = b(X, t) dt + c(t) dB on a manifold, in the time direction the walk runs.
pub trait IntrinsicSde {
    /// The drift b(x, t): `x: [B, ..ambient]` -> `[B, ..ambient]`, dtype and device of `x` (projected onto
    /// the tangent space by the walk, so ambient vectors are allowed).
    fn drift(&self, x: &Tensor, t: f64) -> Tensor;
    /// The factor c(t) that multiplies sqrt(dt) times the tangent projection of an ambient standard Gaussian.
    fn diffusion(&self, t: f64) -> f64;
}

/// Brownian motion with generator the Laplace-Beltrami operator: dX = sqrt(2) dB, drift 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BrownianMotion {
    /// The manifold's metric divided by the ambient inner product (1 for an induced metric, 1/2 for SO(3)
    /// with the angle metric).
    pub metric_factor: f64,
}

impl BrownianMotion {
    /// For a manifold with the metric induced by the ambient space.
    pub fn new() -> Self {
        Self { metric_factor: 1.0 }
    }
}

impl Default for BrownianMotion {
    fn default() -> Self {
        Self::new()
    }
}

impl IntrinsicSde for BrownianMotion {
    /// Zeros, `[B, ..ambient]`, dtype and device of `x`.
    fn drift(&self, x: &Tensor, _t: f64) -> Tensor {
        x.zeros_like()
    }
    /// sqrt(2 / metric_factor).
    fn diffusion(&self, _t: f64) -> f64 {
        (2.0 / self.metric_factor).sqrt()
    }
}

/// The time-reversal of [`BrownianMotion`] for the law whose intrinsic score is `score`: drift 2 s(x, t),
/// diffusion sqrt(2) (see the module doc), to be walked on decreasing times.
#[derive(Debug, Clone, Copy)]
pub struct ReverseHeat<'a, S: ?Sized> {
    /// The intrinsic score s(x, t) = grad log p_t(x), a tangent vector at x for the manifold's metric.
    pub score: &'a S,
    /// The manifold's metric divided by the ambient inner product (1 for an induced metric, 1/2 for SO(3)
    /// with the angle metric).
    pub metric_factor: f64,
}

impl<'a, S: Score + ?Sized> ReverseHeat<'a, S> {
    /// For a manifold with the metric induced by the ambient space.
    pub fn new(score: &'a S) -> Self {
        Self { score, metric_factor: 1.0 }
    }
}

impl<S: Score + ?Sized> IntrinsicSde for ReverseHeat<'_, S> {
    /// 2 s(x, t): `x: [B, ..ambient]` -> `[B, ..ambient]`, dtype and device of `x`.
    fn drift(&self, x: &Tensor, t: f64) -> Tensor {
        self.score.score(x, &time_like(t, x)) * 2.0
    }
    /// sqrt(2 / metric_factor).
    fn diffusion(&self, _t: f64) -> f64 {
        (2.0 / self.metric_factor).sqrt()
    }
}

/// The time grid of a reverse-time geodesic random walk: `n_steps` steps from the heat time `t_start`
/// down to `t_end` (see [`crate::grid`]; `log_sigma` is uniform in log t).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeodesicWalkConfig {
    /// Number of steps (>= 1).
    pub n_steps: usize,
    /// The start (largest) heat time (> t_end, finite).
    pub t_start: f64,
    /// The end (smallest) heat time (> 0).
    pub t_end: f64,
    /// The spacing of the grid (default: uniform in t).
    #[serde(default)]
    pub time_grid: TimeGrid,
}

impl GeodesicWalkConfig {
    /// Validates every field; errors name the field (`n_steps`, `t_start`, `t_end`, `time_grid.rho`) and
    /// the allowed range.
    pub fn check(self) -> Result<Self> {
        check::positive_count("n_steps", self.n_steps)?;
        check::positive("t_end", self.t_end)?;
        if !(self.t_start.is_finite() && self.t_start > self.t_end) {
            return Err(SampleError::invalid("t_start", self.t_start, "a finite number > t_end"));
        }
        self.time_grid.check().map_err(|e| e.in_field("time_grid"))?;
        Ok(self)
    }

    /// The `n_steps + 1` decreasing heat times from `t_start` to `t_end`.
    pub fn times(&self) -> Result<Vec<f64>> {
        self.check()?;
        heat_time_grid(self.time_grid, self.n_steps, self.t_start, self.t_end)
    }
}

/// One step of the walk from time `t` with step length `dt >= 0`.
///
/// `x: [B, ..ambient]` on `manifold`, any float dtype, any device; returns the same shape, dtype and
/// device, detached from the autograd graph.
pub fn geodesic_step<M: TensorManifold + ?Sized, D: IntrinsicSde + ?Sized>(
    manifold: &M,
    sde: &D,
    x: &Tensor,
    t: f64,
    dt: f64,
) -> Tensor {
    let v = sde.drift(x, t) * dt + x.randn_like() * (sde.diffusion(t) * dt.sqrt());
    let v = manifold.tangent_project_t(x, &v);
    manifold.exp_t(x, &v).detach()
}

/// Runs the geodesic random walk of the module doc for `sde` on `manifold` over `times` (at least two
/// finite times, strictly monotone in either direction), from `x_init: [B, ..ambient]` (points of the
/// manifold, any float dtype, any device). Returns the final points, same shape, dtype and device.
/// Reports each step to `progress`.
///
/// Errors naming `times` for a bad sequence, naming `x_init` for a wrong shape, dtype or non-finite
/// values, and on non-finite final points.
pub fn geodesic_random_walk<M, D, P>(
    manifold: &M,
    sde: &D,
    x_init: &Tensor,
    times: &[f64],
    progress: &mut P,
) -> Result<Tensor>
where
    M: TensorManifold + ?Sized,
    D: IntrinsicSde + ?Sized,
    P: Progress + ?Sized,
{
    if times.len() < 2 || times.iter().any(|t| !t.is_finite()) {
        return Err(SampleError::invalid("times", format!("{} times", times.len()), "at least 2 finite times"));
    }
    let increasing = times.windows(2).all(|w| w[1] > w[0]);
    let decreasing = times.windows(2).all(|w| w[1] < w[0]);
    if !(increasing || decreasing) {
        return Err(SampleError::invalid("times", "a non-monotone sequence", "a strictly monotone sequence"));
    }
    check_state("x_init", x_init)?;
    manifold.validate("x_init", x_init, None)?;
    let n_steps = times.len() - 1;
    let mut x = x_init.detach();
    for k in 0..n_steps {
        x = geodesic_step(manifold, sde, &x, times[k], (times[k + 1] - times[k]).abs());
        progress.on_step(k, n_steps);
    }
    ensure_finite(|| "geodesic random walk samples".to_string(), &x)?;
    Ok(x)
}
