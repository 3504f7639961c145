//! Training one method step by step with pauses at fixed steps, where the spread of the DSM and OISM loss
//! estimators over independent batches is measured at the current weights (MATH.md section 6).
//!
//! At a pause, R batches of the training batch size (the same R batches at every pause and for every
//! method: common random numbers) are pushed through [`train::loss_and_grad`] with the current training
//! weights (not the EMA), once without a base (the DSM estimator) and once with the Hermite base (the OISM
//! estimator). The figures are the sample variance of the R losses and the mean squared deviation of the R
//! gradient vectors from their mean, (1 / (R - 1)) sum_r |g_r - g_bar|^2 (unclipped gradients).
//!
//! Checkpoints are written as [`crate::mad`] writes them; the points of the variance curve go to
//! `checkpoints/<method>/variance.json` just before each checkpoint, so a resumed run keeps those up to its
//! checkpoint and measures the later ones again.

use crate::mad::{read_latest_checkpoint, write_checkpoint, History, Method, TrainSettings, Trained};
use crate::progress::Phase;
use crate::run::{write_json_atomic, RunDir};
use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use train::{loss_and_grad, LossBatch, Objective, ScoreMlp, TensorBase, Trainer};

/// The spread of one loss estimator over R batches at fixed weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Mean of the R batch losses.
    pub loss_mean: f64,
    /// Sample variance of the R batch losses.
    pub loss_var: f64,
    /// (1 / (R - 1)) sum_r |g_r - g_bar|^2 over the R gradient vectors.
    pub grad_var: f64,
    /// |g_bar|^2, the squared norm of the mean gradient (the signal next to `grad_var`).
    pub grad_mean_sq: f64,
}

/// Both estimators at one method's weights at one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VariancePoint {
    /// Optimiser steps done when the weights were taken.
    pub step: u64,
    /// The DSM estimator (no base).
    pub dsm: Spread,
    /// The OISM estimator (Hermite base).
    pub oism: Spread,
}

/// `n` batches of `batch_size` rows of `data: [N, D]` (with replacement), times uniform in `[t_eps, 1]` and
/// standard normal noise, from a ChaCha8 stream of `seed`, in `kind` on `device`.
pub fn probe_batches(
    data: &Tensor,
    n: usize,
    batch_size: i64,
    t_eps: f64,
    seed: u64,
    kind: Kind,
    device: Device,
) -> Vec<LossBatch> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(11);
    let n_data = data.size()[0] as u64;
    let dim = data.size()[1];
    let data = data.to_kind(kind).to_device(device);
    (0..n)
        .map(|_| {
            let idx: Vec<i64> = (0..batch_size).map(|_| rng.random_range(0..n_data) as i64).collect();
            let t: Vec<f64> = (0..batch_size).map(|_| t_eps + (1.0 - t_eps) * rng.random::<f64>()).collect();
            let eps: Vec<f64> = (0..batch_size * dim).map(|_| rng.sample(StandardNormal)).collect();
            LossBatch {
                x0: data.index_select(0, &Tensor::from_slice(&idx).to_device(device)),
                t: Tensor::from_slice(&t).to_kind(kind).to_device(device),
                eps: Tensor::from_slice(&eps).reshape([batch_size, dim]).to_kind(kind).to_device(device),
            }
        })
        .collect()
}

/// The spread of the estimator with `base` (`None`: DSM) at the weights of `net` over `batches`.
pub fn spread(
    net: &ScoreMlp,
    base: Option<&dyn TensorBase>,
    settings: &TrainSettings,
    batches: &[LossBatch],
    kind: Kind,
    device: Device,
) -> Spread {
    let mut grad = Tensor::zeros([net.n_params()], (kind, device));
    let mut losses = Vec::with_capacity(batches.len());
    let mut grads = Vec::with_capacity(batches.len());
    for b in batches {
        losses.push(loss_and_grad(net, base, &settings.schedule, settings.weighting, b, &mut grad));
        grads.push(grad.to_kind(Kind::Double).to_device(Device::Cpu));
    }
    let r = losses.len() as f64;
    let loss_mean = losses.iter().sum::<f64>() / r;
    let loss_var = losses.iter().map(|l| (l - loss_mean).powi(2)).sum::<f64>() / (r - 1.0);
    let g = Tensor::stack(&grads, 0);
    let g_bar = g.mean_dim(0, true, Kind::Double);
    let grad_var = (&g - &g_bar).square().sum(Kind::Double).double_value(&[]) / (r - 1.0);
    let grad_mean_sq = g_bar.square().sum(Kind::Double).double_value(&[]);
    Spread { loss_mean, loss_var, grad_var, grad_mean_sq }
}

