//! The training loop: [`Trainer`] (state, one step, run, checkpoint, resume) and the [`Observer`] it
//! reports to.
//!
//! Randomness: all of it comes from ChaCha8 generators derived from `config.seed`, drawn on the CPU in f64
//! and moved to the device, so a run is reproducible and its RNG state serialisable:
//! - initialisation: `ChaCha8Rng::seed_from_u64(seed)` on stream 0 ([`crate::ScoreMlp::new`]);
//! - training: `ChaCha8Rng::seed_from_u64(seed)` on stream 1, which per step draws, in this order, `B`
//!   data indices uniform in `0..N` (with replacement), `B` times `t = t_eps + (1 - t_eps) u`, `u ~ U[0, 1)`,
//!   and `B * D` standard normals (row-major) for the noise.
//!
//! libtorch's global generator is never used, so `tch::manual_seed` does not matter here.
//!
//! A step: draw the batch, [`crate::loss_and_grad`] (the hand-written backward pass, writing the gradient
//! into the flat buffer), [`crate::clip_grad_norm`], [`crate::AdamW::step`] with the learning rate of
//! [`crate::OptimConfig::lr_at`], [`crate::Ema::update`]. On one machine and thread count the numbers are
//! a deterministic function of the configuration, the data and the step count, so a resumed run
//! continues bitwise (a test shows it).

use crate::checkpoint::{
    config_diffs, push_named_copies, restore_weights_and_optimiser, rng_stream, ADAM_M_PREFIX, ADAM_V_PREFIX,
    CHECKPOINT_FORMAT, EMA_PREFIX, PARAMS_PREFIX,
};
use crate::optim::clip_grad_norm;
use crate::{
    loss_and_grad, residual_loss, AdamW, Checkpoint, Ema, FlatParams, LossBatch, Objective, ResidualScore, Result,
    RunState, ScoreMlp, TensorBase, TrainConfig, TrainError,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::sync::Arc;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// What the observer wants after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Keep training.
    Continue,
    /// Stop after this step (the trainer stays valid: checkpoint it or run again to continue).
    Stop,
}

/// What one optimiser step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Steps completed, this one included (1 after the first step).
    pub step: u64,
    /// The batch loss before the update.
    pub loss: f64,
    /// Global L2 norm of the gradient before clipping.
    pub grad_norm: f64,
    /// The learning rate used by this step.
    pub lr: f64,
    /// Throughput: the inverse of an exponential moving average (factor 0.9) of the step durations of this
    /// trainer (wall clock; it never influences the numbers).
    pub steps_per_sec: f64,
}

/// Receives progress from [`Trainer::run`]; the caller implements it (to log, write checkpoints, stop
/// early). `()` is the observer that ignores everything.
pub trait Observer {
    /// Called after every step.
    fn on_step(&mut self, report: &StepReport) -> Control;
    /// Called every `checkpoint_every` steps and after the last step of a completed run.
    fn on_checkpoint(&mut self, _checkpoint: &Checkpoint) {}
}

impl Observer for () {
    fn on_step(&mut self, _report: &StepReport) -> Control {
        Control::Continue
    }
}

/// How [`Trainer::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunOutcome {
    /// Steps completed in total (over every run of this trainer and the ones it resumed from).
    pub steps_done: u64,
    /// Whether the observer stopped the run before `config.steps`.
    pub stopped_early: bool,
    /// The loss of the last step of this call, if it took one.
    pub last_loss: Option<f64>,
}

/// A training run: the network, its flat parameter buffer, AdamW state, EMA and the training RNG.
#[derive(Debug)]
pub struct Trainer {
    config: TrainConfig,
    point_shape: Vec<i64>,
    base: Option<Arc<dyn TensorBase>>,
    kind: Kind,
    device: Device,
    _vs: nn::VarStore,
    net: ScoreMlp,
    flat: FlatParams,
    adam: AdamW,
    ema: Ema,
    rng: ChaCha8Rng,
    step: u64,
    step_time_ema: Option<f64>,
}

