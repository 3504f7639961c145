//! The run configuration [`TrainConfig`]: network, schedule, loss, optimiser and loop settings.

use crate::{MlpConfig, Objective, OptimConfig, Result, TrainError, Weighting};
use scores::Schedule;
use serde::{Deserialize, Serialize};
use tch::Kind;

/// The floating-point precision of the network, the optimiser state and the batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// f32 (`Kind::Float`): training speed.
    F32,
    /// f64 (`Kind::Double`): reference computations and tests.
    F64,
}

impl Precision {
    /// The tch dtype.
    pub fn kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::F64 => Kind::Double,
        }
    }
}

/// Everything that determines the numbers of a training run (with the data, the point shape, the base
/// score and the device, which are arguments of [`crate::Trainer::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The network.
    pub model: MlpConfig,
    /// The noise schedule (VE or VP).
    pub schedule: Schedule,
    /// DSM or MAD.
    pub objective: Objective,
    /// The time weighting of the loss.
    pub weighting: Weighting,
    /// AdamW, learning-rate schedule, clipping, EMA.
    pub optim: OptimConfig,
    /// Precision of the network and of the optimiser state.
    pub precision: Precision,
    /// Total number of optimiser steps (>= 1); the cosine decay ends here.
    pub steps: u64,
    /// Points per batch (>= 1), drawn uniformly with replacement.
    pub batch_size: i64,
    /// Smallest training time: t ~ U[t_eps, 1] (in (0, 1)).
    pub t_eps: f64,
    /// The one seed of the run (sub-seeds: [`crate::Trainer`]).
    pub seed: u64,
    /// Steps between checkpoints handed to the observer (0: none); a run that completes also checkpoints
    /// at its last step. Does not change the numbers, so a run may resume with another value.
    pub checkpoint_every: u64,
}

impl Default for TrainConfig {
    /// The default network and optimiser, VE schedule sigma in [0.01, 10], DSM, sigma^2 weighting, f32,
    /// 10 000 steps of 512 points, t_eps = 1e-3, seed 0, a checkpoint every 1000 steps.
    fn default() -> Self {
        TrainConfig {
            model: MlpConfig::default(),
            schedule: Schedule::Ve { sigma_min: 0.01, sigma_max: 10.0 },
            objective: Objective::Dsm,
            weighting: Weighting::SigmaSquared,
            optim: OptimConfig::default(),
            precision: Precision::F32,
            steps: 10_000,
            batch_size: 512,
            t_eps: 1e-3,
            seed: 0,
            checkpoint_every: 1000,
        }
    }
}

impl TrainConfig {
    /// Validates every field before any work; errors name the field (dotted for nested configurations,
    /// e.g. `model.width`) and the allowed range.
    pub fn check(self) -> Result<Self> {
        self.model.check()?;
        self.optim.check()?;
        self.schedule
            .check()
            .map_err(|e| TrainError::invalid("schedule", format!("{:?}", self.schedule), &e.to_string()))?;
        if self.steps < 1 {
            return Err(TrainError::invalid("steps", self.steps, ">= 1"));
        }
        if !(1..=1 << 24).contains(&self.batch_size) {
            return Err(TrainError::invalid("batch_size", self.batch_size, ">= 1 and <= 2^24"));
        }
        if !(self.t_eps > 0.0 && self.t_eps < 1.0) {
            return Err(TrainError::invalid("t_eps", self.t_eps, "a number in (0, 1)"));
        }
        Ok(self)
    }

    /// Every field that determines the numbers of a run, flattened to `(dotted name, value)` pairs with
    /// values formatted by `Debug` (shortest round-trip form for floats). Checkpoints store this list and
    /// [`crate::Trainer::resume`] compares it field by field. `checkpoint_every` is not included.
    pub fn fields(&self) -> Vec<(String, String)> {
        fn f(name: &str, v: impl std::fmt::Debug) -> (String, String) {
            (name.to_string(), format!("{v:?}"))
        }
        let (m, o) = (&self.model, &self.optim);
        vec![
            f("model.width", m.width),
            f("model.depth", m.depth),
            f("model.activation", m.activation),
            f("model.n_freqs", m.n_freqs),
            f("schedule", self.schedule),
            f("objective", self.objective),
            f("weighting", self.weighting),
            f("optim.lr", o.lr),
            f("optim.beta1", o.beta1),
            f("optim.beta2", o.beta2),
            f("optim.eps", o.eps),
            f("optim.weight_decay", o.weight_decay),
            f("optim.warmup_steps", o.warmup_steps),
            f("optim.min_lr_frac", o.min_lr_frac),
            f("optim.grad_clip", o.grad_clip),
            f("optim.ema_decay", o.ema_decay),
            f("precision", self.precision),
            f("steps", self.steps),
            f("batch_size", self.batch_size),
            f("t_eps", self.t_eps),
            f("seed", self.seed),
        ]
    }
}