/// What [`train_with_variance`] needs besides the method.
pub struct Probe<'a> {
    /// The run folder (checkpoints, metrics).
    pub run: &'a RunDir,
    /// Training settings.
    pub settings: TrainSettings,
    /// The run's seed.
    pub seed: u64,
    /// The Hermite base of the OISM estimator.
    pub hermite: Arc<dyn TensorBase>,
    /// The fixed probe batches.
    pub batches: &'a [LossBatch],
    /// Steps at which both estimators are measured (sorted, within `0..=steps`).
    pub at_steps: Vec<u64>,
    /// The device.
    pub device: Device,
}

impl Probe<'_> {
    fn measure(&self, net: &ScoreMlp, step: u64) -> VariancePoint {
        let kind = self.settings.precision.kind();
        let dsm = spread(net, None, &self.settings, self.batches, kind, self.device);
        let oism = spread(net, Some(self.hermite.as_ref()), &self.settings, self.batches, kind, self.device);
        VariancePoint { step, dsm, oism }
    }
}

/// Trains `method` on `data: [N, D]` with pauses at `probe.at_steps` (module doc), resuming from the
/// newest checkpoint of the run folder; returns the trained method and its variance curve.
pub fn train_with_variance(probe: &Probe, method: &Method, data: &Tensor) -> Result<(Trained, Vec<VariancePoint>)> {
    let config = probe.settings.config(method.objective, probe.seed);
    let config = train::TrainConfig { objective: method.objective, ..config };
    let root = probe.run.file("checkpoints").join(&method.name);
    let curve_file = root.join("variance.json");
    let device = probe.device;
    let dim = data.size()[1];
    let (mut trainer, mut history, resumed_from, mut curve) = match read_latest_checkpoint(&root)? {
        Some((checkpoint, history, dir)) => {
            let trainer = Trainer::resume(config, &[dim], method.base.clone(), device, &checkpoint)
                .with_context(|| format!("the checkpoint {} was written by another configuration", dir.display()))?;
            let step = checkpoint.state.step;
            let mut curve: Vec<VariancePoint> = match std::fs::read_to_string(&curve_file) {
                Ok(text) => {
                    serde_json::from_str(&text).with_context(|| format!("{} is malformed", curve_file.display()))?
                }
                Err(_) => Vec::new(),
            };
            curve.retain(|p| p.step <= step);
            (trainer, history, Some(step), curve)
        }
        None => (Trainer::new(config, &[dim], method.base.clone(), device)?, History::default(), None, Vec::new()),
    };
    let data = data.to_kind(config.precision.kind()).to_device(device);
    let mut phase = Phase::new(&format!("{}: train", method.name), config.steps);
    phase.set_position(trainer.steps_done());
    let log_every = (config.steps / 200).clamp(1, 100);
    let every = if config.checkpoint_every == 0 { config.steps } else { config.checkpoint_every };
    let mut window = Vec::new();
    let mut seconds = history.train_seconds;
    let pending =
        |curve: &[VariancePoint], step: u64| probe.at_steps.contains(&step) && !curve.iter().any(|p| p.step == step);
    if pending(&curve, trainer.steps_done()) {
        curve.push(probe.measure(trainer.net(), trainer.steps_done()));
    }
    while trainer.steps_done() < config.steps {
        let start = Instant::now();
        let r = trainer.step(&data).with_context(|| format!("{}: training failed", method.name))?;
        seconds += start.elapsed().as_secs_f64();
        history.losses.push(r.loss);
        window.push(r.loss);
        phase.set_position(r.step);
        if r.step % log_every == 0 {
            let mean = window.iter().sum::<f64>() / window.len() as f64;
            window.clear();
            phase.set_message(format!("loss {mean:.4}"));
            probe.run.append_metric(&serde_json::json!({
                "method": method.name, "step": r.step, "loss": mean, "grad_norm": r.grad_norm, "lr": r.lr,
                "steps_per_sec": r.steps_per_sec,
            }))?;
        }
        if pending(&curve, r.step) {
            curve.push(probe.measure(trainer.net(), r.step));
        }
        if r.step % every == 0 || r.step == config.steps {
            history.train_seconds = seconds;
            std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
            write_json_atomic(&curve_file, &curve)?;
            write_checkpoint(&root, &trainer.checkpoint(), &history)?;
        }
    }
    phase.finish();
    history.train_seconds = seconds;
    let trained = Trained {
        name: method.name.clone(),
        score: trainer.ema_score(),
        net: trainer.ema_net(),
        base: method.base.clone(),
        config,
        history,
        resumed_from,
    };
    Ok((trained, curve))
}

/// The spread of a method's own estimator (DSM for `dsm`, OISM otherwise) at a point of its curve.
pub fn own(objective: Objective, p: &VariancePoint) -> Spread {
    match objective {
        Objective::Dsm => p.dsm,
        Objective::Mad => p.oism,
    }
}