impl Trainer {
    /// A fresh run: validates `config`, builds the network for points of shape `point_shape` on `device`
    /// in `config.precision`, and initialises it from the seed (module doc).
    ///
    /// `base` must be `Some` exactly when `config.objective` is MAD. Errors name the offending field.
    pub fn new(
        config: TrainConfig,
        point_shape: &[i64],
        base: Option<Arc<dyn TensorBase>>,
        device: Device,
    ) -> Result<Self> {
        let config = config.check()?;
        match (config.objective, &base) {
            (Objective::Mad, None) => {
                return Err(TrainError::invalid("objective", "mad", "a base score (or objective = dsm)"));
            }
            (Objective::Dsm, Some(_)) => {
                return Err(TrainError::invalid("objective", "dsm", "no base score (or objective = mad)"));
            }
            _ => {}
        }
        let kind = config.precision.kind();
        let mut vs = nn::VarStore::new(device);
        vs.set_kind(kind);
        let mut init_rng = rng_stream(config.seed, 0);
        let net = ScoreMlp::new(&vs.root(), &config.model, point_shape, &mut init_rng)?;
        let flat = FlatParams::new(net.named_parameters());
        let adam = AdamW::new(&config.optim, flat.buffer());
        let ema = Ema::new(flat.buffer(), config.optim.ema_decay);
        Ok(Trainer {
            config,
            point_shape: point_shape.to_vec(),
            base,
            kind,
            device,
            _vs: vs,
            net,
            flat,
            adam,
            ema,
            rng: rng_stream(config.seed, 1),
            step: 0,
            step_time_ema: None,
        })
    }

