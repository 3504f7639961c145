//! A reproducible NDSM training loop: AdamW with warm-up and cosine decay ([`crate::AdamW`],
//! [`crate::OptimConfig::lr_at`]), gradient clipping and an EMA of the weights on one flat buffer, with an
//! optional neural control variate fitted on the same batches.
//!
//! Randomness: the score network is initialised from `ChaCha8Rng::seed_from_u64(seed)` on stream 0, the
//! batches ([`NdsmSde::sample_transitions`]) are drawn from the same seed on stream 1; a neural control
//! variate is initialised from its own `seed`.

use super::{ndsm_loss, ControlVariate, NdsmConfig, NdsmScoreNet, NdsmSde, NdsmWeighting, NeuralCv, NeuralCvConfig};
use crate::checkpoint::{
    config_diffs, push_named_copies, restore_weights_and_optimiser, rng_stream, ADAM_M_PREFIX, ADAM_V_PREFIX,
    CHECKPOINT_FORMAT, EMA_PREFIX, PARAMS_PREFIX,
};
use crate::optim::clip_grad_norm;
use crate::{
    AdamW, Checkpoint, Ema, FlatParams, MlpConfig, OptimConfig, Precision, Result, RunState, ScoreMlp, TrainError,
};
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

/// Prefix of the neural control variate's weights in [`Checkpoint::tensors`].
pub const CV_PARAMS_PREFIX: &str = "cv.params.";
/// Prefix of the neural control variate's AdamW first moment.
pub const CV_ADAM_M_PREFIX: &str = "cv.adam_m.";
/// Prefix of the neural control variate's AdamW second moment.
pub const CV_ADAM_V_PREFIX: &str = "cv.adam_v.";

impl NdsmTrainConfig {
    /// Every field that determines the numbers of a run, as `(name, value)` strings (the identity of a run
    /// in [`RunState::config`]; [`NdsmTrainer::resume`] compares them).
    pub fn fields(&self) -> Vec<(String, String)> {
        fn f(name: &str, v: impl std::fmt::Debug) -> (String, String) {
            (name.to_string(), format!("{v:?}"))
        }
        let (m, o, e) = (&self.model, &self.optim, &self.sde);
        vec![
            f("model.width", m.width),
            f("model.depth", m.depth),
            f("model.activation", m.activation),
            f("model.n_freqs", m.n_freqs),
            f("sde.beta_min", e.beta_min),
            f("sde.beta_max", e.beta_max),
            f("sde.n_steps", e.n_steps),
            f("optim.lr", o.lr),
            f("optim.beta1", o.beta1),
            f("optim.beta2", o.beta2),
            f("optim.eps", o.eps),
            f("optim.weight_decay", o.weight_decay),
            f("optim.warmup_steps", o.warmup_steps),
            f("optim.min_lr_frac", o.min_lr_frac),
            f("optim.grad_clip", o.grad_clip),
            f("optim.ema_decay", o.ema_decay),
            f("weighting", self.weighting),
            f("control_variate", self.control_variate),
            f("steps", self.steps),
            f("batch_size", self.batch_size),
            f("seed", self.seed),
            f("precision", self.precision),
        ]
    }

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

/// What an NDSM-configured run starts from, built from the configuration alone: the forward SDE, the score
/// network initialised from stream 0 of the seed, its flat parameter buffer, AdamW and the EMA. Other
/// trainers on the same configuration (a DSM baseline, say) start from exactly these weights.
pub struct NdsmParts {
    /// The forward SDE.
    pub sde: NdsmSde,
    /// The score network.
    pub net: NdsmScoreNet,
    /// Its parameters as one flat buffer.
    pub flat: FlatParams,
    /// The optimiser over `flat`.
    pub adam: AdamW,
    /// The EMA of `flat`.
    pub ema: Ema,
}

impl NdsmParts {
    /// Builds the parts for points of `dim` coordinates on `device` from a checked `config`.
    pub fn new(config: &NdsmTrainConfig, dim: i64, device: Device) -> Result<Self> {
        let sde = NdsmSde::new(&config.sde)?;
        let mut vs = tch::nn::VarStore::new(device);
        vs.set_kind(config.precision.kind());
        let net = ScoreMlp::new(&vs.root(), &config.model, &[dim], &mut rng_stream(config.seed, 0))?;
        let net = NdsmScoreNet::from_mlp(net)?;
        let flat = FlatParams::new(net.mlp().named_parameters());
        let adam = AdamW::new(&config.optim, flat.buffer());
        let ema = Ema::new(flat.buffer(), config.optim.ema_decay);
        Ok(NdsmParts { sde, net, flat, adam, ema })
    }
}

impl NdsmTrainer {
    /// A fresh run for points of `dim` coordinates on `device`. Errors name the invalid field.
    pub fn new(config: NdsmTrainConfig, dim: i64, device: Device) -> Result<Self> {
        let config = config.check()?;
        let kind = config.precision.kind();
        let NdsmParts { sde, net, flat, adam, ema } = NdsmParts::new(&config, dim, device)?;
        let cv = match config.control_variate {
            NdsmCvChoice::Neural { config: c } => Some(NeuralCv::new(&c, dim, kind, device)?),
            _ => None,
        };
        Ok(NdsmTrainer { config, sde, net, flat, adam, ema, cv, rng: rng_stream(config.seed, 1), step: 0 })
    }

