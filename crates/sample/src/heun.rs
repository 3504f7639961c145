//! Heun's method (explicit trapezoidal rule, second order) for the probability-flow ODE
//! dx/dt = f(t) x - g(t)^2 s(x, t) / 2 ([`crate::sde`]), from t = 1 down to t_end on a fixed grid.
//!
//! With h_i = t_{i+1} - t_i < 0 and v(x, t) the velocity:
//!
//!   x' = x_i + h_i v(x_i, t_i),   x_{i+1} = x_i + h_i (v(x_i, t_i) + v(x', t_{i+1})) / 2.
//!
//! Deterministic: the same initial state gives the same samples. Two score evaluations per step.

use crate::sde::{finish, probability_flow_drift, FixedStepConfig, SampleOutput};
use crate::tensor_util::{check_state, ensure_finite};
use crate::{Progress, Result};
use scores::{Schedule, Score};
use tch::Tensor;

/// One Heun step of the probability-flow ODE from `t` to `t + h` (`h < 0` in reverse time).
///
/// `x: [B, ..ambient]` of any float dtype on any device; returns the same shape, dtype and device,
/// detached from the autograd graph.
pub fn heun_step<S: Score + ?Sized>(score: &S, schedule: &Schedule, x: &Tensor, t: f64, h: f64) -> Tensor {
    let v0 = probability_flow_drift(score, schedule, x, t);
    let x_euler = x + &v0 * h;
    let v1 = probability_flow_drift(score, schedule, &x_euler, t + h);
    (x + (v0 + v1) * (0.5 * h)).detach()
}

/// Integrates the probability-flow ODE from t = 1 down to `config.t_end` with Heun's method.
///
/// `x_init: [B, ..ambient]` (any float dtype, any device; see [`crate::initial_noise`]) is the state at
/// t = 1; the samples have the same shape, dtype and device. Reports each step to `progress`.
///
/// Errors: an invalid `config` (naming the field), a non-floating or non-finite `x_init`, or non-finite
/// samples.
pub fn heun<S: Score + ?Sized, P: Progress + ?Sized>(
    score: &S,
    schedule: &Schedule,
    x_init: &Tensor,
    config: &FixedStepConfig,
    progress: &mut P,
) -> Result<SampleOutput> {
    let ts = config.times(schedule)?;
    check_state("x_init", x_init)?;
    let mut x = x_init.detach();
    for i in 0..config.n_steps {
        x = heun_step(score, schedule, &x, ts[i], ts[i + 1] - ts[i]);
        progress.on_step(i, config.n_steps);
    }
    let (x, extra) = finish(score, schedule, x, config.t_end, config.final_denoise);
    ensure_finite(|| "heun samples".to_string(), &x)?;
    Ok(SampleOutput { x, n_score_evals: 2 * config.n_steps + extra, n_steps: config.n_steps, n_rejected: 0 })
}
