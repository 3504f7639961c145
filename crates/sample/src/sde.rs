//! The reverse-time SDE and the probability-flow ODE of a noise schedule, for any [`Score`]
//! (MATH.md sections 0 and 3), and the pieces every solver shares.
//!
//! The forward SDE is dx = f(t) x dt + g(t) dW ([`Schedule::drift_coef`], [`Schedule::g2`]). Its
//! time-reversal (Anderson 1982), run from t = 1 down to t = t_end, is
//!
//!   dx = [f(t) x - g(t)^2 s(x, t)] dt + g(t) dW_bar,
//!
//! with dt < 0 and W_bar a Brownian motion in reverse time; the probability-flow ODE with the same
//! marginals is dx/dt = f(t) x - g(t)^2 s(x, t) / 2.
//!
//! Every solver detaches its state after each step: the samplers are not differentiable, and a score that
//! uses autograd internally (the gradient of a log-density) still works.

use crate::error::check;
use crate::grid::{time_grid, TimeGrid};
use crate::tensor_util::time_like;
use crate::Result;
use scores::{Schedule, Score};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// What to do at t_end after the last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FinalDenoise {
    /// Return the state at t_end as it is.
    #[default]
    Off,
    /// Return Tweedie's posterior mean E[x_0 | x_t_end] = (x + sigma^2 s(x, t_end)) / alpha at t = t_end
    /// ([`tweedie_denoise`]); one more score evaluation. This removes the residual noise of scale
    /// sigma_{t_end}, at the price of a slight contraction of the law towards its local means.
    Tweedie,
}

/// The configuration of the fixed-step solvers (Euler-Maruyama, the predictor of the predictor-corrector
/// and Heun): `n_steps` steps on a [`TimeGrid`] from t = 1 down to `t_end`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedStepConfig {
    /// Number of steps (>= 1).
    pub n_steps: usize,
    /// The end time, in the open interval (0, 1): the score is usually singular at t = 0.
    pub t_end: f64,
    /// The spacing of the grid (default: uniform in t).
    #[serde(default)]
    pub time_grid: TimeGrid,
    /// The last step (default: none).
    #[serde(default)]
    pub final_denoise: FinalDenoise,
}

impl Default for FixedStepConfig {
    /// 1000 uniform steps down to t_end = 1e-3, no final denoising.
    fn default() -> Self {
        Self { n_steps: 1000, t_end: 1e-3, time_grid: TimeGrid::UniformT, final_denoise: FinalDenoise::Off }
    }
}

impl FixedStepConfig {
    /// Validates every field; errors name the field (`n_steps`, `t_end`, `time_grid.rho`) and the range.
    pub fn check(self) -> Result<Self> {
        check::positive_count("n_steps", self.n_steps)?;
        check::t_end("t_end", self.t_end)?;
        self.time_grid.check().map_err(|e| e.in_field("time_grid"))?;
        Ok(self)
    }

    /// The `n_steps + 1` decreasing times of the grid, from 1 to `t_end`.
    pub fn times(&self, schedule: &Schedule) -> Result<Vec<f64>> {
        self.check()?;
        time_grid(schedule, self.time_grid, self.n_steps, self.t_end)
    }
}

/// The result of a sampler.
#[derive(Debug)]
pub struct SampleOutput {
    /// The samples, shape, dtype and device of the initial state.
    pub x: Tensor,
    /// The number of score evaluations (each on the whole batch).
    pub n_score_evals: usize,
    /// The number of (accepted) steps.
    pub n_steps: usize,
    /// The number of rejected steps (adaptive solvers; 0 otherwise).
    pub n_rejected: usize,
}

/// The drift of the reverse-time SDE written in forward time, f(t) x - g(t)^2 s(x, t).
///
/// `x: [B, ..ambient]` of any float dtype on any device; returns the same shape, dtype and device.
pub fn reverse_sde_drift<S: Score + ?Sized>(score: &S, schedule: &Schedule, x: &Tensor, t: f64) -> Tensor {
    let s = score.score(x, &time_like(t, x));
    x * schedule.drift_coef(t) - s * schedule.g2(t)
}

/// The velocity of the probability-flow ODE, dx/dt = f(t) x - g(t)^2 s(x, t) / 2.
///
/// `x: [B, ..ambient]` of any float dtype on any device; returns the same shape, dtype and device.
pub fn probability_flow_drift<S: Score + ?Sized>(score: &S, schedule: &Schedule, x: &Tensor, t: f64) -> Tensor {
    let s = score.score(x, &time_like(t, x));
    x * schedule.drift_coef(t) - s * (0.5 * schedule.g2(t))
}

/// Tweedie's formula: the posterior mean E[x_0 | x_t = x] = (x + sigma_t^2 s(x, t)) / alpha_t.
///
/// `x: [B, ..ambient]` of any float dtype on any device; returns the same shape, dtype and device.
pub fn tweedie_denoise<S: Score + ?Sized>(score: &S, schedule: &Schedule, x: &Tensor, t: f64) -> Tensor {
    let s = score.score(x, &time_like(t, x));
    let sigma = schedule.sigma(t);
    (x + s * (sigma * sigma)) / schedule.alpha(t)
}

/// Applies `final_denoise` at `t_end`; returns the state and the number of score evaluations spent.
pub(crate) fn finish<S: Score + ?Sized>(
    score: &S,
    schedule: &Schedule,
    x: Tensor,
    t_end: f64,
    final_denoise: FinalDenoise,
) -> (Tensor, usize) {
    match final_denoise {
        FinalDenoise::Off => (x, 0),
        FinalDenoise::Tweedie => (tweedie_denoise(score, schedule, &x, t_end).detach(), 1),
    }
}
