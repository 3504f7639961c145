//! A reproducible NDSM training loop: AdamW with warm-up and cosine decay ([`crate::AdamW`],
//! [`crate::OptimConfig::lr_at`]), gradient clipping and an EMA of the weights on one flat buffer, with an
//! optional neural control variate fitted on the same batches.
//!
//! Randomness: the score network is initialised from `ChaCha8Rng::seed_from_u64(seed)` on stream 0, the
//! batches ([`NdsmSde::sample_transitions`]) are drawn from the same seed on stream 1; a neural control
//! variate is initialised from its own `seed`.

use super::{ndsm_loss, ControlVariate, NdsmConfig, NdsmScoreNet, NdsmSde, NdsmWeighting, NeuralCv, NeuralCvConfig};
use crate::optim::clip_grad_norm;
use crate::{AdamW, Ema, FlatParams, MlpConfig, OptimConfig, Precision, Result, ScoreMlp, TrainError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use scores::gmm::GaussianMixture;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

/// The control variate used for training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum NdsmCvChoice {
    /// None.
    None,
    /// The exact control variates.
    Exact,
    /// A neural control variate, fitted by one step per training step on the same batch.
    Neural {
        /// Its configuration.
        config: NeuralCvConfig,
    },
}

/// Everything that determines the numbers of an NDSM run (with `pi`, the data and the device).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NdsmTrainConfig {
    /// The score network.
    pub model: MlpConfig,
    /// The forward SDE.
    pub sde: NdsmConfig,
    /// AdamW, schedule, clipping, EMA.
    pub optim: OptimConfig,
    /// The loss weight.
    pub weighting: NdsmWeighting,
    /// The control variate.
    pub control_variate: NdsmCvChoice,
    /// Training steps (>= 1).
    pub steps: u64,
    /// Transitions per batch (>= 1).
    pub batch_size: i64,
    /// The run's seed.
    pub seed: u64,
    /// The dtype of the network and of the data it sees.
    pub precision: Precision,
}

impl Default for NdsmTrainConfig {
    /// Width 128, depth 3, the default SDE and optimiser, sigma^2 weighting, exact control variates, 2000
    /// steps of 512 transitions, seed 0, f32.
    fn default() -> Self {
        NdsmTrainConfig {
            model: MlpConfig { width: 128, depth: 3, ..MlpConfig::default() },
            sde: NdsmConfig::default(),
            optim: OptimConfig::default(),
            weighting: NdsmWeighting::SigmaSquared,
            control_variate: NdsmCvChoice::Exact,
            steps: 2000,
            batch_size: 512,
            seed: 0,
            precision: Precision::F32,
        }
    }
}

impl NdsmTrainConfig {
    /// Validates every field; errors name the field and the allowed range.
    pub fn check(self) -> Result<Self> {
        self.model.check()?;
        self.sde.check()?;
        self.optim.check()?;
        if let NdsmCvChoice::Neural { config } = self.control_variate {
            config.model.check()?;
            config.optim.check()?;
        }
        if self.steps < 1 {
            return Err(TrainError::invalid("steps", self.steps, ">= 1"));
        }
        if self.batch_size < 1 {
            return Err(TrainError::invalid("batch_size", self.batch_size, ">= 1"));
        }
        Ok(self)
    }
}

/// What one training step reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NdsmStepReport {
    /// The 0-based index of the step just taken.
    pub step: u64,
    /// The batch loss (with the configured control variate) before the update.
    pub loss: f64,
    /// The gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate used.
    pub lr: f64,
    /// The neural control variate's objective before its step, if there is one.
    pub cv_objective: Option<f64>,
}

/// An NDSM training run (module doc).
#[derive(Debug)]
pub struct NdsmTrainer {
    config: NdsmTrainConfig,
    sde: NdsmSde,
    net: NdsmScoreNet,
    flat: FlatParams,
    adam: AdamW,
    ema: Ema,
    cv: Option<NeuralCv>,
    rng: ChaCha8Rng,
    step: u64,
}

fn rng_stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

