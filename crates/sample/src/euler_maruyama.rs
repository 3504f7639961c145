//! Euler-Maruyama for the reverse-time SDE dx = [f(t) x - g(t)^2 s(x, t)] dt + g(t) dW_bar
//! ([`crate::sde`]).
//!
//! On a decreasing grid 1 = t_0 > t_1 > ... > t_N = t_end, with dt_i = t_i - t_{i+1} > 0 and
//! z_i ~ N(0, I) from libtorch's generator on the state's device (seed it with `tch::manual_seed`):
//!
//!   x_{i+1} = x_i - [f(t_i) x_i - g(t_i)^2 s(x_i, t_i)] dt_i + g(t_i) sqrt(dt_i) z_i.
//!
//! Every step, including the last, adds noise; use [`FinalDenoise::Tweedie`](crate::FinalDenoise) to remove
//! the residual noise at t_end.

use crate::sde::{finish, reverse_sde_drift, FixedStepConfig, SampleOutput};
use crate::tensor_util::{check_state, ensure_finite};
use crate::{Progress, Result};
use scores::{Schedule, Score};
use tch::Tensor;

/// One Euler-Maruyama step of the reverse SDE from `t` down to `t - dt` (`dt > 0`).
///
/// `x: [B, ..ambient]` of any float dtype on any device; returns the same shape, dtype and device,
/// detached from the autograd graph.
pub fn euler_maruyama_step<S: Score + ?Sized>(score: &S, schedule: &Schedule, x: &Tensor, t: f64, dt: f64) -> Tensor {
    let drift = reverse_sde_drift(score, schedule, x, t);
    let noise = x.randn_like() * (schedule.g2(t) * dt).sqrt();
    (x - drift * dt + noise).detach()
}

/// Integrates the reverse SDE from t = 1 down to `config.t_end` with Euler-Maruyama.
///
/// `x_init: [B, ..ambient]` (any float dtype, any device; see [`crate::initial_noise`]) is the state at
/// t = 1; the samples have the same shape, dtype and device. Reports each step to `progress`.
///
/// Errors: an invalid `config` (naming the field), a non-floating or non-finite `x_init`, or non-finite
/// samples (a diverging score).
pub fn euler_maruyama<S: Score + ?Sized, P: Progress + ?Sized>(
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
        x = euler_maruyama_step(score, schedule, &x, ts[i], ts[i] - ts[i + 1]);
        progress.on_step(i, config.n_steps);
    }
    let (x, extra) = finish(score, schedule, x, config.t_end, config.final_denoise);
    ensure_finite(|| "euler_maruyama samples".to_string(), &x)?;
    Ok(SampleOutput { x, n_score_evals: config.n_steps + extra, n_steps: config.n_steps, n_rejected: 0 })
}