    /// Continues a run from `checkpoint`: the result takes the same steps, with the same numbers, as the
    /// run that produced the checkpoint would have.
    ///
    /// Refuses (with [`TrainError::CheckpointMismatch`] naming every differing field) a checkpoint of
    /// another configuration (any field of [`TrainConfig::fields`]), point shape, base score or format, or
    /// with missing or mis-shaped tensors.
    pub fn resume(
        config: TrainConfig,
        point_shape: &[i64],
        base: Option<Arc<dyn TensorBase>>,
        device: Device,
        checkpoint: &Checkpoint,
    ) -> Result<Self> {
        let state = &checkpoint.state;
        if state.format != CHECKPOINT_FORMAT {
            return Err(TrainError::CheckpointMismatch(format!(
                "format {} differs from this build's {CHECKPOINT_FORMAT}",
                state.format
            )));
        }
        let mut trainer = Trainer::new(config, point_shape, base, device)?;
        let mut diffs = config_diffs(&state.config, &trainer.config.fields());
        if state.point_shape != trainer.point_shape {
            diffs.push(format!(
                "point_shape differs: checkpoint has {:?}, this run has {:?}",
                state.point_shape, trainer.point_shape
            ));
        }
        let base_name = trainer.base.as_ref().map(|b| b.base_name());
        if state.base != base_name {
            diffs.push(format!("base differs: checkpoint has {:?}, this run has {:?}", state.base, base_name));
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
        trainer.rng = state.rng.clone();
        trainer.step = state.step;
        Ok(trainer)
    }

    /// The validated configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Steps completed.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// The network being trained (its parameters are views into the flat buffer).
    pub fn net(&self) -> &ScoreMlp {
        &self.net
    }

    /// A copy of the flat parameter buffer, `[P]` in the run's dtype on its device.
    pub fn params_flat(&self) -> Tensor {
        self.flat.buffer().detach().copy()
    }

    /// A copy of the flat EMA buffer, `[P]` in the run's dtype on its device.
    pub fn ema_flat(&self) -> Tensor {
        self.ema.shadow().detach().copy()
    }

    /// The current weights as a [`ResidualScore`] (an independent copy: training on does not change it).
    pub fn score(&self) -> ResidualScore {
        ResidualScore::new(self.net.deep_copy(), self.base.clone(), self.config.schedule)
    }

    /// The EMA weights as a [`ResidualScore`] (an independent copy): what sampling uses.
    pub fn ema_score(&self) -> ResidualScore {
        ResidualScore::new(self.ema_net(), self.base.clone(), self.config.schedule)
    }

    /// The EMA weights as a network (an independent copy).
    pub fn ema_net(&self) -> ScoreMlp {
        let named = self.flat.split(&self.ema.shadow().detach().copy());
        ScoreMlp::from_tensors(&self.config.model, &self.point_shape, &named)
            .expect("the EMA buffer has the layout of the network")
    }

    /// The loss of the current weights on a fixed batch (tensors in the run's dtype and on its device),
    /// without gradients: [`crate::residual_loss`] with this run's network, base, schedule and weighting.
    pub fn loss_on(&self, batch: &LossBatch) -> f64 {
        tch::no_grad(|| {
            residual_loss(&self.net, self.base.as_deref(), &self.config.schedule, self.config.weighting, batch)
                .double_value(&[])
        })
    }

    /// Draws the next batch's randomness from the training RNG (module doc) and gathers the data:
    /// `data: [N, ..point_shape]` in the run's dtype and on its device.
    fn draw_batch(&mut self, data: &Tensor) -> LossBatch {
        let n = data.size()[0] as u64;
        let b = self.config.batch_size as usize;
        let dim: i64 = self.point_shape.iter().product();
        let idx: Vec<i64> = (0..b).map(|_| self.rng.random_range(0..n) as i64).collect();
        let t_eps = self.config.t_eps;
        let t: Vec<f64> = (0..b).map(|_| t_eps + (1.0 - t_eps) * self.rng.random::<f64>()).collect();
        let eps: Vec<f64> = (0..b * dim as usize).map(|_| self.rng.sample(StandardNormal)).collect();
        let shape: Vec<i64> = std::iter::once(b as i64).chain(self.point_shape.iter().copied()).collect();
        let to = |t: Tensor| t.to_kind(self.kind).to_device(self.device);
        LossBatch {
            x0: data.index_select(0, &Tensor::from_slice(&idx).to_device(self.device)),
            t: to(Tensor::from_slice(&t)),
            eps: to(Tensor::from_slice(&eps).reshape(&shape[..])),
        }
    }

    fn check_data_shape(&self, data: &Tensor) -> Result<()> {
        let size = data.size();
        if size.len() != self.point_shape.len() + 1 || size[1..] != self.point_shape[..] {
            return Err(TrainError::data("data", format!("shape {size:?}, expected [N, {:?}]", self.point_shape)));
        }
        if size[0] < 1 {
            return Err(TrainError::data("data", "no points (N = 0)"));
        }
        if !matches!(data.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) {
            return Err(TrainError::data("data", format!("dtype {:?}, a float dtype is needed", data.kind())));
        }
        Ok(())
    }

    /// Checks shape, dtype and finiteness of `data` and moves it to the run's dtype and device.
    fn prepare_data(&self, data: &Tensor) -> Result<Tensor> {
        self.check_data_shape(data)?;
        let data = data.detach().to_kind(self.kind).to_device(self.device);
        let n = data.size()[0];
        let bad = data.isfinite().logical_not().reshape([n, -1]).any_dim(1, false).nonzero();
        if bad.size()[0] > 0 {
            let row = bad.int64_value(&[0, 0]);
            return Err(TrainError::data("data", format!("non-finite value in row {row}")));
        }
        Ok(data)
    }

    /// One optimiser step on a batch drawn from `data: [N, ..point_shape]` (any float dtype and device;
    /// converted to the run's when they differ, which costs a copy per call: [`Trainer::run`] converts once).
    /// Finiteness of `data` is not checked here ([`Trainer::run`] checks it).
    ///
    /// Errors on a data shape mismatch, and with [`TrainError::NonFinite`] (before updating anything but
    /// the RNG) when the loss or the gradient norm is not finite.
    pub fn step(&mut self, data: &Tensor) -> Result<StepReport> {
        self.check_data_shape(data)?;
        let data = data.to_kind(self.kind).to_device(self.device);
        self.step_prepared(&data)
    }

    fn step_prepared(&mut self, data: &Tensor) -> Result<StepReport> {
        let start = Instant::now();
        let batch = self.draw_batch(data);
        let (base, schedule, weighting) = (self.base.as_deref(), &self.config.schedule, self.config.weighting);
        let loss_value = loss_and_grad(&self.net, base, schedule, weighting, &batch, self.flat.grad_mut());
        if !loss_value.is_finite() {
            return Err(TrainError::NonFinite { what: "loss".into(), step: self.step });
        }
        let grad_norm = clip_grad_norm(self.flat.grad_mut(), self.config.optim.grad_clip);
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite { what: "gradient norm".into(), step: self.step });
        }
        let lr = self.config.optim.lr_at(self.step, self.config.steps);
        let grad = self.flat.grad().shallow_clone();
        self.adam.step(self.flat.buffer_mut(), &grad, lr);
        self.ema.update(self.flat.buffer());
        self.step += 1;
        let dt = start.elapsed().as_secs_f64();
        let avg = match self.step_time_ema {
            Some(prev) => 0.9 * prev + 0.1 * dt,
            None => dt,
        };
        self.step_time_ema = Some(avg);
        Ok(StepReport { step: self.step, loss: loss_value, grad_norm, lr, steps_per_sec: 1.0 / avg.max(1e-12) })
    }

    /// Trains until `config.steps` steps are done or the observer stops, reporting every step and handing
    /// checkpoints to the observer (every `checkpoint_every` steps and at the last step).
    ///
    /// `data: [N, ..point_shape]`, any float dtype and device, checked once (shape, non-empty, finite) and
    /// converted to the run's dtype and device. Errors name the problem; a non-finite loss or gradient ends
    /// the run with [`TrainError::NonFinite`].
    pub fn run(&mut self, data: &Tensor, observer: &mut impl Observer) -> Result<RunOutcome> {
        let data = self.prepare_data(data)?;
        let mut last_loss = None;
        while self.step < self.config.steps {
            let report = self.step_prepared(&data)?;
            last_loss = Some(report.loss);
            let control = observer.on_step(&report);
            let every = self.config.checkpoint_every;
            if every > 0 && (self.step % every == 0 || self.step == self.config.steps) {
                observer.on_checkpoint(&self.checkpoint());
            }
            if control == Control::Stop && self.step < self.config.steps {
                return Ok(RunOutcome { steps_done: self.step, stopped_early: true, last_loss });
            }
        }
        Ok(RunOutcome { steps_done: self.step, stopped_early: false, last_loss })
    }

    /// A snapshot of the run ([`Checkpoint`]): CPU copies of the weights, EMA and AdamW moments, and the
    /// step, RNG and identity of the run. Valid at any point between steps.
    pub fn checkpoint(&self) -> Checkpoint {
        let mut tensors = Vec::new();
        let (m, v) = self.adam.moments();
        for (prefix, flat) in [
            (PARAMS_PREFIX, self.flat.buffer()),
            (EMA_PREFIX, self.ema.shadow()),
            (ADAM_M_PREFIX, m),
            (ADAM_V_PREFIX, v),
        ] {
            push_named_copies(&mut tensors, &self.flat, prefix, flat);
        }
        Checkpoint {
            tensors,
            state: RunState {
                format: CHECKPOINT_FORMAT,
                step: self.step,
                rng: self.rng.clone(),
                config: self.config.fields(),
                point_shape: self.point_shape.clone(),
                base: self.base.as_ref().map(|b| b.base_name()),
            },
        }
    }
}