impl NdsmTrainer {
    /// A fresh run for points of `dim` coordinates on `device`. Errors name the invalid field.
    pub fn new(config: NdsmTrainConfig, dim: i64, device: Device) -> Result<Self> {
        let config = config.check()?;
        let kind = config.precision.kind();
        let sde = NdsmSde::new(&config.sde)?;
        let mut vs = tch::nn::VarStore::new(device);
        vs.set_kind(kind);
        let net = ScoreMlp::new(&vs.root(), &config.model, &[dim], &mut rng_stream(config.seed, 0))?;
        let net = NdsmScoreNet::from_mlp(net)?;
        let flat = FlatParams::new(net.mlp().named_parameters());
        let adam = AdamW::new(&config.optim, flat.buffer());
        let ema = Ema::new(flat.buffer(), config.optim.ema_decay);
        let cv = match config.control_variate {
            NdsmCvChoice::Neural { config: c } => Some(NeuralCv::new(&c, dim, kind, device)?),
            _ => None,
        };
        Ok(NdsmTrainer { config, sde, net, flat, adam, ema, cv, rng: rng_stream(config.seed, 1), step: 0 })
    }

    /// The configuration.
    pub fn config(&self) -> &NdsmTrainConfig {
        &self.config
    }

    /// The forward SDE.
    pub fn sde(&self) -> &NdsmSde {
        &self.sde
    }

    /// The score network with the current weights.
    pub fn net(&self) -> &NdsmScoreNet {
        &self.net
    }

    /// The neural control variate, if the run has one.
    pub fn neural_cv(&self) -> Option<&NeuralCv> {
        self.cv.as_ref()
    }

    /// Steps taken.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// A copy of the score network with the EMA weights (for sampling).
    pub fn ema_net(&self) -> Result<NdsmScoreNet> {
        let named = self.flat.split(&self.ema.shadow().copy());
        NdsmScoreNet::from_mlp(ScoreMlp::from_tensors(self.net.mlp().config(), self.net.mlp().point_shape(), &named)?)
    }

    /// One step on a batch of transitions of `data: [N, D]` (any float dtype; converted to the network's
    /// dtype and device) under the reference law `pi`. Errors with [`TrainError::NonFinite`] when the loss
    /// or the gradient norm is not finite (the weights are then left unchanged).
    pub fn step(&mut self, pi: &GaussianMixture, data: &Tensor) -> Result<NdsmStepReport> {
        let data = data.to_kind(self.net.mlp().kind()).to_device(self.net.mlp().device());
        let tr = self.sde.sample_transitions(pi, &data, self.config.batch_size, &mut self.rng);
        let (sde, net) = (&self.sde, &self.net);
        let score = |x: &Tensor, t: &Tensor| net.score(sde, x, t);
        let cv = match (&self.cv, self.config.control_variate) {
            (Some(ncv), _) => ControlVariate::Neural(ncv),
            (None, NdsmCvChoice::Exact) => ControlVariate::Exact,
            _ => ControlVariate::None,
        };
        let loss = ndsm_loss(&score, sde, &tr, self.config.weighting, cv);
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            return Err(TrainError::NonFinite { what: "loss".into(), step: self.step });
        }
        let grad = self.flat.backward(&loss);
        let grad_norm = clip_grad_norm(grad, self.config.optim.grad_clip);
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite { what: "gradient norm".into(), step: self.step });
        }
        let lr = self.config.optim.lr_at(self.step, self.config.steps);
        let grad = self.flat.grad().shallow_clone();
        self.adam.step(self.flat.buffer_mut(), &grad, lr);
        self.ema.update(self.flat.buffer());
        let (sde, net) = (&self.sde, &self.net);
        let score = |x: &Tensor, t: &Tensor| net.score(sde, x, t);
        let cv_objective = self.cv.as_mut().map(|c| c.fit_step(&score, sde, &tr, self.config.weighting));
        let report = NdsmStepReport { step: self.step, loss: value, grad_norm, lr, cv_objective };
        self.step += 1;
        Ok(report)
    }
}