    /// Continues a run from `checkpoint` (written by [`NdsmTrainer::checkpoint`]) for points of `dim`
    /// coordinates on `device`: the result takes the same steps, with the same numbers, as the run that
    /// wrote the checkpoint would have.
    ///
    /// Refuses (with [`TrainError::CheckpointMismatch`] naming every differing field) a checkpoint of
    /// another configuration (any field of [`NdsmTrainConfig::fields`]), dimension or format, past the last
    /// step, or with missing or mis-shaped tensors.
    pub fn resume(config: NdsmTrainConfig, dim: i64, device: Device, checkpoint: &Checkpoint) -> Result<Self> {
        let state = &checkpoint.state;
        if state.format != CHECKPOINT_FORMAT {
            return Err(TrainError::CheckpointMismatch(format!(
                "format {} differs from this build's {CHECKPOINT_FORMAT}",
                state.format
            )));
        }
        let mut trainer = NdsmTrainer::new(config, dim, device)?;
        let mut diffs = config_diffs(&state.config, &trainer.config.fields());
        if state.point_shape != [dim] {
            diffs.push(format!(
                "point_shape differs: checkpoint has {:?}, this run has {:?}",
                state.point_shape,
                [dim]
            ));
        }
        if state.base.is_some() {
            diffs.push(format!("base differs: checkpoint has {:?}, this run has None", state.base));
        }
        if state.step > trainer.config.steps {
            diffs.push(format!("step {} is past steps = {}", state.step, trainer.config.steps));
        }
        if !diffs.is_empty() {
            return Err(TrainError::CheckpointMismatch(diffs.join("; ")));
        }
        let (ema, adam) = restore_weights_and_optimiser(&mut trainer.flat, checkpoint, &trainer.config.optim)?;
        trainer.ema = ema;
        trainer.adam = adam;
        if let Some(cv) = trainer.cv.as_mut() {
            let (flat, _, _) = cv.flat_state();
            let params = flat.gather(&checkpoint.tensors, CV_PARAMS_PREFIX)?;
            let m = flat.gather(&checkpoint.tensors, CV_ADAM_M_PREFIX)?;
            let v = flat.gather(&checkpoint.tensors, CV_ADAM_V_PREFIX)?;
            cv.restore(&params, m, v, state.step);
        }
        trainer.rng = state.rng.clone();
        trainer.step = state.step;
        Ok(trainer)
    }

    /// A snapshot of the run ([`Checkpoint`]): CPU copies of the weights, EMA weights and AdamW moments
    /// (prefixes `params.`, `ema.`, `adam_m.`, `adam_v.`), those of a neural control variate (`cv.params.`,
    /// `cv.adam_m.`, `cv.adam_v.`), and the step, RNG and identity of the run ([`NdsmTrainConfig::fields`],
    /// point shape `[dim]`, no base). Valid at any point between steps.
    pub fn checkpoint(&self) -> Checkpoint {
        let mut tensors = Vec::new();
        let (m, v) = self.adam.moments();
        push_named_copies(&mut tensors, &self.flat, PARAMS_PREFIX, self.flat.buffer());
        push_named_copies(&mut tensors, &self.flat, EMA_PREFIX, self.ema.shadow());
        push_named_copies(&mut tensors, &self.flat, ADAM_M_PREFIX, m);
        push_named_copies(&mut tensors, &self.flat, ADAM_V_PREFIX, v);
        if let Some(cv) = &self.cv {
            let (flat, m, v) = cv.flat_state();
            push_named_copies(&mut tensors, flat, CV_PARAMS_PREFIX, flat.buffer());
            push_named_copies(&mut tensors, flat, CV_ADAM_M_PREFIX, m);
            push_named_copies(&mut tensors, flat, CV_ADAM_V_PREFIX, v);
        }
        Checkpoint {
            tensors,
            state: RunState {
                format: CHECKPOINT_FORMAT,
                step: self.step,
                rng: self.rng.clone(),
                config: self.config.fields(),
                point_shape: self.net.mlp().point_shape().to_vec(),
                base: None,
            },
        }
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
