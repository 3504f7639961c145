//! Predictor-corrector sampling of the reverse SDE (Song et al. 2021, "Score-based generative modeling
//! through stochastic differential equations", algorithms 4 and 5): at each time t_i of the grid,
//! `corrector.n_steps` Langevin steps targeting the marginal p_{t_i}, then one Euler-Maruyama predictor
//! step from t_i to t_{i+1} ([`crate::euler_maruyama_step`]).
//!
//! # The Langevin corrector and its step rule
//!
//! A Langevin step at time t is x <- x + eps s(x, t) + sqrt(2 eps) z with z ~ N(0, I). The step size
//! follows the signal-to-noise rule of Song et al., with norms |.| over every non-batch dimension of each
//! sample:
//!
//!   eps = 2 a_i (snr |z| / |s|)^2,
//!
//! so that the ratio |eps s| / |sqrt(2 eps) z| is about `snr`. [`StepNorms`] chooses how the per-sample
//! norms enter:
//! - `batch_mean` (the default, as in Song et al.'s code): |z| and |s| are the batch means of the
//!   per-sample norms, and one step size serves the whole batch;
//! - `per_sample`: each sample b gets its own eps_b = 2 a_i (snr |z_b| / |s_b|)^2. In high dimension the
//!   per-sample norms concentrate and both rules agree; in low dimension |s_b| is near 0 for samples near a
//!   mode, eps_b is heavy-tailed and the corrector inflates the variance, so keep `batch_mean` there.
//!
//! The factor a_i is the
//! per-step signal retention of the discretised forward chain, "alpha_i = 1 - beta_i" in Song et al.: here
//! a_i = (alpha_{t_i} / alpha_{t_{i+1}})^2 = exp(-int_{t_{i+1}}^{t_i} beta) for VP (close to 1 for small
//! steps) and a_i = 1 for VE. It is *not* the schedule's alpha_t, which is tiny near t = 1 for VP and would
//! switch the corrector off there. A score that is exactly 0 (per sample, or on the whole batch for
//! `batch_mean`) gets eps = 0 (no correction).
//!
//! Song et al. use snr = 0.16 for VE and 0.01 to 0.17 for VP, with one corrector step.

use crate::error::check;
use crate::euler_maruyama::euler_maruyama_step;
use crate::sde::{finish, FixedStepConfig, SampleOutput};
use crate::tensor_util::{check_state, ensure_finite, per_sample, per_sample_norm, time_like};
use crate::{Progress, Result};
use scores::{Schedule, Score};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// How the norms of the score and of the noise enter the corrector's step rule (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StepNorms {
    /// One step size for the batch, from the batch means of the per-sample norms.
    #[default]
    BatchMean,
    /// One step size per sample, from its own norms.
    PerSample,
}

/// The Langevin corrector's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LangevinConfig {
    /// The signal-to-noise ratio of the step rule (> 0).
    pub snr: f64,
    /// The number of Langevin steps at each time of the grid (>= 1).
    pub n_steps: usize,
    /// How the norms enter the step rule (default: batch means).
    #[serde(default)]
    pub norms: StepNorms,
}

impl Default for LangevinConfig {
    /// snr = 0.16, one step, batch-mean norms (Song et al.'s VE setting).
    fn default() -> Self {
        Self { snr: 0.16, n_steps: 1, norms: StepNorms::BatchMean }
    }
}

impl LangevinConfig {
    /// Validates every field; errors name the field (`snr`, `n_steps`) and the allowed range.
    pub fn check(self) -> Result<Self> {
        check::positive("snr", self.snr)?;
        check::positive_count("n_steps", self.n_steps)?;
        Ok(self)
    }
}

/// The predictor-corrector configuration: the predictor's grid and the corrector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PredictorCorrectorConfig {
    /// The Euler-Maruyama predictor's grid and final step.
    pub predictor: FixedStepConfig,
    /// The Langevin corrector.
    pub corrector: LangevinConfig,
}

impl PredictorCorrectorConfig {
    /// Validates every field; errors name the field with its path (`predictor.n_steps`,
    /// `corrector.snr`, ...) and the allowed range.
    pub fn check(self) -> Result<Self> {
        self.predictor.check().map_err(|e| e.in_field("predictor"))?;
        self.corrector.check().map_err(|e| e.in_field("corrector"))?;
        Ok(self)
    }
}

/// One Langevin corrector step at time `t` with signal retention `a` (see the module doc for the rule).
///
/// `x: [B, ..ambient]` of any float dtype on any device; returns the same shape, dtype and device,
/// detached from the autograd graph.
pub fn langevin_step<S: Score + ?Sized>(score: &S, x: &Tensor, t: f64, snr: f64, a: f64, norms: StepNorms) -> Tensor {
    let s = score.score(x, &time_like(t, x));
    let z = x.randn_like();
    let (s_norm, z_norm) = match norms {
        StepNorms::PerSample => (per_sample_norm(&s), per_sample_norm(&z)),
        StepNorms::BatchMean => (per_sample_norm(&s).mean(None), per_sample_norm(&z).mean(None)),
    };
    let positive = s_norm.gt(0.0);
    let safe = s_norm.where_self(&positive, &s_norm.ones_like());
    let eps = ((z_norm * snr) / safe).square() * (2.0 * a);
    let eps = eps.where_self(&positive, &eps.zeros_like());
    let eps = match norms {
        StepNorms::PerSample => per_sample(&eps, x),
        StepNorms::BatchMean => eps,
    };
    (x + &eps * s + (eps * 2.0).sqrt() * z).detach()
}

/// Integrates the reverse SDE from t = 1 down to `config.predictor.t_end` with the predictor-corrector
/// scheme of the module doc.
///
/// `x_init: [B, ..ambient]` (any float dtype, any device; see [`crate::initial_noise`]) is the state at
/// t = 1; the samples have the same shape, dtype and device. Each predictor step costs
/// `1 + corrector.n_steps` score evaluations. Reports each predictor step to `progress`.
///
/// Errors: an invalid `config` (naming the field), a non-floating or non-finite `x_init`, or non-finite
/// samples (a diverging score or too large an snr).
pub fn predictor_corrector<S: Score + ?Sized, P: Progress + ?Sized>(
    score: &S,
    schedule: &Schedule,
    x_init: &Tensor,
    config: &PredictorCorrectorConfig,
    progress: &mut P,
) -> Result<SampleOutput> {
    let config = config.check()?;
    let (pred, corr) = (config.predictor, config.corrector);
    let ts = pred.times(schedule)?;
    check_state("x_init", x_init)?;
    let mut x = x_init.detach();
    for i in 0..pred.n_steps {
        let (t, t_next) = (ts[i], ts[i + 1]);
        let a = (schedule.alpha(t) / schedule.alpha(t_next)).powi(2);
        for _ in 0..corr.n_steps {
            x = langevin_step(score, &x, t, corr.snr, a, corr.norms);
        }
        x = euler_maruyama_step(score, schedule, &x, t, t - t_next);
        progress.on_step(i, pred.n_steps);
    }
    let (x, extra) = finish(score, schedule, x, pred.t_end, pred.final_denoise);
    ensure_finite(|| "predictor_corrector samples".to_string(), &x)?;
    Ok(SampleOutput {
        x,
        n_score_evals: pred.n_steps * (1 + corr.n_steps) + extra,
        n_steps: pred.n_steps,
        n_rejected: 0,
    })
}
