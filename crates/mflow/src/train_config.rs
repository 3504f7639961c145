//! Training configuration: schedule, optimiser, loss weights, validation split and early stopping.

use crate::config::ModelKind;
use crate::{MflowError as E, Result};
use serde::{Deserialize, Serialize};

/// How manifold (M) and density (D) updates are arranged (MATH.md section 8).
///
/// The M phase updates the manifold weights (outer flow, encoder) on the reconstruction error (plus
/// [`LossWeights::manifold_phase_likelihood`] times the manifold NLL); the D phase updates the inner flow on
/// the NLL of the (frozen) manifold coordinates. PIE and the AF train by ambient likelihood and accept
/// [`Schedule::Simultaneous`] only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Schedule {
    /// First `manifold_steps` M steps, then `density_steps` D steps.
    Sequential {
        /// Steps of the M phase.
        manifold_steps: u64,
        /// Steps of the D phase.
        density_steps: u64,
    },
    /// `cycles` times: `manifold_steps` M steps, then `density_steps` D steps.
    Alternating {
        /// Number of M/D cycles.
        cycles: u64,
        /// M steps per cycle.
        manifold_steps: u64,
        /// D steps per cycle.
        density_steps: u64,
    },
    /// `steps` steps of all weights on `reconstruction * rec + likelihood * NLL` (M-flow, M_e-flow; the NLL
    /// includes `-1/2 log det(J^T J)`), or on the ambient NLL (PIE, AF).
    Simultaneous {
        /// Steps.
        steps: u64,
    },
}

impl Schedule {
    /// Total optimiser steps.
    pub fn total_steps(&self) -> u64 {
        match *self {
            Schedule::Sequential { manifold_steps, density_steps } => manifold_steps + density_steps,
            Schedule::Alternating { cycles, manifold_steps, density_steps } => {
                cycles * (manifold_steps + density_steps)
            }
            Schedule::Simultaneous { steps } => steps,
        }
    }
}

/// Weights of the loss terms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossWeights {
    /// Weight of the mean squared reconstruction error in the M phase and the simultaneous loss (>= 0).
    pub reconstruction: f64,
    /// Weight of the manifold NLL in the simultaneous loss (>= 0).
    pub likelihood: f64,
    /// Weight of the manifold NLL in the M phase (>= 0; 0 = reconstruction only, as in the paper's
    /// sequential schedule).
    pub manifold_phase_likelihood: f64,
}

impl Default for LossWeights {
    /// Reconstruction 1, likelihood 0.01, no likelihood in the M phase.
    fn default() -> Self {
        LossWeights { reconstruction: 1.0, likelihood: 0.01, manifold_phase_likelihood: 0.0 }
    }
}

/// AdamW (tch's) with linear warm-up, cosine decay and global-norm gradient clipping.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate (finite, > 0).
    pub lr: f64,
    /// First-moment decay (in [0, 1)).
    pub beta1: f64,
    /// Second-moment decay (in [0, 1)).
    pub beta2: f64,
    /// Decoupled weight decay (finite, >= 0).
    pub weight_decay: f64,
    /// Steps of linear warm-up of each optimiser (>= 0).
    pub warmup_steps: u64,
    /// Floor of the cosine decay as a fraction of the peak (in [0, 1]).
    pub min_lr_frac: f64,
    /// Maximal global L2 norm of the gradient (finite, > 0); `None` disables clipping.
    pub grad_clip: Option<f64>,
}

impl Default for OptimConfig {
    /// lr 3e-3, betas (0.9, 0.999), weight decay 1e-5, 20 warm-up steps, floor 0.05, clipping at 5.
    fn default() -> Self {
        OptimConfig {
            lr: 3e-3,
            beta1: 0.9,
            beta2: 0.999,
            weight_decay: 1e-5,
            warmup_steps: 20,
            min_lr_frac: 0.05,
            grad_clip: Some(5.0),
        }
    }
}

impl OptimConfig {
    /// The learning rate at 0-based step `step` of `total`: linear warm-up to `lr`, then cosine decay to
    /// `lr * min_lr_frac` at `total`.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = self.lr * self.min_lr_frac;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Everything a training run needs besides the model and the data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Arrangement of M and D updates.
    pub schedule: Schedule,
    /// Rows per step (>= 1).
    pub batch_size: i64,
    /// Optimiser and schedule of the learning rate.
    pub optim: OptimConfig,
    /// Loss weights.
    pub weights: LossWeights,
    /// Fraction of the rows held out for validation (in [0, 1); 0 disables validation).
    pub validation_fraction: f64,
    /// Steps between two validations (>= 1).
    pub eval_every: u64,
    /// Validations without improvement before a phase (sequential) or the run (otherwise) stops; `None`
    /// never stops early. Needs `validation_fraction > 0`. The best weights are restored at the end.
    pub patience: Option<u64>,
    /// Seed of the split, the batches and the order of rows.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// Sequential 500 + 500 steps, batch 128, default optimiser and weights, 10 % validation every 50
    /// steps, patience 5, seed 0.
    fn default() -> Self {
        TrainConfig {
            schedule: Schedule::Sequential { manifold_steps: 500, density_steps: 500 },
            batch_size: 128,
            optim: OptimConfig::default(),
            weights: LossWeights::default(),
            validation_fraction: 0.1,
            eval_every: 50,
            patience: Some(5),
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Validates every field for a model of kind `kind`; errors name the field and the allowed range.
    pub fn check(&self, kind: ModelKind) -> Result<()> {
        if self.batch_size < 1 {
            return Err(E::invalid("batch_size", self.batch_size, "an integer >= 1"));
        }
        let o = &self.optim;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return Err(E::invalid("optim.lr", o.lr, "a finite number > 0"));
        }
        for (name, v) in [("optim.beta1", o.beta1), ("optim.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(E::invalid(name, v, "a number in [0, 1)"));
            }
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return Err(E::invalid("optim.weight_decay", o.weight_decay, "a finite number >= 0"));
        }
        if !(0.0..=1.0).contains(&o.min_lr_frac) {
            return Err(E::invalid("optim.min_lr_frac", o.min_lr_frac, "a number in [0, 1]"));
        }
        if let Some(c) = o.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(E::invalid("optim.grad_clip", c, "a finite number > 0, or none"));
            }
        }
        let w = &self.weights;
        for (name, v) in [
            ("weights.reconstruction", w.reconstruction),
            ("weights.likelihood", w.likelihood),
            ("weights.manifold_phase_likelihood", w.manifold_phase_likelihood),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(E::invalid(name, v, "a finite number >= 0"));
            }
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return Err(E::invalid("validation_fraction", self.validation_fraction, "a number in [0, 1)"));
        }
        if self.eval_every < 1 {
            return Err(E::invalid("eval_every", self.eval_every, "an integer >= 1"));
        }
        if let Some(p) = self.patience {
            if p < 1 {
                return Err(E::invalid("patience", p, "an integer >= 1, or none"));
            }
            if self.validation_fraction == 0.0 {
                return Err(E::invalid("patience", p, "none when validation_fraction = 0 (nothing to watch)"));
            }
        }
        let single_phase = matches!(kind, ModelKind::Pie | ModelKind::Af);
        if single_phase && !matches!(self.schedule, Schedule::Simultaneous { .. }) {
            let expected = format!("Simultaneous for the {} model (it trains by ambient likelihood)", kind.name());
            return Err(E::invalid("schedule", format!("{:?}", self.schedule), &expected));
        }
        if self.schedule.total_steps() == 0 {
            return Err(E::invalid("schedule", format!("{:?}", self.schedule), "at least one step"));
        }
        Ok(())
    }
}
