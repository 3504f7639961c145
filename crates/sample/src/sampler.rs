//! One entry point for the four ambient samplers, chosen by configuration.

use crate::{
    dormand_prince, euler_maruyama, heun, predictor_corrector, DormandPrinceConfig, FixedStepConfig,
    PredictorCorrectorConfig, Progress, Result, SampleOutput,
};
use scores::{Schedule, Score};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// A sampler and its configuration; serialised with the tag `solver`, e.g.
/// `{"solver": "heun", "n_steps": 100, "t_end": 0.001}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "solver", rename_all = "snake_case")]
pub enum SamplerConfig {
    /// Euler-Maruyama on the reverse SDE ([`euler_maruyama()`]).
    EulerMaruyama(FixedStepConfig),
    /// Euler-Maruyama predictor and Langevin corrector on the reverse SDE ([`predictor_corrector()`]).
    PredictorCorrector(PredictorCorrectorConfig),
    /// Heun on the probability-flow ODE ([`heun()`]).
    Heun(FixedStepConfig),
    /// Adaptive Dormand-Prince 5(4) on the probability-flow ODE ([`dormand_prince()`]).
    DormandPrince(DormandPrinceConfig),
}

impl SamplerConfig {
    /// Validates the inner configuration; errors name the field and the allowed range.
    pub fn check(self) -> Result<Self> {
        match self {
            SamplerConfig::EulerMaruyama(c) => c.check().map(SamplerConfig::EulerMaruyama),
            SamplerConfig::PredictorCorrector(c) => c.check().map(SamplerConfig::PredictorCorrector),
            SamplerConfig::Heun(c) => c.check().map(SamplerConfig::Heun),
            SamplerConfig::DormandPrince(c) => c.check().map(SamplerConfig::DormandPrince),
        }
    }
}

/// Runs the sampler that `config` names, from `x_init: [B, ..ambient]` at t = 1 (any float dtype, any
/// device); the samples have the same shape, dtype and device. Errors as the chosen sampler does.
pub fn sample<S: Score + ?Sized, P: Progress + ?Sized>(
    score: &S,
    schedule: &Schedule,
    x_init: &Tensor,
    config: &SamplerConfig,
    progress: &mut P,
) -> Result<SampleOutput> {
    match config {
        SamplerConfig::EulerMaruyama(c) => euler_maruyama(score, schedule, x_init, c, progress),
        SamplerConfig::PredictorCorrector(c) => predictor_corrector(score, schedule, x_init, c, progress),
        SamplerConfig::Heun(c) => heun(score, schedule, x_init, c, progress),
        SamplerConfig::DormandPrince(c) => dormand_prince(score, schedule, x_init, c, progress),
    }
}
